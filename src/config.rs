//! Typed settings, read from flags and `PIPEPAY_*` environment variables and validated at start.

/// Which Kommo hosts an account may live on (a setting's type, so it lives with the settings).
pub mod hosts;

use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, ValueEnum};
use url::Url;

use self::hosts::HostPatterns;

use crate::store::DatabaseUrl;
use crate::vault::master::DEV_KEY_PATH;
use crate::vault::{MasterKeys, Secret};

/// Every setting pipepay reads. Each one is a flag and an environment variable, so `--help`
/// documents the whole configuration surface.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Database to use: `sqlite://path/to/file.db` (created with its folder if missing) or
    /// `postgres://user:password@host:port/database` for several instances on one database.
    #[arg(
        long,
        env = "PIPEPAY_DATABASE_URL",
        default_value = "sqlite://data/pipepay.db",
        value_parser = DatabaseUrl::from_str,
        global = true,
        hide_env_values = true
    )]
    pub database_url: DatabaseUrl,

    /// Most connections pipepay keeps open to the database.
    #[arg(long, env = "PIPEPAY_DATABASE_MAX_CONNECTIONS", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=1000), global = true)]
    pub database_max_connections: u32,

    /// Address and port to listen on, e.g. `127.0.0.1:8080` or `0.0.0.0:80`.
    #[arg(long, env = "PIPEPAY_LISTEN", default_value = "127.0.0.1:8080", global = true)]
    pub listen: SocketAddr,

    /// The URL agencies, Kommo and Flutterwave reach pipepay at (webhook URLs, the OAuth
    /// redirect). Defaults to `http://` plus the listen address.
    #[arg(long, env = "PIPEPAY_PUBLIC_URL", value_parser = parse_public_url, global = true)]
    pub public_url: Option<Url>,

    /// `development` or `production`. Production refuses to start without PIPEPAY_MASTER_KEYS.
    #[arg(long = "env", env = "PIPEPAY_ENV", value_enum, default_value_t = Environment::Development, global = true)]
    pub environment: Environment,

    /// Master keys for the vault: `id:base64-32-bytes`, comma-separated. The first seals; all
    /// open, so a rotation adds the new key in front, runs `pipepay keys rotate`, then drops the
    /// old one. `pipepay keys generate` prints a new one. Pass it in the environment, not as a
    /// flag (flags show up in process lists).
    #[arg(long, env = "PIPEPAY_MASTER_KEYS", value_parser = MasterKeys::from_str, hide_env_values = true, global = true)]
    pub master_keys: Option<MasterKeys>,

    /// Seconds a session token lasts; each request in its second half renews it, so people are
    /// logged out after this long idle.
    #[arg(long = "session-ttl", env = "PIPEPAY_SESSION_TTL", default_value_t = 900,
          value_parser = clap::value_parser!(u64).range(60..=86_400), global = true)]
    pub session_ttl_secs: u64,

    /// OAuth client id of pipepay's Kommo integration (Kommo: Settings > Integrations > your
    /// integration > Keys and scopes). Without it, connecting Kommo is switched off.
    #[arg(long, env = "PIPEPAY_KOMMO_CLIENT_ID", global = true)]
    pub kommo_client_id: Option<String>,

    /// The integration's secret key. Also signs Kommo's uninstall notifications.
    #[arg(long, env = "PIPEPAY_KOMMO_CLIENT_SECRET", hide_env_values = true, global = true)]
    pub kommo_client_secret: Option<Secret>,

    /// Kommo's consent page.
    #[arg(long, env = "PIPEPAY_KOMMO_AUTH_URL", default_value = "https://www.kommo.com/oauth",
          value_parser = parse_http_url, global = true)]
    pub kommo_auth_url: Url,

    /// Hosts a Kommo OAuth `referer` may name; pipepay sends the client secret nowhere else.
    /// Comma-separated; `*.` matches any subdomain.
    #[arg(long, env = "PIPEPAY_KOMMO_ALLOWED_HOSTS", default_value = "*.kommo.com,*.amocrm.com,*.amocrm.ru",
          value_parser = HostPatterns::from_str, global = true)]
    pub kommo_allowed_hosts: HostPatterns,

    /// Base URL of an account's API, with `{host}` standing for the account host from the OAuth
    /// `referer` (e.g. `acme.kommo.com`). Tests point it at a local fake.
    #[arg(long, env = "PIPEPAY_KOMMO_API_URL", default_value = "https://{host}",
          value_parser = parse_api_template, global = true)]
    pub kommo_api_url: String,

    /// Most Kommo API requests per second per Kommo account, across all instances.
    #[arg(long, env = "PIPEPAY_KOMMO_RATE_LIMIT", default_value_t = 7,
          value_parser = clap::value_parser!(u32).range(1..=100), global = true)]
    pub kommo_rate_limit: u32,

    /// Most Kommo API requests per second from this process, whatever the account: Kommo blocks
    /// an IP that keeps exceeding its limits, and every tenant shares the egress IP.
    #[arg(long, env = "PIPEPAY_KOMMO_PROCESS_RATE_LIMIT", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=10_000), global = true)]
    pub kommo_process_rate_limit: u32,

    /// Seconds one Kommo API call may take.
    #[arg(long = "kommo-timeout", env = "PIPEPAY_KOMMO_TIMEOUT", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=120), global = true)]
    pub kommo_timeout_secs: u64,

    /// Marketplace installs accepted per minute from one IP address. Kommo's own servers make
    /// every real install call, so this only stops floods, not busy days.
    #[arg(long, env = "PIPEPAY_KOMMO_INSTALL_IP_LIMIT", default_value_t = 60,
          value_parser = clap::value_parser!(u32).range(1..=100_000), global = true)]
    pub kommo_install_ip_limit: u32,

    /// Marketplace installs accepted per hour for one Kommo account host.
    #[arg(long, env = "PIPEPAY_KOMMO_INSTALL_HOST_LIMIT", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=10_000), global = true)]
    pub kommo_install_host_limit: u32,

    /// Seconds an unclaimed marketplace install is kept before it is forgotten.
    #[arg(long = "kommo-install-ttl", env = "PIPEPAY_KOMMO_INSTALL_TTL", default_value_t = 604_800,
          value_parser = clap::value_parser!(u64).range(60..=31_536_000), global = true)]
    pub kommo_install_ttl_secs: u64,

    /// Flutterwave's API base URL.
    #[arg(long, env = "PIPEPAY_FLUTTERWAVE_API_URL", default_value = "https://api.flutterwave.com",
          value_parser = parse_http_url, global = true)]
    pub flutterwave_api_url: Url,

    /// Job workers per instance. Jobs of one client account run one at a time whatever this is.
    #[arg(long, env = "PIPEPAY_WORKERS", default_value_t = 8,
          value_parser = clap::value_parser!(u64).range(1..=256), global = true)]
    pub workers: u64,

    /// Seconds a worker's claim on a job lasts without a heartbeat before another may take it.
    #[arg(long = "job-lease", env = "PIPEPAY_JOB_LEASE", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3600), global = true)]
    pub job_lease_secs: u64,

    /// Attempts before a job is dead (visible, and replayable through the API).
    #[arg(long, env = "PIPEPAY_JOB_MAX_ATTEMPTS", default_value_t = 10,
          value_parser = clap::value_parser!(i64).range(1..=100), global = true)]
    pub job_max_attempts: i64,

    /// Milliseconds before a failed job's first retry; each further retry waits twice as long
    /// (up to --job-retry-max, ±25% jitter). An upstream's Retry-After is honoured if longer.
    #[arg(long = "job-retry-base", env = "PIPEPAY_JOB_RETRY_BASE_MS", default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(10..=600_000), global = true)]
    pub job_retry_base_ms: u64,

    /// Seconds a failed job waits at most before its next retry.
    #[arg(long = "job-retry-max", env = "PIPEPAY_JOB_RETRY_MAX", default_value_t = 1800,
          value_parser = clap::value_parser!(u64).range(1..=86_400), global = true)]
    pub job_retry_max_secs: u64,

    /// Seconds between checks of open payment links at Flutterwave, for payments whose webhook
    /// never came.
    #[arg(long = "reconcile-every", env = "PIPEPAY_RECONCILE_EVERY", default_value_t = 600,
          value_parser = clap::value_parser!(u64).range(5..=86_400), global = true)]
    pub reconcile_every_secs: u64,

    /// Seconds after a payment webhook arrived during which a transaction Flutterwave does not
    /// know is checked again (its verify endpoint can lag the webhook); then the job ends with
    /// one timeline entry and the deal stays open.
    #[arg(long = "unknown-transaction-window", env = "PIPEPAY_UNKNOWN_TRANSACTION_WINDOW",
          default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=7 * 86_400),
          global = true)]
    pub unknown_transaction_window_secs: u64,

    /// Webhooks per second one client account may send (sustained), with bursts of
    /// PIPEPAY_INGRESS_BURST; beyond that, 429 with Retry-After.
    #[arg(long, env = "PIPEPAY_INGRESS_RATE", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=100_000), global = true)]
    pub ingress_rate: u32,

    /// See PIPEPAY_INGRESS_RATE.
    #[arg(long, env = "PIPEPAY_INGRESS_BURST", default_value_t = 500,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000), global = true)]
    pub ingress_burst: u32,

    /// Lead events one Kommo webhook may carry; a body with more is refused with 413 (and
    /// recorded on the client account's timeline).
    #[arg(long, env = "PIPEPAY_INGRESS_MAX_LEADS", default_value_t = 500,
          value_parser = clap::value_parser!(u32).range(1..=100_000), global = true)]
    pub ingress_max_leads: u32,

    /// Ready jobs one client account may have waiting; Kommo webhooks beyond it get 429 with
    /// Retry-After until the backlog drains.
    #[arg(long, env = "PIPEPAY_INGRESS_MAX_READY_JOBS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..=10_000_000), global = true)]
    pub ingress_max_ready_jobs: u32,

    /// Days an ignored webhook (another Kommo account's, an event pipepay does not act on) is
    /// kept before it is deleted.
    #[arg(long = "retention-days", env = "PIPEPAY_RETENTION_DAYS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3650), global = true)]
    pub retention_days: u64,

    /// Days a delivered mail or alert webhook (or mail kept unsent because no SMTP server is
    /// configured) stays in the outbox, and on the agency's outbox page, before it is deleted.
    #[arg(long = "outbox-retention-days", env = "PIPEPAY_OUTBOX_RETENTION_DAYS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3650), global = true)]
    pub outbox_retention_days: u64,

    /// Days a mail or alert webhook that failed for good stays in the outbox before it is
    /// deleted: longer than delivered ones, to find out why.
    #[arg(long = "outbox-dead-retention-days", env = "PIPEPAY_OUTBOX_DEAD_RETENTION_DAYS", default_value_t = 90,
          value_parser = clap::value_parser!(u64).range(1..=3650), global = true)]
    pub outbox_dead_retention_days: u64,

    /// Days a closed alert incident is kept (the alerts page lists them) before it is deleted.
    /// Open incidents are kept while they are open.
    #[arg(long = "incident-retention-days", env = "PIPEPAY_INCIDENT_RETENTION_DAYS", default_value_t = 365,
          value_parser = clap::value_parser!(u64).range(1..=3650), global = true)]
    pub incident_retention_days: u64,

    /// Days the Kommo and Flutterwave calls a job attempt made (masked answers, shown on the
    /// activity entry's page) are kept; the entry and its job stay.
    #[arg(long = "call-log-retention-days", env = "PIPEPAY_CALL_LOG_RETENTION_DAYS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3650), global = true)]
    pub call_log_retention_days: u64,

    /// Let agencies export telemetry to http:// and private or loopback addresses. Off by
    /// default: pipepay would otherwise make requests into the operator's own network.
    #[arg(long, env = "PIPEPAY_TELEMETRY_ALLOW_PRIVATE", default_value_t = false, global = true)]
    pub telemetry_allow_private: bool,

    /// Log filter in `tracing` syntax, e.g. `info` or `pipepay=debug,sqlx=warn`.
    #[arg(long = "log", env = "PIPEPAY_LOG", default_value = "info", value_parser = parse_log_filter, global = true)]
    pub log_filter: String,

    /// Log format: `human` for reading at a terminal, `json` for log collectors.
    #[arg(long, env = "PIPEPAY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human, global = true)]
    pub log_format: LogFormat,

    /// Largest request body accepted, in bytes; bigger bodies get 413.
    #[arg(long, env = "PIPEPAY_BODY_LIMIT", default_value_t = 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1024..=64 * 1024 * 1024), global = true)]
    pub body_limit: u64,

    /// Seconds a request may take before pipepay answers 503 instead.
    #[arg(long = "request-timeout", env = "PIPEPAY_REQUEST_TIMEOUT", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=600), global = true)]
    pub request_timeout_secs: u64,

    /// Seconds in-flight requests get to finish after SIGINT or SIGTERM before pipepay exits.
    #[arg(long = "shutdown-grace", env = "PIPEPAY_SHUTDOWN_GRACE", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(0..=3600), global = true)]
    pub shutdown_grace_secs: u64,

    /// Seconds a client has to send a request's head (from connecting, or from the first byte
    /// of a later request on the same connection) before the connection is closed.
    #[arg(long = "header-read-timeout", env = "PIPEPAY_HEADER_READ_TIMEOUT", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=600), global = true)]
    pub header_read_timeout_secs: u64,

    /// Seconds a kept-alive connection may sit with no request before it is closed (also how
    /// long a client may leave a response unread).
    #[arg(long = "idle-timeout", env = "PIPEPAY_IDLE_TIMEOUT", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3600), global = true)]
    pub idle_timeout_secs: u64,

    /// Most client connections open at once; more wait to be accepted, and idle ones are closed
    /// to make room. Default: what the open-files limit leaves after the database pool and
    /// 256 spare descriptors, at most 10000.
    #[arg(long, env = "PIPEPAY_MAX_CONNECTIONS",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000), global = true)]
    pub max_connections: Option<u32>,

    /// The SMTP server mail goes through: `smtps://user:password@host:465` (TLS from the start)
    /// or `smtp://user:password@host:587?tls=required` (STARTTLS); `smtp://host:25` sends in the
    /// clear. Without it no mail leaves: the outbox pages show what would have been sent.
    #[arg(long, env = "PIPEPAY_SMTP_URL", value_parser = parse_smtp_url, hide_env_values = true, global = true)]
    pub smtp_url: Option<Secret>,

    /// The sender of pipepay's mail, e.g. `pipepay <no-reply@example.com>`.
    #[arg(long, env = "PIPEPAY_EMAIL_FROM", default_value = "pipepay <no-reply@localhost>",
          value_parser = parse_mailbox, global = true)]
    pub email_from: String,

    /// Days without a Flutterwave webhook, while payment links are open, before the agency is
    /// alerted (a webhook URL missing from the Flutterwave dashboard looks like this).
    #[arg(long, env = "PIPEPAY_ALERT_QUIET_DAYS", default_value_t = 3,
          value_parser = clap::value_parser!(u64).range(1..=365), global = true)]
    pub alert_quiet_days: u64,

    /// Seconds between two evaluations of the alert conditions.
    #[arg(long = "alert-every", env = "PIPEPAY_ALERT_EVERY", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3600), global = true)]
    pub alert_every_secs: u64,

    /// Let agencies' alert webhooks reach private and loopback addresses (private deployments,
    /// tests). Off by default: pipepay would otherwise post into the operator's own network.
    #[arg(long, env = "PIPEPAY_ALERT_ALLOW_PRIVATE", default_value_t = false, global = true)]
    pub alert_allow_private: bool,
    /// Demo mode for local trials: pipepay starts a built-in sandbox Kommo and Flutterwave
    /// (pages under `/sandbox/`) and talks to them instead of the real services, so a deal can
    /// be moved, linked and paid without real accounts. Refused with PIPEPAY_ENV=production.
    #[arg(long, env = "PIPEPAY_DEMO", default_value_t = false, global = true)]
    pub demo: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Environment {
    /// Local use: without master keys, pipepay makes one under data/ and warns.
    Development,
    /// Real money: master keys are required.
    Production,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

impl Config {
    /// The master keys to run with: the configured ones; in development, a generated key kept
    /// under `data/` (with a warning at every start); in production, none means no start.
    pub fn resolve_master_keys(&self) -> Result<MasterKeys, String> {
        match (self.master_keys.clone(), self.environment) {
            (Some(keys), _) => Ok(keys),
            (None, Environment::Production) => Err(
                "PIPEPAY_MASTER_KEYS: required when PIPEPAY_ENV=production (generate one with `pipepay keys generate`)"
                    .into(),
            ),
            (None, Environment::Development) => {
                let keys = MasterKeys::load_or_create_dev(Path::new(DEV_KEY_PATH))
                    .map_err(|e| format!("PIPEPAY_MASTER_KEYS: not set, and the development key failed: {e}"))?;
                tracing::warn!(
                    path = DEV_KEY_PATH,
                    "PIPEPAY_MASTER_KEYS is not set: secrets are sealed with a development key kept next to the \
                     data. Anyone with that folder can read them. Set PIPEPAY_MASTER_KEYS (and PIPEPAY_ENV=production) \
                     before taking real payments."
                );
                Ok(keys)
            }
        }
    }

    /// Demo mode is for trying pipepay out: with real money at stake it is refused.
    pub fn check_demo(&self) -> Result<(), String> {
        if self.demo && self.environment == Environment::Production {
            return Err("PIPEPAY_DEMO (--demo): demo mode talks to a built-in sandbox instead of Kommo and \
                        Flutterwave, so it is refused when PIPEPAY_ENV=production"
                .into());
        }
        Ok(())
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    pub fn kommo_timeout(&self) -> Duration {
        Duration::from_secs(self.kommo_timeout_secs)
    }

    pub fn session_ttl(&self) -> Duration {
        Duration::from_secs(self.session_ttl_secs)
    }

    pub fn retention(&self) -> Duration {
        Duration::from_secs(self.retention_days.saturating_mul(86_400))
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_secs)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }

    /// Whether browsers reach pipepay over https (cookies get `Secure`, responses get HSTS).
    pub fn is_https(&self) -> bool {
        self.public_url.as_ref().is_some_and(|u| u.scheme() == "https")
    }
}

fn parse_http_url(value: &str) -> Result<Url, String> {
    let url = Url::parse(value).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("must be an http:// or https:// URL with a host".into());
    }
    Ok(url)
}

