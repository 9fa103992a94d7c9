//! The queue's promises: fencing, dead jobs and their replay, fairness between client
//! accounts, Kommo misbehaving, and shutdown handing jobs back.

use std::time::{Duration, Instant};

use pipepay::ids::ClientId;
use pipepay::store::jobs::{self, JobState, NewJob};
use reqwest::Method;
use serde_json::json;

use super::{SALES, SECRET, Shop, eventually};
use crate::fakes::kommo::{AccountSpec, Fault};
use crate::kommo::{ACME, SHOP};
use crate::on_both_engines;
use crate::support::{Engine, TestDb};

on_both_engines!(
    a_transport_failure_reaches_the_timeline_with_its_causes,
    a_stale_worker_cannot_finish_a_reclaimed_job,
    a_claimer_that_saw_the_account_idle_takes_nothing_once_another_claimed,
    a_worker_that_loses_its_lease_stops_the_job,
    a_job_that_keeps_failing_dies_visibly_and_can_be_replayed,
    ten_thousand_jobs_of_one_client_account_do_not_hold_back_another,
    pipelines_complete_while_kommo_fails_a_third_of_its_calls,
    shutdown_hands_a_running_job_back_to_the_queue,
    queue_heads_never_hide_claimable_work,
);

/// A database with one client account holding `jobs` ready jobs.
async fn one_client_with_jobs(engine: Engine, count: usize) -> (TestDb, pipepay::store::Db, ClientId) {
    let test_db = TestDb::new(engine).await;
    let url: pipepay::store::DatabaseUrl = test_db.url.parse().unwrap();
    let db = pipepay::store::Db::connect(&url, 2).await.unwrap();
    db.migrate().await.unwrap();
    let client = ClientId::new();
    let mut tx = db.write().await.unwrap();
    let agency = pipepay::store::agencies::AgencyRow {
        id: pipepay::ids::AgencyId::new(),
        name: "Q".into(),
        created_at: 0,
    };
    pipepay::store::agencies::insert(&mut tx, &agency).await.unwrap();
    let row = pipepay::store::clients::ClientRow {
        id: client,
        agency_id: agency.id,
        name: "Q".into(),
        settings: "{}".into(),
        created_at: 0,
        updated_at: 0,
    };
    pipepay::store::clients::insert(&mut tx, &row, b"hash-of-q").await.unwrap();
    for _ in 0..count {
        let job = NewJob {
            id: uuid::Uuid::now_v7(),
            client,
            kind: "lead",
            event_id: None,
            payload: "{}",
            max_attempts: 5,
            trace: None,
            dedup_key: None,
            now: pipepay::clock::now_ms(),
        };
        jobs::insert(&mut tx, &job).await.unwrap();
    }
    tx.commit().await.unwrap();
    (test_db, db, client)
}

fn queue_settings(lease: Duration) -> pipepay::queue::Settings {
    pipepay::queue::Settings {
        workers: 1,
        lease,
        max_attempts: 5,
        poll: Duration::from_secs(1),
        retry_base: Duration::from_millis(100),
        retry_max: Duration::from_secs(60),
    }
}

async fn a_stale_worker_cannot_finish_a_reclaimed_job(engine: Engine) {
    let (_test_db, db, client) = one_client_with_jobs(engine, 1).await;
    let queue = pipepay::queue::Queue::new(db.clone(), queue_settings(Duration::from_millis(300)));
    let first = queue.claim("worker-a").await.unwrap().expect("worker A claims");
    assert!(queue.claim("worker-b").await.unwrap().is_none(), "one job per client account at a time");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let second = queue.claim("worker-b").await.unwrap().expect("worker B reclaims after the lease");
    assert_eq!(second.id, first.id);
    assert_eq!(second.attempts, first.attempts + 1, "the attempt is the fencing token");
    assert!(
        !queue.finish(&first, &pipepay::queue::Outcome::Done).await.unwrap(),
        "the stale worker changes nothing"
    );
    assert!(!queue.heartbeat(&first).await.unwrap());
    assert!(queue.finish(&second, &pipepay::queue::Outcome::Done).await.unwrap());
    let mut tx = db.read().await.unwrap();
    let state = jobs::state_of(&mut tx, client, first.id).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(state, Some(JobState::Done));
    db.close().await;
}

