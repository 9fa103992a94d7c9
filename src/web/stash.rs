//! A form posted after its session ended (it expired while the person was typing, or was logged
//! out elsewhere): what was typed is kept in a short-lived sealed cookie, the person logs in,
//! and `/app/resume` offers to send it again. Passwords, keys and tokens are never kept.
//!
//! A cookie rather than a table: it needs no clean-up, works on every instance of a fleet, and
//! belongs to the one browser that typed it. It is sealed (AES-256-GCM, a key derived from the
//! master key) so nothing the browser holds is readable or forgeable, and lives 30 minutes.

use aes_gcm::aead::{Aead, Generate, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use askama::Template;
use axum::extract::State;
use axum::http::header::{COOKIE, REFERER, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cookie::{Cookie, SameSite};
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::Page;
use super::session::{Viewer, safe_next};
use crate::state::AppState;

pub const COOKIE_NAME: &str = "pipepay_stash";
/// Where log-in sends someone whose form was kept; the log-in page says why they are there.
pub const RESUME: &str = "/app/resume";
const TTL_SECS: i64 = 30 * 60;
/// Browsers keep cookies up to 4096 bytes, name and attributes included.
const MAX_VALUE: usize = 3800;
const AAD: &[u8] = b"pipepay form stash v1";

/// What was posted, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Stash {
    /// The address the form posted to.
    action: String,
    /// The page the form was on, to go back to without sending.
    page: String,
    fields: Vec<(String, String)>,
    /// Whether secret fields were left out (they must be typed again).
    dropped: bool,
    /// Unix seconds after which the stash is ignored, whatever the cookie's own age says.
    exp: i64,
}

/// Fields never kept: passwords, Flutterwave keys and hashes, tokens, and the telemetry
/// headers (credentials live there), besides the dead session's CSRF token.
fn secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["password", "secret", "key", "hash", "token", "csrf", "headers"].iter().any(|s| name.contains(s))
}

fn derive(master: &[u8]) -> Option<[u8; 32]> {
    let mut key = [0u8; 32];
    Hkdf::<Sha256>::new(Some(b"pipepay"), master).expand(b"form-stash/v1", &mut key).ok()?;
    Some(key)
}

fn seal(state: &AppState, stash: &Stash) -> Option<String> {
    let master = state.vault.master_keys().active();
    let key = zeroize::Zeroizing::new(derive(&master.key[..])?);
    let plain = serde_json::to_vec(stash).ok()?;
    let cipher = Aes256Gcm::new(&Key::<Aes256Gcm>::from(*key));
    let nonce = Nonce::generate();
    let mut sealed = nonce.to_vec();
    sealed.extend(cipher.encrypt(&nonce, Payload { msg: &plain, aad: AAD }).ok()?);
    Some(format!("{}.{}", master.id, URL_SAFE_NO_PAD.encode(sealed)))
}

fn open(state: &AppState, value: &str) -> Option<Stash> {
    let (id, body) = value.split_once('.')?;
    let master = state.vault.master_keys().get(id)?;
    let key = zeroize::Zeroizing::new(derive(&master.key[..])?);
    let sealed = URL_SAFE_NO_PAD.decode(body).ok()?;
    if sealed.len() < 12 + 16 {
        return None;
    }
    let (nonce, ciphertext) = sealed.split_at(12);
    let nonce = Nonce::try_from(nonce).ok()?;
    let cipher = Aes256Gcm::new(&Key::<Aes256Gcm>::from(*key));
    let plain = cipher.decrypt(&nonce, Payload { msg: ciphertext, aad: AAD }).ok()?;
    let stash: Stash = serde_json::from_slice(&plain).ok()?;
    (stash.exp > chrono::Utc::now().timestamp()).then_some(stash)
}

fn cookie(value: String, max_age: i64, secure: bool) -> Option<HeaderValue> {
    let c = Cookie::build((COOKIE_NAME, value))
        .path("/app")
        .http_only(true)
        .secure(secure)
        .same_site(SameSite::Lax)
        .max_age(cookie::time::Duration::seconds(max_age))
        .build();
    HeaderValue::from_str(&c.to_string()).ok()
}

