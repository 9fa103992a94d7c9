//! Admission of anonymous marketplace installs: whoever can reach the redirect URI can post
//! one, and each costs a row and a token exchange with Kommo. Limited per client IP and per
//! Kommo account host (in this process, like the log-in limits), de-duplicated by code, and
//! forgotten when nobody claims them.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::Config;
use crate::error::Error;

/// Past this many tracked keys, forget the ones whose budget is full again.
const TRACKED_KEYS: usize = 50_000;

pub struct InstallLimits {
    by_ip: DefaultKeyedRateLimiter<IpAddr>,
    by_host: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
    /// How long an unclaimed install is kept.
    pub ttl: Duration,
}

impl std::fmt::Debug for InstallLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstallLimits").field("ttl", &self.ttl).finish_non_exhaustive()
    }
}

fn quota(per_period: u32, period: Duration) -> Quota {
    let burst = NonZeroU32::new(per_period).unwrap_or(NonZeroU32::MIN);
    let each = period / burst.get();
    Quota::with_period(each).unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN)).allow_burst(burst)
}

impl InstallLimits {
    pub fn new(config: &Config) -> InstallLimits {
        InstallLimits {
            by_ip: RateLimiter::keyed(quota(config.kommo_install_ip_limit, Duration::from_secs(60))),
            by_host: RateLimiter::keyed(quota(config.kommo_install_host_limit, Duration::from_secs(3600))),
            clock: DefaultClock::default(),
            ttl: Duration::from_secs(config.kommo_install_ttl_secs),
        }
    }

    /// Counts one install from `ip` for `host`; refuses with the wait.
    pub fn admit(&self, ip: Option<IpAddr>, host: &str) -> Result<(), Error> {
        if self.by_ip.len() > TRACKED_KEYS {
            self.by_ip.retain_recent();
        }
        if self.by_host.len() > TRACKED_KEYS {
            self.by_host.retain_recent();
        }
        let now = self.clock.now();
        let wait = |not_until: governor::NotUntil<_>| Error::RateLimited {
            retry_after_secs: not_until.wait_time_from(now).as_secs().max(1),
        };
        if let Some(ip) = ip {
            self.by_ip.check_key(&ip).map_err(wait)?;
        }
        self.by_host.check_key(&host.to_ascii_lowercase()).map_err(wait)
    }
}
