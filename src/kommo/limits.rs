//! Keeping each Kommo account under its request limit, across instances, and this process under
//! a ceiling that protects the shared egress IP.
//!
//! Requests are spaced at least `(1 s + MARGIN) / limit` apart per account. Spacing rather than
//! bursts keeps every trailing one-second window at or under the limit even when requests
//! arrive at Kommo a little later or earlier than they left; the margin absorbs that jitter.
//!
//! The spacing adapts. Kommo can answer 429 below the configured limit (another integration on
//! the same account, or the limit counted per IP), and waiting out Retry-After only to come back
//! at the same pace earns the next 429, and repeated 429s get the IP blocked. So a 429 halves
//! the account's pace (multiplicative decrease, down to about one request a second), and the
//! pace then climbs back linearly (additive increase, a twentieth of the configured limit per
//! second) from the end of the Retry-After hold up to the configured limit. On PostgreSQL the
//! pace lives in the account's limiter row, so every instance slows down together.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::store::{self, Backend, Db, StoreError};

/// Slack added to Kommo's one-second window, for scheduling and network jitter between the
/// slot being granted and the request reaching Kommo. 100 ms let a loaded 2-core CI machine put
/// 8 requests in one second at the fake now and then (two instances on PostgreSQL, a request
/// delayed on a fresh connection); repeated 429s can end in an IP block, so the margin errs
/// wide: 150 ms gives 6.1 requests a second at a limit of 7 (87%).
const MARGIN: Duration = Duration::from_millis(150);

/// The slowest an account is paced after 429s: about one request a second. Slower would gain
/// little (Retry-After holds it anyway) and starve the account's jobs.
const SLOWEST: Duration = Duration::from_millis(1150);

/// How a 429 has slowed an account: the spacing right after the cut, and when (wall-clock
/// microseconds, the end of the cut's Retry-After hold) it starts to recover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pace {
    from_us: i64,
    start_us: i64,
}

impl Pace {
    /// The spacing at `now_us`: the rate climbs linearly from the cut's, `ramp` requests per
    /// second each second, and never above the configured pace (`base_us`).
    fn spacing_us(&self, now_us: i64, base_us: i64, ramp: f64) -> i64 {
        let seconds = (now_us - self.from_us).max(0) as f64 / 1e6;
        let rate = 1e6 / self.start_us.max(1) as f64 + ramp * seconds;
        ((1e6 / rate) as i64).max(base_us)
    }

    /// The pace after a 429 at `now_us`, or `None` when the account is still inside an earlier
    /// cut's hold: requests already in flight then were sent at the old pace and say nothing
    /// about the new one, so one burst of 429s counts as one cut, not several.
    fn cut(current: Option<Pace>, now_us: i64, hold: Duration, base_us: i64, ramp: f64) -> Option<Pace> {
        if current.is_some_and(|p| p.from_us > now_us) {
            return None;
        }
        let spacing = current.map_or(base_us, |p| p.spacing_us(now_us, base_us, ramp));
        let slowest = micros(SLOWEST);
        Some(Pace {
            from_us: now_us.saturating_add(micros(hold)),
            start_us: spacing.saturating_mul(2).min(slowest).max(base_us),
        })
    }
}

/// One account's spacing on SQLite (one instance): the next free slot and the pace.
#[derive(Debug, Clone, Copy)]
struct Local {
    next: Instant,
    pace: Option<Pace>,
}

