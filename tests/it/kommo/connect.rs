//! Connecting from the app: consent, state, referer and the one-account-one-client rule.

use reqwest::Method;

use super::{ACME, SHOP, World};
use crate::on_both_engines;
use crate::support::{Engine, problem};

on_both_engines!(
    an_agency_connects_its_kommo_account,
    declining_in_kommo_connects_nothing,
    a_replayed_or_foreign_state_is_refused,
    a_referer_outside_the_allowed_hosts_gets_nothing,
    one_kommo_account_belongs_to_one_client_account,
    an_expired_code_is_explained,
    kommo_refusing_the_webhook_leaves_manual_instructions,
    disconnecting_removes_the_webhook_and_the_tokens,
);

async fn an_agency_connects_its_kommo_account(engine: Engine) {
    let world = World::new(engine).await;
    let (status, page) = world.connect(&world.client, ACME).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Kommo connected") && page.contains("acme"), "{page}");

    let connection = world.connection(&world.client).await;
    assert_eq!(connection["account_id"], ACME);
    assert_eq!(connection["host"], "acme.kommo.com");
    assert_eq!(connection["currency"], "KES");
    assert_eq!(connection["health"], "active");
    assert_eq!(connection["webhook"]["status"], "subscribed", "{connection}");

    let urls = world.owner.agent.json(&world.client_path(&world.client, "/webhook-urls")).await;
    let hooks = world.fake.webhooks(ACME);
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    assert_eq!(hooks[0]["destination"], urls["kommo"]);
    let events: Vec<&str> =
        hooks[0]["settings"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(events.contains(&"status_lead") && events.contains(&"add_lead"), "{events:?}");
    assert_eq!(world.fake.code_exchanges(ACME), 1);

    let (access, refresh): (Option<String>, Option<String>) = pipepay::on_db!(&world.app.db, pool =>
        sqlx::query_as("SELECT access_token, refresh_token FROM kommo_connections").fetch_one(pool).await)
    .unwrap();
    assert!(access.unwrap().starts_with("pp1.") && refresh.unwrap().starts_with("pp1."), "tokens are sealed");

    let pipelines = world.owner.agent.json(&world.client_path(&world.client, "/kommo/pipelines")).await;
    let stages: Vec<i64> =
        pipelines[0]["stages"].as_array().unwrap().iter().map(|s| s["id"].as_i64().unwrap()).collect();
    assert!(stages.contains(&7002) && stages.contains(&142) && stages.contains(&143), "{stages:?}");
    let audit = world.owner.agent.json(&format!("/api/v1/agencies/{}/audit", world.owner.agency)).await;
    assert_eq!(audit[0]["action"], "kommo.connected");
    world.app.stop().await;
}

async fn declining_in_kommo_connects_nothing(engine: Engine) {
    let world = World::new(engine).await;
    let state = world.start_connect(&world.client).await;
    let declined = format!(
        "{}?error=access_denied&client_id={}&state={state}",
        world.app.url("/oauth/kommo/callback"),
        super::CLIENT_ID
    );
    let page = world.owner.agent.http.get(declined).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("declined access in Kommo"));
    problem(world.owner.agent.get(&world.client_path(&world.client, "/kommo")).await, 404).await;
    world.app.stop().await;
}

async fn a_replayed_or_foreign_state_is_refused(engine: Engine) {
    let world = World::new(engine).await;
    // Someone else's browser presents this agency's link.
    let state = world.start_connect(&world.client).await;
    let redirect = world.fake.authorize(ACME, Some(&state));
    let stranger = world.app.sign_up("stranger@elsewhere.example", "Elsewhere").await;
    let foreign = stranger.agent.http.get(&redirect).send().await.unwrap();
    assert_eq!(foreign.status(), 403);
    assert!(foreign.text().await.unwrap().contains("another browser session"));

    // The rightful owner then succeeds once; the same link again is refused.
    let state = world.start_connect(&world.client).await;
    let redirect = world.fake.authorize(ACME, Some(&state));
    assert_eq!(world.owner.agent.http.get(&redirect).send().await.unwrap().status(), 200);
    let replay = world.owner.agent.http.get(&redirect).send().await.unwrap();
    assert_eq!(replay.status(), 403);
    assert!(replay.text().await.unwrap().contains("already used or has expired"));
    assert_eq!(world.fake.code_exchanges(ACME), 1, "only the good one reached Kommo");
    world.app.stop().await;
}

