//! The Flutterwave v3 API client: hosted links, disabling them, verification, and a key check.
//! One client serves every tenant; each call carries the tenant's secret key.
//!
//! Nothing here retries. v3 has no idempotency key, so only the caller, who knows whether a call
//! can be repeated safely, may decide to try again.

use std::time::Duration;

use reqwest::header::{ACCEPT, RETRY_AFTER};
use reqwest::{Method, RequestBuilder, Response};
use rust_decimal::Decimal;
use tracing::Instrument;

use crate::telemetry::calls;
use crate::telemetry::metrics::{kv, metrics};
use serde_json::{Map, Value, json};
use url::Url;

use super::model::Transaction;
use crate::vault::Secret;

/// Flutterwave answers 503 after about 28 s of its own (reference §4), so a client that gives up
/// sooner only turns a clear answer into an ambiguous timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(35);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Flutterwave's hosted page accepts at most a day (reference §1).
const MAX_SESSION_MINUTES: u32 = 1440;

#[derive(Debug, thiserror::Error)]
pub enum FlutterwaveError {
    #[error("Flutterwave did not accept the secret key (401)")]
    Unauthorized,
    #[error("Flutterwave asks to wait {retry_after:?} (429)")]
    RateLimited { retry_after: Duration },
    /// 5xx. A 503 is Flutterwave's own ~28 s timeout: the request may still be processing.
    #[error("Flutterwave is unavailable: {0}")]
    Unavailable(String),
    #[error("Flutterwave did not answer in time")]
    Timeout,
    #[error("Flutterwave refused the request ({status}): {message}")]
    Rejected { status: u16, message: String },
    /// Refused here, before anything was sent, because Flutterwave would have misread it
    /// (an omitted currency, for one, silently becomes NGN).
    #[error("the payment request is invalid: {0}")]
    Invalid(String),
    #[error("Flutterwave answered something unexpected: {0}")]
    Protocol(String),
    #[error("cannot reach Flutterwave")]
    Transport(#[source] reqwest::Error),
}

impl FlutterwaveError {
    /// Worth trying again later. For `create_payment` the tx_ref is spent regardless: see there.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            FlutterwaveError::RateLimited { .. }
                | FlutterwaveError::Unavailable(_)
                | FlutterwaveError::Timeout
                | FlutterwaveError::Transport(_)
        )
    }

    fn from_transport(e: reqwest::Error) -> FlutterwaveError {
        // The request builder's URL carries no secret (the key travels in a header), so the
        // source error is safe to keep for the cause chain.
        if e.is_timeout() { FlutterwaveError::Timeout } else { FlutterwaveError::Transport(e) }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Customer {
    pub email: String,
    pub phone: Option<String>,
    pub name: Option<String>,
}

/// One hosted payment (Flutterwave Standard).
#[derive(Debug, Clone, PartialEq)]
pub struct PaymentRequest {
    /// Unique per link, forever: one tx_ref can never be posted twice (see `create_payment`).
    pub tx_ref: String,
    /// Major units (naira, shillings), exact.
    pub amount: Decimal,
    /// ISO 4217, upper case.
    pub currency: String,
    pub redirect_url: Option<String>,
    pub customer: Customer,
    pub title: Option<String>,
    pub logo: Option<String>,
    pub description: Option<String>,
    /// Free-form; `Value::Null` sends none. Flutterwave hands it back as `data.meta` on verify
    /// and `meta_data` on webhooks.
    pub meta: Value,
    /// `card`, `mpesa`, ... Ignored by Flutterwave when the account's dashboard enforces its own.
    pub payment_options: Vec<String>,
    pub session_duration_minutes: Option<u32>,
    pub max_retry_attempt: Option<u32>,
}

/// The v3 API, for any tenant.
#[derive(Debug, Clone)]
pub struct Flutterwave {
    http: reqwest::Client,
    /// Always ends in `/`, so endpoint paths join under it rather than replacing its last segment.
    base: Url,
    timeout: Duration,
}

impl Flutterwave {
    /// `base` is `https://api.flutterwave.com` in production (a fake's address in tests); use
    /// [`DEFAULT_TIMEOUT`] unless a test needs to give up sooner.
    pub fn new(base: Url, timeout: Duration) -> Result<Flutterwave, FlutterwaveError> {
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
            return Err(FlutterwaveError::Invalid(format!(
                "{base} is not an http(s) base URL for Flutterwave"
            )));
        }
        let mut base = base;
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        crate::install_tls_provider();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(CONNECT_TIMEOUT.min(timeout))
            .user_agent(concat!("pipepay/", env!("CARGO_PKG_VERSION")))
            // Flutterwave's API never redirects; following one would carry the key elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(FlutterwaveError::Transport)?;
        Ok(Flutterwave { http, base, timeout })
    }

    /// The whole-request timeout this client was built with.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Cheap read-only authenticated call (GET /v3/banks/NG) to check a key before saving it.
    /// The balances endpoint would do too, but it exposes money figures we have no use for.
    #[tracing::instrument(skip_all)]
    pub async fn check_key(&self, secret: &Secret) -> Result<(), FlutterwaveError> {
        let answer =
            self.send("GET /v3/banks/{country}", self.request(Method::GET, "v3/banks/NG")?, secret).await?;
        answer.success().map(drop)
    }

    /// POST /v3/payments. Returns the hosted link.
    ///
    /// Never retries by itself: v3 has no idempotency key, so after a timeout or 5xx the payment
    /// may exist, and the caller must treat that tx_ref as spent (never re-post it; make a new
    /// one, and disable the old link should it ever surface).
    #[tracing::instrument(skip_all, fields(tx_ref = %request.tx_ref))]
    pub async fn create_payment(
        &self,
        secret: &Secret,
        request: &PaymentRequest,
    ) -> Result<String, FlutterwaveError> {
        let body = payment_body(request)?;
        let answer = self
            .send("POST /v3/payments", self.request(Method::POST, "v3/payments")?.json(&body), secret)
            .await?;
        let data = answer.success()?;
        let link = data.get("link").and_then(Value::as_str).unwrap_or_default();
        match Url::parse(link) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(link.to_owned()),
            _ => Err(FlutterwaveError::Protocol(format!("the hosted link {link:?} is not a URL"))),
        }
    }

    /// POST /v3/payments/link/disable. "This payment link is currently inactive" (already
    /// disabled, or unknown to this account) counts as done.
    #[tracing::instrument(skip_all)]
    pub async fn disable_link(&self, secret: &Secret, link: &str) -> Result<(), FlutterwaveError> {
        let body = json!({ "link": link });
        let request = self.request(Method::POST, "v3/payments/link/disable")?.json(&body);
        let answer = self.send("POST /v3/payments/link/disable", request, secret).await?;
        if answer.is_error_saying("currently inactive") {
            return Ok(());
        }
        // Only the envelope is checked: the success body's `data` is UNVERIFIED (reference §1).
        answer.success().map(drop)
    }

    /// GET /v3/transactions/{id}/verify; None when Flutterwave says no such transaction (a
    /// wrong id, another account's, or one from the other mode).
    #[tracing::instrument(skip(self, secret))]
    pub async fn verify(&self, secret: &Secret, id: i64) -> Result<Option<Transaction>, FlutterwaveError> {
        let request = self.request(Method::GET, &format!("v3/transactions/{id}/verify"))?;
        self.transaction("GET /v3/transactions/{id}/verify", request, secret).await
    }

    /// GET /v3/transactions/verify_by_reference?tx_ref=; None when not found. Which attempt it
    /// answers when a link was tried several times is UNVERIFIED (the fake gives the latest), so
    /// prefer `verify` whenever the numeric id is known.
    #[tracing::instrument(skip(self, secret))]
    pub async fn verify_by_reference(
        &self,
        secret: &Secret,
        tx_ref: &str,
    ) -> Result<Option<Transaction>, FlutterwaveError> {
        let mut url = self.url("v3/transactions/verify_by_reference")?;
        url.query_pairs_mut().append_pair("tx_ref", tx_ref);
        self.transaction(
            "GET /v3/transactions/verify_by_reference",
            self.http.request(Method::GET, url),
            secret,
        )
        .await
    }

    async fn transaction(
        &self,
        operation: &'static str,
        request: RequestBuilder,
        secret: &Secret,
    ) -> Result<Option<Transaction>, FlutterwaveError> {
        let answer = self.send(operation, request, secret).await?;
        // The HTTP status of "not found" is UNVERIFIED (400, 404, even 200 are reported), so
        // it is recognised by its body whatever the status.
        if answer.is_error_saying("no transaction") {
            return Ok(None);
        }
        let data = answer.success()?;
        Transaction::from_verify(data)
            .map(Some)
            .ok_or_else(|| FlutterwaveError::Protocol("the verified transaction did not parse".into()))
    }

    fn url(&self, path: &str) -> Result<Url, FlutterwaveError> {
        self.base.join(path).map_err(|e| FlutterwaveError::Protocol(format!("bad endpoint {path}: {e}")))
    }

    fn request(&self, method: Method, path: &str) -> Result<RequestBuilder, FlutterwaveError> {
        Ok(self.http.request(method, self.url(path)?))
    }

    /// Sends with the tenant's key and maps the statuses every endpoint shares. The key goes
    /// into the header only: it is never logged and never part of an error.
    async fn send(
        &self,
        operation: &'static str,
        request: RequestBuilder,
        secret: &Secret,
    ) -> Result<Answer, FlutterwaveError> {
        let (method, template) = operation.split_once(' ').unwrap_or(("", operation));
        let span = tracing::info_span!(
            "flutterwave.call",
            otel.name = operation,
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            http.request.method = method,
            server.address = self.base.host_str().unwrap_or_default(),
            url.template = template,
            peer.service = "flutterwave",
            http.response.status_code = tracing::field::Empty,
        );
        let mut headers = reqwest::header::HeaderMap::new();
        span.in_scope(|| crate::telemetry::context::inject(&mut headers));
        let started = std::time::Instant::now();
        let (http, built) = request
            .bearer_auth(secret.expose())
            .header(ACCEPT, "application/json")
            .headers(headers)
            .build_split();
        let built =
            built.map_err(|e| FlutterwaveError::Protocol(format!("the request did not build: {e}")))?;
        let url = built.url().to_string();
        let sent = http.execute(built).instrument(span.clone()).await;
        // The job attempt's call log (if one is open) hears of every exchange, answered or not.
        let keep = |status: Result<u16, &str>, body: &[u8]| {
            calls::record(calls::Exchange {
                vendor: "flutterwave",
                method,
                url: &url,
                started,
                status,
                body,
                secrets: &[secret.expose()],
            });
        };
        let status = match &sent {
            Ok(response) => response.status().as_u16().to_string(),
            Err(e) if e.is_timeout() => "timeout".to_owned(),
            Err(_) => "error".to_owned(),
        };
        metrics().upstream_duration.record(
            started.elapsed().as_secs_f64(),
            &[kv("vendor", "flutterwave"), kv("operation", operation), kv("status", status)],
        );
        let response = sent.map_err(|e| {
            span.record("otel.status_code", "ERROR");
            keep(Err(if e.is_timeout() { "timed out" } else { "no answer" }), b"");
            FlutterwaveError::from_transport(e)
        })?;
        span.record("http.response.status_code", response.status().as_u16());
        if !response.status().is_success() {
            span.record("otel.status_code", "ERROR");
        }
        let (answer, bytes) =
            Answer::read(response).await.inspect_err(|_| keep(Err("the answer broke off"), b""))?;
        keep(Ok(answer.status), &bytes);
        tracing::debug!(status = answer.status, "Flutterwave answered");
        match answer.status {
            200..=299 => Ok(answer),
            401 => Err(FlutterwaveError::Unauthorized),
            429 => Err(FlutterwaveError::RateLimited { retry_after: answer.retry_after }),
            503 => Err(FlutterwaveError::Unavailable(format!(
                "503 {} (Flutterwave's timeout answer: the request could still be processing)",
                answer.message()
            ))),
            500..=599 => {
                Err(FlutterwaveError::Unavailable(format!("{} {}", answer.status, answer.message())))
            }
            // Endpoint-specific errors ("not found", "inactive") are read by the caller.
            _ if answer.is_error() => Ok(answer),
            status => Err(FlutterwaveError::Rejected { status, message: answer.message() }),
        }
    }
}

