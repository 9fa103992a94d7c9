//! The shared webhook ingress: `POST /hooks/{token}/kommo` and `POST /hooks/{token}/flutterwave`.
//! The token finds the client account; what can be verified is verified; the event and its job
//! are stored in one transaction, deduplicated (Flutterwave's together with the other webhooks
//! waiting, see `writer`); only then is the sender told 200. A storage
//! failure is a 503, so the sender retries; nothing here waits on Kommo or Flutterwave.

pub mod backlog;
pub mod digital_pipeline;
mod flutterwave;
mod kommo;
pub mod retention;
pub mod token_cache;
pub mod writer;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, Response, StatusCode};
use axum::middleware::Next;
use axum::response::IntoResponse;
use axum::routing::post;
use tower_governor::GovernorLayer;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::KeyExtractor;

use self::backlog::Backlog;
use self::token_cache::TokenCache;
use self::writer::Writer;
use crate::problem::Problem;
use crate::queue::Queue;
use crate::store::Db;

pub struct Ingress {
    pub db: Db,
    pub queue: Queue,
    pub tokens: TokenCache,
    /// Stores Flutterwave webhooks by the batch (group commit).
    pub writer: Writer,
    /// Whether a client account's backlog is at its cap, counted outside the write lock.
    pub backlog: Backlog,
    pub caps: Caps,
}

/// What one Kommo webhook, and one client account's backlog, may hold.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    /// Lead events in one webhook (`PIPEPAY_INGRESS_MAX_LEADS`).
    pub max_leads: usize,
    /// Ready jobs of one client account before its Kommo webhooks wait
    /// (`PIPEPAY_INGRESS_MAX_READY_JOBS`).
    pub max_ready_jobs: i64,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Sustained webhooks per second per client account.
    pub per_second: u32,
    pub burst: u32,
}

pub fn router(ingress: Arc<Ingress>, limits: Limits) -> Router {
    let period = Duration::from_secs(1) / limits.per_second.max(1);
    let config = GovernorConfigBuilder::default()
        .period(period)
        .burst_size(limits.burst.max(1))
        .key_extractor(TokenKey)
        .finish();
    let screen = axum::middleware::from_fn_with_state(ingress.clone(), screen);
    let routes = Router::new()
        .route("/hooks/{token}/kommo", post(kommo::receive))
        .route("/hooks/{token}/flutterwave", post(flutterwave::receive))
        .with_state(ingress.clone());
    // The Digital Pipeline route finds its token in the body, so it checks the same limiter
    // itself once the token is known: a client account's calls and webhooks share one budget.
    let dp_state = digital_pipeline::DpState {
        ingress: ingress.clone(),
        limiter: config.as_ref().map(|config| config.limiter().clone()),
    };
    // One address for every account (the widget manifest's), so no token in the path to screen.
    let dp = Router::new().route("/hooks/kommo/dp", post(digital_pipeline::receive)).with_state(dp_state);
    let limited = match config {
        Some(config) => {
            let limiter = config.limiter().clone();
            // Keys of tokens nobody used for a while are dropped, so a flood of made-up
            // tokens cannot grow the limiter's memory without bound.
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    limiter.retain_recent();
                }
            });
            routes.layer(GovernorLayer::new(config).error_handler(too_many))
        }
        None => routes,
    };
    // Outside the limiter: what is surely no token never becomes one of its keys.
    limited.layer(screen).merge(dp)
}

/// Answers a token that is surely unknown (ill-formed, or just found to belong to nobody) as
/// any unknown address, before the rate limiter and the database see it.
async fn screen(State(ingress): State<Arc<Ingress>>, request: Request<Body>, next: Next) -> Response<Body> {
    let mut segments = request.uri().path().split('/').skip(2);
    let (token, source) = (segments.next().unwrap_or_default(), segments.next().unwrap_or_default());
    if ingress.tokens.surely_unknown(token) {
        count(if source == "kommo" { "kommo" } else { "flutterwave" }, "unknown_token");
        return Problem::not_found().into_response();
    }
    next.run(request).await
}

/// Rate-limit key: the ingress token, i.e. the client account.
#[derive(Debug, Clone, Copy)]
struct TokenKey;

impl KeyExtractor for TokenKey {
    type Key = String;

    fn extract<T>(&self, request: &Request<T>) -> Result<Self::Key, tower_governor::GovernorError> {
        let token = request.uri().path().split('/').nth(2).unwrap_or_default();
        Ok(token.to_owned())
    }
}

pub(crate) fn too_many(error: tower_governor::GovernorError) -> Response<Body> {
    match error {
        tower_governor::GovernorError::TooManyRequests { wait_time, .. } => {
            Problem::new(StatusCode::TOO_MANY_REQUESTS, "rate-limited", "Too many webhooks")
                .with_detail("This client account is sending webhooks faster than pipepay accepts them.")
                .with_retry_after(wait_time.max(1))
                .into_response()
        }
        _ => Problem::status(StatusCode::INTERNAL_SERVER_ERROR).into_response(),
    }
}

/// Counts a webhook by source and what became of it.
fn count(source: &'static str, outcome: &'static str) {
    use crate::telemetry::metrics::{kv, metrics};
    metrics().webhooks.add(1, &[kv("source", source), kv("outcome", outcome)]);
}

/// A storage failure at the ingress: 503, so Kommo and Flutterwave deliver again.
fn unavailable(error: &dyn std::fmt::Display) -> Response<Body> {
    tracing::error!(%error, "could not store a webhook");
    Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Temporarily unavailable")
        .with_detail("The webhook was not stored; send it again.")
        .with_retry_after(1)
        .into_response()
}
