//! Stage names by id ("Invoice (Sales)") per client account, kept for a while so that a page
//! refreshing every few seconds does not spend the account's Kommo rate budget on the same
//! pipelines list. A name is at most `TTL` old; a stage id the cached list does not know (a
//! stage added in Kommo since) fetches the list again, but not more often than `RETRY`, so ids
//! Kommo no longer knows either, or a Kommo that keeps failing, cost one call a `RETRY`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quick_cache::sync::Cache;

use super::Kommo;
use crate::ids::ClientId;

/// How old a cached name may get.
pub const TTL: Duration = Duration::from_secs(600);
/// The least time between two fetches for one client account, whatever is unknown or failed.
pub const RETRY: Duration = Duration::from_secs(60);
/// Client accounts remembered at once; the least recently used are dropped past it.
const CAPACITY: usize = 10_000;

pub type Names = Arc<HashMap<i64, String>>;

#[derive(Debug, Clone)]
struct Entry {
    names: Names,
    /// When `names` came from Kommo; `None` if it never answered.
    fetched: Option<Instant>,
    /// When Kommo was last asked, answered or not.
    tried: Instant,
}

/// The per-process cache the `Kommo` adapter holds.
pub struct StageNames {
    cache: Cache<ClientId, Entry>,
}

impl std::fmt::Debug for StageNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageNames").field("entries", &self.cache.len()).finish()
    }
}

impl Default for StageNames {
    fn default() -> Self {
        StageNames { cache: Cache::new(CAPACITY) }
    }
}

/// Whether to ask Kommo again, given what is cached and the ids wanted now.
fn should_fetch(entry: Option<&Entry>, wanted: &[i64], now: Instant) -> bool {
    let Some(entry) = entry else { return true };
    if now.saturating_duration_since(entry.tried) < RETRY {
        return false;
    }
    let stale = entry.fetched.is_none_or(|at| now.saturating_duration_since(at) >= TTL);
    stale || wanted.iter().any(|id| !entry.names.contains_key(id))
}

impl Kommo {
    /// Names of the client account's stages, "Stage (Pipeline)" by stage id: from the cache, or
    /// from Kommo when the cache is old or lacks one of `wanted`. Empty when Kommo never
    /// answered: callers show ids instead.
    pub async fn stage_names(&self, client: ClientId, wanted: &[i64]) -> Names {
        let now = Instant::now();
        let cached = self.stages.cache.get(&client);
        if !should_fetch(cached.as_ref(), wanted, now) {
            return cached.map(|e| e.names).unwrap_or_default();
        }
        let entry = match self.pipelines(client).await {
            Ok(pipelines) => Entry {
                names: Arc::new(
                    pipelines
                        .into_iter()
                        .flat_map(|p| {
                            let pipeline = p.name;
                            p.stages.into_iter().map(move |s| (s.id, format!("{} ({pipeline})", s.name)))
                        })
                        .collect(),
                ),
                fetched: Some(now),
                tried: now,
            },
            Err(error) => {
                tracing::debug!(%error, %client, "stage names unavailable; keeping what was known");
                match cached {
                    Some(old) => Entry { tried: now, ..old },
                    None => Entry { names: Names::default(), fetched: None, tried: now },
                }
            }
        };
        let names = entry.names.clone();
        self.stages.cache.insert(client, entry);
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(ids: &[i64], fetched: Option<Instant>, tried: Instant) -> Entry {
        Entry { names: Arc::new(ids.iter().map(|id| (*id, format!("S{id}"))).collect()), fetched, tried }
    }

    #[test]
    fn names_are_fetched_when_old_or_unknown_and_never_within_the_retry_floor() {
        let start = Instant::now();
        assert!(should_fetch(None, &[], start), "nothing cached");
        let entry = known(&[7002, 7003], Some(start), start);
        assert!(!should_fetch(Some(&entry), &[7003], start + Duration::from_secs(10)), "fresh and known");
        assert!(
            !should_fetch(Some(&entry), &[9001], start + Duration::from_secs(10)),
            "unknown, within RETRY"
        );
        assert!(should_fetch(Some(&entry), &[9001], start + RETRY), "unknown, past RETRY");
        assert!(!should_fetch(Some(&entry), &[7003], start + RETRY), "known and younger than TTL");
        assert!(should_fetch(Some(&entry), &[7003], start + TTL), "older than TTL");
        let failed = known(&[], None, start);
        assert!(!should_fetch(Some(&failed), &[7003], start + Duration::from_secs(1)), "a failure waits");
        assert!(should_fetch(Some(&failed), &[], start + RETRY), "and is retried after RETRY");
    }
}
