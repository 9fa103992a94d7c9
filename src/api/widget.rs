//! `/api/v1/widget/*`: what the Kommo deal-card widget calls from the Kommo page.
//!
//! The browser never holds an agency credential. The widget asks Kommo for a one-time token
//! (`self.$authorizedAjax`, sent as `X-Auth-Token`): a JWT Kommo signs with HS256 and the
//! integration's client secret, naming the Kommo account (`account_id`) and user (`user_id`),
//! issued by the account's address (`iss`) for pipepay's address (`aud`). `POST
//! /widget/session` verifies it and answers a pipepay widget token: minutes-long, bound to the
//! one client account connected to that Kommo account, to that user and to the account's host.
//! Every other call carries it as `X-Widget-Token`.
//!
//! CORS: preflights and answers name the caller's origin only when it is a Kommo host
//! (`PIPEPAY_KOMMO_ALLOWED_HOSTS`); each call then also requires the origin to be the host of
//! the connected account the token is bound to, so another account's page reads nothing.

use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hkdf::Hkdf;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;

use crate::clock::now_ms;
use crate::ids::{ClientId, LeadId};
use crate::pipeline::request::{self, LeadRequest};
use crate::problem::Problem;
use crate::state::AppState;
use crate::store::activity::{ActivityKind, ActivityOutcome, ActivityRow, Filter};
use crate::store::links::{self, LinkState};
use crate::store::{self, StoreError};

/// Kommo's one-time token, as `$authorizedAjax` sends it.
const KOMMO_TOKEN_HEADER: &str = "x-auth-token";
/// pipepay's widget token on every later call.
const WIDGET_TOKEN_HEADER: &str = "x-widget-token";
const ISSUER: &str = "pipepay";
const AUDIENCE: &str = "pipepay-widget";
/// Long enough for a deal card left open a while, short enough that a leaked token soon dies;
/// the widget asks Kommo for a new one-time token when it has expired.
const WIDGET_TOKEN_TTL: Duration = Duration::from_secs(10 * 60);
/// Clock difference tolerated on Kommo's `exp`/`nbf`.
const KOMMO_LEEWAY_SECS: u64 = 30;

/// Outside the same-origin guard on purpose: these calls come from Kommo's pages, and carry a
/// token rather than a cookie.
pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/api/v1/widget/session", post(session).options(preflight))
        .route("/api/v1/widget/leads/{lead_id}", get(lead).options(preflight))
        .route("/api/v1/widget/leads/{lead_id}/send", post(send).options(preflight))
        .route("/api/v1/widget/leads/{lead_id}/disable", post(disable).options(preflight))
        .layer(axum::middleware::from_fn_with_state(state, cors))
}

/// What the widget token says.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct WidgetClaims {
    iss: String,
    aud: String,
    /// The client account.
    sub: ClientId,
    /// The Kommo account and user from Kommo's token.
    acc: i64,
    uid: i64,
    /// Whether the Kommo user may send and disable links (an account admin).
    adm: bool,
    /// The Kommo account's host: the one origin this token is good from.
    host: String,
    iat: i64,
    exp: i64,
}

/// The answer to `POST /widget/session`.
#[derive(Debug, Serialize)]
struct Session {
    token: String,
    /// Unix seconds.
    expires_at: i64,
    /// Whether this user may send and disable links.
    can_act: bool,
}

/// One deal's payment, as the card shows it.
#[derive(Debug, Default, Serialize)]
struct LeadPayment {
    lead_id: i64,
    /// `none`, `sent` (an open link), `paid` or `not_accepted`.
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    link: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    amount: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    currency: Option<String>,
    /// When the link was made (Unix milliseconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    sent_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    paid_at: Option<i64>,
    /// Flutterwave's payment type (card, mobilemoneykenya, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<String>,
    /// Flutterwave's reference for the payment, else pipepay's.
    #[serde(skip_serializing_if = "Option::is_none")]
    reference: Option<String>,
    /// Why there is no link, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    can_act: bool,
}

fn problem(status: StatusCode, name: &str, title: &str, detail: impl Into<String>) -> Response {
    Problem::new(status, name, title).with_detail(detail).into_response()
}

fn unauthenticated(detail: &str) -> Response {
    problem(StatusCode::UNAUTHORIZED, "unauthenticated", "Widget session needed", detail)
}

