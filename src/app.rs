//! Start-up: connect, migrate, bind, then serve until told to stop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::auth::session::SessionKeys;
use crate::auth::{AttemptLimiter, Auth};
use crate::config::Config;
use crate::http::{self, AppState};
use crate::kommo::Kommo;
use crate::store::Db;
use crate::vault::{self, Vault};

/// A bound, migrated pipepay ready to serve. Tests build one on port 0 and read the port back.
pub struct Application {
    listener: TcpListener,
    state: AppState,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let db = Db::connect(&config.database_url, config.database_max_connections)
            .await
            .context("PIPEPAY_DATABASE_URL")?;
        db.migrate().await.context("PIPEPAY_DATABASE_URL")?;
        // After the database, so a bad database URL leaves no development key behind.
        let master_keys = vault::master::resolve(config.master_keys.clone(), config.environment)
            .map_err(anyhow::Error::msg)?;
        let session_keys = SessionKeys::derive(&master_keys, config.session_ttl())?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("PIPEPAY_LISTEN: cannot listen on {}", config.listen))?;
        let local_addr = listener.local_addr().context("PIPEPAY_LISTEN: no local address")?;
        let public_url = match &config.public_url {
            Some(url) => url.clone(),
            None => Url::parse(&format!("http://{local_addr}/"))
                .context("PIPEPAY_PUBLIC_URL: cannot derive from the listen address")?,
        };
        tracing::info!(
            database = %config.database_url,
            listen = %local_addr,
            public_url = %public_url,
            "pipepay ready"
        );
        let auth = Auth {
            keys: session_keys,
            limiter: AttemptLimiter::new(),
            secure_cookies: public_url.scheme() == "https",
        };
        let vault = Vault::new(master_keys);
        let kommo = Kommo::new(&config, &public_url, db.clone(), vault.clone())?;
        let state = AppState {
            db,
            config: Arc::new(config),
            public_url: Arc::new(public_url),
            vault,
            auth: Arc::new(auth),
            kommo: Arc::new(kommo),
        };
        Ok(Application { listener, state })
    }

    pub fn local_addr(&self) -> SocketAddr {
        // A bound listener always has an address; UNSPECIFIED only if the OS forgot it.
        self.listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, lets in-flight work finish within the configured
    /// grace period, then closes the database.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let Application { listener, state } = self;
        let grace = state.config.shutdown_grace();
        let db = state.db.clone();
        let stop = CancellationToken::new();
        let background = tokio::spawn(crate::kommo::maintenance::run(state.kommo.clone(), stop.clone()));
        http::serve(listener, http::router(state), shutdown, grace).await.context("serving HTTP")?;
        stop.cancel();
        let _ = background.await;
        db.close().await;
        tracing::info!("pipepay stopped");
        Ok(())
    }
}
