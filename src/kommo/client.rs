//! The Kommo API client: every call rate-limited, timed out, refreshed once on a 401, and its
//! failures mapped to what they mean for the connection.

use std::time::Duration;

use reqwest::Method;
use reqwest::header::RETRY_AFTER;
use serde_json::{Value, json};

use super::model::{self, Account, Contact, CustomField, Lead, Pipeline};
use super::tokens::{Session, Token};
use super::{Kommo, KommoError, health};
use crate::clock::now_ms;
use crate::ids::{ClientId, LeadId};
use crate::store;
use crate::telemetry::calls;
use crate::telemetry::metrics::{kv, metrics};
use crate::vault::Secret;
use tracing::Instrument;

/// The events pipepay subscribes to. Edits (`update_lead`) matter for leads in a trigger
/// stage: a price set or changed there needs a link for the new amount, and Kommo sometimes
/// sends only the edit hook for a stage change.
pub const EVENTS: [&str; 3] = ["status_lead", "add_lead", "update_lead"];

impl Kommo {
    /// One API call for the client's account; `None` for Kommo's 204 (not found, or empty).
    pub async fn call(
        &self,
        client: ClientId,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Option<Value>, KommoError> {
        self.call_in(&Session::new(client), method, path, body).await
    }

    /// [`Kommo::call`] with the session's token: the connection is read at most once per session.
    pub async fn call_in(
        &self,
        session: &Session,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Option<Value>, KommoError> {
        let token = self.session_token(session).await?;
        let first = self.send(&token, method.clone(), path, body).await;
        let (token, outcome) = match first {
            Err(KommoError::Unauthorized) => {
                // Once: a token can expire or be revoked between our check and Kommo's.
                let token = self.session_refresh(session, token.version).await?;
                let again = self.send(&token, method, path, body).await;
                (token, again)
            }
            other => (token, other),
        };
        if let Some(health) = self.note_health(&token, &outcome).await {
            self.session_health(session, token.version, health).await;
        }
        match outcome {
            Err(KommoError::Unauthorized) => Err(KommoError::NeedsReauth(
                "Kommo refuses pipepay's fresh token; connect Kommo again".into(),
            )),
            other => other,
        }
    }

    /// Keeps the connection's health in step with what Kommo answers; the health recorded, if
    /// it changed.
    async fn note_health(
        &self,
        token: &Token,
        outcome: &Result<Option<Value>, KommoError>,
    ) -> Option<&'static str> {
        let (health, reason) = health_after(&token.health, outcome)?;
        let (client, version) = (token.client, token.version);
        match self.record_health(client, version, health, reason).await {
            Ok(()) => Some(health),
            Err(error) => {
                tracing::warn!(%client, %error, "could not record the Kommo connection's health");
                None
            }
        }
    }

    async fn record_health(
        &self,
        client: ClientId,
        version: i64,
        health: &str,
        reason: Option<String>,
    ) -> Result<(), crate::store::StoreError> {
        let mut tx = self.db.write().await?;
        store::kommo::set_health(&mut tx, client, health, reason.as_deref(), Some(version), now_ms()).await?;
        tx.commit().await
    }

    async fn send(
        &self,
        token: &Token,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Option<Value>, KommoError> {
        // Held until the answer is in: the account's window counts from it.
        let _slot = self.limits.acquire(token.account_id).await?;
        let url = format!("{}{path}", self.settings.api_base(&token.host));
        self.http_call(Some(token.account_id), &token.access, method, &url, body).await
    }

    /// The HTTP exchange itself, with Kommo's status codes mapped.
    async fn http_call(
        &self,
        account_id: Option<i64>,
        access: &Secret,
        method: Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Option<Value>, KommoError> {
        let (host, template) = describe(url);
        let span = tracing::info_span!(
            "kommo.call",
            otel.name = %format!("{method} {template}"),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            http.request.method = %method,
            server.address = %host,
            url.template = %template,
            peer.service = "kommo",
            pipepay.kommo.account_id = account_id,
            http.response.status_code = tracing::field::Empty,
        );
        let started = std::time::Instant::now();
        let mut headers = reqwest::header::HeaderMap::new();
        let _entered = span.enter();
        crate::telemetry::context::inject(&mut headers);
        drop(_entered);
        let method_name = method.to_string();
        let mut request = self.http.request(method, url).bearer_auth(access.expose()).headers(headers);
        if let Some(body) = body {
            request = request.json(body);
        }
        let sent = request.send().instrument(span.clone()).await;
        let status_label = match &sent {
            Ok(response) => response.status().as_u16().to_string(),
            Err(e) if e.is_timeout() => "timeout".to_owned(),
            Err(_) => "error".to_owned(),
        };
        metrics().upstream_duration.record(
            started.elapsed().as_secs_f64(),
            &[kv("vendor", "kommo"), kv("operation", template.clone()), kv("status", status_label)],
        );
        // The job attempt's call log (if one is open) hears of every exchange, answered or not.
        let keep = |status: Result<u16, &str>, body: &[u8]| {
            calls::record(calls::Exchange {
                vendor: "kommo",
                method: &method_name,
                url,
                started,
                status,
                body,
                secrets: &[access.expose()],
            });
        };
        let response = sent.map_err(|e| {
            span.record("otel.status_code", "ERROR");
            keep(Err(if e.is_timeout() { "timed out" } else { "no answer" }), b"");
            KommoError::from_transport(e)
        })?;
        let status = response.status().as_u16();
        span.record("http.response.status_code", status);
        if status >= 400 {
            span.record("otel.status_code", "ERROR");
        }
        let header_retry = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let bytes = response.bytes().await.map_err(|e| {
            keep(Err("the answer broke off"), b"");
            KommoError::from_transport(e)
        })?;
        keep(Ok(status), &bytes);
        let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
        let detail = || {
            parsed
                .as_ref()
                .and_then(|p| p["detail"].as_str().or_else(|| p["title"].as_str()).map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(200).collect())
        };
        match status {
            204 => Ok(None),
            200..=299 if bytes.is_empty() => Ok(None),
            200..=299 => {
                parsed.map(Some).ok_or_else(|| KommoError::Protocol("a success answer was not JSON".into()))
            }
            401 => Err(KommoError::Unauthorized),
            402 => Err(KommoError::PaymentRequired),
            403 => Err(KommoError::Blocked(detail())),
            429 => {
                let body_retry = parsed.as_ref().and_then(|p| p["retry_after"].as_u64());
                let retry_after =
                    Duration::from_secs(body_retry.or(header_retry).unwrap_or(1).clamp(1, 3600));
                if let Some(account) = account_id {
                    self.limits.back_off(account, retry_after).await?;
                }
                Err(KommoError::RateLimited { retry_after })
            }
            500..=599 => Err(KommoError::Unavailable(format!("{status}: {}", detail()))),
            _ => Err(KommoError::Rejected { status, detail: detail() }),
        }
    }

    /// The account behind a fresh access token (before any connection exists).
    pub async fn account_of(&self, host: &str, access: &Secret) -> Result<Account, KommoError> {
        let url = format!("{}/api/v4/account", self.settings.api_base(host));
        let body = self
            .http_call(None, access, Method::GET, &url, None)
            .await?
            .ok_or_else(|| KommoError::Protocol("the account answer was empty".into()))?;
        serde_json::from_value(body)
            .map_err(|e| KommoError::Protocol(format!("the account did not parse: {e}")))
    }

    /// The lead with its contacts, or `None` if Kommo does not know it.
    pub async fn lead(&self, session: &Session, lead_id: LeadId) -> Result<Option<Lead>, KommoError> {
        let body = self
            .call_in(session, Method::GET, &format!("/api/v4/leads/{lead_id}?with=contacts"), None)
            .await?;
        body.map(|b| Lead::from_json(&b).ok_or_else(|| KommoError::Protocol("the lead did not parse".into())))
            .transpose()
    }

    pub async fn contact(&self, session: &Session, contact_id: i64) -> Result<Option<Contact>, KommoError> {
        let body =
            self.call_in(session, Method::GET, &format!("/api/v4/contacts/{contact_id}"), None).await?;
        body.map(|b| {
            Contact::from_json(&b).ok_or_else(|| KommoError::Protocol("the contact did not parse".into()))
        })
        .transpose()
    }

    /// Moves a lead. Always with the pipeline: stages 142 and 143 exist in every pipeline.
    pub async fn move_lead(
        &self,
        session: &Session,
        lead_id: LeadId,
        pipeline_id: i64,
        status_id: i64,
    ) -> Result<(), KommoError> {
        let body = json!({ "status_id": status_id, "pipeline_id": pipeline_id });
        match self.call_in(session, Method::PATCH, &format!("/api/v4/leads/{lead_id}"), Some(&body)).await? {
            Some(_) => Ok(()),
            None => {
                Err(KommoError::Rejected { status: 204, detail: format!("lead {lead_id} does not exist") })
            }
        }
    }

    pub async fn add_note(&self, session: &Session, lead_id: LeadId, text: &str) -> Result<(), KommoError> {
        let body = json!([{ "entity_id": lead_id, "note_type": "common", "params": { "text": text } }]);
        self.call_in(session, Method::POST, "/api/v4/leads/notes", Some(&body)).await?;
        Ok(())
    }

    /// Whether the lead has a common note with exactly this text made at or after `since`
    /// (unix seconds), among its latest 50: asked before sending again a note whose earlier
    /// sending may have landed. (The `filter[note_type]`/`order[id]` parameters are as the Kommo
    /// docs' notes list gives them; a Kommo that ignored them would only widen the search.)
    pub async fn lead_has_note(
        &self,
        session: &Session,
        lead_id: LeadId,
        text: &str,
        since: i64,
    ) -> Result<bool, KommoError> {
        let path = format!("/api/v4/leads/{lead_id}/notes?filter[note_type]=common&order[id]=desc&limit=50");
        let body = self.call_in(session, Method::GET, &path, None).await?;
        let notes = body.as_ref().and_then(|b| b.pointer("/_embedded/notes")).and_then(Value::as_array);
        Ok(notes.is_some_and(|notes| {
            notes.iter().any(|n| {
                n.pointer("/params/text").and_then(Value::as_str) == Some(text)
                    && n["created_at"].as_i64().is_none_or(|at| at >= since)
            })
        }))
    }

    pub async fn set_lead_field(
        &self,
        session: &Session,
        lead_id: LeadId,
        field_id: i64,
        value: &str,
    ) -> Result<(), KommoError> {
        let body =
            json!({ "custom_fields_values": [{ "field_id": field_id, "values": [{ "value": value }] }] });
        self.call_in(session, Method::PATCH, &format!("/api/v4/leads/{lead_id}"), Some(&body)).await?;
        Ok(())
    }

    pub async fn pipelines(&self, client: ClientId) -> Result<Vec<Pipeline>, KommoError> {
        let body = self.call(client, Method::GET, "/api/v4/leads/pipelines", None).await?;
        Ok(body.map(|b| model::pipelines_from_json(&b)).unwrap_or_default())
    }

    pub async fn lead_fields(&self, client: ClientId) -> Result<Vec<CustomField>, KommoError> {
        let body = self.call(client, Method::GET, "/api/v4/leads/custom_fields", None).await?;
        Ok(body.map(|b| model::custom_fields_from_json(&b)).unwrap_or_default())
    }

    pub async fn subscribe(&self, client: ClientId, destination: &str) -> Result<(), KommoError> {
        let body = json!({ "destination": destination, "settings": EVENTS, "sort": 10 });
        self.call(client, Method::POST, "/api/v4/webhooks", Some(&body)).await?;
        Ok(())
    }

    pub async fn unsubscribe(&self, client: ClientId, destination: &str) -> Result<(), KommoError> {
        let body = json!({ "destination": destination });
        self.call(client, Method::DELETE, "/api/v4/webhooks", Some(&body)).await?;
        Ok(())
    }
}

/// The host, and the path with ids replaced (`/api/v4/leads/{id}`): low-cardinality names for
/// spans and metrics that carry no lead ids or query strings.
fn describe(url: &str) -> (String, String) {
    let Ok(parsed) = url::Url::parse(url) else { return (String::new(), String::new()) };
    let template = parsed
        .path()
        .split('/')
        .map(|segment| {
            if !segment.is_empty() && segment.chars().all(|c| c.is_ascii_digit()) { "{id}" } else { segment }
        })
        .collect::<Vec<_>>()
        .join("/");
    // Behind the test fake the account host is the first path segment; keep only the API part.
    let template = template.find("/api/").map_or(template.clone(), |at| template[at..].to_owned());
    (parsed.host_str().unwrap_or_default().to_owned(), template)
}

/// The health a connection moves to after an answer, if it changes.
fn health_after(
    current: &str,
    outcome: &Result<Option<Value>, KommoError>,
) -> Option<(&'static str, Option<String>)> {
    match outcome {
        Ok(_) if current == health::ACTIVE => None,
        Ok(_) => Some((health::ACTIVE, None)),
        Err(KommoError::PaymentRequired) => {
            Some((health::PAYMENT_REQUIRED, Some("the Kommo account's subscription has ended".into())))
        }
        Err(KommoError::Blocked(detail)) => {
            Some((health::BLOCKED, Some(format!("Kommo answers 403: {detail}"))))
        }
        Err(KommoError::Unauthorized) => {
            Some((health::NEEDS_REAUTH, Some("Kommo refuses pipepay's tokens; connect Kommo again".into())))
        }
        Err(_) => None,
    }
}
