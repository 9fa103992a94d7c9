//! `POST /hooks/kommo/dp`: Kommo's Digital Pipeline action "Send a Flutterwave payment link".
//! Kommo calls the widget manifest's one `webhook_url` for every account, so the client account
//! is not in the address: it is the pipepay key the user put into the action's settings (the
//! client account's ingress token), and `account_id` must be that client account's connected
//! Kommo account. Kommo signs nothing here (kommo-widget.md §5), so a call is trusted for no
//! more than "make a link for this lead": the job reads the lead from Kommo before acting.
//!
//! The body is JSON in Kommo's documentation and form-encoded bracket keys in what one
//! implementation observed; both are read into the same tree. The event is stored without the
//! key, with its job, in one transaction, like the other Kommo webhooks.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use url::form_urlencoded;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use tower_governor::governor::SharedRateLimiter;

use super::token_cache::{Tenant, TokenCache, well_formed};
use super::{Ingress, count, unavailable};
use crate::clock::now_ms;
use crate::pipeline::request::{self, DpSettings, LeadRequest};
use crate::problem::Problem;
use crate::store::activity::{ActivityKind, ActivityOutcome};
use crate::store::events::{self, NewEvent};
use crate::store::{StoreError, jobs};

const SOURCE: &str = "kommo_dp";

/// The setting codes in the manifest's `dp.settings` (frontend/kommo-widget/manifest.json).
pub const SETTING_KEY: &str = "pipepay_key";
pub const SETTING_AMOUNT: &str = "amount";
pub const SETTING_CURRENCY: &str = "currency";
pub const SETTING_NOTE: &str = "note";

/// Kommo's event codes: 14 = the lead entered the stage, 15 = it appeared in a stage of a
/// multi-stage action (`action_multiple`).
const EVENT_TYPES: [i64; 2] = [14, 15];
/// Kommo's element type for leads.
const ELEMENT_LEAD: i64 = 2;

/// One Digital Pipeline call, as far as pipepay reads it.
#[derive(Debug, PartialEq)]
pub struct DpCall {
    pub account_id: Option<i64>,
    pub lead_id: i64,
    pub pipeline_id: Option<i64>,
    pub status_id: Option<i64>,
    pub time: Option<i64>,
    pub key: Option<String>,
    pub settings: Result<DpSettings, String>,
    /// The body as a tree, without the key: what is stored.
    pub stored: Value,
}

/// The route's state: the ingress, and the webhook routes' per-token rate limiter (`None` when
/// the operator turned rate limiting off).
#[derive(Clone)]
pub struct DpState {
    pub ingress: Arc<Ingress>,
    pub limiter: Option<SharedRateLimiter<String, NoOpMiddleware>>,
}

pub async fn receive(State(state): State<DpState>, headers: HeaderMap, body: Bytes) -> Response {
    let DpState { ingress, limiter } = state;
    let call = match parse(&headers, &body) {
        Ok(call) => call,
        Err(error) => {
            count(SOURCE, "malformed");
            return Problem::new(StatusCode::BAD_REQUEST, "malformed", "Not a Digital Pipeline call")
                .with_detail(error)
                .into_response();
        }
    };
    // One answer for a missing, ill-formed, unknown or rotated key: nothing tells them apart.
    let refused = || {
        count(SOURCE, "unknown_key");
        Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unknown pipepay key")
            .with_detail(format!(
                "put the client account's pipepay key (shown on its page in pipepay) into the \
                 action's `{SETTING_KEY}` setting"
            ))
            .into_response()
    };
    let Some(key) = call.key.as_deref().filter(|key| well_formed(key)) else { return refused() };
    if ingress.tokens.surely_unknown(key) {
        return refused();
    }
    let tenant = match ingress.tokens.get(key).await {
        Ok(Some(tenant)) => tenant,
        Ok(None) => return refused(),
        Err(error) => {
            count(SOURCE, "unavailable");
            return unavailable(&error);
        }
    };
    TokenCache::trace(&tenant);
    // Only a key that belongs to someone becomes a limiter key, as on the webhook routes.
    if let Some(limiter) = &limiter
        && let Err(not_until) = limiter.check_key(&key.to_owned())
    {
        count(SOURCE, "rate_limited");
        let wait_time = not_until.wait_time_from(limiter.clock().now()).as_secs().max(1);
        return super::too_many(tower_governor::GovernorError::TooManyRequests { wait_time, headers: None });
    }
    let tenant = match account_matches(&ingress, tenant, call.account_id).await {
        Ok(Ok(tenant)) => tenant,
        Ok(Err(tenant)) => return foreign(&ingress, &tenant, &call).await,
        Err(error) => {
            count(SOURCE, "unavailable");
            return unavailable(&error);
        }
    };
    match store(&ingress, &tenant, &call).await {
        Ok(Stored::UnknownToken) => refused(),
        Ok(Stored::Backlog) => {
            count(SOURCE, "backlog");
            Problem::new(StatusCode::TOO_MANY_REQUESTS, "backlog", "Too many jobs waiting")
                .with_detail("This client account has too many jobs waiting; Kommo will call again.")
                .with_retry_after(60)
                .into_response()
        }
        Ok(Stored::Answer(answer)) => {
            count(SOURCE, answer.outcome());
            if answer.stored > 0 {
                ingress.queue.wake();
            }
            (StatusCode::OK, Json(answer)).into_response()
        }
        Err(error) => {
            count(SOURCE, "unavailable");
            unavailable(&error)
        }
    }
}

