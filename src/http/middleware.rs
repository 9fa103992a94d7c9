//! Cross-cutting HTTP behaviour: problem+json for every error, security headers, access logs.

use axum::body::{Body, to_bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};
use axum::middleware::Next;
use axum::response::IntoResponse;
use tracing::Span;

use crate::problem::{self, Problem};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Error bodies longer than this are not worth quoting back to the client.
const MAX_QUOTED_ERROR: usize = 2048;

/// Makes every 4xx and 5xx answer problem+json, whoever produced it (our handlers, axum's
/// extractor rejections, 404/405 from routing, 413 from the body limit, 503 from the timeout),
/// and stamps it with the request id.
pub async fn problem_responses(request: Request, next: Next) -> axum::response::Response {
    let request_id = request_id(request.headers());
    let response = next.run(request).await;
    let status = response.status();
    // Pages render their own errors for people; only machine answers become problem+json.
    let is_page = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if !(status.is_client_error() || status.is_server_error()) || is_page {
        return response;
    }
    let (parts, body) = response.into_parts();
    let bytes = to_bytes(body, 64 * 1024).await.unwrap_or_default();
    let mut problem = if is_problem(&parts.headers) {
        match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(serde_json::Value::Object(mut fields)) => {
                if let Some(id) = request_id {
                    fields.insert("request_id".into(), id.into());
                }
                let body = serde_json::to_vec(&fields).unwrap_or_else(|_| bytes.to_vec());
                return Response::from_parts(parts, Body::from(body));
            }
            _ => Problem::status(status),
        }
    } else {
        let mut problem = Problem::status(status);
        // Quote 4xx texts (axum's rejections explain what was wrong with the request), never
        // 5xx ones: an internal error's text is for the log only.
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            // Both body limits say this in their own words; one sentence for both.
            problem = problem.with_detail("The request body is larger than this server accepts.");
        } else if status.is_client_error()
            && !bytes.is_empty()
            && bytes.len() <= MAX_QUOTED_ERROR
            && let Ok(text) = std::str::from_utf8(&bytes)
        {
            problem = problem.with_detail(text.trim());
        }
        problem
    };
    problem.request_id = request_id;
    let mut converted = problem.into_response();
    // Keep what the producer said beyond the body (Allow on 405, Retry-After on 429/503).
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            converted.headers_mut().insert(name.clone(), value.clone());
        }
    }
    converted
}

fn is_problem(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(problem::CONTENT_TYPE))
}

fn request_id(headers: &HeaderMap) -> Option<String> {
    headers.get(REQUEST_ID).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// Whether pipepay is served over https, which decides HSTS.
#[derive(Clone, Copy)]
pub struct Https(pub bool);

/// Headers every response carries. Pages that need a looser Content-Security-Policy set
/// their own; this only fills in what a handler left out.
pub async fn security_headers(
    State(Https(https)): State<Https>,
    request: Request,
    next: Next,
) -> axum::response::Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let defaults: [(HeaderName, &'static str); 5] = [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CONTENT_SECURITY_POLICY, "default-src 'none'; frame-ancestors 'none'"),
        (HeaderName::from_static("cross-origin-opener-policy"), "same-origin"),
    ];
    for (name, value) in defaults {
        headers.entry(name).or_insert(HeaderValue::from_static(value));
    }
    if https {
        headers
            .entry(header::STRICT_TRANSPORT_SECURITY)
            .or_insert(HeaderValue::from_static("max-age=31536000; includeSubDomains"));
    }
    response
}

/// The access-log span of one request. Only the route template is recorded, never the raw
/// path or query: paths carry ingress tokens and queries carry OAuth codes.
pub fn request_span(request: &Request) -> Span {
    let route = request.extensions().get::<MatchedPath>().map(MatchedPath::as_str);
    let method = request.method().as_str();
    // HTTP semantic conventions: server spans are named "{method} {route}".
    let name = match route {
        Some(route) => format!("{method} {route}"),
        None => method.to_owned(),
    };
    let span = tracing::info_span!(
        "http.request",
        otel.name = %name,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = route.unwrap_or("<unmatched>"),
        url.scheme = "http",
        request_id = request_id(request.headers()).unwrap_or_default(),
        http.response.status_code = tracing::field::Empty,
        pipepay.client_id = tracing::field::Empty,
        pipepay.agency_id = tracing::field::Empty,
    );
    crate::telemetry::context::adopt_from_headers(&span, request.headers());
    span
}

pub fn log_response(response: &Response<Body>, latency: std::time::Duration, span: &Span) {
    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    if response.status().is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    let latency_ms = latency.as_secs_f64() * 1000.0;
    if response.status().is_server_error() {
        tracing::warn!(status, latency_ms, "request answered");
    } else {
        tracing::info!(status, latency_ms, "request answered");
    }
}
