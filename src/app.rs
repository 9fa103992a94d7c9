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
use std::time::Duration;

use crate::config::Config;
use crate::connections::installs::InstallLimits;
use crate::flutterwave::client::Flutterwave;
use crate::http;
use crate::ingress::Ingress;
use crate::ingress::token_cache::TokenCache;
use crate::ingress::writer::Writer;
use crate::kommo::Kommo;
use crate::outbox::{Mailer, Outbox};
use crate::pipeline::{Pipeline, reconcile};
use crate::queue::{self, Queue, worker};
use crate::sandbox::{self, Sandbox};
use crate::state::AppState;
use crate::store::Db;
use crate::vault::Vault;

/// Above Flutterwave's own ~28 s server timeout, so its 503 reaches us rather than our timeout.
const FLUTTERWAVE_TIMEOUT: Duration = Duration::from_secs(35);

/// A bound, migrated pipepay ready to serve. Tests build one on port 0 and read the port back.
pub struct Application {
    listener: TcpListener,
    limits: http::ServeLimits,
    state: AppState,
    /// Demo mode's sandbox Kommo and Flutterwave, served next to pipepay.
    sandbox: Option<Arc<Sandbox>>,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        config.check_demo().map_err(anyhow::Error::msg)?;
        let mut config = config;
        let db = Db::connect(&config.database_url, config.database_max_connections)
            .await
            .context("PIPEPAY_DATABASE_URL")?;
        db.migrate().await.context("PIPEPAY_DATABASE_URL")?;
        // After the database, so a bad database URL leaves no development key behind.
        let master_keys = config.resolve_master_keys().map_err(anyhow::Error::msg)?;
        let session_keys = SessionKeys::derive(&master_keys, config.session_ttl())?;
        let limits = serve_limits(&config);
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("PIPEPAY_LISTEN: cannot listen on {}", config.listen))?;
        let local_addr = listener.local_addr().context("PIPEPAY_LISTEN: no local address")?;
        let public_url = match &config.public_url {
            Some(url) => url.clone(),
            None => Url::parse(&format!("http://{local_addr}/"))
                .context("PIPEPAY_PUBLIC_URL: cannot derive from the listen address")?,
        };
        let sandbox =
            if config.demo { Some(start_sandbox(&mut config, &public_url, local_addr)?) } else { None };
        tracing::info!(
            database = %config.database_url,
            listen = %local_addr,
            public_url = %public_url,
            max_connections = limits.max_connections,
            "pipepay ready"
        );
        let auth = Auth {
            keys: session_keys,
            limiter: AttemptLimiter::new(),
            secure_cookies: public_url.scheme() == "https",
        };
        let vault = Vault::new(master_keys);
        let kommo = Arc::new(Kommo::new(&config, &public_url, db.clone(), vault.clone())?);
        if !crate::connections::configured(&kommo) {
            tracing::warn!(
                "Kommo is not configured: client accounts cannot connect Kommo until PIPEPAY_KOMMO_CLIENT_ID and \
                 PIPEPAY_KOMMO_CLIENT_SECRET are set (or start with --demo for a local trial with a sandbox Kommo)"
            );
        }
        let flutterwave = Arc::new(
            Flutterwave::new(config.flutterwave_api_url.clone(), FLUTTERWAVE_TIMEOUT)
                .context("PIPEPAY_FLUTTERWAVE_API_URL")?,
        );
        let queue = Queue::new(
            db.clone(),
            queue::Settings {
                workers: usize::try_from(config.workers).unwrap_or(8),
                lease: Duration::from_secs(config.job_lease_secs),
                max_attempts: config.job_max_attempts,
                poll: Duration::from_secs(1),
                retry_base: Duration::from_millis(config.job_retry_base_ms),
                retry_max: Duration::from_secs(config.job_retry_max_secs),
            },
        );
        let ingress = Arc::new(Ingress {
            db: db.clone(),
            queue: queue.clone(),
            tokens: TokenCache::new(db.clone(), vault.clone()),
            writer: Writer::start(db.clone(), queue.clone()),
            backlog: crate::ingress::backlog::Backlog::new(db.clone()),
            caps: crate::ingress::Caps {
                max_leads: usize::try_from(config.ingress_max_leads).unwrap_or(usize::MAX),
                max_ready_jobs: i64::from(config.ingress_max_ready_jobs),
            },
        });
        let installs = Arc::new(InstallLimits::new(&config));
        let state = AppState {
            db,
            config: Arc::new(config),
            public_url: Arc::new(public_url),
            vault,
            auth: Arc::new(auth),
            kommo,
            installs,
            flutterwave,
            queue,
            ingress,
        };
        Ok(Application { listener, limits, state, sandbox })
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
        let Application { listener, limits, state, sandbox } = self;
        let grace = state.config.shutdown_grace();
        let db = state.db.clone();
        let ingress = state.ingress.clone();
        let stop = CancellationToken::new();
        let abandon = CancellationToken::new();
        let mut background = tokio::task::JoinSet::new();
        let lease = crate::background::Lease::new(db.clone());
        background.spawn(lease.clone().run(stop.clone()));
        background.spawn(crate::kommo::maintenance::run(state.kommo.clone(), lease.clone(), stop.clone()));
        let every = Duration::from_secs(state.config.reconcile_every_secs);
        background.spawn(reconcile::schedule(
            db.clone(),
            state.queue.clone(),
            every,
            lease.clone(),
            stop.clone(),
        ));
        background.spawn(crate::telemetry::gauges::run(db.clone(), stop.clone()));
        background.spawn(crate::store::checkpoint::run(db.clone(), stop.clone()));
        background.spawn(crate::ingress::retention::run(
            db.clone(),
            state.config.retention(),
            lease.clone(),
            stop.clone(),
        ));
        background.spawn(crate::background::retention::run(
            db.clone(),
            crate::background::retention::Periods::from_config(&state.config),
            lease.clone(),
            stop.clone(),
        ));
        if let Some(routes) = crate::telemetry::agency_routes() {
            routes.allow_private(state.config.telemetry_allow_private);
            background.spawn(sync_agency_telemetry(db.clone(), state.vault.clone(), routes, stop.clone()));
        }
        background.spawn(crate::alerts::run(
            db.clone(),
            Duration::from_secs(state.config.alert_quiet_days.saturating_mul(86_400)),
            Duration::from_secs(state.config.alert_every_secs),
            lease.clone(),
            stop.clone(),
        ));
        let mailer = match &state.config.smtp_url {
            Some(url) => Some(Mailer::new(url, &state.config.email_from).map_err(anyhow::Error::msg)?),
            None => {
                tracing::warn!(
                    "mail is not configured (PIPEPAY_SMTP_URL): no mail leaves; owners see their agency's mail \
                     on its outbox page, and in development /dev/outbox shows all of it"
                );
                None
            }
        };
        let outbox = Outbox::new(
            db.clone(),
            state.vault.clone(),
            mailer,
            crate::outbox::Settings {
                retry_base: Duration::from_millis(state.config.job_retry_base_ms),
                retry_max: Duration::from_secs(state.config.job_retry_max_secs),
                lease: Duration::from_secs(300),
                poll: Duration::from_secs(1),
                allow_private: state.config.alert_allow_private,
            },
        )?;
        background.spawn(Arc::new(outbox).run(stop.clone()));
        let pipeline = Arc::new(Pipeline {
            reconcile_after: every.min(Duration::from_secs(120)),
            unknown_transaction_window: Duration::from_secs(state.config.unknown_transaction_window_secs),
            db: db.clone(),
            vault: state.vault.clone(),
            kommo: state.kommo.clone(),
            flutterwave: state.flutterwave.clone(),
            queue: state.queue.clone(),
        });
        background.spawn(worker::run(
            state.queue.clone(),
            db.clone(),
            pipeline,
            stop.clone(),
            abandon.clone(),
        ));

        let stopping = stop.clone();
        let http_stop = async move {
            shutdown.await;
            stopping.cancel();
        };
        let mut router = http::router(state);
        if let Some(sandbox) = sandbox {
            router = router.merge(sandbox.router());
        }
        http::serve_with(listener, router, http_stop, grace, limits).await.context("serving HTTP")?;
        // Workers take no new jobs now; those running get the grace period to finish, then are
        // handed back to the queue for whichever instance runs next.
        stop.cancel();
        let finished =
            tokio::time::timeout(grace, async { while background.join_next().await.is_some() {} }).await;
        if finished.is_err() {
            tracing::warn!("jobs still running after the grace period: releasing them");
            abandon.cancel();
            while background.join_next().await.is_some() {}
        }
        // Every request was answered, so the writer holds nothing; it stops before the pools close.
        ingress.writer.drain().await;
        db.close().await;
        tracing::info!("pipepay stopped");
        Ok(())
    }
}