fn unavailable(error: &dyn std::fmt::Display) -> Response {
    tracing::error!(%error, "widget API storage failure");
    Problem::status(StatusCode::SERVICE_UNAVAILABLE).into_response()
}

/// The signing key for widget tokens, derived from the integration's client secret (the key
/// Kommo's own tokens are checked with): no widget works without it anyway.
fn widget_key(state: &AppState) -> Option<[u8; 32]> {
    let secret = state.kommo.settings.client_secret.as_ref()?;
    let mut key = [0u8; 32];
    Hkdf::<Sha256>::new(Some(b"pipepay"), secret.expose().as_bytes())
        .expand(b"widget-jwt-hs256/v1", &mut key)
        .ok()?;
    Some(key)
}

/// Adds the CORS headers for a Kommo origin, and answers preflights.
pub async fn cors(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let origin = request.headers().get(header::ORIGIN).cloned();
    let allowed =
        origin.as_ref().and_then(|o| o.to_str().ok()).is_some_and(|o| kommo_origin(&state, o).is_some());
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.append(header::VARY, HeaderValue::from_static("origin"));
    if let (true, Some(origin)) = (allowed, origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST"));
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("x-auth-token, x-widget-token, content-type"),
        );
        headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    }
    response
}

async fn preflight() -> StatusCode {
    StatusCode::NO_CONTENT
}

/// The host of `origin` when it is a Kommo host pipepay accepts: https, or http when pipepay
/// itself is served over http (local use and tests).
fn kommo_origin(state: &AppState, origin: &str) -> Option<String> {
    let url = url::Url::parse(origin).ok()?;
    let scheme_ok =
        url.scheme() == "https" || (url.scheme() == "http" && state.public_url.scheme() == "http");
    if !scheme_ok {
        return None;
    }
    state.kommo.settings.allowed_hosts.check(url.host_str()?)
}

/// Refuses a browser call from any page but the bound account's.
fn origin_matches(state: &AppState, headers: &HeaderMap, host: &str) -> bool {
    match headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        None => true,
        Some(origin) => kommo_origin(state, origin).is_some_and(|found| found.eq_ignore_ascii_case(host)),
    }
}

/// The claims pipepay reads from Kommo's one-time token (see the module docs).
#[derive(Debug)]
struct KommoUser {
    account_id: i64,
    user_id: i64,
    is_admin: bool,
    issuer_host: String,
}

fn int(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Verifies Kommo's one-time token: HS256 with the client secret, not expired, for pipepay's
/// address, from this integration.
fn verify_kommo(state: &AppState, token: &str) -> Result<KommoUser, &'static str> {
    let secret =
        state.kommo.settings.client_secret.as_ref().ok_or("Kommo is not configured on this pipepay")?;
    let key = DecodingKey::from_secret(secret.expose().as_bytes())
        .map_err(|_| "Kommo's client secret is unusable")?;
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    validation.validate_aud = false;
    validation.validate_nbf = true;
    validation.leeway = KOMMO_LEEWAY_SECS;
    let claims = jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &key, &validation)
        .map_err(|_| "Kommo's token is not valid (signature, expiry)")?
        .claims;
    // `aud` is "the base address formed from the integration's redirect_uri".
    let ours = [
        state.public_url.origin().ascii_serialization(),
        state.kommo.settings.redirect_uri.as_str().trim_end_matches('/').to_owned(),
    ];
    let aud_ok = |aud: &str| ours.iter().any(|o| o.eq_ignore_ascii_case(aud.trim_end_matches('/')));
    let audience_ok = match claims.get("aud") {
        Some(Value::String(aud)) => aud_ok(aud),
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).any(aud_ok),
        _ => false,
    };
    if !audience_ok {
        return Err("Kommo's token is for another address");
    }
    if let (Some(Value::String(uuid)), Some(ours)) =
        (claims.get("client_uuid"), &state.kommo.settings.client_id)
        && uuid != ours
    {
        return Err("Kommo's token is for another integration");
    }
    let issuer_host = claims
        .get("iss")
        .and_then(Value::as_str)
        .and_then(|iss| url::Url::parse(iss).ok())
        .and_then(|url| url.host_str().map(str::to_ascii_lowercase))
        .ok_or("Kommo's token names no account address")?;
    let account_id = int(claims.get("account_id")).ok_or("Kommo's token names no account")?;
    let user_id = int(claims.get("user_id")).ok_or("Kommo's token names no user")?;
    let is_admin = match claims.get("is_admin") {
        Some(Value::Bool(b)) => *b,
        Some(other) => int(Some(other)) == Some(1),
        None => false,
    };
    Ok(KommoUser { account_id, user_id, is_admin, issuer_host })
}

