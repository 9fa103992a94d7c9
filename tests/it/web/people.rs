//! The agency's people pages: members and invitations, API keys, the audit log and the
//! telemetry export, through their own forms.

use reqwest::Method;
use serde_json::json;

use super::{Page, get, location, submit};
use crate::on_both_engines;
use crate::support::Engine;
use crate::support::agent::Owner;
use crate::support::{Agent, TestApp};

on_both_engines!(
    an_owner_invites_and_the_link_is_shown_once,
    owners_change_roles_and_remove_members_admins_cannot,
    two_owners_demoting_each_other_at_once_leave_one_owner,
    api_keys_are_shown_once_authenticate_and_revoke,
    the_audit_log_shows_changes_filters_and_pages,
    telemetry_headers_never_come_back_in_html,
    members_see_no_forms_and_are_refused,
    another_agency_gets_not_found_on_every_page_and_form,
);

fn base(owner: &Owner) -> String {
    format!("/app/agencies/{}", owner.agency)
}

/// The id of the member with `email`, from the JSON API.
async fn user_id(owner: &Owner, email: &str) -> String {
    let members = owner.agent.json(&format!("/api/v1/agencies/{}/members", owner.agency)).await;
    let member = members.as_array().unwrap().iter().find(|m| m["email"] == email).unwrap();
    member["user_id"].as_str().unwrap().to_owned()
}

/// Every form posting somewhere other than log-out.
fn change_forms(page: &Page) -> Vec<String> {
    let selector = scraper::Selector::parse("form[method=post]").unwrap();
    page.html
        .select(&selector)
        .filter_map(|f| f.value().attr("action").map(str::to_owned))
        .filter(|a| a != "/logout")
        .collect()
}

async fn an_owner_invites_and_the_link_is_shown_once(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let owner = app.sign_up("owner@kisumu.example", "Kisumu").await;
    let members = format!("{}/members", base(&owner));

    let page = get(&owner.agent, &members).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.one("h1"), "Members");
    assert_eq!(page.attr("nav.sections a[aria-current=page]", "href"), Some(members.clone()));
    assert!(page.one("table.stack tbody th[scope=row]").starts_with("owner@kisumu.example"));

    let invited = submit(
        &owner.agent,
        &format!("{}/invitations", base(&owner)),
        &[("email", "Closer@Kisumu.example"), ("role", "admin")],
    )
    .await;
    assert_eq!(invited.status(), 200, "the page itself, not a redirect");
    let page = Page::read(invited).await;
    let link = page.attr("#invitation-link", "value").unwrap();
    assert!(link.contains("/join/"), "{link}");
    assert_eq!(page.attr("#invitation-link", "readonly").as_deref(), Some(""));
    assert_eq!(page.attr("button[data-copy=invitation-link]", "hidden").as_deref(), Some(""));
    assert!(page.text.contains("invitation-link-status"), "a live region for the copy button");
    assert!(page.one(".once .warning").contains("closer@kisumu.example"));
    assert_eq!(page.one(".notice"), "Invitation created.");
    assert!(
        page.all("table.stack tbody th").iter().any(|e| e == "closer@kisumu.example"),
        "listed as pending"
    );
    assert_eq!(page.field("email").as_deref(), Some(""), "the form is ready for the next person");

    let token = &link[link.find("/join/").unwrap() + "/join/".len()..];
    let again = get(&owner.agent, &members).await;
    assert!(again.attr("#invitation-link", "value").is_none(), "a reload does not show it");
    assert!(!again.text.contains(token));

    let join = format!("/join/{token}");
    let newcomer = app.anonymous();
    let page = get(&newcomer, &join).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.one("h1"), "Join Kisumu");

    // A mistyped email keeps what was typed and says what is wrong.
    let refused = submit(
        &owner.agent,
        &format!("{}/invitations", base(&owner)),
        &[("email", "not-an-email"), ("role", "admin")],
    )
    .await;
    assert_eq!(refused.status(), 422);
    let page = Page::read(refused).await;
    assert_eq!(page.field("email").as_deref(), Some("not-an-email"));
    assert_eq!(page.attr("#role option[selected]", "value").as_deref(), Some("admin"));
    assert_eq!(page.attr("#email", "aria-invalid").as_deref(), Some("true"));
    assert!(!page.one("#email-error").is_empty());
    assert!(page.attr("#invitation-link", "value").is_none());

    // Revoking stops the link.
    let again = get(&owner.agent, &members).await;
    let revoke = again.attr("form[action*=\"/invitations/\"]", "action").unwrap();
    assert!(again.attr("form[action*=\"/invitations/\"]", "data-confirm").is_some());
    let revoked = submit(&owner.agent, &revoke, &[]).await;
    assert_eq!(location(&revoked), format!("{members}?done=invitation-revoked"));
    assert_eq!(get(&owner.agent, &location(&revoked)).await.one(".notice"), "Invitation revoked.");
    assert_eq!(get(&newcomer, &join).await.status, 404);
    app.stop().await;
}