/// An answer whose status was not a transport-level failure.
struct Answer {
    status: u16,
    retry_after: Duration,
    body: Option<Value>,
    /// The start of a body that was not JSON, for error messages.
    raw: String,
}

impl Answer {
    /// The answer, and its body as it came (for the job's call log, which masks it).
    async fn read(response: Response) -> Result<(Answer, Vec<u8>), FlutterwaveError> {
        let status = response.status().as_u16();
        // Seconds only; an HTTP-date or nonsense falls back to a second, and a day-long wait
        // is capped so one bad header cannot park a tenant's work.
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(1)
            .clamp(1, 3600);
        let bytes = response.bytes().await.map_err(FlutterwaveError::from_transport)?;
        let body = serde_json::from_slice::<Value>(&bytes).ok();
        let raw = String::from_utf8_lossy(&bytes).chars().take(200).collect();
        Ok((Answer { status, retry_after: Duration::from_secs(retry_after), body, raw }, Vec::from(bytes)))
    }

    /// Flutterwave's `message`, or the start of the body.
    fn message(&self) -> String {
        match self.body.as_ref().and_then(|b| b.get("message")).and_then(Value::as_str) {
            Some(message) => message.to_owned(),
            None if self.raw.is_empty() => "(empty body)".into(),
            None => self.raw.clone(),
        }
    }

