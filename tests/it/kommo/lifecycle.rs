//! The end of a connection (issue #12): deleting a client account or disconnecting takes the
//! webhook off Kommo first, says so when Kommo cannot be reached (retry, or go ahead anyway),
//! and connecting the Kommo account to another client account leaves one pipepay URL.

use reqwest::Method;

use super::{ACME, SHOP, World};
use crate::fakes::kommo::Fault;
use crate::on_both_engines;
use crate::support::{Engine, problem};
use crate::web::{get, location, submit};

on_both_engines!(
    deleting_a_client_account_takes_its_webhook_off_kommo_first,
    kommo_unreachable_stops_a_delete_until_retried_or_forced,
    kommo_unreachable_stops_a_disconnect_until_retried_or_forced,
    connecting_the_account_elsewhere_leaves_one_pipepay_url_and_third_parties_alone,
    the_web_app_offers_delete_anyway_when_kommo_is_unreachable,
);

const THIRD_PARTY: &str = "https://hooks.zapier.example/catch/123/abc";

fn fail_next_unsubscribe(world: &World, account: i64) {
    world.fake.fail_next_on(account, "DELETE", "/api/v4/webhooks", Fault::ServerError);
}

async fn kommo_url(world: &World, client: &str) -> String {
    let urls = world.owner.agent.json(&world.client_path(client, "/webhook-urls")).await;
    urls["kommo"].as_str().unwrap().to_owned()
}

async fn deleting_a_client_account_takes_its_webhook_off_kommo_first(engine: Engine) {
    let world = World::new(engine).await;
    assert_eq!(world.connect(&world.client, ACME).await.0, 200);
    world.fake.add_foreign_webhook(ACME, THIRD_PARTY);
    assert_eq!(world.fake.webhook_destinations(ACME).len(), 2);

    world.owner.agent.expect(Method::DELETE, &world.client_path(&world.client, ""), None, 204).await;
    assert_eq!(world.fake.webhook_destinations(ACME), vec![THIRD_PARTY.to_owned()]);
    problem(world.owner.agent.get(&world.client_path(&world.client, "")).await, 404).await;
    world.app.stop().await;
}

async fn kommo_unreachable_stops_a_delete_until_retried_or_forced(engine: Engine) {
    let world = World::new(engine).await;
    assert_eq!(world.connect(&world.client, ACME).await.0, 200);
    let path = world.client_path(&world.client, "");

    fail_next_unsubscribe(&world, ACME);
    let refused = problem(world.owner.agent.delete(&path).await, 502).await;
    let detail = refused["detail"].as_str().unwrap();
    assert!(detail.contains("could not remove") && detail.contains("force=true"), "{refused}");
    assert_eq!(refused["errors"][0]["field"], "force", "{refused}");
    assert_eq!(world.owner.agent.get(&path).await.status(), 200, "nothing was deleted");
    assert_eq!(world.fake.webhooks(ACME).len(), 1);

    // Kommo answers again: the retry removes the webhook, then the account.
    world.owner.agent.expect(Method::DELETE, &path, None, 204).await;
    assert!(world.fake.webhooks(ACME).is_empty());

    // Another client account, Kommo still failing: the admin goes ahead anyway.
    let (second, _) = world.app.add_client(&world.owner.agent, &world.owner.agency, "Shop").await;
    assert_eq!(world.connect(&second, SHOP).await.0, 200);
    let left = kommo_url(&world, &second).await;
    fail_next_unsubscribe(&world, SHOP);
    let forced = format!("{}?force=true", world.client_path(&second, ""));
    world.owner.agent.expect(Method::DELETE, &forced, None, 204).await;
    assert_eq!(world.fake.webhook_destinations(SHOP), vec![left], "forced: the webhook stays in Kommo");
    world.app.stop().await;
}

