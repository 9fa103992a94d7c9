//! Limits on password guessing: per client IP and per email, in this process.
//!
//! Per process, not per cluster: with N instances behind a balancer an attacker gets at most
//! N times the budget, which still turns a guessing attack from millions of tries into dozens.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::Error;

/// Bursts of this many attempts per email, then one more every `EMAIL_PERIOD`.
const EMAIL_BURST: u32 = 5;
const EMAIL_PERIOD: Duration = Duration::from_secs(60);
/// An office behind one NAT logs in from one IP, so the IP budget is more generous.
const IP_BURST: u32 = 30;
const IP_PERIOD: Duration = Duration::from_secs(2);
/// Past this many tracked keys, forget the ones whose budget is full again.
const TRACKED_KEYS: usize = 50_000;

pub struct AttemptLimiter {
    by_ip: DefaultKeyedRateLimiter<IpAddr>,
    by_email: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

impl std::fmt::Debug for AttemptLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AttemptLimiter")
    }
}

impl Default for AttemptLimiter {
    fn default() -> Self {
        Self::new()
    }
}

fn quota(burst: u32, period: Duration) -> Quota {
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(period).unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN)).allow_burst(burst)
}

impl AttemptLimiter {
    pub fn new() -> Self {
        AttemptLimiter {
            by_ip: RateLimiter::keyed(quota(IP_BURST, IP_PERIOD)),
            by_email: RateLimiter::keyed(quota(EMAIL_BURST, EMAIL_PERIOD)),
            clock: DefaultClock::default(),
        }
    }

    /// Counts one attempt from `ip` (and for `email`, when known); refuses with the wait.
    pub fn attempt(&self, ip: IpAddr, email: Option<&str>) -> Result<(), Error> {
        if self.by_ip.len() > TRACKED_KEYS {
            self.by_ip.retain_recent();
        }
        if self.by_email.len() > TRACKED_KEYS {
            self.by_email.retain_recent();
        }
        let now = self.clock.now();
        let wait = |not_until: governor::NotUntil<_>| Error::RateLimited {
            retry_after_secs: not_until.wait_time_from(now).as_secs().max(1),
        };
        self.by_ip.check_key(&ip).map_err(wait)?;
        if let Some(email) = email {
            self.by_email.check_key(&email.to_owned()).map_err(wait)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_email_gets_a_few_tries_then_waits() {
        let limiter = AttemptLimiter::new();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..EMAIL_BURST {
            limiter.attempt(ip, Some("a@b.co")).unwrap();
        }
        match limiter.attempt(ip, Some("a@b.co")) {
            Err(Error::RateLimited { retry_after_secs }) => assert!(retry_after_secs >= 1),
            other => panic!("expected a wait, got {other:?}"),
        }
        limiter.attempt(ip, Some("someone-else@b.co")).unwrap();
    }

    #[test]
    fn one_ip_trying_many_emails_is_held_back_too() {
        let limiter = AttemptLimiter::new();
        let ip: IpAddr = "10.0.0.2".parse().unwrap();
        let mut refused = 0;
        for i in 0..IP_BURST + 5 {
            if limiter.attempt(ip, Some(&format!("user{i}@b.co"))).is_err() {
                refused += 1;
            }
        }
        assert!(refused >= 4, "refused {refused}");
        limiter.attempt("10.0.0.3".parse().unwrap(), Some("user1@b.co")).unwrap();
    }
}
