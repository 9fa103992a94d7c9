//! Signing up, logging in and out, joining by invitation, changing password, and the agency
//! home, through the pages' own forms.

use reqwest::Method;
use serde_json::json;

use super::{get, location, submit};
use crate::on_both_engines;
use crate::support::agent::PASSWORD;
use crate::support::{Engine, TestApp};

on_both_engines!(
    a_new_agency_signs_up_and_lands_on_its_home,
    forms_keep_their_input_and_say_what_is_wrong,
    logging_in_returns_to_the_page_asked_for,
    an_invitation_link_makes_an_account_and_joins,
    changing_the_password_keeps_this_session_only,
    pages_refuse_forms_without_the_session_token,
    the_agency_home_shows_each_client_accounts_health,
    another_agencys_pages_are_not_found,
);

async fn a_new_agency_signs_up_and_lands_on_its_home(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let visitor = app.anonymous();
    let form = get(&visitor, "/signup").await;
    assert_eq!(form.status, 200);
    let csp = form.csp.clone().unwrap();
    for rule in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(rule), "{rule} in {csp}");
    }
    // Every asset the page uses comes from pipepay itself.
    for (selector, attr) in [("link[rel=stylesheet]", "href"), ("script", "src")] {
        let url = form.attr(selector, attr).unwrap();
        assert!(url.starts_with('/') && !url.starts_with("//"), "{url}");
        assert_eq!(visitor.get(&url).await.status(), 200, "{url}");
    }
    let signed_up = submit(
        &visitor,
        "/signup",
        &[("agency_name", "Nairobi Growth Co"), ("email", "founder@growth.example"), ("password", PASSWORD)],
    )
    .await;
    assert_eq!(signed_up.status(), 303);
    let home = location(&signed_up);
    assert!(home.starts_with("/app/agencies/"), "{home}");
    let page = get(&visitor, &home).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.one("h1"), "Client accounts");
    assert!(page.text.contains("No client accounts yet"), "an empty state that says what to do");
    assert_eq!(page.one(".agency-name"), "Nairobi Growth Co");
    assert_eq!(location(&visitor.get("/app").await), home, "/app opens the agency");
    app.stop().await;
}

async fn forms_keep_their_input_and_say_what_is_wrong(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let visitor = app.anonymous();
    let refused = submit(
        &visitor,
        "/signup",
        &[("agency_name", "Kampala Sales"), ("email", "not-an-email"), ("password", "short")],
    )
    .await;
    assert_eq!(refused.status(), 422);
    let page = super::Page::read(refused).await;
    assert_eq!(page.field("agency_name").as_deref(), Some("Kampala Sales"), "input kept");
    assert_eq!(page.field("email").as_deref(), Some("not-an-email"));
    assert_eq!(page.field("password"), None, "a password is never sent back");
    assert_eq!(page.attr("#email", "aria-invalid").as_deref(), Some("true"));
    assert_eq!(page.attr("#password", "aria-invalid").as_deref(), Some("true"));
    assert!(!page.one("#email-error").is_empty() && !page.one("#password-error").is_empty());
    assert!(page.attr("#form-errors", "role").as_deref() == Some("alert"));

    // A client account needs a name; the form says so and keeps what was typed.
    let owner = app.sign_up("owner@kampala.example", "Kampala").await;
    let home = format!("/app/agencies/{}", owner.agency);
    let refused = submit(&owner.agent, &format!("{home}/clients"), &[("name", "   ")]).await;
    assert_eq!(refused.status(), 422);
    let page = super::Page::read(refused).await;
    assert!(!page.one("#name-error").is_empty());
    app.stop().await;
}