fn parse_api_template(value: &str) -> Result<String, String> {
    if !value.contains("{host}") {
        return Err("must contain {host}, e.g. https://{host}".into());
    }
    parse_http_url(&value.replace("{host}", "example.kommo.com"))?;
    Ok(value.trim_end_matches('/').to_owned())
}

fn parse_public_url(value: &str) -> Result<Url, String> {
    let url = Url::parse(value).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must start with http:// or https://".into());
    }
    if url.host_str().is_none() {
        return Err("must name a host".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not carry a query or fragment".into());
    }
    Ok(url)
}

fn parse_smtp_url(value: &str) -> Result<Secret, String> {
    let url = Url::parse(value).map_err(|_| "not a URL".to_owned())?;
    if !matches!(url.scheme(), "smtp" | "smtps") || url.host_str().is_none() {
        return Err("must be an smtp:// or smtps:// URL with a host".into());
    }
    Ok(Secret::new(value))
}

fn parse_mailbox(value: &str) -> Result<String, String> {
    value
        .parse::<lettre::message::Mailbox>()
        .map(|_| value.to_owned())
        .map_err(|e| format!("not an address: {e}"))
}

fn parse_log_filter(value: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(value)
        .map(|_| value.to_owned())
        .map_err(|e| format!("not a log filter: {e}"))
}
