//! Authentication at the HTTP edge: an API key in `Authorization: Bearer`, or a session cookie.
//! The middleware works out who is asking (and renews a session's token while it is used);
//! the `Principal` extractor makes handlers require it and enforces CSRF for cookies.

use std::sync::Arc;

use axum::extract::{FromRequestParts, OptionalFromRequestParts, Request, State};
use axum::http::header::{AUTHORIZATION, COOKIE, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cookie::{Cookie, SameSite};
use subtle::ConstantTimeEq;

use super::session::{self, Claims};
use super::{Auth, NewSession, tokens};
use crate::clock::now_ms;
use crate::error::Error;
use crate::ids::{AgencyId, ApiKeyId, SessionId, UserId};
use crate::roles::Role;
use crate::store::{self, Db};

/// Who is asking.
#[derive(Debug, Clone)]
pub enum Principal {
    /// A person, by session cookie.
    User {
        user: UserId,
        email: String,
        session: SessionId,
        /// Whether the request echoed the session's CSRF token in `x-csrf-token`.
        csrf_ok: bool,
    },
    /// Automation, by API key: bound to one agency with a fixed role.
    ApiKey { key: ApiKeyId, agency: AgencyId, role: Role, name: String },
}

/// The CSRF token of the request's session, for pages and `/me` to hand to scripts.
#[derive(Debug, Clone)]
pub struct SessionCsrf(pub String);

/// What the middleware found; `None` for anonymous requests.
#[derive(Debug, Clone)]
struct Authenticated(Option<Principal>);

#[derive(Clone)]
pub struct AuthState {
    pub db: Db,
    pub auth: Arc<Auth>,
}

pub async fn authenticate(State(state): State<AuthState>, mut request: Request, next: Next) -> Response {
    let mut renewed = None;
    let mut clear = false;
    let principal = if let Some(authorization) = request.headers().get(AUTHORIZATION) {
        match api_key(&state.db, authorization).await {
            Ok(principal) => Some(principal),
            Err(error) => return error.into_response(),
        }
    } else if let Some(token) = cookie(request.headers(), session::COOKIE) {
        match session_user(&state, &token, request.headers()).await {
            Ok(Some((principal, claims))) => {
                renewed = renew_if_due(&state.auth, &claims);
                request.extensions_mut().insert(SessionCsrf(claims.csrf.clone()));
                Some(principal)
            }
            Ok(None) => {
                clear = true;
                None
            }
            Err(error) => return error.into_response(),
        }
    } else {
        None
    };
    request.extensions_mut().insert(Authenticated(principal));
    let mut response = next.run(request).await;
    // A handler that set the session cookie itself (log-in, log-out) has the last word.
    let handler_set_session = response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.starts_with(session::COOKIE)));
    if !handler_set_session {
        if let Some(session) = renewed {
            SessionCookies::set(response.headers_mut(), &session, state.auth.secure_cookies);
        } else if clear {
            SessionCookies::clear(response.headers_mut(), state.auth.secure_cookies);
        }
    }
    response
}

async fn api_key(db: &Db, authorization: &HeaderValue) -> Result<Principal, Error> {
    const REFUSED: Error = Error::Unauthenticated("the API key is missing, malformed or revoked");
    let token = authorization
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| t.starts_with(tokens::API_KEY_PREFIX))
        .ok_or(REFUSED)?;
    let mut tx = db.read().await?;
    let found = store::api_keys::by_hash(&mut tx, &tokens::hash(token)).await?.ok_or(REFUSED)?;
    tx.commit().await?;
    let parse = |role: &str| role.parse::<Role>().map_err(|e| Error::Internal(anyhow::anyhow!(e)));
    // Leaving the agency revokes a creator's keys and demotion lowers them, in the same
    // transaction; this is the second line: a key is worth at most its creator's role now.
    let creator_role = parse(found.creator_role.as_deref().ok_or(REFUSED)?)?;
    let role = parse(&found.key.role)?.min(creator_role);
    let row = found.key;
    let now = now_ms();
    if row.last_used_at.is_none_or(|at| at < now - 60_000) {
        let mut tx = db.write().await?;
        store::api_keys::touch(&mut tx, row.id, now).await?;
        tx.commit().await?;
    }
    Ok(Principal::ApiKey { key: row.id, agency: row.agency_id, role, name: row.name })
}

