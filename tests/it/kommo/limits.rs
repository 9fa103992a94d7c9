//! Kommo's limits: at most 7 requests per second per account (across instances on
//! PostgreSQL), a busy tenant never delays another, and a 429 is honoured.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pipepay::ids::ClientId;
use pipepay::kommo::KommoError;

use super::{ACME, SHOP, World};
use crate::fakes::kommo::Fault;
use crate::on_both_engines;
use crate::support::Engine;

on_both_engines!(a_hammering_tenant_stays_under_its_limit_and_delays_nobody, a_429_holds_the_account_back);

async fn a_hammering_tenant_stays_under_its_limit_and_delays_nobody(engine: Engine) {
    let world = World::new(engine).await;
    world.connect(&world.client, ACME).await;
    let (quiet, _) = world.app.add_client(&world.owner.agent, &world.owner.agency, "Quiet client").await;
    world.connect(&quiet, SHOP).await;
    let (busy, quiet) = (ClientId(world.client.parse().unwrap()), ClientId(quiet.parse().unwrap()));

    // On PostgreSQL two instances share the limit; SQLite is one instance by design.
    let instances: Vec<Arc<pipepay::kommo::Kommo>> = match engine {
        Engine::Postgres => vec![world.app.kommo.clone(), Arc::new(world.app.kommo_instance())],
        Engine::Sqlite => vec![world.app.kommo.clone()],
    };
    let started = Instant::now();
    let mut hammer = Vec::new();
    for i in 0..28 {
        let kommo = instances[i % instances.len()].clone();
        hammer.push(tokio::spawn(async move { kommo.pipelines(busy).await.map(|_| ()) }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let other = Instant::now();
    instances[0].pipelines(quiet).await.expect("the quiet tenant's call");
    let other_took = other.elapsed();
    for call in hammer {
        call.await.unwrap().expect("every hammering call completes");
    }
    let hammer_took = started.elapsed();

    assert_eq!(world.fake.rate_violations(ACME), 0, "Kommo never saw more than 7 requests in a second");
    assert!(world.fake.max_requests_per_second(ACME) <= 7);
    assert!(other_took < Duration::from_millis(800), "the quiet tenant waited {other_took:?}");
    // 28 calls at no more than 7 a second take at least 3 seconds; the limiter is not idle.
    assert!(hammer_took >= Duration::from_secs(3), "{hammer_took:?}");
    assert!(hammer_took < Duration::from_secs(8), "{hammer_took:?}");
    world.app.stop().await;
}

async fn a_429_holds_the_account_back(engine: Engine) {
    let world = World::new(engine).await;
    world.connect(&world.client, ACME).await;
    let client = ClientId(world.client.parse().unwrap());
    let kommo = world.app.kommo.clone();
    world.fake.fail_next(ACME, vec![Fault::TooManyRequests { retry_after: 1 }]);
    let refused = kommo.pipelines(client).await;
    assert!(
        matches!(refused, Err(KommoError::RateLimited { retry_after }) if retry_after >= Duration::from_secs(1)),
        "{refused:?}"
    );
    let next = Instant::now();
    kommo.pipelines(client).await.expect("the next call goes through");
    assert!(
        next.elapsed() >= Duration::from_millis(900),
        "the next call waited out Retry-After: {:?}",
        next.elapsed()
    );
    world.app.stop().await;
}
