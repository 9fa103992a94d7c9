//! pipepay: payments from the sales pipeline. See ARCHITECTURE.md for the map.

/// Client account changes that also touch the ingress cache or Kommo, for the API and the web app.
pub mod actions;
/// Alerts to agencies: conditions read from stored state, incidents opened and closed once,
/// their settings (owners' mail, a signed webhook).
pub mod alerts;
/// The JSON API under /api/v1 and its OpenAPI document.
pub mod api;
/// Start-up: connect, migrate, bind and serve.
pub mod app;
/// Accounts, passwords, sessions, CSRF, API keys, access checks.
pub mod auth;
/// Background duties and the lease that runs them on one instance at a time.
pub mod background;
/// The command line: `serve`, `migrate`, and the one-line error report.
pub mod cli;
/// Milliseconds since the epoch, as stored.
pub mod clock;
/// Typed settings from flags and `PIPEPAY_*` variables.
pub mod config;
/// Connecting client accounts to Kommo: consent, marketplace installs and claims, uninstall,
/// webhook subscription, connection status.
pub mod connections;
/// The error every service returns.
pub mod error;
/// Extractors the API and the web app share: the caller's IP, their access to an agency.
pub mod extract;
/// Flutterwave: key formats, API client, webhooks.
pub mod flutterwave;
/// The router over every edge, middleware, graceful serving.
pub mod http;
/// Identifier newtypes.
pub mod ids;
/// The shared webhook ingress: token → client account, verify, store event + job, 200.
pub mod ingress;
/// The Kommo adapter: OAuth token endpoint, tokens, the rate-limited API client, webhook parsing.
pub mod kommo;
/// Currency decimals, rounding, and the one way amounts are written.
pub mod money;
/// create_link, close_deal, reconcile: what each job does.
/// The outbox: mail (SMTP through lettre) and signed alert webhooks, delivered with retries.
pub mod outbox;
pub mod pipeline;
/// The RFC 9457 problem+json answer every error becomes.
pub mod problem;
/// The durable job queue and its workers.
pub mod queue;
/// Owner, admin, member.
pub mod roles;
/// Demo mode's built-in sandbox Kommo and Flutterwave (`--demo`), served under `/sandbox/`.
pub mod sandbox;
/// The stop signal.
pub mod shutdown;
/// `AppState`: what every handler can reach, built at start-up.
pub mod state;
/// SQLite and PostgreSQL pools, migrations, queries.
pub mod store;
/// Logs, traces and metrics (OpenTelemetry), and each agency's own span export.
pub mod telemetry;
/// Agencies, client accounts, members, API keys, settings, audit: the shared services.
pub mod tenants;
/// Envelope encryption of tenant secrets.
pub mod vault;
/// The agency web app (server-rendered pages), the OAuth landing pages, the claim page.
pub mod web;

/// Makes ring the process's TLS crypto provider; every HTTP client is built after this. reqwest
/// is built without a provider of its own (its default would compile aws-lc's C sources), so
/// a client built before any provider is installed would panic. Idempotent.
pub fn install_tls_provider() {
    // Losing a race to another thread installing the same provider is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An error and its causes on one line, `outer: inner: root`, for logs and start-up failures.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        // Some errors repeat their source in their own message; say it once.
        if !line.ends_with(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}
