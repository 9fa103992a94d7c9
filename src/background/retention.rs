//! Deletes finished outbox rows, closed incidents and job attempts' call logs once their retention periods pass, hourly,
//! in short batches, under the background lease. Rows still to deliver (ready, sending) and open
//! incidents are never touched, whatever their age.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Lease, every};
use crate::clock::now_ms;
use crate::config::Config;
use crate::store::outbox::state;
use crate::store::{Db, StoreError, alerts, calls, outbox};

const EVERY: Duration = Duration::from_secs(3600);
/// After the first heartbeat has settled who holds the background lease.
const FIRST: Duration = Duration::from_secs(20);
/// Rows per transaction: a pass never holds the write lock for long.
const BATCH: i64 = 1000;

/// How long each kind of finished row is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Periods {
    /// Delivered mail and webhooks, and mail kept unsent because no SMTP server is configured
    /// (`PIPEPAY_OUTBOX_RETENTION_DAYS`).
    pub delivered: Duration,
    /// Mail and webhooks that failed for good (`PIPEPAY_OUTBOX_DEAD_RETENTION_DAYS`).
    pub dead: Duration,
    /// Incidents that closed (`PIPEPAY_INCIDENT_RETENTION_DAYS`).
    pub closed_incidents: Duration,
    /// The calls each job attempt made (`PIPEPAY_CALL_LOG_RETENTION_DAYS`): one row per attempt,
    /// so they grow with the jobs, which are kept.
    pub call_logs: Duration,
}

impl Periods {
    pub fn from_config(config: &Config) -> Periods {
        let days = |d: u64| Duration::from_secs(d.saturating_mul(86_400));
        Periods {
            delivered: days(config.outbox_retention_days),
            dead: days(config.outbox_dead_retention_days),
            closed_incidents: days(config.incident_retention_days),
            call_logs: days(config.call_log_retention_days),
        }
    }
}

/// What one pass deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub delivered: u64,
    pub dead: u64,
    pub incidents: u64,
    pub call_logs: u64,
}

/// Runs a pass soon after start and then every hour until `stop`, while this instance holds the
/// background lease.
pub async fn run(db: Db, periods: Periods, lease: Arc<Lease>, stop: CancellationToken) {
    every(lease, FIRST, EVERY, stop, || async {
        match sweep(&db, periods).await {
            Ok(swept) if swept == Swept::default() => {}
            Ok(swept) => tracing::info!(
                delivered = swept.delivered,
                dead = swept.dead,
                incidents = swept.incidents,
                call_logs = swept.call_logs,
                "old outbox rows and closed incidents deleted"
            ),
            Err(error) => {
                tracing::warn!(error = %crate::error_chain(&error), "cannot delete old outbox rows and incidents")
            }
        }
    })
    .await
}

fn cutoff(now: i64, keep: Duration) -> i64 {
    now.saturating_sub(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX))
}

/// One kind of old row: outbox rows in a final state, or closed incidents; with the time
/// before which they go.
#[derive(Debug, Clone, Copy)]
enum Old {
    Outbox(&'static str, i64),
    Incidents(i64),
    CallLogs(i64),
}

/// Deletes what is past its period now.
pub async fn sweep(db: &Db, periods: Periods) -> Result<Swept, StoreError> {
    let now = now_ms();
    let delivered = cutoff(now, periods.delivered);
    Ok(Swept {
        delivered: all(db, Old::Outbox(state::SENT, delivered)).await?
            + all(db, Old::Outbox(state::UNSENT, delivered)).await?,
        dead: all(db, Old::Outbox(state::DEAD, cutoff(now, periods.dead))).await?,
        incidents: all(db, Old::Incidents(cutoff(now, periods.closed_incidents))).await?,
        call_logs: all(db, Old::CallLogs(cutoff(now, periods.call_logs))).await?,
    })
}

/// Deletes every `old` row, one batch per transaction until a batch comes back short.
async fn all(db: &Db, old: Old) -> Result<u64, StoreError> {
    let mut total = 0;
    loop {
        let mut tx = db.write().await?;
        let deleted = match old {
            Old::Outbox(final_state, before) => {
                outbox::delete_finished_before(&mut tx, final_state, before, BATCH).await?
            }
            Old::Incidents(before) => alerts::delete_closed_before(&mut tx, before, BATCH).await?,
            Old::CallLogs(before) => calls::delete_before(&mut tx, before, BATCH).await?,
        };
        tx.commit().await?;
        total += deleted;
        if deleted < BATCH.unsigned_abs() {
            return Ok(total);
        }
    }
}