async fn owners_change_roles_and_remove_members_admins_cannot(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let owner = app.sign_up("owner@eldoret.example", "Eldoret").await;
    let member = app.add_member(&owner, "seller@eldoret.example", "member").await;
    let admin = app.add_member(&owner, "lead@eldoret.example", "admin").await;
    let seller = user_id(&owner, "seller@eldoret.example").await;
    let members = format!("{}/members", base(&owner));

    let changed = submit(&owner.agent, &format!("{members}/{seller}"), &[("role", "admin")]).await;
    assert_eq!(changed.status(), 303);
    assert_eq!(location(&changed), format!("{members}?done=member-updated"));
    let page = get(&owner.agent, &location(&changed)).await;
    assert_eq!(page.one(".notice"), "Role changed.");
    assert_eq!(page.attr(&format!("#role-{seller} option[selected]"), "value").as_deref(), Some("admin"));
    assert!(page.attr(&format!("label[for=role-{seller}]"), "class").is_some(), "every select is labelled");

    // The agency keeps an owner.
    let me = user_id(&owner, "owner@eldoret.example").await;
    let refused = submit(&owner.agent, &format!("{members}/{me}"), &[("role", "member")]).await;
    assert_eq!(refused.status(), 409);
    assert!(Page::read(refused).await.one("#form-errors").contains("at least one owner"));

    // An admin sees the members, not the controls, and is refused if they post anyway.
    let page = get(&admin, &members).await;
    assert_eq!(page.status, 200);
    assert!(page.attr("select", "name").is_none() && page.attr("#email", "name").is_none());
    assert_eq!(change_forms(&page).len(), 1, "only leaving the agency: {:?}", change_forms(&page));
    let refused = submit(&admin, &format!("{members}/{seller}"), &[("role", "owner")]).await;
    assert_eq!(refused.status(), 403);
    assert!(Page::read(refused).await.one("#form-errors").contains("only an owner"));
    let refused = submit(
        &admin,
        &format!("{}/invitations", base(&owner)),
        &[("email", "x@eldoret.example"), ("role", "owner")],
    )
    .await;
    assert_eq!(refused.status(), 403);
    let roles = owner.agent.json(&format!("/api/v1/agencies/{}/members", owner.agency)).await;
    assert!(
        roles
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["role"] != "owner" || m["email"] == "owner@eldoret.example")
    );

    let removed = submit(&owner.agent, &format!("{members}/{seller}/remove"), &[]).await;
    assert_eq!(location(&removed), format!("{members}?done=member-removed"));
    let page = get(&owner.agent, &location(&removed)).await;
    assert_eq!(page.one(".notice"), "Member removed.");
    assert!(!page.text.contains("seller@eldoret.example"));
    assert_eq!(get(&member, &members).await.status, 404, "no longer a member");
    app.stop().await;
}

