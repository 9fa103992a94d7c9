//! Bad input: a 4xx problem+json naming the field, and nothing half-written.

use reqwest::Method;
use serde_json::json;

use crate::on_both_engines;
use crate::support::{Engine, TestApp, problem};

on_both_engines!(
    bad_bodies_get_problems_naming_the_field,
    invalid_settings_change_nothing,
    settings_round_trip
);

async fn bad_bodies_get_problems_naming_the_field(engine: Engine) {
    let app = TestApp::spawn_with(engine, &["--body-limit", "4096"]).await;
    let owner = app.sign_up("fatou@agency.sn", "Dakar").await;
    let clients = format!("/api/v1/agencies/{}/clients", owner.agency);
    let raw = |body: &'static str, content_type: &'static str| {
        let agent = owner.agent.clone();
        let url = format!("{}{clients}", agent.base);
        async move {
            agent
                .http
                .post(url)
                .header("content-type", content_type)
                .header("x-csrf-token", agent.csrf.clone().unwrap())
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };
    let body = problem(raw("{\"name\": ", "application/json").await, 400).await;
    assert!(body["detail"].as_str().unwrap().contains("JSON"));
    problem(raw("name=x", "application/x-www-form-urlencoded").await, 415).await;

    let cases = [
        (json!({"name": 42}), "name"),
        (json!({}), "name"),
        (json!({"name": "Shop", "colour": "red"}), "colour"),
        (json!({"name": "x".repeat(200)}), "name"),
        (json!({"name": "   "}), "name"),
    ];
    for (body, field) in cases {
        let answer = problem(owner.agent.post(&clients, body.clone()).await, 422).await;
        assert_eq!(answer["errors"][0]["field"], field, "{body}: {answer}");
    }
    let huge = json!({"name": "y".repeat(10_000)});
    problem(owner.agent.post(&clients, huge).await, 413).await;
    assert!(owner.agent.json(&clients).await.as_array().unwrap().is_empty(), "nothing was created");
    app.stop().await;
}

async fn invalid_settings_change_nothing(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let owner = app.sign_up("kwame@agency.gh", "Kumasi").await;
    let (client, _) = app.add_client(&owner.agent, &owner.agency, "Kumasi Shop").await;
    let path = format!("/api/v1/agencies/{}/clients/{client}/settings", owner.agency);
    let before = owner.agent.json(&path).await;
    let audit = format!("/api/v1/agencies/{}/audit", owner.agency);
    let audit_before = owner.agent.json(&audit).await;

    let bad = json!({
        "display_name": "Kumasi Shop",
        "trigger": {"pipeline_id": 7001, "stage_ids": [142]},
        "currency": "GHS",
        "tax": {"rate_percent": "-3"},
        "notes": {"link_created": "Pay here"},
        "checkout": {"payment_options": ["card", "bitcoin"]}
    });
    let body = problem(owner.agent.put(&path, bad).await, 422).await;
    let fields: Vec<&str> =
        body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    for expected in
        ["trigger.stage_ids[0]", "tax.rate_percent", "notes.link_created", "checkout.payment_options[1]"]
    {
        assert!(fields.contains(&expected), "{expected} in {fields:?}");
    }
    let wrong_type = json!({"display_name": "Kumasi Shop", "tax": {"rate_percent": "seven"}});
    let body = problem(owner.agent.put(&path, wrong_type).await, 422).await;
    assert_eq!(body["errors"][0]["field"], "tax.rate_percent");

    assert_eq!(owner.agent.json(&path).await, before);
    assert_eq!(owner.agent.json(&audit).await, audit_before, "no audit entry for a refused change");
    app.stop().await;
}

async fn settings_round_trip(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let owner = app.sign_up("njeri@agency.ke", "Nairobi").await;
    let (client, _) = app.add_client(&owner.agent, &owner.agency, "Mombasa Traders").await;
    let path = format!("/api/v1/agencies/{}/clients/{client}/settings", owner.agency);
    let settings = json!({
        "display_name": "Mombasa Traders Ltd",
        "trigger": {"pipeline_id": 7001, "stage_ids": [7002]},
        "won_stage_id": 7010,
        "currency": "kes",
        "currency_field_id": 555,
        "tax": {"rate_percent": 16, "included_in_price": false},
        "link_field_id": 556,
        "notes": {"link_created": "Lipa hapa: {link} ({amount} {currency})"},
        "checkout": {"payment_options": ["mpesa", "card"], "session_duration_minutes": 120,
                     "redirect_url": "https://mombasa.example/asante", "title": "Mombasa Traders",
                     "logo_url": "https://mombasa.example/logo.png"}
    });
    let saved = owner.agent.expect(Method::PUT, &path, Some(settings), 200).await;
    assert_eq!(saved["currency"], "KES");
    assert_eq!(saved["tax"]["rate_percent"], "16", "rates come back as exact decimal strings");
    assert_eq!(owner.agent.json(&path).await, saved);
    let client_view = owner.agent.json(&format!("/api/v1/agencies/{}/clients/{client}", owner.agency)).await;
    assert_eq!(client_view["name"], "Mombasa Traders Ltd");
    let audit =
        owner.agent.json(&format!("/api/v1/agencies/{}/audit?client_id={client}", owner.agency)).await;
    assert_eq!(audit[0]["action"], "client.settings_changed");
    let fields = audit[0]["detail"]["fields"].as_array().unwrap();
    assert!(fields.contains(&json!("trigger")) && fields.contains(&json!("tax")), "{fields:?}");
    app.stop().await;
}
