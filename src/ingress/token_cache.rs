//! Which client account an ingress token belongs to, cached: a bounded concurrent cache
//! (`quick_cache`, sharded, so lookups on the hot path take no process-wide lock). It can be
//! stale for a
//! moment on another instance; that never lets a rotated or deleted token through, because the
//! transaction that stores a webhook checks the token again (see `store::events`).
//!
//! Tokens that are not tokens (not `pph_` and 43 base64url characters) and tokens recently
//! found to belong to nobody are answered before the rate limiter and the database: the
//! limiter would otherwise keep a key per made-up path, and the database a read per guess.

use std::sync::Arc;
use std::time::{Duration, Instant};

use quick_cache::sync::Cache;

use crate::auth::tokens;
use crate::error::Result;
use crate::ids::{AgencyId, ClientId};
use crate::store::{self, Db};
use crate::tenants::flutterwave_keys::WEBHOOK_HASH;
use crate::tenants::secrets;
use crate::tenants::settings::{ClientSettings, Trigger};
use crate::vault::{Secret, Vault};

const FRESH_FOR: Duration = Duration::from_secs(30);
const MAX_ENTRIES: usize = 200_000;
/// How long a token is remembered as belonging to nobody. Short, because a client account
/// created on another instance must work within moments (its token is random, so it cannot
/// have been guessed before; this only bounds what a wrong assumption could cost).
const UNKNOWN_FOR: Duration = Duration::from_secs(10);
/// Unknown tokens remembered at most; a flood of guesses beyond it is simply read again.
const MAX_UNKNOWN: usize = 10_000;
/// The random part of an ingress token: 32 bytes in unpadded base64url.
const TOKEN_CHARS: usize = 43;