/// Two owners each demote the other at the same moment, round after round: one wins, the
/// other is refused, and the agency never ends up with none. With a third owner, too: the one
/// demoted first is no owner any more when their own change comes.
async fn two_owners_demoting_each_other_at_once_leave_one_owner(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let first = app.sign_up("owner@thika.example", "Thika").await;
    let second = app.add_member(&first, "partner@thika.example", "owner").await;
    let members = format!("{}/members", base(&first));
    let (first_id, second_id) =
        (user_id(&first, "owner@thika.example").await, user_id(&first, "partner@thika.example").await);
    let owners = || async {
        let roles = first.agent.json(&format!("/api/v1/agencies/{}/members", first.agency)).await;
        roles.as_array().unwrap().iter().filter(|m| m["role"] == "owner").count()
    };
    let mut expected_owners = 1;
    for round in 0..30 {
        if round == 15 {
            app.add_member(&first, "third@thika.example", "owner").await;
            expected_owners = 2;
        }
        let (demote_second, demote_first) =
            (format!("{members}/{second_id}"), format!("{members}/{first_id}"));
        let (a, b) = tokio::join!(
            submit(&first.agent, &demote_second, &[("role", "member")]),
            submit(&second, &demote_first, &[("role", "member")]),
        );
        // The one that lost is refused: as no longer an owner (403), or as the last one (409).
        let mut statuses = [a.status().as_u16(), b.status().as_u16()];
        statuses.sort_unstable();
        assert!(matches!(statuses, [303, 403 | 409]), "round {round}: {statuses:?}");
        assert_eq!(owners().await, expected_owners, "round {round}");
        // Whoever is still owner makes the other owner again for the next round.
        let (winner, loser) =
            if a.status() == 303 { (&first.agent, &second_id) } else { (&second, &first_id) };
        let restored = submit(winner, &format!("{members}/{loser}"), &[("role", "owner")]).await;
        assert_eq!(restored.status(), 303, "round {round}");
    }
    app.stop().await;
}

async fn api_keys_are_shown_once_authenticate_and_revoke(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let owner = app.sign_up("owner@nakuru.example", "Nakuru").await;
    let keys = format!("{}/api-keys", base(&owner));

    let empty = submit(&owner.agent, &keys, &[("name", "  "), ("role", "admin")]).await;
    assert_eq!(empty.status(), 422);
    let page = Page::read(empty).await;
    assert!(!page.one("#name-error").is_empty());
    assert_eq!(page.attr("#role option[selected]", "value").as_deref(), Some("admin"));

    let created = submit(&owner.agent, &keys, &[("name", "Reporting script"), ("role", "member")]).await;
    assert_eq!(created.status(), 200);
    let page = Page::read(created).await;
    let key = page.attr("#new-api-key", "value").unwrap();
    assert!(key.starts_with("ppk_"), "{key}");
    assert!(page.one(".once .warning").contains("will not show it again"));
    assert_eq!(page.one("table.stack tbody th"), "Reporting script");
    assert_eq!(page.one("td[data-label=\"Created by\"]"), "owner@nakuru.example");

    let reload = get(&owner.agent, &keys).await;
    assert!(reload.attr("#new-api-key", "value").is_none());
    assert!(!reload.text.contains(&key), "shown once");

    let script = app.with_key(&key);
    assert_eq!(script.get(&format!("/api/v1/agencies/{}", owner.agency)).await.status(), 200);
    let reload = get(&owner.agent, &keys).await;
    assert_ne!(reload.one("td[data-label=\"Last used\"]"), "Never");

    let revoke = reload.attr("form[action$=\"/revoke\"]", "action").unwrap();
    assert!(reload.attr("form[action$=\"/revoke\"]", "data-confirm").is_some());
    let revoked = submit(&owner.agent, &revoke, &[]).await;
    assert_eq!(location(&revoked), format!("{keys}?done=key-revoked"));
    let page = get(&owner.agent, &location(&revoked)).await;
    assert_eq!(page.one(".notice"), "API key revoked.");
    assert!(page.one("td[data-label=Status]").starts_with("Revoked"));
    assert_eq!(script.get(&format!("/api/v1/agencies/{}", owner.agency)).await.status(), 401);
    app.stop().await;
}