/// On PostgreSQL a claimer picks client accounts in one statement and locks one in the next;
/// another instance may claim and commit in between. The claim itself must see that.
async fn a_claimer_that_saw_the_account_idle_takes_nothing_once_another_claimed(engine: Engine) {
    let (_test_db, db, client) = one_client_with_jobs(engine, 2).await;
    let queue = pipepay::queue::Queue::new(db.clone(), queue_settings(Duration::from_secs(60)));
    let now = pipepay::clock::now_ms();
    let mut late = db.write().await.unwrap();
    if engine == Engine::Postgres {
        // The late claimer sees the account idle before the other instance claims.
        assert_eq!(jobs::next_clients(&mut late, now, 8).await.unwrap(), [client]);
        let first = queue.claim("instance-a").await.unwrap().expect("instance A claims");
        assert_eq!(first.attempts, 1);
    } else {
        // SQLite serialises writers, so the interleaving cannot happen; the rule still holds.
        late.commit().await.unwrap();
        queue.claim("instance-a").await.unwrap().expect("instance A claims");
        late = db.write().await.unwrap();
    }
    let second = jobs::claim_for(&mut late, client, "instance-b", now, now + 60_000).await.unwrap();
    late.commit().await.unwrap();
    assert!(second.is_none(), "a second job of one client account ran at once: {second:?}");
    db.close().await;
}