/// Whether `token` could be an ingress token at all (see `auth::tokens::generate`).
pub fn well_formed(token: &str) -> bool {
    token.strip_prefix(tokens::INGRESS_PREFIX).is_some_and(|random| {
        random.len() == TOKEN_CHARS
            && random.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// Token hashes recently found to belong to no client account: bounded, and short-lived.
struct Unknown {
    seen: Cache<Vec<u8>, Instant>,
}

impl Unknown {
    fn new() -> Unknown {
        Unknown { seen: Cache::new(MAX_UNKNOWN) }
    }

    fn contains(&self, hash: &[u8]) -> bool {
        self.seen.get(hash).is_some_and(|at| at.elapsed() < UNKNOWN_FOR)
    }

    fn insert(&self, hash: Vec<u8>) {
        self.seen.insert(hash, Instant::now());
    }
}

/// What the ingress needs to know about a client account.
#[derive(Debug)]
pub struct Tenant {
    pub client: ClientId,
    pub agency: AgencyId,
    pub token_hash: Vec<u8>,
    /// The connected Kommo account, if any.
    pub kommo_account: Option<i64>,
    /// The Flutterwave webhook hash, opened from the vault.
    pub webhook_hash: Option<Secret>,
    /// The stages that send a link, to tell which lead edits are worth a job (up to
    /// `FRESH_FOR` old; the job reads the settings afresh anyway).
    pub trigger: Option<Trigger>,
    /// When these facts were read from the database.
    pub read_at: Instant,
}

/// Client accounts by ingress token hash, and tokens known to be nobody's.
pub struct TokenCache {
    db: Db,
    vault: Vault,
    /// Token hash → what was read (with when); a full cache evicts the least used.
    cache: Cache<Vec<u8>, Arc<Tenant>>,
    unknown: Unknown,
}

impl TokenCache {
    pub fn new(db: Db, vault: Vault) -> TokenCache {
        TokenCache { db, vault, cache: Cache::new(MAX_ENTRIES), unknown: Unknown::new() }
    }

    /// Whether the token is known to belong to nobody without asking the database: it is not
    /// a token, or it was looked up moments ago and found nowhere.
    pub fn surely_unknown(&self, token: &str) -> bool {
        !well_formed(token) || self.unknown.contains(&tokens::hash(token))
    }

    /// The tenant of a token, from the cache when fresh.
    pub async fn get(&self, token: &str) -> Result<Option<Arc<Tenant>>> {
        let hash = tokens::hash(token);
        let cached = self.cache.get(&hash).filter(|t| t.read_at.elapsed() < FRESH_FOR);
        match cached {
            Some(tenant) => Ok(Some(tenant)),
            None => self.load(hash).await,
        }
    }

    /// Reads the tenant again, for when the cached facts disagree with a webhook.
    pub async fn reload(&self, tenant: &Tenant) -> Result<Option<Arc<Tenant>>> {
        self.load(tenant.token_hash.clone()).await
    }

    async fn load(&self, hash: Vec<u8>) -> Result<Option<Arc<Tenant>>> {
        let mut tx = self.db.read().await?;
        let Some(client) = store::clients::by_ingress_token(&mut tx, &hash).await? else {
            tx.commit().await?;
            self.cache.remove(&hash);
            self.unknown.insert(hash);
            return Ok(None);
        };
        let connection = store::kommo::connection(&mut tx, client.id).await?;
        let webhook_hash = secrets::open(&mut tx, &self.vault, client.id, WEBHOOK_HASH).await?;
        tx.commit().await?;
        let tenant = Arc::new(Tenant {
            client: client.id,
            agency: client.agency_id,
            token_hash: hash.clone(),
            kommo_account: connection.map(|c| c.account_id),
            webhook_hash,
            trigger: serde_json::from_str::<ClientSettings>(&client.settings).ok().and_then(|s| s.trigger),
            read_at: Instant::now(),
        });
        self.cache.insert(hash, tenant.clone());
        Ok(Some(tenant))
    }

    /// Names the tenant on the request's span, for traces (and for the agency's own exporter).
    pub fn trace(tenant: &Tenant) {
        let span = tracing::Span::current();
        span.record("pipepay.client_id", tracing::field::display(tenant.client));
        span.record("pipepay.agency_id", tracing::field::display(tenant.agency));
    }

    /// Forgets a client account's cached facts in this process (its keys or connection changed).
    pub fn forget(&self, client: ClientId) {
        self.cache.retain(|_, t| t.client != client);
        // A new token (rotated here) is not one that was guessed, but nothing is lost by
        // reading every unknown token afresh after a change.
        self.unknown.seen.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_the_generator_makes_is_a_token() {
        let (token, _) = tokens::generate(tokens::INGRESS_PREFIX);
        assert!(well_formed(token.expose()));
        assert!(!well_formed(&format!("{}x", token.expose())));
        assert!(!well_formed(&token.expose()[..token.expose().len() - 1]));
        assert!(!well_formed(&token.expose().replace("pph_", "ppk_")));
        assert!(!well_formed(&format!("pph_{}", "a".repeat(40_000))));
        assert!(!well_formed(&format!("pph_{}.", "a".repeat(42))));
        assert!(!well_formed("pph_not-a-token"));
    }

    #[test]
    fn unknown_tokens_are_remembered_boundedly() {
        let unknown = Unknown::new();
        for n in 0..MAX_UNKNOWN * 2 {
            unknown.insert(n.to_be_bytes().to_vec());
        }
        assert!(unknown.seen.len() <= MAX_UNKNOWN, "never more than the bound: {}", unknown.seen.len());
        let last = (MAX_UNKNOWN * 2 - 1).to_be_bytes();
        assert!(unknown.contains(&last), "the latest is remembered");
        assert!(!unknown.contains(b"never seen"));

        let old = Instant::now().checked_sub(UNKNOWN_FOR).unwrap();
        unknown.seen.insert(b"old".to_vec(), old);
        assert!(!unknown.contains(b"old"), "expired");
    }
}