async fn the_audit_log_shows_changes_filters_and_pages(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let owner = app.sign_up("owner@thika.example", "Thika").await;
    let other = app.sign_up("owner@nyeri.example", "Nyeri").await;
    let (first, _) = app.add_client(&owner.agent, &owner.agency, "Thika Farms").await;
    app.add_client(&owner.agent, &owner.agency, "Thika Motors").await;
    let (foreign, _) = app.add_client(&other.agent, &other.agency, "Nyeri Tea").await;
    submit(
        &owner.agent,
        &format!("{}/invitations", base(&owner)),
        &[("email", "a@thika.example"), ("role", "member")],
    )
    .await;
    submit(&owner.agent, &format!("{}/api-keys", base(&owner)), &[("name", "Sync"), ("role", "admin")]).await;
    let audit = format!("{}/audit", base(&owner));

    let page = get(&owner.agent, &audit).await;
    assert_eq!(page.status, 200);
    let actions = page.all("td[data-label=Action]");
    for wanted in ["Created an API key", "Invited someone", "Created a client account"] {
        assert!(actions.iter().any(|a| a.starts_with(wanted)), "{wanted} in {actions:?}");
    }
    assert!(actions[0].starts_with("Created an API key"), "newest first");
    assert!(page.all("td[data-label=Who]")[0].starts_with("owner@thika.example"));
    assert!(page.all("td[data-label=Details]").iter().any(|d| d.contains("a@thika.example")));
    assert_eq!(page.all("#client_id option").len(), 3, "all, and each client account");
    assert!(page.attr("a[rel=next]", "href").is_none(), "one page only");

    let filtered = get(&owner.agent, &format!("{audit}?client_id={first}")).await;
    assert_eq!(filtered.all("td[data-label=\"Client account\"]"), vec!["Thika Farms"]);
    assert_eq!(filtered.attr("#client_id option[selected]", "value"), Some(first.clone()));
    assert_eq!(get(&owner.agent, &format!("{audit}?client_id=")).await.all("tbody tr").len(), 4);
    assert_eq!(get(&owner.agent, &format!("{audit}?client_id={foreign}")).await.status, 404);

    // More than a page: the older entries are one link away, and the filter stays.
    for n in 0..50 {
        owner
            .agent
            .expect(
                Method::POST,
                &format!("/api/v1/agencies/{}/invitations", owner.agency),
                Some(json!({"email": format!("p{n}@thika.example"), "role": "member"})),
                201,
            )
            .await;
    }
    let page = get(&owner.agent, &audit).await;
    assert_eq!(page.all("tbody tr").len(), 50);
    let older = page.attr("a[rel=next]", "href").unwrap();
    assert!(older.starts_with(&format!("{audit}?before=")), "{older}");
    let page = get(&owner.agent, &older).await;
    assert_eq!(page.all("tbody tr").len(), 4);
    let details = page.all("td[data-label=Details]");
    assert!(details.iter().any(|d| d.contains("a@thika.example")), "{details:?}");
    assert!(details.iter().all(|d| !d.contains("p0@thika.example")), "no entry twice");
    assert_eq!(page.attr(".pager a:not([rel])", "href"), Some(audit.clone()));
    assert!(page.attr("a[rel=next]", "href").is_none());
    app.stop().await;
}

