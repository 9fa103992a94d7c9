//! The agency's people and machines: members, invitations, API keys, the audit log, and its
//! own telemetry export.

use axum::Router;

use crate::http::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
}
