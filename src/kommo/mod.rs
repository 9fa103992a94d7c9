//! The Kommo adapter: settings, the OAuth token endpoint, the token lifecycle, an API client
//! that stays within Kommo's limits, and parsing of Kommo's shapes and webhooks. Connecting a
//! client account (consent, installs, uninstall) is `connections`' job.

pub mod client;
pub mod limits;
pub mod maintenance;
pub mod model;
pub mod oauth;
pub mod stages;
pub mod tokens;
pub mod webhook;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use url::Url;

use self::limits::Limits;
use crate::config::Config;
use crate::config::hosts::HostPatterns;
use crate::error::Error;
use crate::ids::ClientId;
use crate::store::{Db, StoreError};
use crate::vault::{Secret, Vault, VaultError};

pub use crate::store::kommo::health;

#[derive(Debug, thiserror::Error)]
pub enum KommoError {
    #[error("Kommo is not configured: {0}")]
    Config(String),
    #[error("the client account has no Kommo connection")]
    NotConnected,
    #[error("the Kommo connection needs to be authorised again: {0}")]
    NeedsReauth(String),
    #[error("the Kommo integration was uninstalled or access revoked")]
    Revoked,
    #[error("the Kommo account's subscription has ended (402 Payment required)")]
    PaymentRequired,
    #[error("Kommo refused pipepay's requests (403): {0}")]
    Blocked(String),
    /// 401 on an API call; the caller refreshes once and tries again.
    #[error("Kommo did not accept the access token")]
    Unauthorized,
    #[error("Kommo asks to wait {retry_after:?}")]
    RateLimited { retry_after: Duration },
    #[error("Kommo did not answer in time")]
    Timeout,
    #[error("Kommo is unavailable: {0}")]
    Unavailable(String),
    #[error("Kommo refused the request ({status}): {detail}")]
    Rejected { status: u16, detail: String },
    #[error("Kommo refused the grant: {0}")]
    Grant(String),
    #[error("Kommo answered something unexpected: {0}")]
    Protocol(String),
    #[error("cannot reach Kommo")]
    Transport(#[source] reqwest::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Vault(#[from] VaultError),
}

impl KommoError {
    pub fn from_transport(e: reqwest::Error) -> KommoError {
        if e.is_timeout() { KommoError::Timeout } else { KommoError::Transport(e) }
    }

    /// Worth trying again later (the queue's retry), as opposed to needing a person.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            KommoError::RateLimited { .. }
                | KommoError::Timeout
                | KommoError::Unavailable(_)
                | KommoError::Transport(_)
                | KommoError::Store(_)
        )
    }
}

impl From<sqlx::Error> for KommoError {
    fn from(e: sqlx::Error) -> Self {
        KommoError::Store(StoreError::Sqlx(e))
    }
}

/// The integration's settings, from configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
    pub auth_url: Url,
    pub allowed_hosts: HostPatterns,
    pub api_url: String,
    pub redirect_uri: Url,
    pub timeout: Duration,
}

impl Settings {
    pub fn from_config(config: &Config, public_url: &Url) -> anyhow::Result<Settings> {
        let redirect_uri = public_url.join("oauth/kommo/callback")?;
        Ok(Settings {
            client_id: config.kommo_client_id.clone().filter(|c| !c.trim().is_empty()),
            client_secret: config.kommo_client_secret.clone().filter(|s| !s.is_empty()),
            auth_url: config.kommo_auth_url.clone(),
            allowed_hosts: config.kommo_allowed_hosts.clone(),
            api_url: config.kommo_api_url.clone(),
            redirect_uri,
            timeout: config.kommo_timeout(),
        })
    }

    /// The integration's credentials, or why Kommo cannot be used.
    pub fn credentials(&self) -> Result<(&str, &Secret), KommoError> {
        match (&self.client_id, &self.client_secret) {
            (Some(id), Some(secret)) => Ok((id, secret)),
            _ => Err(KommoError::Config(
                "set PIPEPAY_KOMMO_CLIENT_ID and PIPEPAY_KOMMO_CLIENT_SECRET to connect Kommo".into(),
            )),
        }
    }

    /// An account's API base, e.g. `https://acme.kommo.com`.
    pub fn api_base(&self, host: &str) -> String {
        self.api_url.replace("{host}", host)
    }
}

/// pipepay's side of Kommo: settings, HTTP, limits, and what the token lifecycle needs.
pub struct Kommo {
    pub settings: Settings,
    pub http: reqwest::Client,
    pub limits: Limits,
    pub db: Db,
    pub vault: Vault,
    pub public_url: Url,
    /// One refresh at a time per connection inside this process; the database lease does the
    /// same across processes.
    refresh_locks: Mutex<HashMap<ClientId, Arc<tokio::sync::Mutex<()>>>>,
    /// Stage names per client account, for pages that show them on every refresh.
    pub stages: stages::StageNames,
}

impl std::fmt::Debug for Kommo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kommo").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl Kommo {
    pub fn new(config: &Config, public_url: &Url, db: Db, vault: Vault) -> anyhow::Result<Kommo> {
        let settings = Settings::from_config(config, public_url)?;
        crate::install_tls_provider();
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("pipepay/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let limits = Limits::new(
            db.clone(),
            config.kommo_rate_limit,
            config.kommo_process_rate_limit,
            settings.timeout,
        );
        Ok(Kommo {
            settings,
            http,
            limits,
            db,
            vault,
            public_url: public_url.clone(),
            refresh_locks: Mutex::new(HashMap::new()),
            stages: stages::StageNames::default(),
        })
    }

    fn refresh_lock(&self, client: ClientId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.refresh_locks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if locks.len() > 10_000 {
            locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        }
        locks.entry(client).or_default().clone()
    }
}

impl From<KommoError> for Error {
    fn from(e: KommoError) -> Error {
        match e {
            KommoError::Config(m) => Error::Upstream { field: None, message: m },
            KommoError::NotConnected => {
                Error::conflict("kommo", "this client account has no Kommo connection")
            }
            KommoError::NeedsReauth(m) => Error::Conflict { field: Some("kommo"), message: m },
            KommoError::Revoked => Error::conflict(
                "kommo",
                "Kommo access was revoked (the integration was uninstalled); connect again",
            ),
            KommoError::Grant(m) => Error::invalid("code", format!("Kommo refused the authorisation: {m}")),
            KommoError::Store(e) => Error::Store(e),
            KommoError::Vault(e) => Error::Vault(e),
            other => Error::Upstream { field: None, message: other.to_string() },
        }
    }
}
