//! The JSON API under `/api/v1`, for automation and for the web app's scripts, described by the
//! OpenAPI document at `/api/v1/openapi.json` (generated from the handlers by utoipa).

mod agencies;
mod alerts;
mod api_keys;
mod audit;
pub(crate) mod auth;
mod clients;
mod entry;
pub mod extract;
mod kommo;
mod payments;
mod pipeline;
mod telemetry;
mod test_events;
pub mod widget;

use axum::Json;
use axum::routing::get;
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(title = "pipepay", description = "Payments from the sales pipeline: agencies, client accounts, keys."),
    modifiers(&Security),
    security(("api_key" = []), ("session" = [])),
    tags(
        (name = "auth", description = "Accounts and sessions"),
        (name = "agencies", description = "Agencies, members and invitations"),
        (name = "clients", description = "Client accounts, settings, ingress tokens and Flutterwave keys"),
        (name = "api-keys", description = "API keys for automation"),
        (name = "audit", description = "The audit log"),
        (name = "kommo", description = "Connecting Kommo, connection health, pipelines and fields"),
        (name = "pipeline", description = "Activity, entries and running them again, jobs, dead-job replay, pauses and test events"),
        (name = "payments", description = "Payment links per client account and the agency's totals"),
        (name = "alerts", description = "How the agency hears of client accounts that need a person"),
        (name = "telemetry", description = "The agency's own OpenTelemetry export"),
    )
)]
struct ApiDoc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("ppk_...").build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "pipepay_session",
                "Set by log-in; changes also need the x-csrf-token header.",
            ))),
        );
    }
}

/// The API routes and the OpenAPI document describing exactly them.
pub fn router() -> axum::Router<AppState> {
    let (router, openapi) = parts();
    let document = std::sync::Arc::new(openapi);
    router.route("/api/v1/openapi.json", get(move || async move { Json(document.as_ref().clone()) }))
}

/// The OpenAPI document alone (what `/api/v1/openapi.json` serves), for the reference page.
pub fn document() -> utoipa::openapi::OpenApi {
    parts().1
}

fn parts() -> (axum::Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(auth::router())
        .merge(agencies::router())
        .merge(clients::router())
        .merge(api_keys::router())
        .merge(audit::router())
        .merge(kommo::router())
        .merge(pipeline::router())
        .merge(telemetry::router())
        .merge(payments::router())
        .merge(entry::router())
        .merge(test_events::router())
        .merge(alerts::router())
        .split_for_parts()
}
