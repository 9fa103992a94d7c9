//! `/api/v1/agencies/{agency}/clients/{client}/test-events`: "Send a test event" over
//! `tenants::test_event`: a signed test webhook through the real ingress, which nothing acts on.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::ApiJson;
use crate::error::Result;
use crate::extract::{Admin, ClientAccess};
use crate::problem::Problem;
use crate::state::AppState;
use crate::tenants::test_event::{self, Service};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(send))
}

#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TestService {
    Kommo,
    Flutterwave,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestEvent {
    /// Whose webhook to imitate: `kommo` (a lead event of a kind pipepay never acts on) or
    /// `flutterwave` (a `charge.completed` for a `pipepay-test-` reference, signed with the
    /// saved secret hash).
    pub service: TestService,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TestResult {
    /// kommo or flutterwave.
    pub service: String,
    /// Whether pipepay's ingress took the webhook as this client account's.
    pub ok: bool,
    /// What the answer showed, and what to do about it.
    pub words: String,
}

/// Send a signed test webhook to the client account's own webhook URL, through the real
/// ingress (admins and owners; audited). It is recorded in the timeline as an ignored test.
#[utoipa::path(post, path = "/api/v1/agencies/{agency}/clients/{client}/test-events", tag = "pipeline",
    params(("agency" = String, Path, format = Uuid), ("client" = String, Path, format = Uuid)),
    request_body = TestEvent,
    responses((status = 200, body = TestResult), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 422, body = Problem)))]
async fn send(
    State(state): State<AppState>,
    Admin(ClientAccess { access, client, .. }): Admin<ClientAccess>,
    ApiJson(body): ApiJson<TestEvent>,
) -> Result<Json<TestResult>> {
    let (service, name) = match body.service {
        TestService::Kommo => (Service::Kommo, "kommo"),
        TestService::Flutterwave => (Service::Flutterwave, "flutterwave"),
    };
    let checks =
        test_event::send_to(&state.db, &state.vault, &state.public_url, &access, client, &[service]).await?;
    let check = checks.into_iter().next().ok_or_else(|| {
        crate::error::Error::Internal(anyhow::anyhow!("a test event was sent but no check came back"))
    })?;
    Ok(Json(TestResult { service: name.to_owned(), ok: check.ok, words: check.words }))
}