async fn kommo_unreachable_stops_a_disconnect_until_retried_or_forced(engine: Engine) {
    let world = World::new(engine).await;
    assert_eq!(world.connect(&world.client, ACME).await.0, 200);
    let path = world.client_path(&world.client, "/kommo");

    fail_next_unsubscribe(&world, ACME);
    let refused = problem(world.owner.agent.delete(&path).await, 502).await;
    assert_eq!(refused["errors"][0]["field"], "force", "{refused}");
    assert_eq!(world.connection(&world.client).await["health"], "active", "still connected");

    world.owner.agent.expect(Method::DELETE, &path, None, 204).await;
    assert!(world.fake.webhooks(ACME).is_empty());
    problem(world.owner.agent.get(&path).await, 404).await;

    assert_eq!(world.connect(&world.client, ACME).await.0, 200);
    fail_next_unsubscribe(&world, ACME);
    world.owner.agent.expect(Method::DELETE, &format!("{path}?force=true"), None, 204).await;
    assert_eq!(world.fake.webhooks(ACME).len(), 1, "forced: the webhook stays in Kommo");
    let audit = world.owner.agent.json(&format!("/api/v1/agencies/{}/audit", world.owner.agency)).await;
    assert_eq!(audit[0]["action"], "kommo.disconnected");
    assert_eq!(audit[0]["detail"]["webhook"], "left", "{}", audit[0]);
    world.app.stop().await;
}

async fn connecting_the_account_elsewhere_leaves_one_pipepay_url_and_third_parties_alone(engine: Engine) {
    let world = World::new(engine).await;
    assert_eq!(world.connect(&world.client, ACME).await.0, 200);
    world.fake.add_foreign_webhook(ACME, THIRD_PARTY);
    // Deleted while Kommo was unreachable: its URL stays subscribed.
    fail_next_unsubscribe(&world, ACME);
    let forced = format!("{}?force=true", world.client_path(&world.client, ""));
    world.owner.agent.expect(Method::DELETE, &forced, None, 204).await;
    assert_eq!(world.fake.webhook_destinations(ACME).len(), 2);

    let (second, _) = world.app.add_client(&world.owner.agent, &world.owner.agency, "Acme again").await;
    assert_eq!(world.connect(&second, ACME).await.0, 200);
    let own = kommo_url(&world, &second).await;
    assert_eq!(world.fake.webhook_destinations(ACME), vec![THIRD_PARTY.to_owned(), own]);
    assert_eq!(world.connection(&second).await["webhook"]["status"], "subscribed");
    world.app.stop().await;
}

async fn the_web_app_offers_delete_anyway_when_kommo_is_unreachable(engine: Engine) {
    let world = World::new(engine).await;
    assert_eq!(world.connect(&world.client, ACME).await.0, 200);
    let base = format!("/app/agencies/{}/clients/{}", world.owner.agency, world.client);
    let agent = &world.owner.agent;

    fail_next_unsubscribe(&world, ACME);
    let refused = submit(agent, &format!("{base}/delete"), &[]).await;
    assert_eq!(refused.status(), 502);
    let page = crate::web::Page::read(refused).await;
    assert!(page.text.contains("could not remove"), "{}", page.text);
    let buttons = page.all(&format!("form[action=\"{base}/delete\"] button"));
    assert_eq!(buttons, vec!["Try deleting again".to_owned(), "Delete anyway".to_owned()], "{}", page.text);
    assert_eq!(page.field("force").as_deref(), Some("true"));
    assert_eq!(get(agent, &base).await.status, 200, "nothing was deleted");

    fail_next_unsubscribe(&world, ACME);
    let deleted = submit(agent, &format!("{base}/delete"), &[("force", "true")]).await;
    assert_eq!(location(&deleted), format!("/app/agencies/{}?done=client-deleted", world.owner.agency));
    assert_eq!(get(agent, &base).await.status, 404);
    assert_eq!(world.fake.webhooks(ACME).len(), 1, "left in Kommo, as the admin chose");
    world.app.stop().await;
}