/// The page a form was on: the referring page of this site, else the app's home (the address
/// a form posts to may have no page).
fn page_of(parts: &Parts) -> String {
    let from_referer = parts
        .headers
        .get(REFERER)
        .and_then(|v| v.to_str().ok())
        .and_then(|r| url::Url::parse(r).ok())
        .filter(|r| {
            let host = parts.headers.get(axum::http::header::HOST).and_then(|h| h.to_str().ok());
            r.host_str().is_some()
                && host.is_some_and(|h| {
                    h == r.host_str().unwrap_or_default()
                        || r.port().is_some_and(|p| h == format!("{}:{p}", r.host_str().unwrap_or_default()))
                })
        })
        .map(|r| match r.query() {
            Some(q) => format!("{}?{q}", r.path()),
            None => r.path().to_owned(),
        });
    safe_next(from_referer.as_deref())
}

/// The answer to a form posted without a live session: to the log-in page, keeping what was
/// typed when there is anything worth keeping.
pub fn keep(state: &AppState, parts: &Parts, body: &[u8]) -> Response {
    let posted: Vec<(String, String)> = serde_html_form::from_bytes(body).unwrap_or_default();
    let fields: Vec<(String, String)> = posted.iter().filter(|(n, _)| !secret(n)).cloned().collect();
    let dropped = posted.iter().any(|(n, v)| secret(n) && n != "csrf" && !v.is_empty());
    let page = page_of(parts);
    let login = |next: &str| {
        let next: String = url::form_urlencoded::byte_serialize(next.as_bytes()).collect();
        Redirect::to(&format!("/login?next={next}"))
    };
    if fields.is_empty() {
        return login(&page).into_response();
    }
    let stash = Stash {
        action: safe_next(Some(parts.uri.path())),
        page: page.clone(),
        fields,
        dropped,
        exp: chrono::Utc::now().timestamp() + TTL_SECS,
    };
    match seal(state, &stash).filter(|v| v.len() <= MAX_VALUE) {
        Some(sealed) => {
            let mut response = login(RESUME).into_response();
            if let Some(value) = cookie(sealed, TTL_SECS, state.auth.secure_cookies) {
                response.headers_mut().append(SET_COOKIE, value);
            }
            response
        }
        None => {
            tracing::info!(action = %stash.action, "a form posted without a session was too large to keep");
            login(&page).into_response()
        }
    }
}

fn stashed(state: &AppState, headers: &HeaderMap) -> Option<Stash> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == COOKIE_NAME)
        .and_then(|c| open(state, c.value()))
}

#[derive(Template)]
#[template(path = "resume.html")]
struct ResumePage {
    csrf: String,
    action: String,
    page: String,
    fields: Vec<(String, String)>,
    dropped: bool,
}

/// After logging in again: the kept form, to send as it was (one button) or to drop. The
/// cookie is spent here, so a reload or a later log-in does not offer it again.
pub async fn resume(State(state): State<AppState>, viewer: Viewer, headers: HeaderMap) -> Response {
    let Some(stash) = stashed(&state, &headers) else {
        return Redirect::to("/app").into_response();
    };
    let page = ResumePage {
        csrf: viewer.csrf.clone(),
        action: stash.action,
        page: stash.page,
        fields: stash.fields,
        dropped: stash.dropped,
    };
    let mut response = Page::render(StatusCode::OK, &page).into_response();
    if let Some(value) = cookie(String::new(), 0, state.auth.secure_cookies) {
        response.headers_mut().append(SET_COOKIE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::secret;

    #[test]
    fn secrets_are_never_kept() {
        for name in [
            "password",
            "new_password",
            "secret_key",
            "public_key",
            "webhook_hash",
            "token",
            "csrf",
            "headers",
        ] {
            assert!(secret(name), "{name}");
        }
        for name in ["display_name", "checkout.title", "notes.link_created", "link_field_id", "email", "role"]
        {
            assert!(!secret(name), "{name}");
        }
    }
}