async fn logging_in_returns_to_the_page_asked_for(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let owner = app.sign_up("owner@lagos.example", "Lagos").await;
    let visitor = app.anonymous();
    let wanted = format!("/app/agencies/{}", owner.agency);
    let sent = visitor.get(&wanted).await;
    assert_eq!(sent.status(), 303);
    let login = location(&sent);
    assert!(login.starts_with("/login?next="), "{login}");
    let page = get(&visitor, &login).await;
    assert_eq!(page.field("next").as_deref(), Some(wanted.as_str()));

    let wrong = submit(
        &visitor,
        "/login",
        &[("email", "owner@lagos.example"), ("password", "nope"), ("next", &wanted)],
    )
    .await;
    assert_eq!(wrong.status(), 401);
    let page = super::Page::read(wrong).await;
    assert_eq!(page.field("email").as_deref(), Some("owner@lagos.example"));
    assert!(page.attr("#form-errors", "role").is_some());

    // Another site as `next` is ignored.
    let evil = submit(
        &visitor,
        "/login",
        &[("email", "owner@lagos.example"), ("password", PASSWORD), ("next", "//evil.example")],
    )
    .await;
    assert_eq!(location(&evil), "/app");
    let back = submit(
        &visitor,
        "/login",
        &[("email", "owner@lagos.example"), ("password", PASSWORD), ("next", &wanted)],
    )
    .await;
    assert_eq!(back.status(), 303);
    assert_eq!(location(&back), wanted);
    assert_eq!(get(&visitor, &wanted).await.status, 200);

    // Log out is a form (a link could be triggered by another site); afterwards pages need a log-in.
    let mut visitor = visitor;
    visitor.csrf = super::get(&visitor, &wanted).await.attr("form[action=\"/logout\"] [name=csrf]", "value");
    let out = submit(&visitor, "/logout", &[]).await;
    assert_eq!(location(&out), "/login");
    assert_eq!(visitor.get(&wanted).await.status(), 303);
    app.stop().await;
}

async fn an_invitation_link_makes_an_account_and_joins(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let owner = app.sign_up("owner@accra.example", "Accra Deals").await;
    let invited = owner
        .agent
        .expect(
            Method::POST,
            &format!("/api/v1/agencies/{}/invitations", owner.agency),
            Some(json!({"email": "closer@accra.example", "role": "admin"})),
            201,
        )
        .await;
    let link = invited["accept_url"].as_str().unwrap();
    let path = &link[link.find("/join/").unwrap()..];
    let newcomer = app.anonymous();
    let page = get(&newcomer, path).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.one("h1"), "Join Accra Deals");
    assert!(page.text.contains("closer@accra.example") && page.text.contains("admin"));

    let weak = submit(&newcomer, path, &[("password", "accra")]).await;
    assert_eq!(weak.status(), 422);
    assert!(!super::Page::read(weak).await.one("#password-error").is_empty());
    let joined = submit(&newcomer, path, &[("password", PASSWORD)]).await;
    assert_eq!(joined.status(), 303);
    assert_eq!(location(&joined), format!("/app/agencies/{}?done=joined", owner.agency));
    let home = get(&newcomer, &location(&joined)).await;
    assert_eq!(home.one(".notice"), "Welcome: you joined the agency.");
    assert!(home.text.contains("Add a client account"), "an admin may add client accounts");

    // The link is single use.
    assert_eq!(get(&app.anonymous(), path).await.status, 404);
    app.stop().await;
}

async fn changing_the_password_keeps_this_session_only(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let owner = app.sign_up("owner@dar.example", "Dar").await;
    let mut elsewhere = app.anonymous();
    elsewhere.log_in("owner@dar.example", PASSWORD).await;

    let wrong = submit(
        &owner.agent,
        "/app/account/password",
        &[("current_password", "wrong"), ("new_password", "kilimanjaro sunrise 2044")],
    )
    .await;
    assert!(wrong.status().is_client_error());
    let page = super::Page::read(wrong).await;
    assert!(page.attr("#form-errors", "role").is_some(), "{}", page.text);

    let changed = submit(
        &owner.agent,
        "/app/account/password",
        &[("current_password", PASSWORD), ("new_password", "kilimanjaro sunrise 2044")],
    )
    .await;
    assert_eq!(changed.status(), 303);
    assert_eq!(location(&changed), "/app/account?done=password-changed");
    let page = get(&owner.agent, "/app/account?done=password-changed").await;
    assert_eq!(page.status, 200, "this session continues with its new cookie");
    assert_eq!(page.one(".notice"), "Password changed. Your other sessions were logged out.");
    assert_eq!(elsewhere.get("/app/account").await.status(), 303, "the other session ended");
    app.stop().await;
}