async fn telemetry_headers_never_come_back_in_html(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let owner = app.sign_up("owner@malindi.example", "Malindi").await;
    let telemetry = format!("{}/telemetry", base(&owner));
    const SECRET: &str = "vendor-key-8c1f77a2d9e4";

    let page = get(&owner.agent, &telemetry).await;
    assert_eq!(page.status, 200);
    assert!(page.text.contains("Not exporting"));
    assert!(page.text.contains("https://"), "the rules are explained");

    // Refused: the endpoint comes back, the headers never do.
    let refused = submit(
        &owner.agent,
        &telemetry,
        &[("endpoint", "http://otlp.example.com"), ("headers", &format!("x-api-key: {SECRET}"))],
    )
    .await;
    assert_eq!(refused.status(), 422);
    let page = Page::read(refused).await;
    assert_eq!(page.field("endpoint").as_deref(), Some("http://otlp.example.com"));
    assert!(!page.one("#endpoint-error").is_empty());
    assert!(!page.text.contains(SECRET));
    assert_eq!(page.one("#headers"), "");

    // A key pasted into the URL is refused, and not sent back either.
    for endpoint in [
        format!("https://team:{SECRET}@otlp.example.com/v1"),
        format!("https://otlp.example.com/v1?api_key={SECRET}"),
        format!("https://otlp.example.com/v1#{SECRET}"),
        format!("otlp.example.com?api_key={SECRET}"),
        format!("team:{SECRET}@otlp.example.com"),
        SECRET.to_owned(),
        format!("ftp://team:{SECRET}@otlp.example.com"),
    ] {
        let refused = submit(&owner.agent, &telemetry, &[("endpoint", &endpoint), ("headers", "")]).await;
        assert_eq!(refused.status(), 422, "{endpoint}");
        let page = Page::read(refused).await;
        assert!(!page.one("#endpoint-error").is_empty(), "{endpoint}");
        assert!(!page.text.contains(SECRET), "{endpoint} came back");
    }

    let malformed =
        submit(&owner.agent, &telemetry, &[("endpoint", "https://otlp.example.com"), ("headers", SECRET)])
            .await;
    assert_eq!(malformed.status(), 422);
    let page = Page::read(malformed).await;
    assert_eq!(page.attr("#headers", "aria-invalid").as_deref(), Some("true"));
    assert!(page.one("#headers-error").contains("line 1"));
    assert!(!page.text.contains(SECRET));

    let saved = submit(
        &owner.agent,
        &telemetry,
        &[
            ("endpoint", "https://otlp.example.com"),
            ("headers", &format!("x-api-key: {SECRET}\r\n\r\nx-team: growth\r\n")),
        ],
    )
    .await;
    assert_eq!(location(&saved), format!("{telemetry}?done=telemetry-saved"));
    let page = get(&owner.agent, &location(&saved)).await;
    assert_eq!(page.one(".notice"), "Telemetry export saved.");
    assert!(page.text.contains("https://otlp.example.com"));
    assert!(page.text.contains("x-api-key") && page.text.contains("••••d9e4"), "{}", page.text);
    assert!(!page.text.contains(SECRET));
    assert_eq!(page.field("endpoint").as_deref(), Some("https://otlp.example.com"));
    for path in [format!("{}/audit", base(&owner)), base(&owner), telemetry.clone()] {
        assert!(!get(&owner.agent, &path).await.text.contains(SECRET), "{path}");
    }
    let stored = owner.agent.json(&format!("/api/v1/agencies/{}/telemetry", owner.agency)).await;
    assert_eq!(stored["endpoint"], "https://otlp.example.com");

    let removed = submit(&owner.agent, &format!("{telemetry}/delete"), &[]).await;
    assert_eq!(location(&removed), format!("{telemetry}?done=telemetry-removed"));
    let page = get(&owner.agent, &location(&removed)).await;
    assert_eq!(page.one(".notice"), "Telemetry export removed.");
    assert!(page.text.contains("Not exporting"));
    app.stop().await;
}

async fn members_see_no_forms_and_are_refused(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let owner = app.sign_up("owner@lamu.example", "Lamu").await;
    let member = app.add_member(&owner, "reader@lamu.example", "member").await;
    let (key, _) = app.add_api_key(&owner.agent, &owner.agency, "admin").await;
    let invitation = invite(&owner, "next@lamu.example").await;
    owner
        .agent
        .expect(
            Method::PUT,
            &format!("/api/v1/agencies/{}/telemetry", owner.agency),
            Some(
                json!({"endpoint": "https://otlp.example.com", "headers": {"x-api-key": "abcdefghijklmnop"}}),
            ),
            200,
        )
        .await;
    let b = base(&owner);
    let own = user_id(&owner, "owner@lamu.example").await;

    for section in ["members", "api-keys", "audit", "telemetry"] {
        let page = get(&member, &format!("{b}/{section}")).await;
        assert_eq!(page.status, 200, "{section}");
        let forms = change_forms(&page);
        let allowed: Vec<String> = if section == "members" {
            vec![format!("{b}/members/{}/remove", user_id(&owner, "reader@lamu.example").await)]
        } else {
            vec![]
        };
        assert_eq!(forms, allowed, "{section}: only leaving the agency");
    }
    for (path, fields) in [
        (format!("{b}/invitations"), vec![("email", "x@lamu.example"), ("role", "member")]),
        (format!("{b}/invitations/{invitation}/revoke"), vec![]),
        (format!("{b}/members/{own}"), vec![("role", "member")]),
        (format!("{b}/members/{own}/remove"), vec![]),
        (format!("{b}/api-keys"), vec![("name", "Mine"), ("role", "member")]),
        (format!("{b}/api-keys/{key}/revoke"), vec![]),
        (format!("{b}/telemetry"), vec![("endpoint", "https://otlp.example.com"), ("headers", "")]),
        (format!("{b}/telemetry/delete"), vec![]),
    ] {
        let refused = submit(&member, &path, &fields).await;
        assert_eq!(refused.status(), 403, "{path}");
        assert!(!Page::read(refused).await.one("#form-errors").is_empty(), "{path}");
    }
    // Nothing changed.
    let keys = owner.agent.json(&format!("/api/v1/agencies/{}/api-keys", owner.agency)).await;
    assert!(keys[0]["revoked_at"].is_null());
    assert_eq!(
        owner.agent.json(&format!("/api/v1/agencies/{}/telemetry", owner.agency)).await["headers"]["x-api-key"],
        "••••mnop"
    );
    app.stop().await;
}

