//! Anonymous marketplace installs cost pipepay a row and a token exchange each (issue #12):
//! limited per IP and per Kommo account host, one row per install however often it is
//! repeated, and forgotten when nobody claims them.

use std::time::Duration;

use super::{ACME, SHOP, World};
use crate::on_both_engines;
use crate::pipeline::eventually;
use crate::support::Engine;

on_both_engines!(
    installs_from_one_ip_are_limited_and_refused_ones_reach_no_kommo,
    installs_for_one_host_are_limited,
    the_same_install_repeated_is_one_row_and_one_exchange,
    unclaimed_installs_expire,
);

const WAIT: Duration = Duration::from_secs(10);

async fn rows(world: &World) -> Vec<(String, String)> {
    pipepay::on_db!(&world.app.db, pool =>
        sqlx::query_as("SELECT host, status FROM kommo_installs ORDER BY created_at").fetch_all(pool).await)
    .unwrap()
}

/// Waits until every recorded install's code was exchanged (or failed to be).
async fn settled(world: &World) {
    eventually(WAIT, "every install was exchanged", || async {
        rows(world).await.iter().all(|(_, status)| status != "pending")
    })
    .await;
}

async fn install(world: &World, account: i64) -> u16 {
    let url = world.fake.marketplace_install_url(account);
    reqwest::get(url).await.unwrap().status().as_u16()
}

async fn installs_from_one_ip_are_limited_and_refused_ones_reach_no_kommo(engine: Engine) {
    let world = World::with(engine, &["--kommo-install-ip-limit", "3"]).await;
    let mut statuses = Vec::new();
    for account in [ACME, SHOP, ACME, SHOP, ACME, SHOP] {
        statuses.push(install(&world, account).await);
    }
    assert_eq!(statuses, vec![200, 200, 200, 429, 429, 429]);
    settled(&world).await;
    assert_eq!(rows(&world).await.len(), 3);
    assert_eq!(world.fake.code_exchanges(ACME) + world.fake.code_exchanges(SHOP), 3);
    world.app.stop().await;
}

async fn installs_for_one_host_are_limited(engine: Engine) {
    let world = World::with(engine, &["--kommo-install-host-limit", "2"]).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(install(&world, ACME).await);
    }
    assert_eq!(statuses, vec![200, 200, 429, 429]);
    // Another account's host has a budget of its own.
    assert_eq!(install(&world, SHOP).await, 200);
    settled(&world).await;
    assert_eq!(world.fake.code_exchanges(ACME), 2);
    assert_eq!(world.fake.code_exchanges(SHOP), 1);
    world.app.stop().await;
}

async fn the_same_install_repeated_is_one_row_and_one_exchange(engine: Engine) {
    let world = World::new(engine).await;
    let url = world.fake.marketplace_install_url(ACME);
    for _ in 0..3 {
        assert_eq!(reqwest::get(&url).await.unwrap().status(), 200);
    }
    settled(&world).await;
    assert_eq!(rows(&world).await, vec![("acme.kommo.com".to_owned(), "ready".to_owned())]);
    assert_eq!(world.fake.code_exchanges(ACME), 1);
    world.app.stop().await;
}

async fn unclaimed_installs_expire(engine: Engine) {
    let world = World::with(engine, &["--kommo-install-ttl", "3600"]).await;
    assert_eq!(install(&world, ACME).await, 200);
    settled(&world).await;
    // An hour and a minute pass (the rows are aged rather than waited for).
    let aged: u64 = pipepay::on_db!(&world.app.db, pool =>
        sqlx::query("UPDATE kommo_installs SET created_at = created_at - 3660000").execute(pool).await
            .map(|r| r.rows_affected()))
    .unwrap();
    assert_eq!(aged, 1);
    assert_eq!(install(&world, SHOP).await, 200);
    settled(&world).await;
    assert_eq!(
        rows(&world).await,
        vec![("shop.amocrm.ru".to_owned(), "ready".to_owned())],
        "the old one is gone"
    );
    world.app.stop().await;
}
