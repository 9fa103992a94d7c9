//! `/api/v1/agencies/{agency}`: the agency, its members and invitations.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::with_session;
use super::extract::ApiJson;
use crate::auth::Principal;
use crate::clock::rfc3339;
use crate::error::{Error, Result};
use crate::extract::{AgencyAccess, ClientIp, MemberAccess, Owner, Person};
use crate::ids::{AgencyId, InvitationId};
use crate::problem::Problem;
use crate::roles::Role;
use crate::state::AppState;
use crate::store;
use crate::tenants::members::{self, InvitationView, MemberView};
use crate::vault::Secret;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_agency))
        .routes(routes!(list_members))
        .routes(routes!(change_member, remove_member))
        .routes(routes!(list_invitations, invite))
        .routes(routes!(revoke_invitation))
        .routes(routes!(accept_invitation))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AgencyView {
    pub id: AgencyId,
    pub name: String,
    /// Your role here (an API key's role for keys).
    pub role: Role,
    pub created_at: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleChange {
    pub role: Role,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteRequest {
    pub email: String,
    pub role: Role,
}

/// The invitation, with its single-use link: shown once, send it to the person invited.
#[derive(Serialize, utoipa::ToSchema)]
pub struct InvitationCreated {
    pub invitation: InvitationView,
    pub token: String,
    pub accept_url: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptRequest {
    #[schema(value_type = String)]
    pub token: Secret,
    /// Needed only by someone without an account: it creates one.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub password: Option<Secret>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Accepted {
    pub agency_id: AgencyId,
}

#[utoipa::path(get, path = "/api/v1/agencies/{agency}", tag = "agencies",
    params(("agency" = String, Path, format = Uuid)),
    responses((status = 200, body = AgencyView), (status = 404, body = Problem)))]
async fn get_agency(
    State(state): State<AppState>,
    AgencyAccess { access, .. }: AgencyAccess,
) -> Result<Json<AgencyView>> {
    let agency = access.agency;
    let mut tx = state.db.read().await?;
    let row = store::agencies::get(&mut tx, agency).await?.ok_or(Error::NotFound)?;
    tx.commit().await?;
    Ok(Json(AgencyView {
        id: row.id,
        name: row.name,
        role: access.role,
        created_at: rfc3339(row.created_at),
    }))
}

#[utoipa::path(get, path = "/api/v1/agencies/{agency}/members", tag = "agencies",
    params(("agency" = String, Path, format = Uuid)),
    responses((status = 200, body = Vec<MemberView>), (status = 404, body = Problem)))]
async fn list_members(
    State(state): State<AppState>,
    AgencyAccess { access, .. }: AgencyAccess,
) -> Result<Json<Vec<MemberView>>> {
    Ok(Json(members::list(&state.db, &access).await?))
}

/// Change a member's role (owners only; an agency keeps at least one owner).
#[utoipa::path(patch, path = "/api/v1/agencies/{agency}/members/{user}", tag = "agencies",
    params(("agency" = String, Path, format = Uuid), ("user" = String, Path, format = Uuid)),
    request_body = RoleChange,
    responses((status = 200, body = MemberView), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 409, body = Problem)))]
async fn change_member(
    State(state): State<AppState>,
    Person(Owner(MemberAccess { access, user, .. })): Person<Owner<MemberAccess>>,
    ApiJson(body): ApiJson<RoleChange>,
) -> Result<Json<MemberView>> {
    Ok(Json(members::set_role(&state.db, &access, user, body.role).await?))
}

/// Remove a member (owners only), or leave the agency yourself.
#[utoipa::path(delete, path = "/api/v1/agencies/{agency}/members/{user}", tag = "agencies",
    params(("agency" = String, Path, format = Uuid), ("user" = String, Path, format = Uuid)),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 409, body = Problem)))]
async fn remove_member(
    State(state): State<AppState>,
    MemberAccess { access, user, .. }: MemberAccess,
) -> Result<StatusCode> {
    members::remove(&state.db, &access, user).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/agencies/{agency}/invitations", tag = "agencies",
    params(("agency" = String, Path, format = Uuid)),
    responses((status = 200, body = Vec<InvitationView>), (status = 404, body = Problem)))]
async fn list_invitations(
    State(state): State<AppState>,
    AgencyAccess { access, .. }: AgencyAccess,
) -> Result<Json<Vec<InvitationView>>> {
    Ok(Json(members::pending(&state.db, &access).await?))
}

/// Invite someone by email (owners only). The link works once and expires after 7 days.
#[utoipa::path(post, path = "/api/v1/agencies/{agency}/invitations", tag = "agencies",
    params(("agency" = String, Path, format = Uuid)), request_body = InviteRequest,
    responses((status = 201, body = InvitationCreated), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn invite(
    State(state): State<AppState>,
    Person(Owner(AgencyAccess { access, .. })): Person<Owner<AgencyAccess>>,
    ApiJson(body): ApiJson<InviteRequest>,
) -> Result<Response> {
    let (invitation, token, accept_url) =
        members::invite(&state.db, &state.public_url, &access, &body.email, body.role).await?;
    let created = InvitationCreated { invitation, token: token.expose().to_owned(), accept_url };
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

#[utoipa::path(delete, path = "/api/v1/agencies/{agency}/invitations/{invitation}", tag = "agencies",
    params(("agency" = String, Path, format = Uuid), ("invitation" = String, Path, format = Uuid)),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn revoke_invitation(
    State(state): State<AppState>,
    AgencyAccess { access, .. }: AgencyAccess,
    Path((_, invitation)): Path<(AgencyId, InvitationId)>,
) -> Result<StatusCode> {
    members::revoke(&state.db, &access, invitation).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Accept an invitation: logged in as the invited email, or with a password for a new account.
#[utoipa::path(post, path = "/api/v1/invitations/accept", tag = "agencies", request_body = AcceptRequest,
    responses((status = 200, body = Accepted), (status = 201, body = Accepted), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn accept_invitation(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    principal: Option<Principal>,
    ApiJson(body): ApiJson<AcceptRequest>,
) -> Result<Response> {
    let (agency_id, session) =
        members::accept(&state.db, &state.auth, ip, principal.as_ref(), body.token.expose(), body.password)
            .await?;
    Ok(match session {
        Some(session) => with_session(&state, StatusCode::CREATED, Accepted { agency_id }, &session),
        None => Json(Accepted { agency_id }).into_response(),
    })
}
