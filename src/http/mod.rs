//! The top of the request path: the router every edge plugs into, the middleware every answer
//! goes through, and serving with a graceful shutdown.

pub mod fd_limit;
mod health;
pub mod middleware;
mod serve;

use std::future::Future;
use std::io;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::csrf::CsrfLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::auth::{self, AuthState};
use crate::config::Config;
use crate::ingress;
use crate::state::AppState;

pub use self::serve::ServeLimits;

/// The whole HTTP surface with its middleware.
pub fn router(state: AppState) -> Router {
    let config = state.config.clone();
    let auth_state = AuthState { db: state.db.clone(), auth: state.auth.clone() };
    // Browsers may only change things from pipepay's own pages (Sec-Fetch-Site / Origin), on
    // top of the per-session CSRF token that cookie-authenticated changes must carry.
    let same_origin = CsrfLayer::new()
        .add_trusted_origin(state.public_url.origin().ascii_serialization())
        .unwrap_or_else(|_| CsrfLayer::new());
    let authenticated = crate::api::router()
        .merge(crate::web::router())
        .merge(crate::web::api_reference::router(&crate::api::document()))
        .layer(axum::middleware::from_fn_with_state(auth_state, auth::authenticate))
        .layer(same_origin);
    let limits = ingress::Limits { per_second: config.ingress_rate, burst: config.ingress_burst };
    let hooks = ingress::router(state.ingress.clone(), limits);
    let routes = Router::new()
        .merge(health::router())
        .merge(authenticated)
        .merge(crate::api::widget::router(state.clone()))
        .fallback(crate::web::not_found)
        .with_state(state)
        .merge(hooks);
    with_middleware(routes, &config)
}

/// Wraps routes in the middleware every pipepay answer goes through.
pub fn with_middleware(routes: Router, config: &Config) -> Router {
    let body_limit = usize::try_from(config.body_limit).unwrap_or(usize::MAX);
    routes.layer(
        // Outermost first: ids exist before logging, logging sees the final answer, and
        // every error produced further in is turned into problem+json on the way out.
        ServiceBuilder::new()
            .layer(SetRequestIdLayer::new(middleware::REQUEST_ID, MakeRequestUuid))
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(middleware::request_span)
                    .on_request(())
                    .on_response(middleware::log_response)
                    .on_failure(()),
            )
            .layer(PropagateRequestIdLayer::new(middleware::REQUEST_ID))
            .layer(axum::middleware::from_fn_with_state(
                middleware::Https(config.is_https()),
                middleware::security_headers,
            ))
            .layer(axum::middleware::from_fn(middleware::problem_responses))
            .layer(CatchPanicLayer::new())
            .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, config.request_timeout()))
            .layer(RequestBodyLimitLayer::new(body_limit))
            .layer(DefaultBodyLimit::max(body_limit)),
    )
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets in-flight requests
/// finish for up to `grace` before dropping them. Returns once the server has stopped.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> io::Result<()> {
    serve_with(listener, router, shutdown, grace, ServeLimits::default()).await
}

/// `serve` with the given timeouts and connection limit.
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
    limits: ServeLimits,
) -> io::Result<()> {
    let stop = CancellationToken::new();
    let abandon = CancellationToken::new();
    let server = serve::accept_loop(listener, router, limits, stop.clone(), abandon.clone());
    let mut server = tokio::spawn(server);
    tokio::select! {
        result = &mut server => return flatten(result),
        () = shutdown => {}
    }
    tracing::info!(
        grace_secs = grace.as_secs(),
        "shutting down: no new connections, finishing in-flight requests"
    );
    stop.cancel();
    match tokio::time::timeout(grace, &mut server).await {
        Ok(result) => flatten(result),
        Err(_) => {
            tracing::warn!("shutdown grace period over: dropping the requests still in flight");
            abandon.cancel();
            flatten(server.await)
        }
    }
}

fn flatten(result: Result<io::Result<()>, tokio::task::JoinError>) -> io::Result<()> {
    result.map_err(io::Error::other)?
}
