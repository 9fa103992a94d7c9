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

on_both_engines!(
    a_hammering_tenant_stays_under_its_limit_and_delays_nobody,
    a_429_holds_the_account_back,
    a_429_below_the_configured_limit_slows_the_account_until_it_may_speed_up_again,
    the_request_seven_places_on_waits_a_second_after_the_answer_to_the_first,
);

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

/// Issue #12: Kommo answers 429 at 3 requests a second while pipepay is configured for 7
/// (another integration on the account, or a per-IP limit). Waiting out Retry-After and coming
/// back at full pace would earn a 429 every second or so; pipepay slows the account (on every
/// instance), keeps the 429s few, and speeds up again once Kommo lets it.
async fn a_429_below_the_configured_limit_slows_the_account_until_it_may_speed_up_again(engine: Engine) {
    let world = World::new(engine).await;
    world.connect(&world.client, ACME).await;
    let client = ClientId(world.client.parse().unwrap());
    let instances: Vec<Arc<pipepay::kommo::Kommo>> = match engine {
        Engine::Postgres => vec![world.app.kommo.clone(), Arc::new(world.app.kommo_instance())],
        Engine::Sqlite => vec![world.app.kommo.clone()],
    };
    world.fake.set_rate_limit(ACME, Some(3));
    let before = world.fake.requests(ACME).len();
    let (ok, refused) = keep_calling(&instances, client, Duration::from_secs(12)).await;
    let violations = world.fake.rate_violations(ACME);
    let sent = world.fake.requests(ACME).len() - before;
    let spacing = instances[0].limits.spacing_of(ACME).await.unwrap();
    println!(
        "{engine:?}: Kommo limit 3/s, configured 7/s: {sent} requests in 12 s, {ok} answered, \
         {refused} refused with 429 (the fake counted {violations}); spacing now {spacing:?}"
    );
    assert_eq!(refused, violations);
    // With Retry-After alone (no adaptive pace) this was 9 to 10 429s in 12 s; adapting, 3 to 4.
    assert!(violations <= 6, "{violations} 429s: the pace did not adapt");
    assert!(ok >= 20, "the account kept working: {ok} calls answered");
    // The pace every instance uses now is near or below Kommo's real limit, not the configured 7/s.
    for kommo in &instances {
        let spacing = kommo.limits.spacing_of(ACME).await.unwrap();
        assert!(spacing >= Duration::from_millis(250), "{spacing:?}");
    }

    // Kommo lets 7 through again: the pace climbs back and no 429 follows.
    world.fake.set_rate_limit(ACME, None);
    let started = Instant::now();
    let (ok, refused) = keep_calling(&instances, client, Duration::from_secs(10)).await;
    let late: Vec<Instant> = world
        .fake
        .requests(ACME)
        .iter()
        .map(|r| r.at)
        .filter(|at| at.duration_since(started) >= Duration::from_secs(7))
        .collect();
    let spacing = instances[0].limits.spacing_of(ACME).await.unwrap();
    println!(
        "{engine:?}: Kommo back to 7/s: {ok} answered, {refused} refused in 10 s; {} requests in \
         the last 3 s; spacing now {spacing:?}",
        late.len()
    );
    assert_eq!(refused, 0, "no 429 while recovering below the configured limit");
    assert!(late.len() >= 12, "faster than Kommo's old 3/s by the end: {} in 3 s", late.len());
    assert!(world.fake.max_requests_per_second(ACME) <= 7);
    world.app.stop().await;
}

