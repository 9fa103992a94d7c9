//! `POST /hooks/{token}/kommo`: Kommo's form-encoded v2 webhooks. Unsigned, so they are trusted
//! for nothing but "look at this lead": the token must be current, `account[id]` must be the
//! connected account, and the pipeline re-reads the lead from Kommo before acting.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::tenants::{Tenant, Tenants};
use super::{Ingress, count, unavailable};
use crate::clock::now_ms;
use crate::http::Problem;
use crate::kommo::webhook::{self, LeadAction, Webhook};
use crate::pipeline::kinds;
use crate::store::activity::ActivityRow;
use crate::store::events::{self, NewEvent};
use crate::store::{self, StoreError};

pub async fn receive(
    State(ingress): State<Arc<Ingress>>,
    Path(token): Path<String>,
    body: Bytes,
) -> Response {
    let tenant = match ingress.tenants.get(&token).await {
        Ok(Some(tenant)) => tenant,
        // The same answer as any other unknown address.
        Ok(None) => {
            count("kommo", "unknown_token");
            return Problem::not_found().into_response();
        }
        Err(error) => {
            count("kommo", "unavailable");
            return unavailable(&error);
        }
    };
    Tenants::trace(&tenant);
    let hook = match webhook::parse(&body) {
        Ok(hook) => hook,
        Err(error) => {
            count("kommo", "malformed");
            return Problem::new(StatusCode::BAD_REQUEST, "malformed", "Not a Kommo webhook")
                .with_detail(error.to_string())
                .into_response();
        }
    };
    let connected = match account_matches(&ingress, &tenant, &hook).await {
        Ok(connected) => connected,
        Err(error) => {
            count("kommo", "unavailable");
            return unavailable(&error);
        }
    };
    match store_all(&ingress, &tenant, &hook, &body, connected).await {
        Ok(Stored::UnknownToken) => {
            count("kommo", "unknown_token");
            Problem::not_found().into_response()
        }
        Ok(Stored::Events { new, duplicates, jobs }) => {
            count(
                "kommo",
                if !connected {
                    "foreign_account"
                } else if new > 0 {
                    "stored"
                } else {
                    "duplicate"
                },
            );
            if jobs > 0 {
                ingress.queue.wake();
            }
            (StatusCode::OK, Json(json!({ "stored": new, "duplicates": duplicates }))).into_response()
        }
        Err(error) => {
            count("kommo", "unavailable");
            unavailable(&error)
        }
    }
}

/// Whether the webhook's `account[id]` is the client account's connected Kommo account. A
/// mismatch is re-checked against the database once: the cache may predate a new connection.
async fn account_matches(
    ingress: &Ingress,
    tenant: &Tenant,
    hook: &Webhook,
) -> Result<bool, crate::error::Error> {
    let Some(sent) = hook.account_id else { return Ok(false) };
    if tenant.kommo_account == Some(sent) {
        return Ok(true);
    }
    Ok(ingress.tenants.reload(tenant).await?.is_some_and(|t| t.kommo_account == Some(sent)))
}

enum Stored {
    UnknownToken,
    Events { new: usize, duplicates: usize, jobs: usize },
}

async fn store_all(
    ingress: &Ingress,
    tenant: &Tenant,
    hook: &Webhook,
    body: &[u8],
    connected: bool,
) -> Result<Stored, StoreError> {
    let now = now_ms();
    let mut tx = ingress.db.write().await?;
    if !events::token_is_current(&mut tx, tenant.client, &tenant.token_hash).await? {
        return Ok(Stored::UnknownToken);
    }
    if !connected {
        // Recorded, answered 2xx (so Kommo does not disable the hook), and otherwise ignored.
        let detail = match hook.account_id {
            Some(id) => format!("account[id] {id} is not the connected Kommo account"),
            None => "the webhook names no Kommo account".to_owned(),
        };
        let key = format!("kommo:foreign:{}", hex::encode(Sha256::digest(body)));
        let payload = String::from_utf8_lossy(body);
        let event = NewEvent {
            id: uuid::Uuid::now_v7(),
            client: tenant.client,
            source: "kommo",
            dedup_key: &key,
            payload: &payload,
            received_at: now,
            outcome: "ignored",
            detail: Some(&detail),
        };
        let new = events::insert(&mut tx, &event).await?;
        if new {
            record(&mut tx, tenant, "ignored", "ignored", None, &detail, now).await?;
        }
        tx.commit().await?;
        return Ok(Stored::Events { new: usize::from(new), duplicates: usize::from(!new), jobs: 0 });
    }
    let (mut new, mut duplicates, mut jobs) = (0, 0, 0);
    for lead in &hook.leads {
        let key = lead.dedup_key();
        let (acts, detail) = match &lead.action {
            LeadAction::Status | LeadAction::Add => (true, None),
            // An edit matters only in a trigger stage (a price set or changed there); every
            // other edit of every lead would be a job that reads the lead for nothing.
            LeadAction::Other(action) if action == "update" => {
                let in_trigger = tenant.trigger.as_ref().is_some_and(|t| {
                    lead.pipeline_id == Some(t.pipeline_id)
                        && lead.status_id.is_some_and(|stage| t.stage_ids.contains(&stage))
                });
                (in_trigger, (!in_trigger).then_some("a lead edit outside the trigger stages"))
            }
            LeadAction::Other(_) => (false, Some("a lead event pipepay does not act on")),
        };
        let event_id = uuid::Uuid::now_v7();
        let payload = lead.raw.to_string();
        let event = NewEvent {
            id: event_id,
            client: tenant.client,
            source: "kommo",
            dedup_key: &key,
            payload: &payload,
            received_at: now,
            outcome: if acts { "queued" } else { "ignored" },
            detail,
        };
        if !events::insert(&mut tx, &event).await? {
            duplicates += 1;
            if let Some(original) = events::id_by_dedup(&mut tx, tenant.client, &key).await? {
                ingress.queue.caused_again(&mut tx, tenant.client, original).await?;
            }
            continue;
        }
        new += 1;
        let what = match lead.status_id {
            Some(stage) => format!("Kommo: lead {} in stage {stage}", lead.lead_id),
            None => format!("Kommo: lead {} changed", lead.lead_id),
        };
        record(
            &mut tx,
            tenant,
            "received",
            if acts { "ok" } else { "ignored" },
            Some(lead.lead_id),
            &what,
            now,
        )
        .await?;
        if acts {
            let payload = json!({
                "lead_id": lead.lead_id,
                "status_id": lead.status_id,
                "pipeline_id": lead.pipeline_id,
            });
            if ingress
                .queue
                .enqueue(&mut tx, tenant.client, kinds::LEAD, Some(event_id), &payload, None)
                .await?
            {
                jobs += 1;
            }
        }
    }
    tx.commit().await?;
    Ok(Stored::Events { new, duplicates, jobs })
}

pub(super) async fn record(
    tx: &mut store::Tx,
    tenant: &Tenant,
    kind: &str,
    outcome: &str,
    lead: Option<i64>,
    detail: &str,
    now: i64,
) -> Result<(), StoreError> {
    let row = ActivityRow {
        id: uuid::Uuid::now_v7(),
        client_id: tenant.client,
        at: now,
        kind: kind.into(),
        outcome: outcome.into(),
        lead_id: lead,
        tx_ref: None,
        job_id: None,
        detail: detail.into(),
    };
    store::activity::insert(tx, &row).await
}
