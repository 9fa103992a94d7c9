//! Keeping each Kommo account under its request limit, across instances, and this process under
//! a ceiling that protects the shared egress IP.
//!
//! The limiter sees every answer: a request reaches Kommo after it is sent and before its answer
//! comes back, so sending the n-th request only a second after the answer to the (n-7)-th came
//! back (and after every earlier answer) keeps every second at Kommo at 7 or fewer, however late
//! or early each one arrived ([`Window`]), with no safety margin. It costs one round trip per
//! seven requests (6.7 a second at 50 ms). Requests are also spaced `1 s / limit` apart, only to
//! keep them from bunching; the window is what keeps the limit.
//!
//! On SQLite (one instance) the window lives in this process. On PostgreSQL it lives in the
//! account's limiter row (`store::kommo::window_take`), so every instance's requests count
//! against one window: each takes the row's next number under its lock in one statement, on
//! PostgreSQL's clock, and records its answer time against that number when the answer is in.
//! A request whose answer was never recorded (its instance died) counts as answered
//! the Kommo timeout plus 15 s after its slot, longer than any request can take.
//!
//! The spacing adapts. Kommo can answer 429 below the configured limit (another integration on
//! the same account, or the limit counted per IP), and waiting out Retry-After only to come back
//! at the same pace earns the next 429, and repeated 429s get the IP blocked. So a 429 halves
//! the account's pace (multiplicative decrease, down to about one request a second), and the
//! pace then climbs back linearly (additive increase, a twentieth of the configured limit per
//! second) from the end of the Retry-After hold up to the configured limit. On PostgreSQL the
//! pace lives in the account's limiter row, so every instance slows down together.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tracing::Instrument;

use crate::store::{self, Backend, Db, StoreError};

/// The configured pace, which a 429's cut never goes below, is `(1 s + MARGIN) / limit`: the
/// spacing that alone kept the limit before the window, so the pace recovers to where it was.
const MARGIN: Duration = Duration::from_millis(150);

/// The longest the process ceiling may hold a taken slot before its request goes: past it the
/// slot is handed back and taken again, so a request always leaves soon after its slot and the
/// shared window's stale bound (`Limits::stale`) holds.
const CEILING_HOLD: Duration = Duration::from_secs(5);

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

/// The last `limit` requests of one account, in the order they were sent, with when each was
/// answered. A request may go when the one `limit` places before it was answered over a second
/// ago (and so was every earlier one): it reached Kommo before that answer, and this one reaches
/// Kommo after it is sent, so the two are more than a second apart at Kommo whatever the network
/// did. That holds for any `limit + 1` requests, so no second at Kommo ever holds more than
/// `limit` of them.
#[derive(Debug, Clone, Default)]
struct Window {
    /// (slot id, answered at): `None` while the request is in flight.
    recent: VecDeque<(u64, Option<Instant>)>,
    /// The latest answer among requests that left `recent`.
    horizon: Option<Instant>,
}

/// How often a request waiting on one still in flight looks again. Only an account with more
/// than `limit` requests in flight at once waits on this.
const IN_FLIGHT_POLL: Duration = Duration::from_millis(10);

impl Window {
    /// How long until one more request may be sent at `now`; `None`: now.
    fn wait(&self, limit: usize, now: Instant) -> Option<Duration> {
        if self.recent.len() < limit {
            return None;
        }
        let (_, answered) = self.recent.front()?;
        let Some(answered) = answered else { return Some(IN_FLIGHT_POLL) };
        let clear = (*answered).max(self.horizon.unwrap_or(*answered)) + Duration::from_secs(1);
        (clear > now).then(|| clear - now)
    }

    /// Records a request sent (its slot taken); call only when [`Window::wait`] said `None`.
    fn sent(&mut self, limit: usize, id: u64) {
        while self.recent.len() >= limit.max(1) {
            if let Some((_, Some(answered))) = self.recent.pop_front() {
                self.horizon = Some(self.horizon.map_or(answered, |h| h.max(answered)));
            }
        }
        self.recent.push_back((id, None));
    }

    /// The answer to request `id` came back (or it was given up) at `at`.
    fn answered(&mut self, id: u64, at: Instant) {
        if let Some((_, answered)) = self.recent.iter_mut().find(|(slot, _)| *slot == id) {
            answered.get_or_insert(at);
        }
    }

    /// Whether forgetting the window could let a request through earlier than it would.
    fn matters(&self, now: Instant) -> bool {
        let second = Duration::from_secs(1);
        self.recent.iter().any(|(_, answered)| answered.is_none_or(|at| at + second > now))
            || self.horizon.is_some_and(|at| at + second > now)
    }
}