pub struct Limits {
    db: Db,
    /// The configured spacing, which the adaptive pace never goes below.
    spacing: Duration,
    /// Requests per second the pace regains each second after a cut.
    ramp: f64,
    /// SQLite means one instance, so in-process spacing is exact there.
    local: Mutex<HashMap<i64, Local>>,
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
        let process =
            RateLimiter::direct(Quota::per_second(NonZeroU32::new(process_per_second).unwrap_or(one)));
        Limits {
            db,
            spacing,
            ramp: f64::from(per_account_per_second.max(1)) / 20.0,
            local: Mutex::new(HashMap::new()),
            process,
            backoff: Mutex::new(HashMap::new()),
        }
    }

    /// Waits until the account may send one more request; returns how long it waited.
    pub async fn acquire(&self, account_id: i64) -> Result<Duration, StoreError> {
        let started = Instant::now();
        loop {
            let hold = self.backoff.lock().ok().and_then(|b| b.get(&account_id).copied());
            if let Some(until) = hold.filter(|u| *u > Instant::now()) {
                tokio::time::sleep_until(until.into()).await;
            }
            let wait = match self.db.backend() {
                Backend::Sqlite => self.take_local(account_id),
                Backend::Postgres => self.take_shared(account_id).await?,
            };
            match wait {
                None => break,
                Some(wait) => tokio::time::sleep(wait).await,
            }
        }
        self.process.until_ready().await;
        let waited = started.elapsed();
        crate::telemetry::metrics::metrics().rate_limit_wait.record(waited.as_secs_f64(), &[]);
        Ok(waited)
    }

    /// The account's current spacing, as its pace has it (the configured one unless a 429 cut it).
    pub async fn spacing_of(&self, account_id: i64) -> Result<Duration, StoreError> {
        let pace = match self.db.backend() {
            Backend::Sqlite => self.local.lock().ok().and_then(|l| l.get(&account_id).and_then(|e| e.pace)),
            Backend::Postgres => shared_pace(&self.db, account_id).await?,
        };
        let spacing = pace.map_or(self.base_us(), |p| p.spacing_us(now_us(), self.base_us(), self.ramp));
        Ok(Duration::from_micros(spacing.unsigned_abs()))
    }

    fn base_us(&self) -> i64 {
        micros(self.spacing)
    }

    /// One step of in-process GCRA at the account's pace: `None` takes the slot.
    fn take_local(&self, account_id: i64) -> Option<Duration> {
        let mut local = self.local.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        if local.len() > 10_000 {
            let base = self.base_us();
            let (ramp, wall) = (self.ramp, now_us());
            local
                .retain(|_, e| e.next > now || e.pace.is_some_and(|p| p.spacing_us(wall, base, ramp) > base));
        }
        let entry = local.entry(account_id).or_insert(Local { next: now, pace: None });
        if entry.next > now {
            return Some(entry.next - now);
        }
        let spacing =
            entry.pace.map_or(self.base_us(), |p| p.spacing_us(now_us(), self.base_us(), self.ramp));
        entry.next = now + Duration::from_micros(spacing.unsigned_abs());
        None
    }

    /// One step of the shared GCRA row at the account's shared pace: `None` takes the slot.
    async fn take_shared(&self, account_id: i64) -> Result<Option<Duration>, StoreError> {
        let pace = shared_pace(&self.db, account_id).await?;
        let spacing = pace.map_or(self.base_us(), |p| p.spacing_us(now_us(), self.base_us(), self.ramp));
        let wait = store::kommo::gcra_take(&self.db, account_id, spacing, 0).await?;
        Ok((wait != 0).then(|| Duration::from_micros(wait.unsigned_abs())))
    }

    /// Kommo answered 429: hold every request of the account for `retry_after`, on this
    /// instance and (through the shared row) on the others, and halve the account's pace.
    pub async fn back_off(&self, account_id: i64, retry_after: Duration) -> Result<(), StoreError> {
        if let Ok(mut backoff) = self.backoff.lock() {
            let until = Instant::now() + retry_after;
            let entry = backoff.entry(account_id).or_insert(until);
            *entry = (*entry).max(until);
            backoff.retain(|_, u| *u > Instant::now());
        }
        let (base, ramp, now) = (self.base_us(), self.ramp, now_us());
        let cut = match self.db.backend() {
            Backend::Sqlite => {
                let mut local = self.local.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                let entry = local.entry(account_id).or_insert(Local { next: Instant::now(), pace: None });
                let cut = Pace::cut(entry.pace, now, retry_after, base, ramp);
                if let Some(pace) = cut {
                    entry.pace = Some(pace);
                }
                cut
            }
            Backend::Postgres => {
                store::kommo::gcra_back_off(&self.db, account_id, micros(retry_after)).await?;
                let seen = shared_pace(&self.db, account_id).await?;
                match Pace::cut(seen, now, retry_after, base, ramp) {
                    Some(pace) => {
                        let stored = store::kommo::set_pace(
                            &self.db,
                            account_id,
                            seen.map(|p| (p.from_us, p.start_us)),
                            (pace.from_us, pace.start_us),
                        )
                        .await?;
                        stored.then_some(pace)
                    }
                    None => None,
                }
            }
        };
        if let Some(pace) = cut {
            tracing::warn!(
                account_id,
                spacing_ms = pace.start_us / 1000,
                "Kommo answered 429: this account's requests are slowed down"
            );
        }
        Ok(())
    }
}

async fn shared_pace(db: &Db, account_id: i64) -> Result<Option<Pace>, StoreError> {
    Ok(store::kommo::pace(db, account_id).await?.map(|(from_us, start_us)| Pace { from_us, start_us }))
}

fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: i64 = 164_285; // 1.15 s / 7
    const RAMP: f64 = 0.35; // 7 / 20

    #[test]
    fn a_429_halves_the_pace_down_to_about_one_a_second() {
        let hold = Duration::from_secs(1);
        let first = Pace::cut(None, 0, hold, BASE, RAMP).unwrap();
        assert_eq!(first, Pace { from_us: 1_000_000, start_us: 2 * BASE });
        assert_eq!(Pace::cut(Some(first), 500_000, hold, BASE, RAMP), None, "inside the hold: one cut");
        let second = Pace::cut(Some(first), 1_000_000, hold, BASE, RAMP).unwrap();
        assert_eq!(second.start_us, 4 * BASE);
        let floor = Pace::cut(Some(second), 2_000_000, hold, BASE, RAMP).unwrap();
        assert_eq!(floor.start_us, micros(SLOWEST), "never slower than about one a second");
    }

    #[test]
    fn the_pace_recovers_linearly_up_to_the_configured_one_and_no_further() {
        let pace = Pace { from_us: 10_000_000, start_us: 1_000_000 }; // 1 request a second
        assert_eq!(pace.spacing_us(0, BASE, RAMP), 1_000_000, "held during Retry-After");
        assert_eq!(pace.spacing_us(10_000_000, BASE, RAMP), 1_000_000);
        // 10 s later: 1 + 3.5 = 4.5 requests a second.
        assert_eq!(pace.spacing_us(20_000_000, BASE, RAMP), 222_222);
        assert_eq!(pace.spacing_us(60_000_000, BASE, RAMP), BASE, "back to the configured pace");
    }
}
