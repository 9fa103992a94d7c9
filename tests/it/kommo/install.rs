//! Installing from the Kommo Marketplace, claiming the install, and uninstalling.

use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use reqwest::Method;
use sha2::Sha256;

use super::{ACME, CLIENT_ID, CLIENT_SECRET, World};
use crate::on_both_engines;
use crate::pipeline::eventually;
use crate::support::{Agent, Engine, problem};

on_both_engines!(
    a_marketplace_install_is_answered_fast_then_claimed,
    an_uninstall_revokes_the_connection_once_and_forgeries_change_nothing,
    a_replayed_uninstall_leaves_a_newer_connection_alone,
    a_stranger_who_knows_the_account_id_sees_and_claims_nothing,
);

const WAIT: Duration = Duration::from_secs(10);

/// Whether the Kommo account's (latest) marketplace install has this status.
async fn install_status(world: &World, status: &str) -> bool {
    let found: Option<String> = pipepay::on_db!(&world.app.db, pool =>
        sqlx::query_scalar("SELECT status FROM kommo_installs WHERE account_id = $1 ORDER BY created_at DESC LIMIT 1")
            .bind(ACME).fetch_optional(pool).await)
    .unwrap();
    found.as_deref() == Some(status)
}

async fn a_marketplace_install_is_answered_fast_then_claimed(engine: Engine) {
    let world = World::new(engine).await;
    // Kommo's server calls the redirect URI itself: no cookies, no state, 3 seconds.
    let started = Instant::now();
    let answer = reqwest::get(world.fake.marketplace_install_url(ACME)).await.unwrap();
    assert_eq!(answer.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(3));

    // The code is exchanged in the background; the install then waits to be claimed.
    eventually(WAIT, "the install became claimable", || install_status(&world, "ready")).await;
    assert_eq!(world.fake.code_exchanges(ACME), 1);

    // Anonymous visitors are sent to log in first.
    let anonymous = world.app.anonymous();
    let redirect =
        anonymous.http.get(world.app.url(&format!("/kommo/claim?account_id={ACME}"))).send().await.unwrap();
    assert_eq!(redirect.status(), 303);
    assert!(redirect.headers()["location"].to_str().unwrap().starts_with("/login?next="));

    // The admin lands on the claim page, picks the client account, confirms in Kommo.
    let page = world.owner.agent.get(&format!("/kommo/claim?account_id={ACME}")).await.text().await.unwrap();
    assert!(!page.contains("acme"), "nothing about the install before the consent: {page}");
    let choice = format!("{}|{}", world.owner.agency, world.client);
    let posted = post_claim(&world, &world.owner.agent, &page, &choice).await;
    assert_eq!(posted.status(), 303);
    let consent = url::Url::parse(posted.headers()["location"].to_str().unwrap()).unwrap();
    let state = consent.query_pairs().find(|(k, _)| k == "state").unwrap().1.into_owned();
    let back = world.owner.agent.http.get(world.fake.authorize(ACME, Some(&state))).send().await.unwrap();
    assert_eq!(back.status(), 200);
    assert_eq!(world.connection(&world.client).await["health"], "active");
    assert!(install_status(&world, "claimed").await, "the consent claimed the install");

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

async fn a_stranger_who_knows_the_account_id_sees_and_claims_nothing(engine: Engine) {
    let world = World::new(engine).await;
    assert_eq!(world.fake.install_from_marketplace(ACME).await, 200);
    eventually(WAIT, "the install became claimable", || install_status(&world, "ready")).await;

    // An admin of another agency, who knows only the Kommo account id.
    let stranger = world.app.sign_up("curious@elsewhere.example", "Elsewhere").await;
    let (theirs, _) = world.app.add_client(&stranger.agent, &stranger.agency, "Not Acme").await;
    problem(stranger.agent.get(&format!("/api/v1/kommo/installs/{ACME}")).await, 404).await;
    let page = stranger.agent.get(&format!("/kommo/claim?account_id={ACME}")).await;
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(!page.contains("acme") && !page.contains(&ACME.to_string()), "{page}");

    // Posting the claim only leads to Kommo's consent, which needs an admin of that account.
    let choice = format!("{}|{theirs}", stranger.agency);
    let posted = post_claim(&world, &stranger.agent, &page, &choice).await;
    assert_eq!(posted.status(), 303);
    assert!(posted.headers()["location"].to_str().unwrap().starts_with(&world.fake.auth_url()));
    assert!(install_status(&world, "ready").await, "still unclaimed");
    let connected: i64 = pipepay::on_db!(&world.app.db, pool =>
        sqlx::query_scalar("SELECT COUNT(*) FROM kommo_connections").fetch_one(pool).await)
    .unwrap();
    assert_eq!(connected, 0);

    // The claim names the agency in its body: another agency's client account is not found,
    // whatever the form says, and nothing is started for it.
    let theirs_not = format!("{}|{}", world.owner.agency, world.client);
    let refused = post_claim(&world, &stranger.agent, &page, &theirs_not).await;
    assert_eq!(refused.status(), 404);
    assert!(refused.text().await.unwrap().contains("<html"), "the HTML 404");
    // Logged out, the post leads to the log-in page, as every form does.
    let anonymous = world.app.anonymous();
    let logged_out = anonymous
        .http
        .post(world.app.url("/kommo/claim"))
        .form(&[("csrf", "whatever"), ("client", theirs_not.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(logged_out.status(), 303);
    assert!(logged_out.headers()["location"].to_str().unwrap().starts_with("/login?next="));
    world.app.stop().await;
}

/// Picks `choice` (`agency|client`) on the claim page `page` as `agent` would, with its CSRF token.
async fn post_claim(world: &World, agent: &Agent, page: &str, choice: &str) -> reqwest::Response {
    let csrf = page.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap();
    agent
        .http
        .post(world.app.url("/kommo/claim"))
        .form(&[("csrf", csrf), ("client", choice)])
        .send()
        .await
        .unwrap()
}
