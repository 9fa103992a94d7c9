//! Demo mode (issue #15): `--demo` runs a sandbox Kommo and Flutterwave inside pipepay, so a
//! newcomer can watch a deal get paid without real accounts; refused in production, and the
//! sandbox does not exist without it.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::on_both_engines;
use crate::pipeline::eventually;
use crate::support::process::{Running, pipepay};
use crate::support::{Engine, TestApp, TestDb, cli};
use crate::web::{Page, get, location, submit};

on_both_engines!(a_newcomer_watches_a_sandbox_deal_get_paid, without_demo_mode_there_is_no_sandbox);

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn demo_mode_is_refused_in_production() {
    let db = TestDb::new(Engine::Sqlite).await;
    let keys = pipepay::vault::MasterKeys::generate_entry("prod");
    let config = cli(&[
        "--database-url",
        &db.url,
        "--listen",
        "127.0.0.1:0",
        "--env",
        "production",
        "--master-keys",
        &keys,
        "--demo",
    ])
    .config;
    let refused = match pipepay::app::Application::build(config).await {
        Ok(_) => panic!("demo mode started in production"),
        Err(error) => format!("{error:#}"),
    };
    assert!(refused.contains("PIPEPAY_DEMO") && refused.contains("PIPEPAY_ENV=production"), "{refused}");
}

async fn without_demo_mode_there_is_no_sandbox(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    for path in ["/sandbox/kommo", "/sandbox/flutterwave", "/sandbox/kommo/oauth"] {
        assert_eq!(app.get(path).await.status(), 404, "{path}");
    }
    app.stop().await;
}

/// The deal's article on the sandbox board: (stage, links in its notes).
async fn deal_on_board(agent: &crate::support::Agent, deal: &str) -> (String, Vec<String>) {
    let board = get(agent, "/sandbox/kommo").await;
    let stage = board.attr(&format!("#{deal}"), "data-stage").unwrap_or_default();
    let selector = scraper::Selector::parse(&format!("#{deal} .note a")).unwrap();
    let links =
        board.html.select(&selector).filter_map(|a| a.value().attr("href").map(str::to_owned)).collect();
    (stage, links)
}