/// One account's limiter on SQLite (one instance): the next free slot, the pace, the window.
#[derive(Debug, Clone)]
struct Local {
    next: Instant,
    pace: Option<Pace>,
    window: Window,
}

impl Local {
    fn new(now: Instant) -> Local {
        Local { next: now, pace: None, window: Window::default() }
    }

    /// Takes a slot as `id` at `now` with `spacing` to the next one, or says how long to wait.
    fn take(&mut self, limit: usize, id: u64, now: Instant, spacing: Duration) -> Option<Duration> {
        if self.next > now {
            return Some(self.next - now);
        }
        if let Some(wait) = self.window.wait(limit, now) {
            return Some(wait);
        }
        self.window.sent(limit, id);
        self.next = now + spacing;
        None
    }
}

/// A taken slot: dropping it, once the request's answer is in (or the request was given up),
/// tells the account's window when the request was done with. Keep it across the HTTP exchange.
#[must_use = "the slot must live until the request's answer is in"]
pub struct Slot<'a> {
    limits: &'a Limits,
    account_id: i64,
    ticket: Ticket,
}

/// Which window a slot was taken in.
#[derive(Debug, Clone, Copy)]
enum Ticket {
    /// This process's (SQLite): the slot id.
    Local(u64),
    /// The account's limiter row (PostgreSQL): the request's number there.
    Shared(i64),
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        match self.ticket {
            Ticket::Local(id) => {
                let mut local = self.limits.local.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                if let Some(entry) = local.get_mut(&self.account_id) {
                    entry.window.answered(id, Instant::now());
                }
            }
            // Recorded off the caller's path: the time written is PostgreSQL's when the write
            // lands, at or after the answer, so a late write only errs slow. One that never
            // lands (no runtime at shutdown, a database error) is what the stale bound is for.
            Ticket::Shared(seq) => {
                let (db, account_id) = (self.limits.db.clone(), self.account_id);
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(async move {
                        if let Err(error) = store::kommo::window_answered(&db, account_id, seq).await {
                            tracing::warn!(account_id, %error, "could not record a Kommo answer in the shared window");
                        }
                    });
                }
            }
        }
    }
}

pub struct Limits {
    db: Db,
    /// The configured spacing, which the adaptive pace never goes below.
    spacing: Duration,
    /// Requests per second per account, and (SQLite) the spacing that alone would allow them.
    limit: usize,
    even: Duration,
    /// Slot ids, for the windows.
    slots: AtomicU64,
    /// How long after its slot a request's answer is surely in (or given up): the Kommo client's
    /// timeout plus slack. The shared window counts an answer never recorded as in by then.
    stale: Duration,
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
    /// `request_timeout`: the longest one Kommo request may take, so an answer never recorded
    /// can be counted as in after it.
    pub fn new(
        db: Db,
        per_account_per_second: u32,
        process_per_second: u32,
        request_timeout: Duration,
    ) -> Limits {
        let spacing = (Duration::from_secs(1) + MARGIN) / per_account_per_second.max(1);
        let one = NonZeroU32::MIN;
        let process =
            RateLimiter::direct(Quota::per_second(NonZeroU32::new(process_per_second).unwrap_or(one)));
        Limits {
            db,
            spacing,
            limit: per_account_per_second.max(1) as usize,
            even: Duration::from_secs(1) / per_account_per_second.max(1),
            slots: AtomicU64::new(0),
            stale: request_timeout + CEILING_HOLD + Duration::from_secs(10),
            ramp: f64::from(per_account_per_second.max(1)) / 20.0,
            local: Mutex::new(HashMap::new()),
            process,
            backoff: Mutex::new(HashMap::new()),
        }
    }