/// `Ok(tenant)` when `account_id` is the connected account (re-read once from the database on
/// a mismatch, as the cache may predate a new connection), else `Err(tenant)`.
async fn account_matches(
    ingress: &Ingress,
    tenant: Arc<Tenant>,
    account_id: Option<i64>,
) -> Result<Result<Arc<Tenant>, Arc<Tenant>>, crate::error::Error> {
    let Some(sent) = account_id else { return Ok(Err(tenant)) };
    if tenant.kommo_account == Some(sent) {
        return Ok(Ok(tenant));
    }
    match ingress.tokens.reload(&tenant).await? {
        Some(fresh) if fresh.kommo_account == Some(sent) => Ok(Ok(fresh)),
        _ => Ok(Err(tenant)),
    }
}

/// A right key from the wrong (or no) Kommo account: refused, and said on the timeline, since
/// it most likely means the key was copied into another account's pipeline.
async fn foreign(ingress: &Ingress, tenant: &Tenant, call: &DpCall) -> Response {
    count(SOURCE, "foreign_account");
    let detail = match call.account_id {
        Some(id) => format!(
            "Kommo Digital Pipeline call from account {id}, which is not the connected Kommo \
             account: refused (lead {})",
            call.lead_id
        ),
        None => format!("Kommo Digital Pipeline call naming no account: refused (lead {})", call.lead_id),
    };
    super::kommo::record_refusal(ingress, tenant, Some(call.lead_id), &detail, "Digital Pipeline call").await;
    Problem::new(StatusCode::FORBIDDEN, "foreign-account", "Not the connected Kommo account")
        .with_detail(detail)
        .into_response()
}

enum Stored {
    UnknownToken,
    Backlog,
    Answer(Answer),
}

/// What became of the call (Kommo only looks at the status).
#[derive(Debug, Default, Serialize)]
struct Answer {
    stored: usize,
    duplicates: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    ignored: Option<String>,
}

impl Answer {
    fn outcome(&self) -> &'static str {
        if self.stored > 0 {
            "stored"
        } else if self.duplicates > 0 {
            "duplicate"
        } else {
            "ignored"
        }
    }
}