async fn session_user(
    state: &AuthState,
    token: &str,
    headers: &HeaderMap,
) -> Result<Option<(Principal, Claims)>, Error> {
    let Some(claims) = state.auth.keys.verify(token) else { return Ok(None) };
    let mut tx = state.db.read().await?;
    let email = store::users::live_session_email(&mut tx, claims.sid, claims.sub, now_ms()).await?;
    tx.commit().await?;
    let Some(email) = email else { return Ok(None) };
    let csrf_ok = headers
        .get(session::CSRF_HEADER)
        .is_some_and(|given| bool::from(given.as_bytes().ct_eq(claims.csrf.as_bytes())));
    let principal = Principal::User { user: claims.sub, email, session: claims.sid, csrf_ok };
    Ok(Some((principal, claims)))
}

/// A fresh token once half of the current one's life has passed, so an active user stays
/// logged in and an idle one is logged out one TTL after their last request.
fn renew_if_due(auth: &Auth, claims: &Claims) -> Option<NewSession> {
    let half = i64::try_from(auth.keys.ttl().as_secs() / 2).unwrap_or(0);
    if claims.exp - chrono::Utc::now().timestamp() > half {
        return None;
    }
    let (token, claims) = auth.keys.issue(claims.sub, claims.sid, &claims.csrf).ok()?;
    Some(NewSession { token: crate::vault::Secret::new(token), claims })
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
}

/// The two cookies of a session: the HttpOnly JWT, and the CSRF token a page's script may read.
pub struct SessionCookies;

impl SessionCookies {
    pub fn set(headers: &mut HeaderMap, session: &NewSession, secure: bool) {
        let max_age = session.claims.exp - session.claims.iat;
        let jwt = build(session::COOKIE, session.token.expose().to_owned(), max_age, true, secure);
        let csrf = build(session::CSRF_COOKIE, session.claims.csrf.clone(), max_age, false, secure);
        for c in [jwt, csrf] {
            if let Ok(value) = HeaderValue::from_str(&c.to_string()) {
                headers.append(SET_COOKIE, value);
            }
        }
    }

    pub fn clear(headers: &mut HeaderMap, secure: bool) {
        for (name, http_only) in [(session::COOKIE, true), (session::CSRF_COOKIE, false)] {
            let c = build(name, String::new(), 0, http_only, secure);
            if let Ok(value) = HeaderValue::from_str(&c.to_string()) {
                headers.append(SET_COOKIE, value);
            }
        }
    }
}

fn build(
    name: &'static str,
    value: String,
    max_age_secs: i64,
    http_only: bool,
    secure: bool,
) -> Cookie<'static> {
    Cookie::build((name, value))
        .path("/")
        .http_only(http_only)
        .secure(secure)
        .same_site(SameSite::Lax)
        .max_age(cookie::time::Duration::seconds(max_age_secs))
        .build()
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Some(Authenticated(Some(principal))) = parts.extensions.get::<Authenticated>().cloned() else {
            return Err(Error::Unauthenticated("log in, or send an API key as Authorization: Bearer"));
        };
        // A cookie rides along on any request the browser makes, including ones another site
        // triggers; an API key does not. So only cookie-borne changes need the CSRF token.
        if let Principal::User { csrf_ok: false, .. } = &principal
            && !parts.method.is_safe()
        {
            return Err(Error::Forbidden("a cookie-authenticated change needs the x-csrf-token header"));
        }
        Ok(principal)
    }
}

/// For endpoints anyone may call that behave differently for someone logged in.
impl<S: Send + Sync> OptionalFromRequestParts<S> for Principal {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Option<Self>, Self::Rejection> {
        match parts.extensions.get::<Authenticated>() {
            Some(Authenticated(Some(_))) => {
                <Principal as FromRequestParts<S>>::from_request_parts(parts, state).await.map(Some)
            }
            _ => Ok(None),
        }
    }
}

/// The principal without the CSRF header check, for form posts that carry their CSRF token in
/// a form field and check it themselves (see `web`).
#[derive(Debug, Clone)]
pub struct FormPrincipal(pub Option<Principal>);

impl<S: Send + Sync> FromRequestParts<S> for FormPrincipal {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(FormPrincipal(parts.extensions.get::<Authenticated>().and_then(|a| a.0.clone())))
    }
}
