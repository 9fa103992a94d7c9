//! What the operator's configuration means for agencies (issue #15): a pipepay without a Kommo
//! integration says so, and what to set, instead of offering a connect button that fails; and
//! the API reference page describes every operation of the OpenAPI document.

use std::collections::BTreeSet;

use reqwest::Method;

use super::{get, submit};
use crate::on_both_engines;
use crate::support::{Engine, TestApp};

on_both_engines!(
    without_kommo_settings_the_connect_page_and_the_api_say_what_to_set,
    the_api_reference_lists_every_operation_and_the_agency_id,
);

async fn without_kommo_settings_the_connect_page_and_the_api_say_what_to_set(engine: Engine) {
    // The default start: no PIPEPAY_KOMMO_CLIENT_ID / PIPEPAY_KOMMO_CLIENT_SECRET.
    let app = TestApp::spawn(engine).await;
    let owner = app.sign_up("operator@agency.co.ke", "Unconfigured Agency").await;
    let (client, _) = app.add_client(&owner.agent, &owner.agency, "Acme").await;
    let base = format!("/app/agencies/{}/clients/{client}", owner.agency);

    let page = get(&owner.agent, &base).await;
    assert_eq!(page.status, 200);
    let note = page.one("#kommo-not-configured");
    assert!(
        note.contains("PIPEPAY_KOMMO_CLIENT_ID") && note.contains("PIPEPAY_KOMMO_CLIENT_SECRET"),
        "{note}"
    );
    assert!(
        page.attr(&format!("form[action=\"{base}/kommo/connect\"]"), "action").is_none(),
        "no connect button"
    );

    // An old tab's form, or a script, gets the same words, never "a service failed".
    let posted = submit(&owner.agent, &format!("{base}/kommo/connect"), &[]).await;
    assert_eq!(posted.status(), 503);
    let text = posted.text().await.unwrap();
    assert!(
        text.contains("Kommo is not configured") && text.contains("PIPEPAY_KOMMO_CLIENT_SECRET"),
        "{text}"
    );
    assert!(!text.contains("depends on failed"), "{text}");

    let problem = owner
        .agent
        .expect(
            Method::POST,
            &format!("/api/v1/agencies/{}/clients/{client}/kommo/connect", owner.agency),
            None,
            503,
        )
        .await;
    assert_eq!(problem["type"], "urn:pipepay:problem:kommo-not-configured");
    assert_eq!(problem["title"], "Kommo is not configured");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("PIPEPAY_KOMMO_CLIENT_ID") && detail.contains("--demo"), "{detail}");

    // The marketplace claim page says the same.
    let claim = get(&owner.agent, "/kommo/claim").await;
    assert_eq!(claim.status, 503);
    assert!(claim.text.contains("PIPEPAY_KOMMO_CLIENT_ID"), "{}", claim.text);
    app.stop().await;
}

async fn the_api_reference_lists_every_operation_and_the_agency_id(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let owner = app.sign_up("reader@agency.co.ke", "Reading Agency").await;
    let document = owner.agent.json("/api/v1/openapi.json").await;
    let mut expected = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            expected.insert((method.to_uppercase(), path.clone()));
        }
    }
    assert!(expected.len() > 30, "the document lists the API: {expected:?}");

    let first = owner.agent.get("/app/api").await;
    assert_eq!(first.status(), 303);
    let page = get(&owner.agent, &format!("/app/agencies/{}/api", owner.agency)).await;
    assert_eq!(page.status, 200);
    assert!(page.csp.as_deref().unwrap().contains("script-src 'self'"), "nothing from a CDN");
    let selector = scraper::Selector::parse("article.operation").unwrap();
    let listed: BTreeSet<(String, String)> = page
        .html
        .select(&selector)
        .map(|op| {
            let attr = |name| op.value().attr(name).unwrap().to_owned();
            (attr("data-method"), attr("data-path"))
        })
        .collect();
    assert_eq!(listed, expected);
    // Tags group the operations; schemas are listed with their fields; auth is spelled out.
    let tags = page.all("section > h2");
    for tag in ["auth", "clients", "kommo", "Schemas"] {
        assert!(tags.iter().any(|t| t == tag), "{tag} in {tags:?}");
    }
    let signup = page.one("#op-post-api-v1-auth-signup");
    assert!(signup.contains("Request body") && signup.contains("SignUpRequest"), "{signup}");
    let clients = page.one("#op-get-api-v1-agencies-agency-clients");
    assert!(clients.contains("API key") && clients.contains("agency"), "{clients}");
    assert!(page.one("#schema-Problem").contains("detail"));
    assert_eq!(page.field("agency-id").or_else(|| page.attr("#agency-id", "value")).unwrap(), owner.agency);

    let keys = get(&owner.agent, &format!("/app/agencies/{}/api-keys", owner.agency)).await;
    assert_eq!(keys.attr("#agency-id", "value").unwrap(), owner.agency);
    assert!(keys.attr("button[data-copy=\"agency-id\"]", "type").is_some());
    app.stop().await;
}