/// The answer-anchored window (issue 14): of eight requests, the eighth goes only a second after
/// the first one's answer is in, however long that takes. On PostgreSQL the eight are taken by
/// two instances in turn, so the window is the account's, not an instance's.
async fn the_request_seven_places_on_waits_a_second_after_the_answer_to_the_first(engine: Engine) {
    let world = World::new(engine).await;
    let instances: Vec<Arc<pipepay::kommo::Kommo>> = match engine {
        Engine::Postgres => vec![world.app.kommo.clone(), Arc::new(world.app.kommo_instance())],
        Engine::Sqlite => vec![world.app.kommo.clone()],
    };
    let first = instances[0].limits.acquire(ACME).await.unwrap();
    for i in 1..7 {
        drop(instances[i % instances.len()].limits.acquire(ACME).await.unwrap());
    }
    let eighth = {
        let kommo = instances[7 % instances.len()].clone();
        tokio::spawn(async move {
            drop(kommo.limits.acquire(ACME).await.unwrap());
            Instant::now()
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!eighth.is_finished(), "the eighth went while the first was still in flight");
    let answered = Instant::now();
    drop(first);
    let went = eighth.await.unwrap();
    let after = went.duration_since(answered);
    assert!(after >= Duration::from_millis(990), "the eighth went {after:?} after the first's answer");
    assert!(after < Duration::from_millis(1400), "the eighth waited {after:?}: the answer was not seen");
    // Seven more go in the next second-and-a-bit, not one every 1.15 s / 7 as before the window.
    let started = Instant::now();
    for i in 0..7 {
        drop(instances[i % instances.len()].limits.acquire(ACME).await.unwrap());
    }
    assert!(started.elapsed() < Duration::from_millis(1300), "{:?}", started.elapsed());
    world.app.stop().await;
}

/// Issue 14: two pipepay processes on one PostgreSQL share an account's window, over a network
/// whose delay differs from call to call (up to 60 ms each way): Kommo never sees more than 7
/// requests in a second, never answers 429, and the account still gets over 6.3 requests a
/// second (spacing alone, with the margin it needed, gave 6.1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(pg_tests), ignore = "set PIPEPAY_TEST_DATABASE_URL to run on PostgreSQL")]
async fn two_processes_share_an_accounts_window_without_a_429() {
    let world = World::new(Engine::Postgres).await;
    world.connect(&world.client, ACME).await;
    let client = ClientId(world.client.parse().unwrap());
    let second = world.app.second_instance().await;
    world.fake.set_latency(Duration::from_millis(60), Duration::from_millis(60));
    let instances = vec![world.app.kommo.clone(), second.kommo.clone()];
    let before = world.fake.requests(ACME).len();
    let how_long = Duration::from_secs(10);
    let (ok, refused) = keep_calling(&instances, client, how_long).await;
    let sent = world.fake.requests(ACME).len() - before;
    let per_second = sent as f64 / how_long.as_secs_f64();
    println!(
        "two processes, one account: {sent} requests in {how_long:?} ({per_second:.2}/s), {refused} refused"
    );
    assert_eq!(refused, 0, "no 429");
    assert_eq!(world.fake.rate_violations(ACME), 0);
    assert!(world.fake.max_requests_per_second(ACME) <= 7);
    assert!(ok >= 60, "{ok} answered");
    assert!(per_second >= 6.3, "{per_second:.2} requests a second");
    second.stop().await;
    world.app.stop().await;
}

/// Three callers per instance call Kommo back to back for `how_long`; (answered, 429s).
async fn keep_calling(
    instances: &[Arc<pipepay::kommo::Kommo>],
    client: ClientId,
    how_long: Duration,
) -> (usize, usize) {
    let until = Instant::now() + how_long;
    let mut callers = Vec::new();
    for kommo in instances {
        for _ in 0..3 {
            let kommo = kommo.clone();
            callers.push(tokio::spawn(async move {
                let (mut ok, mut refused) = (0, 0);
                while Instant::now() < until {
                    match kommo.pipelines(client).await {
                        Ok(_) => ok += 1,
                        Err(KommoError::RateLimited { .. }) => refused += 1,
                        Err(other) => panic!("{other}"),
                    }
                }
                (ok, refused)
            }));
        }
    }
    let mut totals = (0, 0);
    for caller in callers {
        let (ok, refused) = caller.await.unwrap();
        totals = (totals.0 + ok, totals.1 + refused);
    }
    totals
}