async fn a_newcomer_watches_a_sandbox_deal_get_paid(engine: Engine) {
    let app = TestApp::spawn_with(engine, &["--demo"]).await;
    let owner = app.sign_up("newcomer@agency.co.ke", "Demo Agency").await;
    let agent = &owner.agent;
    let (client, _) = app.add_client(agent, &owner.agency, "Sandbox client").await;
    let page_base = format!("/app/agencies/{}/clients/{client}", owner.agency);

    // Connect: the consent page is the sandbox's, clearly labelled, and "Allow" comes back.
    let overview = get(agent, &page_base).await;
    assert!(overview.all("#kommo-not-configured").is_empty(), "demo mode configures Kommo");
    let started = submit(agent, &format!("{page_base}/kommo/connect"), &[]).await;
    assert_eq!(started.status(), 303);
    let consent_url = url::Url::parse(&location(&started)).unwrap();
    assert_eq!(consent_url.path(), "/sandbox/kommo/oauth");
    let consent = Page::read(agent.http.get(consent_url.clone()).send().await.unwrap()).await;
    assert!(consent.one("#sandbox-banner").contains("SANDBOX Kommo"));
    let state = consent.field("state").unwrap();
    let allowed = agent
        .http
        .post(app.url("/sandbox/kommo/oauth/allow"))
        .form(&[("state", state)])
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 303);
    let landed = agent.http.get(location(&allowed)).send().await.unwrap();
    let landed = landed.text().await.unwrap();
    assert!(landed.contains("Kommo connected"), "{landed}");

    // Keys from the sandbox dashboard; the webhook settings pipepay gives go back there.
    let dashboard = get(agent, "/sandbox/flutterwave").await;
    assert!(dashboard.one("#sandbox-banner").contains("SANDBOX Flutterwave"));
    let secret = dashboard.attr("#secret-key", "value").unwrap();
    let api = format!("/api/v1/agencies/{}/clients/{client}", owner.agency);
    let saved = agent
        .expect(Method::PUT, &format!("{api}/flutterwave-keys"), Some(json!({"secret_key": secret})), 200)
        .await;
    let hook_url = saved["dashboard"]["webhook_url"].as_str().unwrap().to_owned();
    let hash = saved["dashboard"]["secret_hash"].as_str().unwrap().to_owned();
    let set = agent
        .http
        .post(app.url("/sandbox/flutterwave/webhook"))
        .form(&[("url", &hook_url), ("hash", &hash)])
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 303);

    // The trigger stage, from the sandbox's real pipelines.
    let pipelines = agent.json(&format!("{api}/kommo/pipelines")).await;
    let listed = pipelines.to_string();
    assert!(listed.contains("Awaiting payment"), "{listed}");
    let settings =
        json!({"display_name": "Sandbox client", "trigger": {"pipeline_id": 9001, "stage_ids": [9103]}});
    agent.expect(Method::PUT, &format!("{api}/settings"), Some(settings), 200).await;

    // Move a deal on the sandbox board: pipepay posts the link as a note.
    let board = get(agent, "/sandbox/kommo").await;
    let deal = board.attr("article.deal", "id").unwrap();
    let lead = deal.trim_start_matches("deal-");
    let moved = agent
        .http
        .post(app.url(&format!("/sandbox/kommo/deals/{lead}/move")))
        .form(&[("status_id", "9103")])
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status(), 303);
    let started = std::time::Instant::now();
    let link = loop {
        let (_, links) = deal_on_board(agent, &deal).await;
        if let Some(link) = links.into_iter().find(|l| l.contains("/sandbox/flutterwave/pay/")) {
            break link;
        }
        assert!(started.elapsed() < WAIT, "timed out waiting for the payment link as a note on the deal");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // Pay at the sandbox checkout: the deal moves to Closed - won.
    let checkout = Page::read(agent.http.get(&link).send().await.unwrap()).await;
    assert!(checkout.one("#sandbox-banner").contains("SANDBOX Flutterwave"));
    assert!(checkout.one("#amount").contains("KES"), "{}", checkout.text);
    let paid = agent.http.post(&link).send().await.unwrap();
    assert!(paid.status() == 200 || paid.status() == 303, "{}", paid.status());
    eventually(WAIT, "the sandbox deal in Closed - won", || {
        let agent = agent.clone();
        let deal = deal.clone();
        async move { deal_on_board(&agent, &deal).await.0 == "142" }
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn the_binary_says_at_start_up_what_kommo_needs_and_when_it_runs_the_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    let plain = Running::start(dir.path(), &[]).terminate();
    let warning =
        plain.lines().find(|l| l.contains("Kommo is not configured")).unwrap_or_else(|| panic!("{plain}"));
    assert!(
        warning.contains("PIPEPAY_KOMMO_CLIENT_ID") && warning.contains("PIPEPAY_KOMMO_CLIENT_SECRET"),
        "{warning}"
    );

    let demo = Running::start(dir.path(), &[("PIPEPAY_DEMO", "true")]);
    let board = reqwest::get(demo.url("/sandbox/kommo")).await.unwrap();
    assert_eq!(board.status(), 200);
    assert!(board.text().await.unwrap().contains("SANDBOX Kommo"));
    let said = demo.terminate();
    assert!(said.contains("DEMO MODE") && !said.contains("Kommo is not configured"), "{said}");

    let keys = pipepay::vault::MasterKeys::generate_entry("prod");
    let refused = pipepay(
        dir.path(),
        &[("PIPEPAY_DEMO", "true"), ("PIPEPAY_ENV", "production"), ("PIPEPAY_MASTER_KEYS", &keys)],
    )
    .arg("serve")
    .output()
    .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("PIPEPAY_DEMO") && stderr.contains("production"), "{stderr}");
}

/// The sandbox is held to the real services' rules: single-use codes, refresh tokens that work
/// once, Kommo's 401 for a bad token, Flutterwave's error envelope for a bad key.
#[tokio::test]
async fn the_sandbox_keeps_kommo_and_flutterwave_rules() {
    let app = TestApp::spawn_with(Engine::Sqlite, &["--demo"]).await;
    let (client_id, secret) = app.kommo.settings.credentials().unwrap();
    let (client_id, secret) = (client_id.to_owned(), secret.expose().to_owned());
    let http = &app.http;
    let allowed =
        http.post(app.url("/sandbox/kommo/oauth/allow")).form(&[("state", "s1")]).send().await.unwrap();
    let back = url::Url::parse(&location(&allowed)).unwrap();
    assert_eq!(back.path(), "/oauth/kommo/callback");
    let query: std::collections::HashMap<String, String> = back.query_pairs().into_owned().collect();
    assert_eq!(query["referer"], pipepay::sandbox::ACCOUNT_HOST);
    assert_eq!(query["state"], "s1");

    let token_url =
        app.url(&format!("/sandbox/kommo-api/{}/oauth2/access_token", pipepay::sandbox::ACCOUNT_HOST));
    let grant = |body: serde_json::Value| {
        let mut body = body;
        body["client_id"] = json!(client_id);
        body["client_secret"] = json!(secret);
        body["redirect_uri"] = json!(app.url("/oauth/kommo/callback"));
        http.post(&token_url).json(&body).send()
    };
    let code = json!({"grant_type": "authorization_code", "code": query["code"]});
    let first: serde_json::Value = grant(code.clone()).await.unwrap().json().await.unwrap();
    assert_eq!(first["token_type"], "Bearer");
    assert_eq!(grant(code).await.unwrap().status(), 400, "a code works once");

    let refresh = |token: &serde_json::Value| json!({"grant_type": "refresh_token", "refresh_token": token});
    let second = grant(refresh(&first["refresh_token"])).await.unwrap();
    assert_eq!(second.status(), 200);
    let second: serde_json::Value = second.json().await.unwrap();
    assert_ne!(second["refresh_token"], first["refresh_token"], "refresh tokens rotate");
    assert_eq!(grant(refresh(&first["refresh_token"])).await.unwrap().status(), 400, "and work once");

    let account = app.url(&format!("/sandbox/kommo-api/{}/api/v4/account", pipepay::sandbox::ACCOUNT_HOST));
    let access = second["access_token"].as_str().unwrap();
    assert_eq!(http.get(&account).bearer_auth(access).send().await.unwrap().status(), 200);
    assert_eq!(http.get(&account).bearer_auth("forged").send().await.unwrap().status(), 401);
    let missing =
        app.url(&format!("/sandbox/kommo-api/{}/api/v4/leads/424242", pipepay::sandbox::ACCOUNT_HOST));
    assert_eq!(http.get(&missing).bearer_auth(access).send().await.unwrap().status(), 204);

    let banks = http
        .get(app.url("/sandbox/flutterwave-api/v3/banks/NG"))
        .bearer_auth("FLWSECK_TEST-nope-X")
        .send()
        .await
        .unwrap();
    assert_eq!(banks.status(), 401);
    let body: serde_json::Value = banks.json().await.unwrap();
    assert_eq!(body["status"], "error");
    app.stop().await;
}