async fn invite(owner: &Owner, email: &str) -> String {
    let invited = owner
        .agent
        .expect(
            Method::POST,
            &format!("/api/v1/agencies/{}/invitations", owner.agency),
            Some(json!({"email": email, "role": "member"})),
            201,
        )
        .await;
    invited["invitation"]["id"].as_str().unwrap().to_owned()
}

async fn another_agency_gets_not_found_on_every_page_and_form(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let first = app.sign_up("owner@garissa.example", "Garissa").await;
    let second = app.sign_up("owner@wajir.example", "Wajir").await;
    let user = user_id(&first, "owner@garissa.example").await;
    let (key, _) = app.add_api_key(&first.agent, &first.agency, "member").await;
    let invitation = invite(&first, "next@garissa.example").await;
    let (client, _) = app.add_client(&first.agent, &first.agency, "Garissa Camels").await;
    let a = base(&first);
    let intruder: &Agent = &second.agent;

    for path in [
        format!("{a}/members"),
        format!("{a}/api-keys"),
        format!("{a}/audit"),
        format!("{a}/telemetry"),
        format!("{}/audit?client_id={client}", base(&second)),
    ] {
        let page = get(intruder, &path).await;
        assert_eq!(page.status, 404, "{path}");
        assert!(!page.text.contains("Garissa"), "{path}");
    }
    let own = base(&second);
    for (path, fields) in [
        (format!("{a}/invitations"), vec![("email", "x@wajir.example"), ("role", "owner")]),
        (format!("{a}/invitations/{invitation}/revoke"), vec![]),
        (format!("{a}/members/{user}"), vec![("role", "member")]),
        (format!("{a}/members/{user}/remove"), vec![]),
        (format!("{a}/api-keys"), vec![("name", "Mine"), ("role", "admin")]),
        (format!("{a}/api-keys/{key}/revoke"), vec![]),
        (format!("{a}/telemetry"), vec![("endpoint", "https://otlp.example.com"), ("headers", "")]),
        (format!("{a}/telemetry/delete"), vec![]),
        // Their own agency with the other's ids.
        (format!("{own}/invitations/{invitation}/revoke"), vec![]),
        (format!("{own}/members/{user}"), vec![("role", "member")]),
        (format!("{own}/members/{user}/remove"), vec![]),
        (format!("{own}/api-keys/{key}/revoke"), vec![]),
    ] {
        let refused = submit(intruder, &path, &fields).await;
        assert_eq!(refused.status(), 404, "{path}");
        assert!(!Page::read(refused).await.text.contains("Garissa"), "{path}");
    }
    let keys = first.agent.json(&format!("/api/v1/agencies/{}/api-keys", first.agency)).await;
    assert!(keys[0]["revoked_at"].is_null());
    assert_eq!(
        first
            .agent
            .json(&format!("/api/v1/agencies/{}/invitations", first.agency))
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
    app.stop().await;
}