/// A job that never ends; it says when it starts and when the worker drops it.
struct Stuck {
    started: tokio::sync::mpsc::UnboundedSender<uuid::Uuid>,
    dropped: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

struct SetOnDrop(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl pipepay::queue::worker::Handler for Stuck {
    fn handle(&self, job: &jobs::JobRow) -> impl Future<Output = pipepay::queue::Outcome> + Send {
        let (started, guard, id) = (self.started.clone(), SetOnDrop(self.dropped.clone()), job.id);
        async move {
            let _guard = guard;
            started.send(id).unwrap();
            std::future::pending().await
        }
    }
}

/// Once another worker may hold the job (here: it was taken back while this worker ran it),
/// this worker stops running it rather than carrying on beside the other.
async fn a_worker_that_loses_its_lease_stops_the_job(engine: Engine) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let (_test_db, db, _client) = one_client_with_jobs(engine, 1).await;
    let queue = pipepay::queue::Queue::new(db.clone(), queue_settings(Duration::from_millis(300)));
    let (started, mut starts) = tokio::sync::mpsc::unbounded_channel();
    let dropped = std::sync::Arc::new(AtomicBool::new(false));
    let handler = std::sync::Arc::new(Stuck { started, dropped: dropped.clone() });
    let (stop, abandon) =
        (tokio_util::sync::CancellationToken::new(), tokio_util::sync::CancellationToken::new());
    let workers = tokio::spawn(pipepay::queue::worker::run(
        queue.clone(),
        db.clone(),
        handler,
        stop.clone(),
        abandon.clone(),
    ));
    let job = tokio::time::timeout(Duration::from_secs(5), starts.recv()).await.unwrap().unwrap();
    // Heartbeats keep the job while nothing else touches it.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!dropped.load(Ordering::SeqCst), "a worker that holds its lease keeps running the job");
    // The job is taken from under the worker (as a reclaim after a missed lease would).
    let mut tx = db.write().await.unwrap();
    let far = pipepay::clock::now_ms() + 3_600_000;
    assert!(jobs::finish(&mut tx, job, 1, JobState::Ready, far, Some("taken back"), 0).await.unwrap());
    tx.commit().await.unwrap();
    eventually(Duration::from_secs(3), "the worker dropping the job", || async {
        dropped.load(Ordering::SeqCst)
    })
    .await;
    stop.cancel();
    abandon.cancel();
    workers.await.unwrap();
    db.close().await;
}

async fn a_job_that_keeps_failing_dies_visibly_and_can_be_replayed(engine: Engine) {
    let shop = Shop::open_with(engine, &["--job-max-attempts", "2"]).await;
    shop.lead(81, "40");
    shop.kommo.set_fault_rate(ACME, 1.0, vec![Fault::ServerError]);
    shop.to_invoice(81).await;
    eventually(Duration::from_secs(20), "a dead job", || async {
        !shop.owner.agent.json(&shop.path("/jobs?state=dead")).await.as_array().unwrap().is_empty()
    })
    .await;
    let dead = shop.owner.agent.json(&shop.path("/jobs?state=dead")).await;
    assert_eq!(dead[0]["attempts"], 2);
    assert!(dead[0]["last_error"].as_str().unwrap().contains("500"), "{dead}");
    let activity = shop.owner.agent.json(&shop.path("/activity?kind=dead")).await;
    assert_eq!(activity.as_array().unwrap().len(), 1, "{activity}");

    shop.kommo.set_fault_rate(ACME, 0.0, vec![]);
    let job = dead[0]["id"].as_str().unwrap();
    shop.owner.agent.expect(Method::POST, &shop.path(&format!("/jobs/{job}/replay")), None, 202).await;
    eventually(Duration::from_secs(20), "the replayed job's link", || async { shop.notes(81).len() == 1 })
        .await;
    let again = shop.owner.agent.send(Method::POST, &shop.path(&format!("/jobs/{job}/replay")), None).await;
    assert_eq!(again.status(), 409, "only dead jobs replay");
    shop.app.stop().await;
}

async fn ten_thousand_jobs_of_one_client_account_do_not_hold_back_another(engine: Engine) {
    let shop = Shop::open(engine).await;
    // Tenant A: ten thousand jobs waiting (each will look for a lead Kommo does not have).
    let busy = ClientId(shop.client.parse().unwrap());
    let mut tx = shop.app.db.write().await.unwrap();
    let now = pipepay::clock::now_ms();
    for i in 0..10_000 {
        let payload = json!({ "lead_id": 900_000 + i }).to_string();
        let job = NewJob {
            id: uuid::Uuid::now_v7(),
            client: busy,
            kind: "lead",
            event_id: None,
            payload: &payload,
            max_attempts: 3,
            trace: None,
            dedup_key: None,
            now,
        };
        jobs::insert(&mut tx, &job).await.unwrap();
    }
    tx.commit().await.unwrap();

    // Tenant B: one client account on another Kommo account, one deal.
    shop.kommo.add_account(AccountSpec {
        id: SHOP,
        subdomain: "shop".into(),
        host: "shop.amocrm.ru".into(),
        currency: "NGN".into(),
    });
    shop.kommo.add_pipeline(SHOP, SALES, "Sales", &[super::NEW, super::INVOICE]);
    let (quiet, _) = shop.app.add_client(&shop.owner.agent, &shop.owner.agency, "Quiet").await;
    let (status, _) =
        crate::kommo::connect(&shop.owner.agent, &shop.owner.agency, &quiet, &shop.kommo, SHOP).await;
    assert_eq!(status, 200);
    let base = format!("/api/v1/agencies/{}/clients/{quiet}", shop.owner.agency);
    let quiet_secret = "FLWSECK_TEST-11111111111111111111111111111111-X";
    shop.flw.add_merchant(quiet_secret, "quiet-hash-0123456789abcdef");
    shop.owner
        .agent
        .expect(
            Method::PUT,
            &format!("{base}/flutterwave-keys"),
            Some(json!({"secret_key": quiet_secret, "webhook_hash": "quiet-hash-0123456789abcdef"})),
            200,
        )
        .await;
    shop.owner
        .agent
        .expect(Method::PUT, &format!("{base}/settings"), Some(json!({"display_name": "Quiet", "trigger": {"pipeline_id": SALES, "stage_ids": [super::INVOICE]}})), 200)
        .await;
    shop.kommo.add_contact(SHOP, 5000, "Bola", Some("bola@example.ng"), None);
    shop.kommo.add_lead(
        SHOP,
        crate::fakes::kommo::LeadSpec {
            id: 500,
            name: "B's deal".into(),
            price: 20000,
            price_with_minor_units: None,
            pipeline_id: SALES,
            status_id: super::NEW,
            contact_ids: vec![5000],
            custom_fields_values: None,
        },
    );
    let started = Instant::now();
    assert_eq!(shop.kommo.move_lead(SHOP, 500, super::INVOICE).await, [200]);
    eventually(Duration::from_secs(10), "B's link", || async { !shop.kommo.notes(SHOP, 500).is_empty() })
        .await;
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(5), "B waited {waited:?} behind A's 10,000 jobs");
    let left: i64 = pipepay::on_db!(&shop.app.db, pool => sqlx::query_scalar(
        "SELECT COUNT(*) FROM jobs WHERE state = 'ready'").fetch_one(pool).await)
    .unwrap();
    assert!(left > 9_000, "A's backlog was still there ({left} ready)");
    let _ = SECRET;
    shop.app.stop().await;
}

