//! Retention of the outbox, of incidents and of job attempts' call logs: delivered, unsent and
//! dead rows, closed incidents and old call logs go once their periods pass; mail still to
//! deliver, open incidents and the jobs themselves stay.

use std::time::Duration;

use pipepay::background::retention::{Periods, Swept, sweep};
use pipepay::clock::now_ms;
use pipepay::ids::{AgencyId, ClientId};
use pipepay::store::alerts::{self, IncidentRow};
use pipepay::store::calls::{self, AttemptRow};
use pipepay::store::jobs::{self, NewJob};
use pipepay::store::outbox::{self, NewMessage};
use pipepay::store::{DatabaseUrl, Db};

use crate::on_both_engines;
use crate::support::{Engine, TestApp};

on_both_engines!(
    old_finished_outbox_rows_and_closed_incidents_go_while_pending_and_open_ones_stay,
    old_call_logs_go_and_their_jobs_stay,
);

#[test]
fn retention_periods_have_defaults_and_are_configurable() {
    let defaults = Periods::from_config(&crate::support::cli(&[]).config);
    assert_eq!(
        defaults,
        Periods { delivered: days(30), dead: days(90), closed_incidents: days(365), call_logs: days(30) }
    );
    let set = crate::support::cli(&[
        "--outbox-retention-days",
        "7",
        "--outbox-dead-retention-days",
        "14",
        "--incident-retention-days",
        "60",
        "--call-log-retention-days",
        "3",
    ]);
    assert_eq!(
        Periods::from_config(&set.config),
        Periods { delivered: days(7), dead: days(14), closed_incidents: days(60), call_logs: days(3) }
    );
    for bad in [["--outbox-retention-days", "0"], ["--incident-retention-days", "forever"]] {
        let mut argv = vec!["pipepay"];
        argv.extend_from_slice(&bad);
        assert!(<pipepay::cli::Cli as clap::Parser>::try_parse_from(argv).is_err(), "{bad:?}");
    }
}

const DAY: i64 = 86_400_000;

fn days(n: u64) -> Duration {
    Duration::from_secs(n * 86_400)
}

/// An outbox row in `state` that reached it `age_days` ago; returns its id.
async fn message(db: &Db, subject: &str, state: &str, age_days: i64) -> uuid::Uuid {
    let at = now_ms() - age_days * DAY;
    let mut tx = db.write().await.unwrap();
    let new = NewMessage {
        agency: None,
        channel: outbox::channel::EMAIL,
        recipient: "owner@agency.example",
        subject,
        body: "words",
        secret_body: false,
        max_attempts: 12,
        now: at,
    };
    let id = outbox::insert(&mut tx, &new).await.unwrap();
    tx.commit().await.unwrap();
    pipepay::on_db!(db, pool => sqlx::query("UPDATE outbox SET state = $2, run_at = $3, lease_until = $3 WHERE id = $1")
        .bind(id)
        .bind(state)
        .bind(at)
        .execute(pool)
        .await
        .map(drop))
    .unwrap();
    id
}

/// An incident opened `opened_days` ago, closed `closed_days` ago unless `None`.
async fn incident(
    db: &Db,
    agency: AgencyId,
    client: ClientId,
    kind: &str,
    opened_days: i64,
    closed_days: Option<i64>,
) {
    let now = now_ms();
    let row = IncidentRow {
        id: uuid::Uuid::now_v7(),
        agency_id: agency,
        client_id: client,
        kind: kind.to_owned(),
        detail: format!("{kind} for a while"),
        opened_at: now - opened_days * DAY,
        closed_at: None,
    };
    let mut tx = db.write().await.unwrap();
    assert!(alerts::open(&mut tx, &row).await.unwrap());
    if let Some(closed) = closed_days {
        assert!(alerts::close(&mut tx, row.id, now - closed * DAY).await.unwrap());
    }
    tx.commit().await.unwrap();
}

async fn subjects(db: &Db) -> Vec<String> {
    pipepay::on_db!(db, pool => sqlx::query_scalar("SELECT subject FROM outbox WHERE recipient = 'owner@agency.example' ORDER BY subject")
        .fetch_all(pool)
        .await)
    .unwrap()
}

async fn incident_kinds(db: &Db) -> Vec<String> {
    pipepay::on_db!(db, pool => sqlx::query_scalar("SELECT kind FROM incidents ORDER BY kind").fetch_all(pool).await)
        .unwrap()
}