/// `POST /api/v1/widget/session`: Kommo's one-time token in, a widget token out.
async fn session(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(token) = headers.get(KOMMO_TOKEN_HEADER).and_then(|v| v.to_str().ok()) else {
        return unauthenticated("send Kommo's one-time token as X-Auth-Token ($authorizedAjax does)");
    };
    let user = match verify_kommo(&state, token) {
        Ok(user) => user,
        Err(why) => return unauthenticated(why),
    };
    let Some(key) = widget_key(&state) else {
        return unauthenticated("Kommo is not configured on this pipepay");
    };
    let connection = async {
        let mut tx = state.db.read().await?;
        let row = store::kommo::connection_by_account(&mut tx, user.account_id).await?;
        tx.commit().await?;
        Ok::<_, StoreError>(row)
    };
    let connection = match connection.await {
        Ok(Some(row)) => row,
        Ok(None) => {
            return problem(
                StatusCode::NOT_FOUND,
                "not-connected",
                "Not connected",
                "this Kommo account is not connected to a pipepay client account",
            );
        }
        Err(error) => return unavailable(&error),
    };
    let host = connection.host.to_ascii_lowercase();
    if user.issuer_host != host || !origin_matches(&state, &headers, &host) {
        return problem(
            StatusCode::FORBIDDEN,
            "foreign-account",
            "Not the connected Kommo account",
            "the token's account address is not the connected account's",
        );
    }
    let now = now_ms() / 1000;
    let claims = WidgetClaims {
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
        sub: connection.client_id,
        acc: user.account_id,
        uid: user.user_id,
        adm: user.is_admin,
        host,
        iat: now,
        exp: now + i64::try_from(WIDGET_TOKEN_TTL.as_secs()).unwrap_or(600),
    };
    let signed = EncodingKey::from_secret(&key)
        .and_then(|key| jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key));
    match signed {
        Ok(token) => Json(Session { token, expires_at: claims.exp, can_act: claims.adm }).into_response(),
        Err(error) => unavailable(&error),
    }
}

