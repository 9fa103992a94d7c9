//! The process's file descriptor budget, which bounds how many connections it may hold.

/// Descriptors kept for everything that is not an incoming connection: the database pool,
/// outbound calls to Kommo, Flutterwave and telemetry endpoints, the SQLite files and logs.
const HEADROOM: u64 = 256;

/// Beyond this many, more connections cost memory for little benefit on one instance.
const MOST_BY_DEFAULT: u64 = 10_000;

/// Raises the soft limit on open files to the hard limit (systemd and many shells start
/// services at 1024 soft, with a far higher hard limit), and returns the soft limit in force.
pub fn raise_nofile() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    #[allow(clippy::useless_conversion)] // rlim_t is narrower than u64 on some targets
    Some(u64::try_from(limit.rlim_cur).unwrap_or(u64::MAX))
}

/// Connections that fit in `nofile` descriptors next to a database pool of `pool`.
pub fn connections_within(nofile: u64, pool: u32) -> usize {
    let spare = nofile.saturating_sub(HEADROOM + u64::from(pool));
    usize::try_from(spare.clamp(16, MOST_BY_DEFAULT)).unwrap_or(16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_leave_room_for_the_pool_and_outbound_calls() {
        assert_eq!(connections_within(1024, 10), 758);
        assert_eq!(connections_within(1_048_576, 10), 10_000);
        assert_eq!(connections_within(100, 10), 16, "a tiny limit still serves someone");
    }
}
