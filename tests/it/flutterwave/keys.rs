//! Pasting Flutterwave keys: checked with Flutterwave before anything is saved, shown masked,
//! and the dashboard settings spelled out.

use reqwest::Method;
use serde_json::json;

use crate::fakes::flutterwave::Fault;
use crate::on_both_engines;
use crate::support::{Engine, TestApp, problem};

on_both_engines!(a_refused_or_unchecked_key_is_not_saved, pipepay_can_make_the_webhook_hash);

const KEY: &str = "FLWSECK_TEST-abcdefabcdefabcdefabcdefabcdef12-X";

async fn a_refused_or_unchecked_key_is_not_saved(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let owner = app.sign_up("keys@agency.gh", "Keys").await;
    let (client, _) = app.add_client(&owner.agent, &owner.agency, "Keys Ltd").await;
    let path = format!("/api/v1/agencies/{}/clients/{client}/flutterwave-keys", owner.agency);
    let body = json!({"secret_key": KEY, "webhook_hash": "a-long-enough-hash-value"});

    // Well-formed, but Flutterwave does not know it.
    let refused = problem(owner.agent.put(&path, body.clone()).await, 422).await;
    assert_eq!(refused["errors"][0]["field"], "secret_key");
    assert!(refused["errors"][0]["message"].as_str().unwrap().contains("Flutterwave refused"));
    assert!(!refused.to_string().contains(KEY));
    problem(owner.agent.get(&path).await, 404).await;

    // Flutterwave is down: nothing saved, and the agency is told to try again.
    app.flutterwave_merchant(KEY, "a-long-enough-hash-value");
    app.flw.fail_next(KEY, vec![Fault::ServerError]);
    let down = problem(owner.agent.put(&path, body.clone()).await, 502).await;
    assert!(down["detail"].as_str().unwrap().contains("nothing was saved"));
    problem(owner.agent.get(&path).await, 404).await;

    let saved = owner.agent.expect(Method::PUT, &path, Some(body), 200).await;
    assert_eq!(saved["mode"], "test");
    assert_eq!(saved["secret_key"], "••••12-X");
    let urls =
        owner.agent.json(&format!("/api/v1/agencies/{}/clients/{client}/webhook-urls", owner.agency)).await;
    assert_eq!(saved["dashboard"]["webhook_url"], urls["flutterwave"]);
    assert!(saved["dashboard"]["secret_hash"].is_null(), "the hash the agency chose is not echoed");
    let steps = saved["dashboard"]["steps"].to_string();
    assert!(steps.contains("retries"), "{steps}");
    let audit =
        owner.agent.json(&format!("/api/v1/agencies/{}/audit?client_id={client}", owner.agency)).await;
    assert_eq!(audit[0]["action"], "client.flutterwave_keys_set");
    app.stop().await;
}

async fn pipepay_can_make_the_webhook_hash(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let owner = app.sign_up("hash@agency.gh", "Hash").await;
    let (client, _) = app.add_client(&owner.agent, &owner.agency, "Hash Ltd").await;
    let path = format!("/api/v1/agencies/{}/clients/{client}/flutterwave-keys", owner.agency);
    app.flutterwave_merchant(KEY, "whatever-the-dashboard-says");
    let saved = owner.agent.expect(Method::PUT, &path, Some(json!({"secret_key": KEY})), 200).await;
    let hash = saved["dashboard"]["secret_hash"].as_str().expect("a generated hash, shown once").to_owned();
    assert!(hash.len() >= 40, "{hash}");
    let shown = owner.agent.json(&path).await;
    assert!(!shown.to_string().contains(&hash), "never shown again");
    assert_eq!(shown["webhook_hash"], format!("••••{}", &hash[hash.len() - 4..]));
    app.stop().await;
}
