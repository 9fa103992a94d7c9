//! Background duties (scheduling reconciliation, refreshing idle Kommo connections, retention of
//! webhooks, outbox rows and incidents)
//! and the lease that makes one instance at a time run them.
//!
//! Every instance runs the same binary, so every instance would run every duty. The duties are
//! safe to repeat (reconciliation jobs carry a per-interval dedup key, a refresh is single-flight
//! per connection), but N instances doing the same sweep is N times the database work and, for
//! idle refreshes, N times the Kommo calls. So each instance heartbeats one lease row and runs
//! the duties only while it holds it; an instance that dies stops renewing and another takes
//! over once the lease lapses. Jobs are not duties: the queue's own leases run each job once.

pub mod retention;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::store::{Db, StoreError, leases};

/// The one lease all duties share: whoever holds it runs all of them.
pub const LEASE: &str = "background";

/// The holder renews this often...
const HEARTBEAT: Duration = Duration::from_secs(5);
/// ...and the lease lasts this long, so two missed heartbeats in a row still keep it.
const TERM: Duration = Duration::from_secs(15);

/// This instance's claim on the background lease.
#[derive(Debug)]
pub struct Lease {
    db: Db,
    holder: String,
    heartbeat: Duration,
    term: Duration,
    held: AtomicBool,
}

impl Lease {
    /// A claim for this process, under a fresh random holder id.
    pub fn new(db: Db) -> Arc<Lease> {
        Self::with_timing(db, format!("{}-{}", std::process::id(), uuid::Uuid::new_v4()), HEARTBEAT, TERM)
    }

    /// A claim with its own heartbeat and term (tests shorten them to see a takeover quickly).
    pub fn with_timing(db: Db, holder: String, heartbeat: Duration, term: Duration) -> Arc<Lease> {
        Arc::new(Lease { db, holder, heartbeat, term, held: AtomicBool::new(false) })
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Whether this instance held the lease at its last heartbeat. A holder that stalls longer
    /// than the term may still believe it holds it for one beat; the duties are idempotent, so
    /// the overlap costs work, never a duplicate effect.
    pub fn is_held(&self) -> bool {
        self.held.load(Ordering::Acquire)
    }

    /// Tries to take or renew the lease now; returns whether this instance holds it.
    pub async fn beat(&self) -> Result<bool, StoreError> {
        let now = now_ms();
        let until = now.saturating_add(i64::try_from(self.term.as_millis()).unwrap_or(i64::MAX));
        let mut tx = self.db.write().await?;
        let held = leases::take(&mut tx, LEASE, &self.holder, now, until).await?;
        tx.commit().await?;
        let was = self.held.swap(held, Ordering::AcqRel);
        if held != was {
            tracing::info!(holder = %self.holder, held, "background lease changed hands");
        }
        Ok(held)
    }

    /// Heartbeats until `stop`, then gives the lease up so another instance takes over at once.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            if let Err(error) = self.beat().await {
                // Unable to renew: assume the lease is lost rather than risk two runners.
                self.held.store(false, Ordering::Release);
                tracing::warn!(error = %crate::error_chain(&error), "cannot renew the background lease");
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(self.heartbeat) => {}
            }
        }
        self.held.store(false, Ordering::Release);
        let released = async {
            let mut tx = self.db.write().await?;
            leases::release(&mut tx, LEASE, &self.holder).await?;
            tx.commit().await
        };
        if let Err(error) = released.await {
            tracing::warn!(error = %crate::error_chain(&error), "cannot release the background lease");
        }
    }
}

/// A duty run every `every` (first after `first`) while this instance holds the lease.
pub async fn every<F, Fut>(
    lease: Arc<Lease>,
    first: Duration,
    every: Duration,
    stop: CancellationToken,
    work: F,
) where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut wait = first;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        wait = every;
        if lease.is_held() {
            // A long pass (a first retention sweep over a big table) must not hold up a stop;
            // cut short, its open transaction rolls back and the next holder starts it again.
            tokio::select! {
                () = stop.cancelled() => return,
                () = work() => {}
            }
        }
    }
}
