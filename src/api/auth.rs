//! `/api/v1/auth/*` and `/api/v1/me`: accounts and sessions.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::ApiJson;
use crate::auth::{self, NewSession, Principal, SessionCookies, SessionCsrf, SignUp};
use crate::error::{Error, Result};
use crate::extract::ClientIp;
use crate::ids::{AgencyId, UserId};
use crate::problem::Problem;
use crate::roles::Role;
use crate::state::AppState;
use crate::store;
use crate::vault::Secret;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(sign_up))
        .routes(routes!(log_in))
        .routes(routes!(log_out))
        .routes(routes!(change_password))
        .routes(routes!(me))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignUpRequest {
    pub email: String,
    /// At least 10 characters and not easy to guess.
    #[schema(value_type = String)]
    pub password: Secret,
    /// Your agency's name; you become its owner.
    pub agency_name: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogInRequest {
    pub email: String,
    #[schema(value_type = String)]
    pub password: Secret,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    #[schema(value_type = String)]
    pub current_password: Secret,
    #[schema(value_type = String)]
    pub new_password: Secret,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct UserView {
    pub id: UserId,
    pub email: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Membership {
    pub id: AgencyId,
    pub name: String,
    pub role: Role,
}

/// Who is logged in, where they belong, and (for cookie sessions) the token to echo in
/// `x-csrf-token` on every change.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Me {
    pub user: UserView,
    pub agencies: Vec<Membership>,
    pub csrf_token: Option<String>,
}

async fn me_of(state: &AppState, user: UserId, csrf_token: Option<String>) -> Result<Me> {
    let mut tx = state.db.read().await?;
    let row = store::users::by_id(&mut tx, user).await?.ok_or(Error::Unauthenticated("no such user"))?;
    let agencies = store::agencies::of_user(&mut tx, user).await?;
    tx.commit().await?;
    Ok(Me {
        user: UserView { id: row.id, email: row.email },
        agencies: agencies.into_iter().map(|(a, role)| Membership { id: a.id, name: a.name, role }).collect(),
        csrf_token,
    })
}

/// A JSON answer that also sets the session cookies.
pub fn with_session(
    state: &AppState,
    status: StatusCode,
    body: impl Serialize,
    session: &NewSession,
) -> Response {
    let mut headers = HeaderMap::new();
    SessionCookies::set(&mut headers, session, state.auth.secure_cookies);
    (status, headers, Json(body)).into_response()
}

/// Create an account and its agency, and log in.
#[utoipa::path(post, path = "/api/v1/auth/signup", tag = "auth", request_body = SignUpRequest,
    responses((status = 201, body = Me), (status = 409, body = Problem), (status = 422, body = Problem),
              (status = 429, body = Problem)))]
async fn sign_up(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<SignUpRequest>,
) -> Result<Response> {
    let input = SignUp { email: body.email, password: body.password, agency_name: body.agency_name };
    let (user, _, session) = auth::sign_up(&state.db, &state.auth, ip, input).await?;
    auth::recovery::after_sign_up(&state.db, &state.public_url, user.id, &user.email).await;
    let me = me_of(&state, user.id, Some(session.claims.csrf.clone())).await?;
    Ok(with_session(&state, StatusCode::CREATED, me, &session))
}

/// Log in with email and password. Attempts are limited per IP and per email.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LogInRequest,
    responses((status = 200, body = Me), (status = 401, body = Problem), (status = 429, body = Problem)))]
async fn log_in(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<LogInRequest>,
) -> Result<Response> {
    let (user, session) = auth::log_in(&state.db, &state.auth, ip, &body.email, body.password).await?;
    let me = me_of(&state, user.id, Some(session.claims.csrf.clone())).await?;
    Ok(with_session(&state, StatusCode::OK, me, &session))
}

/// End this session.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth",
    responses((status = 204), (status = 401, body = Problem)))]
async fn log_out(State(state): State<AppState>, principal: Principal) -> Result<Response> {
    let Principal::User { session, .. } = principal else {
        return Err(Error::Forbidden("API keys have no session to end; revoke the key instead"));
    };
    auth::log_out(&state.db, session).await?;
    let mut headers = HeaderMap::new();
    SessionCookies::clear(&mut headers, state.auth.secure_cookies);
    Ok((StatusCode::NO_CONTENT, headers).into_response())
}

/// Change your password. Every other session ends; this one continues with a new cookie.
#[utoipa::path(post, path = "/api/v1/auth/password", tag = "auth", request_body = ChangePasswordRequest,
    responses((status = 200, body = Me), (status = 422, body = Problem), (status = 429, body = Problem)))]
async fn change_password(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    principal: Principal,
    ApiJson(body): ApiJson<ChangePasswordRequest>,
) -> Result<Response> {
    let Principal::User { user, .. } = principal else {
        return Err(Error::Forbidden("API keys have no password"));
    };
    let session =
        auth::change_password(&state.db, &state.auth, ip, user, body.current_password, body.new_password)
            .await?;
    let me = me_of(&state, user, Some(session.claims.csrf.clone())).await?;
    Ok(with_session(&state, StatusCode::OK, me, &session))
}

/// Who you are and which agencies you belong to.
#[utoipa::path(get, path = "/api/v1/me", tag = "auth",
    responses((status = 200, body = Me), (status = 401, body = Problem)))]
async fn me(
    State(state): State<AppState>,
    principal: Principal,
    csrf: Option<Extension<SessionCsrf>>,
) -> Result<Json<Me>> {
    let Principal::User { user, .. } = principal else {
        return Err(Error::Forbidden(
            "API keys belong to an agency, not a person; use /api/v1/agencies/{id}",
        ));
    };
    Ok(Json(me_of(&state, user, csrf.map(|Extension(c)| c.0)).await?))
}