async fn old_finished_outbox_rows_and_closed_incidents_go_while_pending_and_open_ones_stay(engine: Engine) {
    // An agency and a client account to hang incidents on; then the server stops, so its own
    // delivery loop and duties leave the rows below alone.
    let app = TestApp::spawn(engine).await;
    let owner = app.sign_up("keeper@agency.example", "Keeping Agency").await;
    let (client, _) = app.add_client(&owner.agent, &owner.agency, "Acme").await;
    let test_db = app.test_db.clone();
    app.stop().await;
    let url: DatabaseUrl = test_db.url.parse().unwrap();
    let db = Db::connect(&url, 2).await.unwrap();
    let agency = AgencyId(owner.agency.parse().unwrap());
    let client = ClientId(client.parse().unwrap());

    message(&db, "sent long ago", outbox::state::SENT, 40).await;
    message(&db, "sent lately", outbox::state::SENT, 29).await;
    message(&db, "unsent long ago", outbox::state::UNSENT, 40).await;
    message(&db, "dead a while ago", outbox::state::DEAD, 40).await;
    message(&db, "dead long ago", outbox::state::DEAD, 91).await;
    message(&db, "ready since long ago", outbox::state::READY, 400).await;
    message(&db, "sending since long ago", outbox::state::SENDING, 400).await;
    incident(&db, agency, client, "closed long ago", 500, Some(400)).await;
    incident(&db, agency, client, "closed lately", 500, Some(10)).await;
    incident(&db, agency, client, "open for long", 500, None).await;

    let periods =
        Periods { delivered: days(30), dead: days(90), closed_incidents: days(365), call_logs: days(30) };
    assert_eq!(
        sweep(&db, periods).await.unwrap(),
        Swept { delivered: 2, dead: 1, incidents: 1, call_logs: 0 }
    );
    assert_eq!(
        subjects(&db).await,
        ["dead a while ago", "ready since long ago", "sending since long ago", "sent lately"]
    );
    assert_eq!(incident_kinds(&db).await, ["closed lately", "open for long"]);
    assert_eq!(sweep(&db, periods).await.unwrap(), Swept::default(), "a second pass finds nothing");

    // Shorter periods, as configured: the rest of what is finished goes, never what is not.
    let short = Periods { delivered: days(1), dead: days(1), closed_incidents: days(1), call_logs: days(1) };
    assert_eq!(sweep(&db, short).await.unwrap(), Swept { delivered: 1, dead: 1, incidents: 1, call_logs: 0 });
    assert_eq!(subjects(&db).await, ["ready since long ago", "sending since long ago"]);
    assert_eq!(incident_kinds(&db).await, ["open for long"]);
    db.close().await;
}

async fn attempts_of(db: &Db, job: uuid::Uuid) -> Vec<i64> {
    pipepay::on_db!(db, pool => sqlx::query_scalar("SELECT attempt FROM job_attempts WHERE job_id = $1 ORDER BY attempt")
        .bind(job)
        .fetch_all(pool)
        .await)
    .unwrap()
}

async fn old_call_logs_go_and_their_jobs_stay(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let owner = app.sign_up("calls@agency.example", "Calling Agency").await;
    let (client, _) = app.add_client(&owner.agent, &owner.agency, "Acme").await;
    let test_db = app.test_db.clone();
    app.stop().await;
    let url: DatabaseUrl = test_db.url.parse().unwrap();
    let db = Db::connect(&url, 2).await.unwrap();
    let client = ClientId(client.parse().unwrap());

    // One job that ran three times: 40 days ago, 20 days ago and today.
    let now = now_ms();
    let job = uuid::Uuid::now_v7();
    let mut tx = db.write().await.unwrap();
    let new = NewJob {
        id: job,
        client,
        kind: "lead",
        event_id: None,
        payload: r#"{"lead_id":1}"#,
        max_attempts: 5,
        trace: None,
        dedup_key: None,
        now: now - 41 * DAY,
    };
    assert!(jobs::insert(&mut tx, &new).await.unwrap());
    for (attempt, age_days) in [(1, 40), (2, 20), (3, 0)] {
        let at = now - age_days * DAY;
        let row = AttemptRow {
            id: uuid::Uuid::now_v7(),
            job_id: job,
            attempt,
            started_at: at - 1000,
            finished_at: at,
            ended: "retry".to_owned(),
            calls: "[]".to_owned(),
            calls_dropped: 0,
        };
        calls::record(&mut tx, &row).await.unwrap();
    }
    tx.commit().await.unwrap();

    let periods =
        Periods { delivered: days(30), dead: days(90), closed_incidents: days(365), call_logs: days(30) };
    assert_eq!(sweep(&db, periods).await.unwrap(), Swept { call_logs: 1, ..Swept::default() });
    assert_eq!(attempts_of(&db, job).await, [2, 3]);
    let short = Periods { call_logs: days(1), ..periods };
    assert_eq!(sweep(&db, short).await.unwrap(), Swept { call_logs: 1, ..Swept::default() });
    assert_eq!(attempts_of(&db, job).await, [3], "today's attempt stays");
    let mut tx = db.write().await.unwrap();
    assert!(jobs::state_of(&mut tx, client, job).await.unwrap().is_some(), "the job itself stays");
    tx.commit().await.unwrap();
    db.close().await;
}