async fn a_referer_outside_the_allowed_hosts_gets_nothing(engine: Engine) {
    let world = World::new(engine).await;
    let state = world.start_connect(&world.client).await;
    let redirect = world.fake.authorize(ACME, Some(&state));
    let evil = redirect.replace("referer=acme.kommo.com", "referer=acme.kommo.com.evil.example");
    assert_ne!(evil, redirect);
    let page = world.owner.agent.http.get(evil).send().await.unwrap();
    assert_eq!(page.status(), 403);
    assert!(page.text().await.unwrap().contains("not a Kommo host"));
    assert_eq!(world.fake.code_exchanges(ACME), 0);
    assert!(world.fake.requests(ACME).is_empty(), "nothing was sent anywhere");
    world.app.stop().await;
}

async fn one_kommo_account_belongs_to_one_client_account(engine: Engine) {
    let world = World::new(engine).await;
    assert_eq!(world.connect(&world.client, ACME).await.0, 200);
    let (second, _) = world.app.add_client(&world.owner.agent, &world.owner.agency, "Second client").await;
    let (status, page) = world.connect(&second, ACME).await;
    assert_eq!(status, 409);
    assert!(page.contains("already connected to another client account"), "{page}");
    problem(world.owner.agent.get(&world.client_path(&second, "/kommo")).await, 404).await;
    // Another Kommo account on another host connects fine.
    assert_eq!(world.connect(&second, SHOP).await.0, 200);
    assert_eq!(world.connection(&second).await["host"], "shop.amocrm.ru");
    // Reconnecting the same account to the same client account is allowed.
    assert_eq!(world.connect(&world.client, ACME).await.0, 200);
    world.app.stop().await;
}

async fn an_expired_code_is_explained(engine: Engine) {
    let world = World::new(engine).await;
    let state = world.start_connect(&world.client).await;
    let redirect = world.fake.authorize(ACME, Some(&state));
    world.fake.age_codes(std::time::Duration::from_secs(21 * 60));
    let page = world.owner.agent.http.get(redirect).send().await.unwrap();
    assert_eq!(page.status(), 422);
    assert!(page.text().await.unwrap().contains("Kommo refused the authorisation"));
    world.app.stop().await;
}

async fn kommo_refusing_the_webhook_leaves_manual_instructions(engine: Engine) {
    let world = World::new(engine).await;
    world.fake.refuse_webhook_api(ACME, 403, "Available on Advanced, Pro and Enterprise plans");
    let (status, page) = world.connect(&world.client, ACME).await;
    assert_eq!(status, 200);
    assert!(page.contains("by hand"), "{page}");
    let connection = world.connection(&world.client).await;
    assert_eq!(connection["webhook"]["status"], "manual");
    assert!(connection["webhook"]["detail"].as_str().unwrap().contains("403"), "{connection}");
    let setup = &connection["webhook"]["manual_setup"];
    let urls = world.owner.agent.json(&world.client_path(&world.client, "/webhook-urls")).await;
    assert_eq!(setup["url"], urls["kommo"]);
    assert!(setup["steps"].as_array().unwrap().len() >= 3);
    world.app.stop().await;
}

async fn disconnecting_removes_the_webhook_and_the_tokens(engine: Engine) {
    let world = World::new(engine).await;
    world.connect(&world.client, ACME).await;
    assert_eq!(world.fake.webhooks(ACME).len(), 1);
    world.owner.agent.expect(Method::DELETE, &world.client_path(&world.client, "/kommo"), None, 204).await;
    assert!(world.fake.webhooks(ACME).is_empty());
    let rows: i64 = pipepay::on_db!(&world.app.db, pool =>
        sqlx::query_scalar("SELECT COUNT(*) FROM kommo_connections").fetch_one(pool).await)
    .unwrap();
    assert_eq!(rows, 0);
    world.app.stop().await;
}