async fn pages_refuse_forms_without_the_session_token(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let mut owner = app.sign_up("owner@kigali.example", "Kigali").await;
    owner.agent.csrf = Some("forged".into());
    let forged =
        submit(&owner.agent, &format!("/app/agencies/{}/clients", owner.agency), &[("name", "Forged Ltd")])
            .await;
    assert_eq!(forged.status(), 403);
    let page = super::Page::read(forged).await;
    assert!(page.text.contains("this form has expired"), "{}", page.text);
    // Another site's page posting here is refused before anything else.
    let cross = owner
        .agent
        .http
        .post(app.url(&format!("/app/agencies/{}/clients", owner.agency)))
        .header("origin", "https://evil.example")
        .header("sec-fetch-site", "cross-site")
        .form(&[("name", "Cross Ltd")])
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), 403);
    owner.agent.csrf = None;
    let clients = owner.agent.json(&format!("/api/v1/agencies/{}/clients", owner.agency)).await;
    assert_eq!(clients.as_array().unwrap().len(), 0, "nothing was created");
    app.stop().await;
}

async fn the_agency_home_shows_each_client_accounts_health(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let owner = app.sign_up("owner@mombasa.example", "Mombasa").await;
    let home = format!("/app/agencies/{}", owner.agency);
    let created = submit(&owner.agent, &format!("{home}/clients"), &[("name", "Coast Traders")]).await;
    assert_eq!(created.status(), 303);
    let client_page = location(&created);
    assert!(
        client_page.contains("/clients/") && client_page.ends_with("?done=client-created"),
        "{client_page}"
    );
    let page = get(&owner.agent, &home).await;
    assert_eq!(page.one("table.health tbody th a"), "Coast Traders");
    let cell = |label: &str| page.one(&format!("table.health tbody td[data-label=\"{label}\"]"));
    assert_eq!(cell("Kommo"), "Not connected");
    assert_eq!(cell("Flutterwave"), "No keys");
    assert_eq!(cell("Last webhook"), "Never");
    assert_eq!(cell("Open links"), "0");

    // Members see the health, not the form that changes things.
    let member = app.add_member(&owner, "viewer@mombasa.example", "member").await;
    let page = get(&member, &home).await;
    assert_eq!(page.one("table.health tbody th a"), "Coast Traders");
    assert!(!page.text.contains("Add a client account"));
    let refused = submit(&member, &format!("{home}/clients"), &[("name", "Member Ltd")]).await;
    assert_eq!(refused.status(), 403);
    app.stop().await;
}

async fn another_agencys_pages_are_not_found(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let first = app.sign_up("owner@first.example", "First").await;
    let second = app.sign_up("owner@second.example", "Second").await;
    let (client, _) = app.add_client(&first.agent, &first.agency, "First's client").await;
    let agency = &first.agency;
    for path in [
        format!("/app/agencies/{agency}"),
        format!("/app/agencies/{agency}/clients/{client}"),
        format!("/app/agencies/{agency}/clients/{client}/settings"),
        format!("/app/agencies/{agency}/clients/{client}/activity"),
        format!("/app/agencies/{agency}/members"),
        format!("/app/agencies/{agency}/api-keys"),
        format!("/app/agencies/{agency}/audit"),
        format!("/app/agencies/{agency}/telemetry"),
        // Their own agency with the other's client account id.
        format!("/app/agencies/{}/clients/{client}", second.agency),
    ] {
        let page = get(&second.agent, &path).await;
        assert_eq!(page.status, 404, "{path}");
        assert!(!page.text.contains("First"), "{path} says nothing of the other agency");
    }
    let posted =
        submit(&second.agent, &format!("/app/agencies/{agency}/clients"), &[("name", "Intruder")]).await;
    assert_eq!(posted.status(), 404);
    // An address whose id is no id at all is a page that does not exist, as a page.
    for path in [
        "/app/agencies/not-an-id".to_owned(),
        format!("/app/agencies/{agency}/clients/42/settings"),
        format!("/app/agencies/{agency}/clients/42/activity"),
    ] {
        let page = get(&first.agent, &path).await;
        assert_eq!(page.status, 404, "{path}");
        assert!(page.text.starts_with("<!doctype html>"), "{path} is a page: {}", page.text);
        assert!(page.csp.is_some_and(|csp| csp.contains("default-src 'none'")), "{path}");
    }
    for path in [
        format!("/app/agencies/{agency}/clients/42/delete"),
        format!("/app/agencies/{agency}/members/x/remove"),
    ] {
        assert_eq!(submit(&first.agent, &path, &[]).await.status(), 404, "{path}");
    }
    app.stop().await;
}
