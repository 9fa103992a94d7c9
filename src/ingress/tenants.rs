//! Which client account an ingress token belongs to, cached. The cache can be stale for a
//! moment on another instance; that never lets a rotated or deleted token through, because the
//! transaction that stores a webhook checks the token again (see `store::events`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
}

/// Token hash → when it was read, and what was read.
type Cache = HashMap<Vec<u8>, (Instant, Arc<Tenant>)>;

pub struct Tenants {
    db: Db,
    vault: Vault,
    cache: Mutex<Cache>,
}

impl Tenants {
    pub fn new(db: Db, vault: Vault) -> Tenants {
        Tenants { db, vault, cache: Mutex::new(HashMap::new()) }
    }

    /// The tenant of a token, from the cache when fresh.
    pub async fn get(&self, token: &str) -> Result<Option<Arc<Tenant>>> {
        let hash = tokens::hash(token);
        let cached =
            self.cache.lock().ok().and_then(|c| {
                c.get(&hash).filter(|(at, _)| at.elapsed() < FRESH_FOR).map(|(_, t)| t.clone())
            });
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
            if let Ok(mut cache) = self.cache.lock() {
                cache.remove(&hash);
            }
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
        });
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= MAX_ENTRIES {
                cache.retain(|_, (at, _)| at.elapsed() < FRESH_FOR);
            }
            cache.insert(hash, (Instant::now(), tenant.clone()));
        }
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
        if let Ok(mut cache) = self.cache.lock() {
            cache.retain(|_, (_, t)| t.client != client);
        }
    }
}
