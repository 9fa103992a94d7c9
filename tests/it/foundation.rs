//! The foundation: probes, problem+json for every error, request ids and security headers.

use std::time::Duration;

use axum::Json;
use axum::routing::post;
use pipepay::http;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::on_both_engines;
use crate::support::{Engine, TestApp, cli, problem};

on_both_engines!(
    an_operator_probes_health_and_readiness,
    unknown_paths_and_methods_answer_problem_json,
    an_oversized_body_is_refused_with_413,
    request_ids_are_kept_or_made,
    every_answer_carries_security_headers,
);

async fn an_operator_probes_health_and_readiness(engine: Engine) {
    let app = TestApp::spawn(engine).await;

    let health = app.get("/healthz").await;
    assert_eq!(health.status(), 200);
    assert_eq!(health.json::<Value>().await.unwrap(), json!({ "status": "ok" }));

    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 200);
    let expected = match engine {
        Engine::Sqlite => "sqlite",
        Engine::Postgres => "postgres",
    };
    assert_eq!(ready.json::<Value>().await.unwrap(), json!({ "status": "ready", "database": expected }));
    app.stop().await;
}

async fn unknown_paths_and_methods_answer_problem_json(engine: Engine) {
    let app = TestApp::spawn(engine).await;

    let missing = app.get("/no/such/page?x=1").await;
    let request_id = missing.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body = problem(missing, 404).await;
    assert_eq!(body["type"], "about:blank");
    assert_eq!(body["request_id"], request_id.as_str());

    let wrong_method = app.http.delete(app.url("/healthz")).send().await.unwrap();
    assert_eq!(wrong_method.headers()["allow"], "GET,HEAD");
    problem(wrong_method, 405).await;
    app.stop().await;
}

async fn an_oversized_body_is_refused_with_413(engine: Engine) {
    let app = TestApp::spawn_with(engine, &["--body-limit", "2048"]).await;
    let response = app.http.post(app.url("/healthz")).body(vec![b'x'; 4096]).send().await.unwrap();
    let body = problem(response, 413).await;
    assert!(body["detail"].as_str().unwrap().contains("larger"), "{body}");
    app.stop().await;
}

async fn request_ids_are_kept_or_made(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let kept = app.http.get(app.url("/healthz")).header("x-request-id", "trace-me-42").send().await.unwrap();
    assert_eq!(kept.headers()["x-request-id"], "trace-me-42");

    let made = app.get("/healthz").await;
    let id = made.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "a fresh request id is a UUID, got {id}");
    app.stop().await;
}

async fn every_answer_carries_security_headers(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    for response in [app.get("/healthz").await, app.get("/missing").await] {
        let headers = response.headers();
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["x-frame-options"], "DENY");
        assert_eq!(headers["referrer-policy"], "no-referrer");
        assert!(headers["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));
        assert!(headers.get("strict-transport-security").is_none(), "no HSTS over plain http");
    }
    app.stop().await;
}

/// Extractor rejections and unsupported media types come back as problem+json too. No JSON
/// endpoint exists in the foundation itself, so this mounts one behind the same middleware.
#[tokio::test]
async fn extractor_rejections_are_problem_json() {
    let config = cli(&["--public-url", "https://pay.example.com"]).config;
    let routes = axum::Router::new().route("/echo", post(|Json(v): Json<Value>| async move { Json(v) }));
    let router = http::with_middleware(routes, &config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(http::serve(
        listener,
        router,
        async move {
            let _ = stopped.await;
        },
        Duration::from_secs(1),
    ));
    pipepay::install_tls_provider();
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/echo");

    let unsupported = client.post(&url).header("content-type", "text/plain").body("{}").send().await.unwrap();
    let body = problem(unsupported, 415).await;
    assert!(body["detail"].as_str().unwrap().contains("application/json"), "{body}");

    let malformed =
        client.post(&url).header("content-type", "application/json").body("{oops").send().await.unwrap();
    let body = problem(malformed, 400).await;
    assert!(body["detail"].as_str().unwrap().to_lowercase().contains("json"), "{body}");

    let fine = client.post(&url).json(&json!({"a": 1})).send().await.unwrap();
    assert_eq!(fine.status(), 200);
    assert!(
        fine.headers()["strict-transport-security"].to_str().unwrap().contains("max-age"),
        "HSTS once the public URL is https"
    );

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