/// Starts demo mode's sandbox and points pipepay's Kommo and Flutterwave settings at it: the
/// browser reaches its pages at the public URL, pipepay its APIs over loopback.
fn start_sandbox(
    config: &mut Config,
    public_url: &Url,
    local_addr: SocketAddr,
) -> anyhow::Result<Arc<Sandbox>> {
    let mut local = local_addr;
    if local.ip().is_unspecified() {
        local.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let local = Url::parse(&format!("http://{local}/")).context("demo mode: the local address")?;
    let sandbox = Sandbox::new(public_url.clone())?;
    config.kommo_client_id = Some(sandbox.kommo_client_id.clone());
    config.kommo_client_secret = Some(crate::vault::Secret::new(sandbox.kommo_client_secret.clone()));
    config.kommo_auth_url = sandbox.kommo_auth_url()?;
    config.kommo_api_url = sandbox::kommo_api_template(&local);
    config.kommo_allowed_hosts = sandbox::ACCOUNT_HOST.parse().map_err(anyhow::Error::msg)?;
    config.flutterwave_api_url = sandbox::flutterwave_api_url(&local)?;
    let (kommo, flutterwave) = sandbox.pages()?;
    tracing::warn!(
        %kommo,
        %flutterwave,
        "DEMO MODE: Kommo and Flutterwave are the built-in sandbox (nothing real is reached, no real money); \
         open the sandbox pages to move deals and find test keys"
    );
    Ok(sandbox)
}

/// The connection limits, after raising the open-files limit as far as the system allows: a
/// limit above what the descriptors allow would let idle clients starve the database pool.
fn serve_limits(config: &Config) -> http::ServeLimits {
    let nofile = http::fd_limit::raise_nofile();
    let fits = nofile.map(|n| http::fd_limit::connections_within(n, config.database_max_connections));
    let max_connections = match (config.max_connections, fits) {
        (Some(wanted), Some(fits)) => {
            let wanted = usize::try_from(wanted).unwrap_or(usize::MAX);
            if wanted > fits {
                tracing::warn!(
                    max_connections = wanted,
                    open_files_limit = nofile,
                    "PIPEPAY_MAX_CONNECTIONS is more than the open-files limit leaves room for; raise the limit (see README, \"File descriptors\")"
                );
            }
            wanted
        }
        (Some(wanted), None) => usize::try_from(wanted).unwrap_or(usize::MAX),
        (None, Some(fits)) => fits,
        (None, None) => http::ServeLimits::default().max_connections,
    };
    http::ServeLimits {
        header_read_timeout: config.header_read_timeout(),
        idle_timeout: config.idle_timeout(),
        max_connections,
    }
}

/// Keeps this process's agency exporters in step with the database (another instance may have
/// changed an agency's endpoint).
async fn sync_agency_telemetry(
    db: crate::store::Db,
    vault: Vault,
    routes: Arc<crate::telemetry::agency::AgencyRoutes>,
    stop: CancellationToken,
) {
    loop {
        if let Err(error) = crate::tenants::telemetry::sync(&db, &vault, &routes).await {
            tracing::warn!(error = %crate::error_chain(&error), "could not load agencies' telemetry settings");
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
    }
}