    fn envelope_status(&self) -> Option<&str> {
        self.body.as_ref()?.get("status")?.as_str()
    }

    fn is_error(&self) -> bool {
        self.envelope_status() == Some("error")
    }

    /// A v3 error envelope whose message contains `words` (case-insensitively): Flutterwave's
    /// wording is the only way to tell its errors apart, and it has varied in capitalisation.
    fn is_error_saying(&self, words: &str) -> bool {
        self.is_error() && self.message().to_ascii_lowercase().contains(words)
    }

    /// `data` of `{"status":"success",...}` with a 2xx; anything else left at this point is
    /// either a refusal or a protocol break.
    fn success(&self) -> Result<&Value, FlutterwaveError> {
        if !(200..=299).contains(&self.status) {
            return Err(FlutterwaveError::Rejected { status: self.status, message: self.message() });
        }
        match (self.envelope_status(), self.body.as_ref().and_then(|b| b.get("data"))) {
            (Some("success"), Some(data)) => Ok(data),
            _ => Err(FlutterwaveError::Protocol(format!(
                "a {} answer was not a success envelope: {}",
                self.status, self.raw
            ))),
        }
    }
}

/// The `/v3/payments` body. Absent options are omitted, not sent as null: Flutterwave reads a
/// missing (and possibly a null) currency as NGN.
fn payment_body(request: &PaymentRequest) -> Result<Value, FlutterwaveError> {
    check(request)?;
    let mut body = Map::new();
    body.insert("tx_ref".into(), json!(request.tx_ref));
    // A plain JSON number in major units with the currency's decimals (`1075.00`, `5000` XOF),
    // written from the decimal's text, never through f64 (serde_json keeps the digits).
    let amount: serde_json::Number = crate::money::format(&request.currency, request.amount)
        .parse()
        .map_err(|e| FlutterwaveError::Invalid(format!("the amount is not a JSON number: {e}")))?;
    body.insert("amount".into(), Value::Number(amount));
    body.insert("currency".into(), json!(request.currency));
    insert_some(&mut body, "redirect_url", request.redirect_url.as_deref().map(Value::from));

    // Standard spells it `phonenumber`; `phone_number` (Inline's spelling) is ignored there.
    let mut customer = Map::new();
    customer.insert("email".into(), json!(request.customer.email));
    insert_some(&mut customer, "phonenumber", request.customer.phone.as_deref().map(Value::from));
    insert_some(&mut customer, "name", request.customer.name.as_deref().map(Value::from));
    body.insert("customer".into(), Value::Object(customer));

    let mut customizations = Map::new();
    insert_some(&mut customizations, "title", request.title.as_deref().map(Value::from));
    insert_some(&mut customizations, "logo", request.logo.as_deref().map(Value::from));
    insert_some(&mut customizations, "description", request.description.as_deref().map(Value::from));
    if !customizations.is_empty() {
        body.insert("customizations".into(), Value::Object(customizations));
    }
    if !request.meta.is_null() {
        body.insert("meta".into(), request.meta.clone());
    }
    let options: Vec<&str> =
        request.payment_options.iter().map(|o| o.trim()).filter(|o| !o.is_empty()).collect();
    if !options.is_empty() {
        body.insert("payment_options".into(), json!(options.join(", ")));
    }
    // The docs' table lists these at the top level but their sample nests them; which form the
    // API honours is UNVERIFIED, and the nested one is what the sample and the MCP server send.
    let mut configurations = Map::new();
    insert_some(&mut configurations, "session_duration", request.session_duration_minutes.map(Value::from));
    insert_some(&mut configurations, "max_retry_attempt", request.max_retry_attempt.map(Value::from));
    if !configurations.is_empty() {
        body.insert("configurations".into(), Value::Object(configurations));
    }
    Ok(Value::Object(body))
}

