//! The token lifecycle: refresh before expiry, once on a 401, one refresh at a time across
//! instances, and a clear "connect again" when Kommo refuses.

use std::sync::Arc;

use pipepay::ids::ClientId;
use pipepay::kommo::KommoError;
use pipepay::kommo::tokens::Session;
use reqwest::Method;

use super::{ACME, World};
use crate::on_both_engines;
use crate::support::Engine;

on_both_engines!(
    fifty_callers_needing_a_refresh_cause_one,
    short_lived_tokens_are_not_refreshed_while_fresh,
    a_401_refreshes_once_and_retries,
    a_revoked_grant_asks_for_reauthorisation,
    idle_connections_are_refreshed_on_schedule,
    sessions_reuse_their_token_and_never_spend_a_refresh_token_twice,
);

fn client_id(world: &World) -> ClientId {
    ClientId(world.client.parse().unwrap())
}

async fn fifty_callers_needing_a_refresh_cause_one(engine: Engine) {
    let world = World::new(engine).await;
    world.connect(&world.client, ACME).await;
    // The access token is about to expire: every caller wants a refresh.
    let day_ago = pipepay::clock::now_ms() - 86_400_000;
    pipepay::on_db!(&world.app.db, pool => sqlx::query(
        "UPDATE kommo_connections SET refreshed_at = $1, access_expires_at = $2")
        .bind(day_ago).bind(pipepay::clock::now_ms() + 60_000).execute(pool).await.map(|_| ()))
    .unwrap();
    let refreshes_before = world.fake.refresh_count(ACME);
    // Two pipepay instances on one database, 25 callers each.
    let instances = [world.app.kommo.clone(), Arc::new(world.app.kommo_instance())];
    let client = client_id(&world);
    let mut callers = Vec::new();
    for i in 0..50 {
        let kommo = instances[i % 2].clone();
        callers.push(tokio::spawn(async move { kommo.token(client).await.map(|t| t.version) }));
    }
    let mut versions = Vec::new();
    for caller in callers {
        versions.push(caller.await.unwrap().expect("every caller gets a token"));
    }
    assert_eq!(world.fake.refresh_count(ACME) - refreshes_before, 1, "exactly one refresh reached Kommo");
    assert!(versions.iter().all(|v| *v == versions[0]), "everyone uses the one new pair: {versions:?}");
    world.app.stop().await;
}

async fn a_401_refreshes_once_and_retries(engine: Engine) {
    let world = World::new(engine).await;
    world.connect(&world.client, ACME).await;
    world.fake.expire_access_tokens(ACME);
    let kommo = world.app.kommo.clone();
    let pipelines = kommo.pipelines(client_id(&world)).await.expect("the call succeeds after one refresh");
    assert!(!pipelines.is_empty());
    assert_eq!(world.fake.refresh_count(ACME), 1);
    assert_eq!(world.connection(&world.client).await["health"], "active");
    world.app.stop().await;
}

async fn a_revoked_grant_asks_for_reauthorisation(engine: Engine) {
    let world = World::new(engine).await;
    world.connect(&world.client, ACME).await;
    world.fake.revoke_all(ACME);
    let kommo = world.app.kommo.clone();
    let outcome = kommo.pipelines(client_id(&world)).await;
    assert!(matches!(outcome, Err(KommoError::NeedsReauth(_))), "{outcome:?}");
    let connection = world.connection(&world.client).await;
    assert_eq!(connection["health"], "needs_reauth");
    assert!(connection["health_reason"].as_str().unwrap().contains("connect Kommo again"));
    // Reconnecting heals it.
    world.connect(&world.client, ACME).await;
    assert_eq!(world.connection(&world.client).await["health"], "active");
    world.app.stop().await;
}

async fn idle_connections_are_refreshed_on_schedule(engine: Engine) {
    let world = World::new(engine).await;
    world.connect(&world.client, ACME).await;
    let kommo = world.app.kommo.clone();
    assert_eq!(
        kommo.refresh_idle(std::time::Duration::from_secs(3600)).await.unwrap(),
        0,
        "fresh: nothing due"
    );
    assert_eq!(kommo.refresh_idle(std::time::Duration::ZERO).await.unwrap(), 1);
    assert_eq!(world.fake.refresh_count(ACME), 1);
    world.app.stop().await;
}

async fn short_lived_tokens_are_not_refreshed_while_fresh(engine: Engine) {
    let world = World::new(engine).await;
    world.fake.set_access_ttl(60);
    world.connect(&world.client, ACME).await;
    let kommo = world.app.kommo.clone();
    for _ in 0..3 {
        kommo.token(client_id(&world)).await.unwrap();
    }
    assert_eq!(world.fake.refresh_count(ACME), 0, "a 60-second token is fresh for its first 30 seconds");
    world.app.stop().await;
}

/// A job attempt holds its token in a session: many calls, one token; after Kommo refuses it,
/// one refresh, and a session of another instance still holding the old token takes the new
/// pair instead of spending the rotated refresh token again.
async fn sessions_reuse_their_token_and_never_spend_a_refresh_token_twice(engine: Engine) {
    let world = World::new(engine).await;
    world.connect(&world.client, ACME).await;
    let client = client_id(&world);
    let (here, there) = (world.app.kommo.clone(), Arc::new(world.app.kommo_instance()));
    let (mine, theirs) = (Session::new(client), Session::new(client));
    const PIPELINES: &str = "/api/v4/leads/pipelines";
    for _ in 0..2 {
        here.call_in(&mine, Method::GET, PIPELINES, None).await.expect("a fresh token works");
    }
    // Another instance paces its own calls to the account: give it a gap, as a real one has.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    there.call_in(&theirs, Method::GET, PIPELINES, None).await.unwrap();
    assert_eq!(world.fake.refresh_count(ACME), 0, "a fresh token is not refreshed");

    world.fake.expire_access_tokens(ACME);
    for _ in 0..2 {
        here.call_in(&mine, Method::GET, PIPELINES, None).await.expect("one refresh, then the call");
    }
    assert_eq!(world.fake.refresh_count(ACME), 1, "the session keeps the new token");
    there
        .call_in(&theirs, Method::GET, PIPELINES, None)
        .await
        .expect("the other instance takes the new pair");
    assert_eq!(world.fake.refresh_count(ACME), 1, "the rotated refresh token was spent once");
    assert_eq!(world.connection(&world.client).await["health"], "active");
    world.app.stop().await;
}
