//! Whether a client account's ready jobs reached `PIPEPAY_INGRESS_MAX_READY_JOBS`, read outside
//! the write transaction and remembered for a moment, so checking it costs no write lock and,
//! mostly, no query. Jobs this process queues for an account make it read afresh; jobs queued
//! on another instance are seen within [`FRESH_FOR`]. The cap is a brake on a flood, not an
//! exact count, so a second's staleness is fine.

use std::time::{Duration, Instant};

use quick_cache::sync::Cache;

use crate::ids::ClientId;
use crate::store::{Db, StoreError, jobs};

const FRESH_FOR: Duration = Duration::from_secs(1);
/// Client accounts remembered at most.
const MAX_ENTRIES: usize = 100_000;

pub struct Backlog {
    db: Db,
    /// Client account → when it was counted, and whether it was at the cap.
    full: Cache<ClientId, (Instant, bool)>,
}

impl Backlog {
    pub fn new(db: Db) -> Backlog {
        Backlog { db, full: Cache::new(MAX_ENTRIES) }
    }

    /// Whether the account has `cap` or more jobs waiting.
    pub async fn full(&self, client: ClientId, cap: i64) -> Result<bool, StoreError> {
        if let Some((at, full)) = self.full.get(&client)
            && at.elapsed() < FRESH_FOR
        {
            return Ok(full);
        }
        let mut tx = self.db.read().await?;
        let full = jobs::ready_at_least(&mut tx, client, cap).await?;
        tx.commit().await?;
        self.full.insert(client, (Instant::now(), full));
        Ok(full)
    }

    /// This process queued jobs for the account: count again next time.
    pub fn queued(&self, client: ClientId) {
        self.full.remove(&client);
    }
}