/// The widget token's claims, when it is ours, current, and used from its account's page.
#[allow(clippy::result_large_err)] // the error is the finished answer, built once
fn widget_claims(state: &AppState, headers: &HeaderMap) -> Result<WidgetClaims, Response> {
    let token = headers
        .get(WIDGET_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| unauthenticated("send the widget token as X-Widget-Token"))?;
    let key = widget_key(state).ok_or_else(|| unauthenticated("Kommo is not configured on this pipepay"))?;
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_issuer(&[ISSUER]);
    validation.set_audience(&[AUDIENCE]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.leeway = 0;
    let decoding =
        DecodingKey::from_secret(&key).map_err(|_| unauthenticated("the widget key is unusable"))?;
    let claims = jsonwebtoken::decode::<WidgetClaims>(token, &decoding, &validation)
        .map_err(|_| unauthenticated("the widget token is not valid or has expired; start a new session"))?
        .claims;
    if !origin_matches(state, headers, &claims.host) {
        return Err(problem(
            StatusCode::FORBIDDEN,
            "foreign-account",
            "Not the connected Kommo account",
            "this widget token belongs to another Kommo account's page",
        ));
    }
    Ok(claims)
}

/// `GET /api/v1/widget/leads/{lead_id}`: this deal's payment, for the card.
async fn lead(State(state): State<AppState>, headers: HeaderMap, Path(lead_id): Path<i64>) -> Response {
    let claims = match widget_claims(&state, &headers) {
        Ok(claims) => claims,
        Err(response) => return response,
    };
    match payment(&state, claims.sub, lead_id).await {
        Ok(mut found) => {
            found.can_act = claims.adm;
            Json(found).into_response()
        }
        Err(error) => unavailable(&error),
    }
}

/// The deal's payment from the client account's links and timeline: every query is filtered
/// on the token's client account, so another account's lead reads as "no link".
async fn payment(state: &AppState, client: ClientId, lead_id: i64) -> Result<LeadPayment, StoreError> {
    let mut tx = state.db.read().await?;
    let rows = links::for_lead(&mut tx, client, LeadId(lead_id)).await?;
    let filter =
        Filter { outcome: Some("failed".into()), lead_id: Some(LeadId(lead_id)), ..Filter::default() };
    let failures: Vec<ActivityRow> = store::activity::list(&mut tx, client, &filter, 1).await?;
    tx.commit().await?;
    let mut out = LeadPayment { lead_id, state: "none", ..LeadPayment::default() };
    let chosen = rows
        .iter()
        .find(|l| l.state == LinkState::Paid)
        .or_else(|| rows.iter().find(|l| l.state == LinkState::Open));
    match chosen {
        Some(link) if link.state == LinkState::Paid => {
            out.state = "paid";
            // The amount as stored (exactly as Flutterwave reported it), not as a note shows it.
            let paid = link.paid.as_ref().unwrap_or(&link.price);
            out.amount = Some(paid.amount.to_string());
            out.currency = Some(paid.currency.clone());
            out.method = link.payment_type.clone();
            out.reference = link.flw_ref.clone().or_else(|| Some(link.tx_ref.to_string()));
            out.paid_at = link.closed_at;
            out.sent_at = Some(link.created_at);
        }
        Some(link) => {
            out.state = "sent";
            out.link = link.link.clone();
            out.amount = Some(link.price.amount.to_string());
            out.currency = Some(link.price.currency.clone());
            out.sent_at = Some(link.created_at);
        }
        None => {
            // The newest failure explains a missing link, unless a link came after it.
            let newest_link = rows.first().map_or(0, |l| l.created_at);
            if let Some(failure) = failures.first().filter(|f| f.at >= newest_link) {
                out.state = "not_accepted";
                out.reason = Some(failure.detail.clone());
            }
        }
    }
    Ok(out)
}

/// `POST .../send`: make (or re-use) the link now, whatever the stage.
async fn send(State(state): State<AppState>, headers: HeaderMap, Path(lead_id): Path<i64>) -> Response {
    act(state, headers, lead_id, |user_id| LeadRequest::Send { user_id }).await
}

/// `POST .../disable`: disable the deal's open link.
async fn disable(State(state): State<AppState>, headers: HeaderMap, Path(lead_id): Path<i64>) -> Response {
    act(state, headers, lead_id, |user_id| LeadRequest::Disable { user_id }).await
}

async fn act(state: AppState, headers: HeaderMap, lead_id: i64, asked: fn(i64) -> LeadRequest) -> Response {
    let claims = match widget_claims(&state, &headers) {
        Ok(claims) => claims,
        Err(response) => return response,
    };
    if !claims.adm {
        return problem(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Not allowed",
            "only a Kommo account administrator may send or disable payment links",
        );
    }
    if lead_id <= 0 {
        return problem(StatusCode::NOT_FOUND, "not-found", "Not found", "no such lead");
    }
    let request = asked(claims.uid);
    let what = match &request {
        LeadRequest::Disable { .. } => "disable the payment link",
        _ => "send the payment link",
    };
    let queued = async {
        let mut tx = state.db.write().await?;
        let detail = format!("Kommo user {} asked from the deal card to {what}", claims.uid);
        let row = ActivityRow {
            id: uuid::Uuid::now_v7(),
            client_id: claims.sub,
            at: now_ms(),
            kind: ActivityKind::Received,
            outcome: ActivityOutcome::Ok,
            lead_id: Some(LeadId(lead_id)),
            tx_ref: None,
            job_id: None,
            detail,
        };
        store::activity::insert(&mut tx, &row).await?;
        request::enqueue(&state.queue, &mut tx, claims.sub, None, lead_id, None, &request, None).await?;
        tx.commit().await
    };
    match queued.await {
        Ok(()) => {
            state.queue.wake();
            (StatusCode::ACCEPTED, Json(serde_json::json!({ "queued": true }))).into_response()
        }
        Err(error) => unavailable(&error),
    }
}