fn insert_some(map: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(value) = value {
        map.insert(key.into(), value);
    }
}

/// What Flutterwave would misread rather than refuse.
fn check(request: &PaymentRequest) -> Result<(), FlutterwaveError> {
    let invalid = |why: &str| Err(FlutterwaveError::Invalid(why.to_owned()));
    if request.tx_ref.trim().is_empty() {
        return invalid("tx_ref is empty");
    }
    if request.amount <= Decimal::ZERO {
        return invalid("the amount must be positive");
    }
    let currency = &request.currency;
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return invalid("the currency must be an upper-case ISO 4217 code such as KES");
    }
    // Rounding is the pipeline's decision (the note says the same amount); here it is refused.
    if !crate::money::fits(currency, request.amount) {
        return invalid("the amount has more decimals than the currency is charged in");
    }
    if request.customer.email.trim().is_empty() {
        return invalid("the customer's email is required");
    }
    if request.session_duration_minutes.is_some_and(|m| m == 0 || m > MAX_SESSION_MINUTES) {
        return invalid("the session duration must be 1 to 1440 minutes");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> PaymentRequest {
        PaymentRequest {
            tx_ref: "t1-42-a".into(),
            amount: "1234.50".parse().unwrap(),
            currency: "KES".into(),
            redirect_url: None,
            customer: Customer { email: "ada@example.com".into(), phone: None, name: None },
            title: None,
            logo: None,
            description: None,
            meta: Value::Null,
            payment_options: vec![],
            session_duration_minutes: None,
            max_retry_attempt: None,
        }
    }

    #[test]
    fn a_minimal_body_omits_what_is_absent_but_never_the_currency() {
        let mut body = payment_body(&request()).unwrap();
        // A number with the currency's two decimals, as written (not "1234.5" via f64).
        assert_eq!(body["amount"].to_string(), "1234.50");
        assert!(body["amount"].is_number());
        body["amount"] = json!("checked");
        assert_eq!(
            body,
            json!({"tx_ref": "t1-42-a", "amount": "checked", "currency": "KES",
                   "customer": {"email": "ada@example.com"}})
        );
    }

    #[test]
    fn a_full_body_nests_customizations_and_configurations() {
        let mut full = request();
        full.redirect_url = Some("https://crm.example.com/done".into());
        full.customer.phone = Some("+254700000001".into());
        full.customer.name = Some("Ada".into());
        full.title = Some("Acme".into());
        full.description = Some("Order 42".into());
        full.meta = json!({"deal_id": 42});
        full.payment_options = vec!["card".into(), " mpesa ".into(), "".into()];
        full.session_duration_minutes = Some(60);
        let body = payment_body(&full).unwrap();
        assert_eq!(
            body["customer"],
            json!({"email": "ada@example.com", "phonenumber": "+254700000001", "name": "Ada"})
        );
        assert_eq!(body["customizations"], json!({"title": "Acme", "description": "Order 42"}));
        assert_eq!(body["payment_options"], "card, mpesa");
        assert_eq!(body["configurations"], json!({"session_duration": 60}));
        assert_eq!(body["meta"], json!({"deal_id": 42}));
        assert_eq!(body["redirect_url"], "https://crm.example.com/done");
    }

    #[test]
    fn requests_flutterwave_would_misread_are_refused_before_sending() {
        type Breakage = fn(&mut PaymentRequest);
        let cases: [(&str, Breakage); 9] = [
            ("no currency", |r| r.currency = String::new()),
            ("lower-case currency", |r| r.currency = "kes".into()),
            ("zero amount", |r| r.amount = Decimal::ZERO),
            ("negative amount", |r| r.amount = Decimal::NEGATIVE_ONE),
            ("blank tx_ref", |r| r.tx_ref = " ".into()),
            ("no email", |r| r.customer.email = String::new()),
            ("a two-day session", |r| r.session_duration_minutes = Some(2880)),
            ("cents of a shilling", |r| r.amount = "1234.505".parse().unwrap()),
            ("cents in a whole-unit currency", |r| r.currency = "UGX".into()),
        ];
        for (what, break_it) in cases {
            let mut broken = request();
            break_it(&mut broken);
            assert!(matches!(payment_body(&broken), Err(FlutterwaveError::Invalid(_))), "{what}");
        }
    }

    #[test]
    fn only_retryable_failures_are_transient() {
        assert!(FlutterwaveError::Timeout.is_transient());
        assert!(FlutterwaveError::Unavailable("503".into()).is_transient());
        assert!(FlutterwaveError::RateLimited { retry_after: Duration::from_secs(1) }.is_transient());
        assert!(!FlutterwaveError::Unauthorized.is_transient());
        assert!(!FlutterwaveError::Rejected { status: 400, message: "x".into() }.is_transient());
        assert!(!FlutterwaveError::Protocol("x".into()).is_transient());
        assert!(!FlutterwaveError::Invalid("x".into()).is_transient());
    }

    #[test]
    fn the_default_timeout_outlasts_flutterwaves_own() {
        assert!(DEFAULT_TIMEOUT > Duration::from_secs(30));
        let base = Url::parse("https://api.flutterwave.com").unwrap();
        let client = Flutterwave::new(base, DEFAULT_TIMEOUT).unwrap();
        assert_eq!(client.timeout(), Duration::from_secs(35));
        assert_eq!(client.url("v3/payments").unwrap().as_str(), "https://api.flutterwave.com/v3/payments");
        let prefixed =
            Flutterwave::new(Url::parse("http://proxy.local/flw").unwrap(), DEFAULT_TIMEOUT).unwrap();
        assert_eq!(prefixed.url("v3/payments").unwrap().as_str(), "http://proxy.local/flw/v3/payments");
        assert!(Flutterwave::new(Url::parse("mailto:x@example.com").unwrap(), DEFAULT_TIMEOUT).is_err());
    }
}