async fn store(ingress: &Ingress, tenant: &Tenant, call: &DpCall) -> Result<Stored, StoreError> {
    let now = now_ms();
    let mut tx = ingress.db.write().await?;
    if !events::token_is_current(&mut tx, tenant.client, &tenant.token_hash).await? {
        return Ok(Stored::UnknownToken);
    }
    let payload = call.stored.to_string();
    let key = dedup_key(call, &payload);
    let (outcome, detail) = match &call.settings {
        Ok(_) => ("queued", None),
        Err(problem) => ("ignored", Some(format!("the action's settings: {problem}"))),
    };
    if outcome == "queued"
        && jobs::ready_at_least(&mut tx, tenant.client, ingress.caps.max_ready_jobs).await?
    {
        return Ok(Stored::Backlog);
    }
    let event_id = uuid::Uuid::now_v7();
    let event = NewEvent {
        id: event_id,
        client: tenant.client,
        source: "kommo",
        dedup_key: &key,
        payload: &payload,
        received_at: now,
        outcome,
        detail: detail.as_deref(),
    };
    let mut answer = Answer::default();
    if !events::insert(&mut tx, &event).await? {
        answer.duplicates = 1;
        if let Some(original) = events::id_by_dedup(&mut tx, tenant.client, &key).await? {
            ingress.queue.caused_again(&mut tx, tenant.client, original).await?;
        }
        tx.commit().await?;
        return Ok(Stored::Answer(answer));
    }
    let lead = call.lead_id;
    match (&call.settings, detail) {
        (Ok(settings), _) => {
            let what = format!("Kommo Digital Pipeline: send a payment link for lead {lead}");
            super::kommo::record(
                &mut tx,
                tenant,
                ActivityKind::Received,
                ActivityOutcome::Ok,
                Some(lead),
                &what,
                now,
            )
            .await?;
            let stage = call.pipeline_id.zip(call.status_id);
            let asked = LeadRequest::DigitalPipeline(settings.clone());
            request::enqueue(
                &ingress.queue,
                &mut tx,
                tenant.client,
                Some(event_id),
                lead,
                stage,
                &asked,
                None,
            )
            .await?;
            answer.stored = 1;
        }
        (Err(_), detail) => {
            let detail = detail.unwrap_or_default();
            let what = format!("Kommo Digital Pipeline: lead {lead}: {detail}");
            super::kommo::record(
                &mut tx,
                tenant,
                ActivityKind::Received,
                ActivityOutcome::Ignored,
                Some(lead),
                &what,
                now,
            )
            .await?;
            answer.ignored = Some(detail);
        }
    }
    tx.commit().await?;
    Ok(Stored::Answer(answer))
}

/// Kommo calls once per lead entering the stage; a repeat of the same call (same lead, stage
/// and time) is one event. Without a time, the body itself is the key.
fn dedup_key(call: &DpCall, payload: &str) -> String {
    let show = |v: Option<i64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
    match call.time {
        Some(time) => {
            format!("kommo:dp:{}:{}:{}:{time}", call.lead_id, show(call.pipeline_id), show(call.status_id))
        }
        None => format!("kommo:dp:{}:{}", call.lead_id, &hex::encode(Sha256::digest(payload))[..32]),
    }
}

/// Reads a call in either body format.
pub fn parse(headers: &HeaderMap, body: &[u8]) -> Result<DpCall, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the body is not UTF-8 text".to_owned())?;
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("json"))
        || text.trim_start().starts_with('{');
    let tree = if json {
        serde_json::from_str::<Value>(text).map_err(|e| format!("the JSON body does not parse: {e}"))?
    } else {
        form_tree(body)
    };
    read(tree)
}

fn read(mut tree: Value) -> Result<DpCall, String> {
    let account_id = int(tree.pointer("/account_id")).or_else(|| int(tree.pointer("/account/id")));
    let data = tree.pointer("/event/data").cloned().unwrap_or(Value::Null);
    if let Some(kind) = int(tree.pointer("/event/type"))
        && !EVENT_TYPES.contains(&kind)
    {
        return Err(format!("event type {kind} is not a lead entering the stage (14 or 15)"));
    }
    if let Some(element) = int(data.get("element_type"))
        && element != ELEMENT_LEAD
    {
        return Err(format!("element type {element} is not a lead (2)"));
    }
    let lead_id = int(data.get("id"))
        .filter(|id| *id > 0)
        .ok_or_else(|| "event[data][id] (the lead) is missing or not a number".to_owned())?;
    let settings_at = "/action/settings/widget/settings";
    let setting =
        |name: &str| tree.pointer(&format!("{settings_at}/{name}")).and_then(text).map(str::to_owned);
    let key = setting(SETTING_KEY);
    let settings = DpSettings::parse(
        setting(SETTING_AMOUNT).as_deref(),
        setting(SETTING_CURRENCY).as_deref(),
        setting(SETTING_NOTE).as_deref(),
    );
    if let Some(Value::Object(settings)) = tree.pointer_mut(settings_at) {
        settings.remove(SETTING_KEY);
    }
    Ok(DpCall {
        account_id,
        lead_id,
        pipeline_id: int(data.get("pipeline_id")),
        status_id: int(data.get("status_id")),
        time: int(tree.pointer("/event/time")),
        key,
        settings,
        stored: tree,
    })
}

