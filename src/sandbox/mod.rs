//! Demo mode's built-in sandbox Kommo and Flutterwave (`pipepay serve --demo`): stand-ins,
//! served by pipepay itself under `/sandbox/`, that behave like the real services on the wire
//! (OAuth code exchange with rotating refresh tokens, form-encoded v2 lead webhooks, hosted
//! payment links, the `verif-hash` webhook, verify by id) so a newcomer can watch a deal get
//! paid without real accounts. Off unless demo mode is on; every page says it is a sandbox.
//!
//! It knows nothing of pipepay's insides: pipepay reaches it through its ordinary Kommo and
//! Flutterwave base URLs, exactly as it reaches the real services.

mod flutterwave;
mod kommo;

use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use url::Url;

pub use self::flutterwave::Merchant;
pub use self::kommo::ACCOUNT_HOST;

/// The sandbox's two services and what they hold; all in memory, gone at restart.
pub struct Sandbox {
    world: Mutex<World>,
    /// Where browsers reach pipepay (and so the sandbox's pages).
    public: Url,
    http: reqwest::Client,
    /// The OAuth client pipepay runs with in demo mode.
    pub kommo_client_id: String,
    pub kommo_client_secret: String,
    pub merchant: Merchant,
}

#[derive(Default)]
struct World {
    kommo: kommo::Books,
    flutterwave: flutterwave::Books,
}

impl Sandbox {
    /// A sandbox with a Kommo account holding a few deals, and one Flutterwave merchant.
    pub fn new(public: Url) -> anyhow::Result<Arc<Sandbox>> {
        let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(10)).build()?;
        let mut world = World::default();
        kommo::seed(&mut world.kommo);
        Ok(Arc::new(Sandbox {
            world: Mutex::new(world),
            public,
            http,
            kommo_client_id: uuid::Uuid::new_v4().to_string(),
            kommo_client_secret: random_hex(),
            merchant: Merchant::default(),
        }))
    }

    /// The sandbox's routes, to be served by pipepay's own listener.
    pub fn router(self: &Arc<Self>) -> Router {
        kommo::router(self.clone()).merge(flutterwave::router(self.clone()))
    }

    /// Kommo's consent page, for `PIPEPAY_KOMMO_AUTH_URL`.
    pub fn kommo_auth_url(&self) -> anyhow::Result<Url> {
        Ok(self.public.join("sandbox/kommo/oauth")?)
    }

    /// The sandbox's pages, for the start-up log and the README.
    pub fn pages(&self) -> anyhow::Result<(Url, Url)> {
        Ok((self.public.join("sandbox/kommo")?, self.public.join("sandbox/flutterwave")?))
    }

    fn world(&self) -> MutexGuard<'_, World> {
        // A panic while holding it could only come from a bug here; the data is still usable.
        self.world.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn url(&self, path: &str) -> String {
        self.public.join(path).map_or_else(|_| path.to_owned(), |u| u.to_string())
    }
}

/// The Kommo API base pipepay calls in demo mode (`PIPEPAY_KOMMO_API_URL`), on the address
/// pipepay listens on: the sandbox is reached over loopback, whatever the public URL is.
pub fn kommo_api_template(local: &Url) -> String {
    format!("{}sandbox/kommo-api/{{host}}", local.as_str())
}

/// The Flutterwave API base pipepay calls in demo mode (`PIPEPAY_FLUTTERWAVE_API_URL`).
pub fn flutterwave_api_url(local: &Url) -> anyhow::Result<Url> {
    Ok(local.join("sandbox/flutterwave-api/")?)
}

/// The token of an `Authorization: Bearer` header, or "" without one.
fn bearer(headers: &HeaderMap) -> &str {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
}

fn random_hex() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Text for HTML: the sandbox's pages are written by hand, so everything shown is escaped here.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A sandbox page: labelled as a sandbox at the top, in the title and in a banner, so nobody
/// mistakes it for the real service.
fn page(service: &str, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · SANDBOX {service}</title><link rel=\"stylesheet\" href=\"/assets/app.css\"></head>\
         <body><header class=\"sandbox-banner\" role=\"note\" id=\"sandbox-banner\"><strong>SANDBOX {service}</strong> \
         — a stand-in built into pipepay's demo mode. Not the real {service}: no real accounts, no real money.</header>\
         <main><h1>{title}</h1>{body}</main></body></html>",
        title = esc(title),
        service = esc(service),
    );
    let mut response = (StatusCode::OK, html).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    response
}

fn see_other(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(value) => (StatusCode::SEE_OTHER, [(header::LOCATION, value)]).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
