//! Installing from the Kommo Marketplace, claiming the install, and uninstalling.

use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use reqwest::Method;
use sha2::Sha256;

use super::{ACME, CLIENT_ID, CLIENT_SECRET, World};
use crate::on_both_engines;
use crate::support::{Engine, problem};

on_both_engines!(
    a_marketplace_install_is_answered_fast_then_claimed,
    an_uninstall_revokes_the_connection_once_and_forgeries_change_nothing,
    a_replayed_uninstall_leaves_a_newer_connection_alone,
);

async fn a_marketplace_install_is_answered_fast_then_claimed(engine: Engine) {
    let world = World::new(engine).await;
    // Kommo's server calls the redirect URI itself: no cookies, no state, 3 seconds.
    let started = Instant::now();
    let answer = reqwest::get(world.fake.marketplace_install_url(ACME)).await.unwrap();
    assert_eq!(answer.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(3));

    // The code is exchanged in the background; the install then waits to be claimed.
    let path = format!("/api/v1/kommo/installs/{ACME}");
    let mut pending = None;
    for _ in 0..100 {
        let response = world.owner.agent.get(&path).await;
        if response.status() == 200 {
            pending = Some(response.json::<serde_json::Value>().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pending = pending.expect("the install became claimable");
    assert_eq!(pending["host"], "acme.kommo.com");
    assert_eq!(world.fake.code_exchanges(ACME), 1);

    // Anonymous visitors are sent to log in first.
    let anonymous = world.app.anonymous();
    let redirect =
        anonymous.http.get(world.app.url(&format!("/kommo/claim?account_id={ACME}"))).send().await.unwrap();
    assert_eq!(redirect.status(), 303);
    assert!(redirect.headers()["location"].to_str().unwrap().starts_with("/login?next="));

    // The admin lands on the claim page, picks the client account, confirms in Kommo.
    let page = world.owner.agent.get(&format!("/kommo/claim?account_id={ACME}")).await.text().await.unwrap();
    assert!(page.contains("acme.kommo.com"), "{page}");
    let csrf = page.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let choice = format!("{}|{}", world.owner.agency, world.client);
    let posted = world
        .owner
        .agent
        .http
        .post(world.app.url("/kommo/claim"))
        .form(&[("csrf", csrf.as_str()), ("client", choice.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 303);
    let consent = url::Url::parse(posted.headers()["location"].to_str().unwrap()).unwrap();
    let state = consent.query_pairs().find(|(k, _)| k == "state").unwrap().1.into_owned();
    let back = world.owner.agent.http.get(world.fake.authorize(ACME, Some(&state))).send().await.unwrap();
    assert_eq!(back.status(), 200);
    assert_eq!(world.connection(&world.client).await["health"], "active");
    problem(world.owner.agent.get(&path).await, 404).await;

    // A form without the right token does nothing.
    let forged = world
        .owner
        .agent
        .http
        .post(world.app.url("/kommo/claim"))
        .form(&[("csrf", "guess"), ("client", choice.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    world.app.stop().await;
}

fn signature(account: i64, secret: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{CLIENT_ID}|{account}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

async fn an_uninstall_revokes_the_connection_once_and_forgeries_change_nothing(engine: Engine) {
    let world = World::new(engine).await;
    world.connect(&world.client, ACME).await;
    let hook = |client_uuid: &str, account: i64, signature: &str| {
        world.app.url(&format!(
            "/oauth/kommo/uninstall?client_uuid={client_uuid}&account_id={account}&signature={signature}"
        ))
    };
    let forgeries = [
        hook(CLIENT_ID, ACME, &signature(ACME, "not-the-secret")),
        hook(CLIENT_ID, ACME, &signature(ACME + 1, CLIENT_SECRET)),
        hook("someone-elses-integration", ACME, &signature(ACME, CLIENT_SECRET)),
        hook(CLIENT_ID, ACME, "zz"),
    ];
    for forged in forgeries {
        assert_eq!(reqwest::get(forged).await.unwrap().status(), 403);
    }
    assert_eq!(world.connection(&world.client).await["health"], "active", "forgeries changed nothing");

    // An uninstall ends the tokens at Kommo before it notifies (kommo.md §2).
    world.fake.revoke_all(ACME);
    let genuine = hook(CLIENT_ID, ACME, &signature(ACME, CLIENT_SECRET));
    for _ in 0..2 {
        assert_eq!(reqwest::get(&genuine).await.unwrap().status(), 200, "idempotent");
    }
    let connection = world.connection(&world.client).await;
    assert_eq!(connection["health"], "revoked");
    assert!(connection["health_reason"].as_str().unwrap().contains("uninstalled"));
    let (access, refresh): (Option<String>, Option<String>) = pipepay::on_db!(&world.app.db, pool =>
        sqlx::query_as("SELECT access_token, refresh_token FROM kommo_connections").fetch_one(pool).await)
    .unwrap();
    assert!(access.is_none() && refresh.is_none(), "the tokens are erased");
    let audit = world.owner.agent.json(&format!("/api/v1/agencies/{}/audit", world.owner.agency)).await;
    let uninstalls = audit.as_array().unwrap().iter().filter(|e| e["action"] == "kommo.uninstalled").count();
    assert_eq!(uninstalls, 1);
    // The pipeline pauses: nothing reaches Kommo for this client any more.
    let pipelines = world
        .owner
        .agent
        .send(Method::GET, &world.client_path(&world.client, "/kommo/pipelines"), None)
        .await;
    let body = problem(pipelines, 409).await;
    assert!(body["detail"].as_str().unwrap().contains("revoked"), "{body}");
    world.app.stop().await;
}

async fn a_replayed_uninstall_leaves_a_newer_connection_alone(engine: Engine) {
    let world = World::new(engine).await;
    assert_eq!(world.connect(&world.client, ACME).await.0, 200);
    let hook_url = world.app.url("/oauth/kommo/uninstall");
    assert_eq!(world.fake.uninstall(ACME, &hook_url).await, 200);
    assert_eq!(world.connection(&world.client).await["health"], "revoked");

    // The admin installs again; someone replays the notification they captured.
    assert_eq!(world.connect(&world.client, ACME).await.0, 200);
    let captured = world.app.url(&format!(
        "/oauth/kommo/uninstall?client_uuid={CLIENT_ID}&account_id={ACME}&signature={}",
        signature(ACME, CLIENT_SECRET)
    ));
    assert_eq!(reqwest::get(&captured).await.unwrap().status(), 200);
    let connection = world.connection(&world.client).await;
    assert_eq!(connection["health"], "active", "{connection}");
    let pipelines = world.owner.agent.get(&world.client_path(&world.client, "/kommo/pipelines")).await;
    assert_eq!(pipelines.status(), 200, "the tokens were kept");

    // Kommo cannot be asked: nothing is revoked on the notification's word alone.
    world.fake.fail_next_on(ACME, "GET", "/api/v4/account", crate::fakes::kommo::Fault::ServerError);
    problem(reqwest::get(&captured).await.unwrap(), 502).await;
    assert_eq!(world.connection(&world.client).await["health"], "active");

    // A real uninstall still revokes.
    assert_eq!(world.fake.uninstall(ACME, &hook_url).await, 200);
    assert_eq!(world.connection(&world.client).await["health"], "revoked");
    let audit = world.owner.agent.json(&format!("/api/v1/agencies/{}/audit", world.owner.agency)).await;
    let uninstalls = audit.as_array().unwrap().iter().filter(|e| e["action"] == "kommo.uninstalled").count();
    assert_eq!(uninstalls, 2);
    world.app.stop().await;
}