async fn pipelines_complete_while_kommo_fails_a_third_of_its_calls(engine: Engine) {
    // An attempt needs its ~4 Kommo calls to succeed: at 30% faults that is 1 attempt in 4 or
    // 5, so some jobs need many attempts. Short, capped waits keep them all inside the test's
    // wait (doubling without a cap, the 13th retry alone would wait longer than that).
    let shop = Shop::open_with(
        engine,
        &[
            "--kommo-timeout",
            "1",
            "--job-max-attempts",
            "100",
            "--job-retry-base",
            "50",
            "--job-retry-max",
            "1",
        ],
    )
    .await;
    let leads = [101, 102, 103, 104, 105];
    for lead in leads {
        shop.lead(lead, "60");
    }
    shop.kommo.set_fault_rate(
        ACME,
        0.3,
        vec![Fault::TooManyRequests { retry_after: 1 }, Fault::ServerError, Fault::Timeout],
    );
    for lead in leads {
        // Kommo's own webhook deliveries are not faulted; its API is.
        shop.to_invoice(lead).await;
    }
    eventually(Duration::from_secs(180), "every link note", || async {
        leads.iter().all(|lead| shop.notes(*lead).len() == 1)
    })
    .await;
    for created in shop.flw.created(SECRET) {
        let paid = shop.flw.pay(
            &created.tx_ref,
            crate::fakes::flutterwave::Payment::card(crate::fakes::flutterwave::Outcome::Successful),
        );
        let delivered = shop
            .flw
            .deliver(
                &shop.flw_hook,
                &paid,
                crate::fakes::flutterwave::Shape::V3,
                crate::fakes::flutterwave::Signature::VerifHash,
            )
            .await;
        assert_eq!(delivered, 200);
    }
    eventually(Duration::from_secs(180), "every deal won", || async {
        leads.iter().all(|lead| shop.stage(*lead) == 142)
    })
    .await;
    eventually(Duration::from_secs(30), "every payment note", || async {
        leads.iter().all(|lead| shop.notes(*lead).len() == 2)
    })
    .await;
    assert_eq!(shop.flw.created(SECRET).len(), leads.len(), "one link per deal");
    assert_eq!(shop.kommo.rate_violations(ACME), 0, "never more than 7 requests in a second");
    assert!(shop.kommo.max_requests_per_second(ACME) <= 7);
    shop.kommo.set_fault_rate(ACME, 0.0, vec![]);
    shop.app.stop().await;
}

