//! Keeping each Kommo account under its request limit, across instances, and this process under
//! a ceiling that protects the shared egress IP.
//!
//! Requests are spaced at least `(1 s + MARGIN) / limit` apart per account. Spacing rather than
//! bursts keeps every trailing one-second window at or under the limit even when requests
//! arrive at Kommo a little later or earlier than they left; the margin absorbs that jitter.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::store::{self, Backend, Db, StoreError};

/// Slack added to Kommo's one-second window, for scheduling and network jitter between the
/// slot being granted and the request reaching Kommo. 100 ms let a loaded 2-core CI machine put
/// 8 requests in one second at the fake now and then (two instances on PostgreSQL, a request
/// delayed on a fresh connection); repeated 429s can end in an IP block, so the margin errs
/// wide: 150 ms gives 6.1 requests a second at a limit of 7 (87%).
const MARGIN: Duration = Duration::from_millis(150);

pub struct Limits {
    db: Db,
    spacing: Duration,
    /// SQLite means one instance, so an in-process limiter is exact there.
    local: DefaultKeyedRateLimiter<i64>,
    process: DefaultDirectRateLimiter,
    /// Accounts Kommo told to wait (429), until when.
    backoff: Mutex<HashMap<i64, Instant>>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Limits(spacing={:?})", self.spacing)
    }
}

impl Limits {
    pub fn new(db: Db, per_account_per_second: u32, process_per_second: u32) -> Limits {
        let spacing = (Duration::from_secs(1) + MARGIN) / per_account_per_second.max(1);
        let one = NonZeroU32::MIN;
        let local = RateLimiter::keyed(
            Quota::with_period(spacing).unwrap_or_else(|| Quota::per_second(one)).allow_burst(one),
        );
        let process =
            RateLimiter::direct(Quota::per_second(NonZeroU32::new(process_per_second).unwrap_or(one)));
        Limits { db, spacing, local, process, backoff: Mutex::new(HashMap::new()) }
    }

    /// Waits until the account may send one more request; returns how long it waited.
    pub async fn acquire(&self, account_id: i64) -> Result<Duration, StoreError> {
        let started = Instant::now();
        let hold = self.backoff.lock().ok().and_then(|b| b.get(&account_id).copied());
        if let Some(until) = hold.filter(|u| *u > Instant::now()) {
            tokio::time::sleep_until(until.into()).await;
        }
        match self.db.backend() {
            Backend::Sqlite => self.local.until_key_ready(&account_id).await,
            Backend::Postgres => {
                let interval = i64::try_from(self.spacing.as_micros()).unwrap_or(i64::MAX);
                loop {
                    let wait = store::kommo::gcra_take(&self.db, account_id, interval, 0).await?;
                    if wait == 0 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_micros(wait.unsigned_abs())).await;
                }
            }
        }
        self.process.until_ready().await;
        let waited = started.elapsed();
        crate::telemetry::metrics::metrics().rate_limit_wait.record(waited.as_secs_f64(), &[]);
        Ok(waited)
    }

    /// Kommo answered 429: hold every request of the account for `retry_after`, on this
    /// instance and (through the shared row) on the others.
    pub async fn back_off(&self, account_id: i64, retry_after: Duration) -> Result<(), StoreError> {
        if let Ok(mut backoff) = self.backoff.lock() {
            let until = Instant::now() + retry_after;
            let entry = backoff.entry(account_id).or_insert(until);
            *entry = (*entry).max(until);
            backoff.retain(|_, u| *u > Instant::now());
        }
        let micros = i64::try_from(retry_after.as_micros()).unwrap_or(i64::MAX);
        store::kommo::gcra_back_off(&self.db, account_id, micros).await
    }
}