fn text(value: &Value) -> Option<&str> {
    value.as_str()
}

/// An integer sent as a number or as a string (form bodies have only strings).
fn int(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// PHP-style bracket keys (`event[data][id]=1`) as a JSON tree of strings; list indices stay
/// object keys, which is all the reader needs. A later key wins over an earlier one.
fn form_tree(body: &[u8]) -> Value {
    let mut root = Map::new();
    for (key, value) in form_urlencoded::parse(body) {
        let mut path: Vec<&str> = Vec::new();
        let (head, mut rest) = key.split_once('[').map_or((key.as_ref(), ""), |(h, r)| (h, r));
        path.push(head);
        while let Some((part, after)) = rest.split_once(']') {
            path.push(part);
            rest = after.strip_prefix('[').unwrap_or("");
        }
        if path.len() > 8 {
            continue;
        }
        insert(&mut root, &path, value.into_owned());
    }
    Value::Object(root)
}

fn insert(node: &mut Map<String, Value>, path: &[&str], value: String) {
    match path {
        [] => {}
        [last] => {
            node.insert((*last).to_owned(), Value::String(value));
        }
        [first, rest @ ..] => {
            let child = node.entry((*first).to_owned()).or_insert_with(|| Value::Object(Map::new()));
            if !child.is_object() {
                *child = Value::Object(Map::new());
            }
            if let Value::Object(child) = child {
                insert(child, rest, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "pph_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG";

    #[test]
    fn json_and_form_bodies_read_the_same() {
        let json = serde_json::json!({
            "event": {"type": 14, "type_code": "lead_status_changed",
                      "data": {"id": "30307415", "element_type": 2, "status_id": 7003, "pipeline_id": 7001},
                      "time": 1_689_281_821},
            "action": {"settings": {"widget": {"settings": {
                "pipepay_key": KEY, "amount": "price", "currency": "KES", "note": "Pay {link}"}}}},
            "subdomain": "acme", "account_id": "29638927"
        });
        let form = format!(
            "event[type]=14&event[data][id]=30307415&event[data][element_type]=2&\
             event[data][status_id]=7003&event[data][pipeline_id]=7001&event[time]=1689281821&\
             action[settings][widget][settings][pipepay_key]={KEY}&\
             action[settings][widget][settings][amount]=price&\
             action[settings][widget][settings][currency]=KES&\
             action[settings][widget][settings][note]=Pay+%7Blink%7D&subdomain=acme&account_id=29638927"
        );
        let mut headers = HeaderMap::new();
        let a = parse(&headers, json.to_string().as_bytes()).unwrap();
        headers.insert(header::CONTENT_TYPE, "application/x-www-form-urlencoded".parse().unwrap());
        let b = parse(&headers, form.as_bytes()).unwrap();
        for call in [&a, &b] {
            assert_eq!(call.account_id, Some(29_638_927));
            assert_eq!(call.lead_id, 30_307_415);
            assert_eq!(
                (call.pipeline_id, call.status_id, call.time),
                (Some(7001), Some(7003), Some(1_689_281_821))
            );
            assert_eq!(call.key.as_deref(), Some(KEY));
            let settings = call.settings.as_ref().unwrap();
            assert_eq!(settings.currency.as_deref(), Some("KES"));
            assert_eq!(settings.note.as_deref(), Some("Pay {link}"));
            assert!(!call.stored.to_string().contains(KEY), "the key is never stored");
        }
    }

    #[test]
    fn what_is_no_lead_entering_a_stage_is_refused() {
        let headers = HeaderMap::new();
        assert!(parse(&headers, b"account_id=1").is_err());
        assert!(parse(&headers, b"event[type]=3&event[data][id]=5").is_err());
        assert!(parse(&headers, b"event[data][id]=5&event[data][element_type]=1").is_err());
        assert!(parse(&headers, b"{not json").is_err());
        assert!(parse(&headers, b"event[data][id]=5").is_ok());
    }
}