async fn shutdown_hands_a_running_job_back_to_the_queue(engine: Engine) {
    let shop = Shop::open_with(engine, &["--shutdown-grace", "1", "--kommo-timeout", "60"]).await;
    shop.lead(111, "70");
    // Kommo hangs on the lead: the job is mid-flight when pipepay is told to stop.
    shop.kommo.fail_next(ACME, vec![Fault::Timeout]);
    shop.to_invoice(111).await;
    eventually(Duration::from_secs(10), "the job running", || async {
        let running: i64 = pipepay::on_db!(&shop.app.db, pool => sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE state = 'running'").fetch_one(pool).await)
        .unwrap();
        running == 1
    })
    .await;
    let test_db = shop.app.test_db.clone();
    let started = Instant::now();
    shop.app.stop().await;
    assert!(started.elapsed() < Duration::from_secs(5), "stopping waited only for the grace period");
    let url: pipepay::store::DatabaseUrl = test_db.url.parse().unwrap();
    let db = pipepay::store::Db::connect(&url, 1).await.unwrap();
    let (state, attempts): (String, i64) = pipepay::on_db!(&db, pool => sqlx::query_as(
        "SELECT state, attempts FROM jobs").fetch_one(pool).await)
    .unwrap();
    assert_eq!((state.as_str(), attempts), ("ready", 0), "released, its attempt not counted");
}

async fn a_transport_failure_reaches_the_timeline_with_its_causes(engine: Engine) {
    let shop = Shop::open(engine).await;
    shop.lead(83, "40");
    // The first call of the job (reading the lead) breaks mid-answer; the retry succeeds.
    shop.kommo.fail_next(ACME, vec![Fault::Hangup]);
    shop.to_invoice(83).await;
    eventually(Duration::from_secs(20), "the link's note after a retry", || async {
        shop.notes(83).len() == 1
    })
    .await;
    let failures = shop.owner.agent.json(&shop.path("/activity?kind=failure")).await;
    let detail = failures[0]["detail"].as_str().unwrap();
    let cause = detail.strip_prefix("will retry (attempt 1): cannot reach Kommo: ").unwrap_or_else(|| {
        panic!("the timeline names the failure: {failures}");
    });
    // reqwest's and hyper's own words follow; their exact text is theirs to change.
    assert!(cause.len() > 10, "the causes behind \"cannot reach Kommo\" are kept: {detail}");
    shop.app.stop().await;
}

/// Every client account with claimable work, read from the jobs themselves (what the claim read
/// before the queue heads of migration 0018).
async fn claimable_from_jobs(db: &pipepay::store::Db, now: i64) -> std::collections::BTreeSet<ClientId> {
    let mut tx = db.write().await.unwrap();
    let found: Vec<ClientId> = pipepay::on_tx!(&mut tx, c => sqlx::query_scalar(
        "SELECT DISTINCT client_id FROM jobs j \
         WHERE ((state = 'ready' AND run_at <= $1) OR (state = 'running' AND lease_until < $1)) \
           AND NOT EXISTS (SELECT 1 FROM jobs b WHERE b.client_id = j.client_id AND b.state = 'running' \
                           AND b.lease_until >= $1) \
           AND NOT EXISTS (SELECT 1 FROM client_pauses p WHERE p.client_id = j.client_id)",
    )
    .bind(now)
    .fetch_all(c)
    .await)
    .unwrap();
    tx.commit().await.unwrap();
    found.into_iter().collect()
}

/// The claim reads one head per client account (`queue_turns`), kept by every statement that
/// moves a job. A random walk through all of them (enqueue one or a batch, claim, finish each
/// way, lose a lease, release, replay, pause and resume), checking after every step that each
/// account with claimable work is among the heads the claim reads: one statement that forgot
/// its head would hide that account's jobs until something else touched it.
async fn queue_heads_never_hide_claimable_work(engine: Engine) {
    use pipepay::queue::{Outcome, Queue};
    use pipepay::store::pauses::PauseCause;

    let (_test_db, db, first) = one_client_with_jobs(engine, 0).await;
    let mut clients = vec![first];
    {
        let mut tx = db.write().await.unwrap();
        let agency: pipepay::ids::AgencyId = pipepay::on_tx!(&mut tx, c => sqlx::query_scalar(
            "SELECT agency_id FROM clients WHERE id = $1"
        )
        .bind(first)
        .fetch_one(c)
        .await)
        .unwrap();
        for n in 0..3 {
            let row = pipepay::store::clients::ClientRow {
                id: ClientId::new(),
                agency_id: agency,
                name: format!("Q{n}"),
                settings: "{}".into(),
                created_at: 0,
                updated_at: 0,
            };
            pipepay::store::clients::insert(&mut tx, &row, format!("hash-{n}").as_bytes()).await.unwrap();
            clients.push(row.id);
        }
        tx.commit().await.unwrap();
    }
    let mut settings = queue_settings(Duration::from_millis(120));
    settings.retry_base = Duration::from_millis(30);
    settings.max_attempts = 3;
    let queue = Queue::new(db.clone(), settings);
    // A fixed seed: the same walk on every run, so a failure can be replayed.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut roll = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut running: Vec<jobs::JobRow> = Vec::new();
    let mut claims = 0;
    for step in 0..600 {
        let client = clients[roll(clients.len() as u64) as usize];
        let now = pipepay::clock::now_ms();
        let new_job = |client| NewJob {
            id: uuid::Uuid::now_v7(),
            client,
            kind: "lead",
            event_id: None,
            payload: "{}",
            max_attempts: 3,
            trace: None,
            dedup_key: None,
            now,
        };
        // Claims and finishes outpace enqueues, so accounts often run dry: the heads' hardest
        // case, where nothing else of the account's would bring a head forward.
        let did = match roll(20) {
            0 => {
                let mut tx = db.write().await.unwrap();
                jobs::insert(&mut tx, &new_job(client)).await.unwrap();
                tx.commit().await.unwrap();
                "enqueue"
            }
            1 => {
                let batch: Vec<NewJob<'_>> =
                    (0..3).map(|_| new_job(clients[roll(clients.len() as u64) as usize])).collect();
                let mut tx = db.write().await.unwrap();
                jobs::insert_many(&mut tx, &batch).await.unwrap();
                tx.commit().await.unwrap();
                "enqueue a batch"
            }
            2..=6 => {
                if let Some(job) = queue.claim(&format!("w{step}")).await.unwrap() {
                    claims += 1;
                    running.push(job);
                }
                "claim"
            }
            7..=11 if !running.is_empty() => {
                let job = running.remove(roll(running.len() as u64) as usize);
                let outcome = match roll(8) {
                    0..=3 => Outcome::Done,
                    4 | 5 => Outcome::Retry { error: "again".into(), after: None },
                    6 => Outcome::Dead { error: "no".into() },
                    _ => Outcome::Pause { reason: "keys".into(), cause: PauseCause::FlutterwaveKeyRefused },
                };
                queue.finish(&job, &outcome).await.unwrap();
                "finish"
            }
            12 | 13 if !running.is_empty() => {
                let job = running.remove(roll(running.len() as u64) as usize);
                queue.release(&job).await.unwrap();
                "release"
            }
            14 => {
                let mut tx = db.write().await.unwrap();
                for dead_of in &clients {
                    let dead = jobs::list(&mut tx, *dead_of, Some(JobState::Dead), 1).await.unwrap();
                    if let Some(job) = dead.first() {
                        jobs::replay(&mut tx, *dead_of, job.id, now).await.unwrap();
                        break;
                    }
                }
                tx.commit().await.unwrap();
                "replay"
            }
            15 => {
                let mut tx = db.write().await.unwrap();
                pipepay::queue::resume(&mut tx, client).await.unwrap();
                tx.commit().await.unwrap();
                "resume"
            }
            _ => {
                // Leases run out (the job's worker "died"), retries come due.
                tokio::time::sleep(Duration::from_millis(roll(80))).await;
                "wait"
            }
        };
        // Now, and as things stand a minute on, when every retry is due and every lease out:
        // a head must not be late for either.
        let now = pipepay::clock::now_ms();
        for at in [now, now + 60_000] {
            let truth = claimable_from_jobs(&db, at).await;
            let mut tx = db.write().await.unwrap();
            let heads: std::collections::BTreeSet<ClientId> =
                jobs::next_clients(&mut tx, at, 1_000).await.unwrap().into_iter().collect();
            tx.commit().await.unwrap();
            let hidden: Vec<_> = truth.difference(&heads).collect();
            assert!(
                hidden.is_empty(),
                "step {step} ({did}), {} ms on: claimable but not among the heads: {hidden:?}",
                at - now
            );
        }
    }
    assert!(claims > 20, "the walk claimed only {claims} jobs");
    db.close().await;
}