    /// Waits until the account may send one more request, and takes its slot: hold the slot
    /// until the request's answer is in.
    pub async fn acquire(&self, account_id: i64) -> Result<Slot<'_>, StoreError> {
        // Debug level: off in production, but a benchmark (examples/pipeline_pace.rs) can tell
        // a job's waits for its slot from pipepay's own time.
        let span = tracing::debug_span!("kommo.rate_limit", pipepay.kommo.account_id = account_id);
        self.wait_for_slot(account_id).instrument(span).await
    }

    async fn wait_for_slot(&self, account_id: i64) -> Result<Slot<'_>, StoreError> {
        let started = Instant::now();
        let slot = loop {
            let slot = self.take(account_id).await?;
            // From here on the slot is taken: dropping it (say the caller gave up while waiting
            // for the process ceiling) counts as the request done with, which errs on the safe
            // side.
            let taken = Instant::now();
            self.process.until_ready().await;
            if taken.elapsed() <= CEILING_HOLD {
                break slot;
            }
        };
        let waited = started.elapsed();
        crate::telemetry::metrics::metrics().rate_limit_wait.record(waited.as_secs_f64(), &[]);
        Ok(slot)
    }

    /// Waits for the account's window and takes a slot in it.
    async fn take(&self, account_id: i64) -> Result<Slot<'_>, StoreError> {
        let local = match self.db.backend() {
            Backend::Sqlite => Some(self.slots.fetch_add(1, Ordering::Relaxed)),
            Backend::Postgres => None,
        };
        loop {
            let hold = self.backoff.lock().ok().and_then(|b| b.get(&account_id).copied());
            if let Some(until) = hold.filter(|u| *u > Instant::now()) {
                tokio::time::sleep_until(until.into()).await;
            }
            let taken = match local {
                Some(id) => self.take_local(account_id, id).map_or(Ok(Ticket::Local(id)), Err),
                None => self.take_shared(account_id).await?,
            };
            match taken {
                Ok(ticket) => return Ok(Slot { limits: self, account_id, ticket }),
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
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

    /// One step of the in-process limiter: `None` takes the slot as `id`. Spaced `1 s / limit`
    /// (or slower while a 429's cut recovers), and never past the account's [`Window`].
    fn take_local(&self, account_id: i64, id: u64) -> Option<Duration> {
        let mut local = self.local.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        let (base, ramp, wall) = (self.base_us(), self.ramp, now_us());
        if local.len() > 10_000 {
            local.retain(|_, e| {
                e.next > now
                    || e.window.matters(now)
                    || e.pace.is_some_and(|p| p.spacing_us(wall, base, ramp) > base)
            });
        }
        let entry = local.entry(account_id).or_insert_with(|| Local::new(now));
        let spacing = match entry.pace.map(|p| p.spacing_us(wall, base, ramp)) {
            Some(cut) if cut > base => Duration::from_micros(cut.unsigned_abs()),
            _ => self.even,
        };
        entry.take(self.limit, id, now, spacing)
    }

    /// One step of the account's shared window (its row, under its lock): the slot, or how long
    /// to wait.
    async fn take_shared(&self, account_id: i64) -> Result<Result<Ticket, Duration>, StoreError> {
        let rule = store::kommo::WindowRule {
            limit: i64::try_from(self.limit).unwrap_or(i64::MAX),
            base_us: self.base_us(),
            even_us: micros(self.even),
            ramp: self.ramp,
            wall_us: now_us(),
            stale_us: micros(self.stale),
            poll_us: micros(IN_FLIGHT_POLL),
        };
        Ok(match store::kommo::window_take(&self.db, account_id, &rule).await? {
            Ok(seq) => Ok(Ticket::Shared(seq)),
            Err(wait) => Err(Duration::from_micros(wait.unsigned_abs())),
        })
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
                let entry = local.entry(account_id).or_insert_with(|| Local::new(Instant::now()));
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

/// The in-process limiter on a clock of its own: requests sent, answered and seen by Kommo at
/// chosen instants, with no sleeping.
#[cfg(test)]
mod window_tests {
    use super::*;

    const LIMIT: usize = 7;
    const MS: Duration = Duration::from_millis(1);

    /// A caller that sends a request, gets its answer `latency` later, and (after `gap`) sends
    /// the next; Kommo sees each request at `arrival(sent, answered)`.
    struct Caller {
        free_at: Instant,
        in_flight: Option<(u64, Instant)>,
    }

    /// Runs `callers` callers for `seconds` on a 1 ms clock with the given latency, arrival
    /// point and pause between a caller's calls; returns when Kommo saw each request.
    fn simulate(
        callers: usize,
        seconds: u64,
        latency: impl Fn(u64) -> Duration,
        arrival: impl Fn(u64, Instant, Instant) -> Instant,
        gap: Duration,
    ) -> Vec<Instant> {
        let start = Instant::now();
        let mut local = Local::new(start);
        let mut callers: Vec<Caller> =
            (0..callers).map(|_| Caller { free_at: start, in_flight: None }).collect();
        let (mut next_id, mut arrivals) = (0u64, Vec::new());
        let spacing = Duration::from_secs(1) / LIMIT as u32;
        for tick in 0..seconds * 1000 {
            let now = start + MS * u32::try_from(tick).unwrap();
            for caller in &mut callers {
                if let Some((id, answered)) = caller.in_flight
                    && answered <= now
                {
                    local.window.answered(id, now);
                    caller.in_flight = None;
                    caller.free_at = now + gap;
                }
                if caller.in_flight.is_none()
                    && caller.free_at <= now
                    && local.take(LIMIT, next_id, now, spacing).is_none()
                {
                    let answered = now + latency(next_id);
                    arrivals.push(arrival(next_id, now, answered));
                    caller.in_flight = Some((next_id, answered));
                    next_id += 1;
                }
            }
        }
        arrivals.sort();
        arrivals
    }

    /// The most requests Kommo saw within any one second (strictly less than 1 s apart, as the
    /// fake counts).
    fn busiest_second(arrivals: &[Instant]) -> usize {
        let mut best = 0;
        let mut first = 0;
        for last in 0..arrivals.len() {
            while arrivals[last] - arrivals[first] >= Duration::from_secs(1) {
                first += 1;
            }
            best = best.max(last - first + 1);
        }
        best
    }

    /// A cheap deterministic spread (no randomness in tests): 0..n from `seed`.
    fn spread(seed: u64, n: u64) -> u64 {
        (seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407) >> 33)
            % n.max(1)
    }

    #[test]
    fn however_late_or_early_requests_reach_kommo_no_second_there_holds_more_than_the_limit() {
        // Arrival anywhere between sending and the answer: right at sending, right before the
        // answer, or spread; latencies from 1 ms to 400 ms; one to twelve callers at once.
        let arrivals: [&dyn Fn(u64, Instant, Instant) -> Instant; 3] =
            [&|_, sent, _| sent, &|_, _, answered| answered, &|id, sent, answered| {
                sent + (answered - sent).mul_f64((spread(id, 1000) as f64) / 1000.0)
            }];
        for callers in [1, 3, 7, 12] {
            for (shape, arrival) in arrivals.iter().enumerate() {
                let latency = |id: u64| MS * (1 + u32::try_from(spread(id ^ 0x5a5a, 400)).unwrap());
                let seen = simulate(callers, 20, latency, arrival, Duration::ZERO);
                assert!(seen.len() > 60, "{callers} callers, shape {shape}: only {} requests", seen.len());
                let busiest = busiest_second(&seen);
                assert!(
                    busiest <= LIMIT,
                    "{callers} callers, arrival shape {shape}: {busiest} in one second"
                );
            }
        }
    }

    #[test]
    fn one_caller_at_50_ms_a_call_uses_over_nine_tenths_of_the_budget() {
        // A job's calls one after another, 50 ms each, Kommo seeing each at the worst moment for
        // the window (just before the answer). The old 150 ms margin allowed 6.1 a second.
        let seen = simulate(1, 30, |_| 50 * MS, |_, _, answered| answered - MS, Duration::ZERO);
        let per_second = seen.len() as f64 / 30.0;
        assert!(per_second >= 6.3, "{per_second:.2} requests a second");
        assert!(busiest_second(&seen) <= LIMIT);
        // And with a little of pipepay's own work between calls, still over 6.3.
        let seen = simulate(1, 30, |_| 50 * MS, |_, sent, _| sent + 25 * MS, 5 * MS);
        let per_second = seen.len() as f64 / 30.0;
        assert!(per_second >= 6.3, "{per_second:.2} requests a second with 5 ms between calls");
    }

    #[test]
    fn a_request_still_in_flight_holds_the_one_seven_places_later() {
        let start = Instant::now();
        let mut local = Local::new(start);
        let spacing = Duration::from_millis(10);
        for id in 0..7u64 {
            let now = start + spacing * u32::try_from(id).unwrap();
            assert_eq!(local.take(LIMIT, id, now, spacing), None, "request {id}");
        }
        for id in 1..7 {
            local.window.answered(id, start + 100 * MS);
        }
        // The first is still in flight two seconds on: the eighth waits for it.
        let later = start + Duration::from_secs(2);
        assert_eq!(local.take(LIMIT, 7, later, spacing), Some(IN_FLIGHT_POLL));
        local.window.answered(0, later);
        assert_eq!(
            local.take(LIMIT, 7, later + 500 * MS, spacing),
            Some(500 * MS),
            "a second after its answer"
        );
        assert_eq!(local.take(LIMIT, 7, later + Duration::from_secs(1), spacing), None);
    }
}
