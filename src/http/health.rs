//! Liveness and readiness probes for load balancers and orchestrators.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::problem::Problem;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz))
}

/// The process is up and serving HTTP; says nothing about the database.
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready for traffic: the database answers and holds every migration this binary needs.
async fn readyz(State(state): State<AppState>) -> Response {
    match state.db.readiness().await {
        Ok(r) if r.is_ready() => {
            Json(json!({ "status": "ready", "database": r.backend.name() })).into_response()
        }
        Ok(r) => Problem::new(StatusCode::SERVICE_UNAVAILABLE, "not-ready", "Not ready")
            .with_detail(format!("migrations not applied yet: {:?}", r.pending_migrations))
            .into_response(),
        Err(error) => {
            tracing::warn!(error = %crate::error_chain(&error), "readiness check failed");
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, "not-ready", "Not ready")
                .with_detail("the database does not answer")
                .into_response()
        }
    }
}
