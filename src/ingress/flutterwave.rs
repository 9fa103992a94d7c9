//! `POST /hooks/{token}/flutterwave`: authenticated by the client account's webhook hash over
//! the raw body before anything is stored (401 otherwise), normalised from any of the three
//! payload shapes, and queued only for references pipepay issued. Flutterwave wants exactly 200.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::kommo::record;
use super::tenants::{Tenant, Tenants};
use super::{Ingress, count, unavailable};
use crate::clock::now_ms;
use crate::flutterwave::webhook::{self, ChargeStatus, Event, EventKind, TransactionId};
use crate::ids::TxRef;
use crate::problem::Problem;
use crate::queue::job::{Job, PaymentJob};
use crate::store::events::{self, NewEvent};
use crate::store::{StoreError, links};

pub async fn receive(
    State(ingress): State<Arc<Ingress>>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let tenant = match ingress.tenants.get(&token).await {
        Ok(Some(tenant)) => tenant,
        Ok(None) => {
            count("flutterwave", "unknown_token");
            return Problem::not_found().into_response();
        }
        Err(error) => {
            count("flutterwave", "unavailable");
            return unavailable(&error);
        }
    };
    Tenants::trace(&tenant);
    if !authentic(&tenant, &headers, &body) {
        // The hash may have been replaced on another instance; check once against the database.
        let reloaded = match ingress.tenants.reload(&tenant).await {
            Ok(reloaded) => reloaded,
            Err(error) => return unavailable(&error),
        };
        if !reloaded.as_deref().is_some_and(|t| authentic(t, &headers, &body)) {
            count("flutterwave", "unauthenticated");
            return Problem::new(StatusCode::UNAUTHORIZED, "unauthenticated", "Not authenticated")
                .with_detail("The verif-hash or flutterwave-signature header does not match this client account's webhook hash.")
                .into_response();
        }
    }
    let event = match webhook::normalise(&body) {
        Ok(event) => event,
        Err(error) => {
            count("flutterwave", "malformed");
            return Problem::new(StatusCode::BAD_REQUEST, "malformed", "Not a Flutterwave webhook")
                .with_detail(error.to_string())
                .into_response();
        }
    };
    match store(&ingress, &tenant, &event, &body).await {
        Ok(None) => {
            count("flutterwave", "unknown_token");
            Problem::not_found().into_response()
        }
        Ok(Some(queued)) => {
            count("flutterwave", if queued { "stored" } else { "recorded" });
            if queued {
                ingress.queue.wake();
            }
            StatusCode::OK.into_response()
        }
        Err(error) => {
            count("flutterwave", "unavailable");
            unavailable(&error)
        }
    }
}

fn authentic(tenant: &Tenant, headers: &HeaderMap, body: &[u8]) -> bool {
    tenant.webhook_hash.as_ref().is_some_and(|hash| webhook::verify(headers, body, hash).is_ok())
}

/// Stores the event (and its job, for a charge on one of our links). `None` if the token was
/// rotated or deleted meanwhile; otherwise whether a job was queued.
async fn store(
    ingress: &Ingress,
    tenant: &Tenant,
    event: &Event,
    body: &[u8],
) -> Result<Option<bool>, StoreError> {
    let now = now_ms();
    let mut tx = ingress.db.write().await?;
    if !events::token_is_current(&mut tx, tenant.client, &tenant.token_hash).await? {
        return Ok(None);
    }
    let key = event.dedup_key().unwrap_or_else(|| format!("flw:body:{}", hex::encode(Sha256::digest(body))));
    let ours = match (&event.kind, &event.tx_ref) {
        (EventKind::ChargeCompleted, Some(tx_ref)) => {
            links::by_tx_ref(&mut tx, tenant.client, tx_ref).await?.is_some()
        }
        _ => false,
    };
    let ignored = match (&event.kind, ours) {
        (EventKind::Other(kind), _) => Some(format!("Flutterwave event {kind:?} is not one pipepay acts on")),
        (EventKind::ChargeCompleted, false) => Some(
            "the reference is not a payment link pipepay issued (a dashboard link or another integration)"
                .to_owned(),
        ),
        (EventKind::ChargeCompleted, true) => None,
    };
    let event_id = uuid::Uuid::now_v7();
    let payload = String::from_utf8_lossy(body);
    let stored = NewEvent {
        id: event_id,
        client: tenant.client,
        source: "flutterwave",
        dedup_key: &key,
        payload: &payload,
        received_at: now,
        outcome: if ignored.is_some() { "ignored" } else { "queued" },
        detail: ignored.as_deref(),
    };
    if !events::insert(&mut tx, &stored).await? {
        if let Some(original) = events::id_by_dedup(&mut tx, tenant.client, &key).await? {
            ingress.queue.caused_again(&mut tx, tenant.client, original).await?;
        }
        tx.commit().await?;
        return Ok(Some(false));
    }
    let status = match &event.status {
        ChargeStatus::Successful => "successful".to_owned(),
        ChargeStatus::Failed => "failed".to_owned(),
        ChargeStatus::Pending => "pending".to_owned(),
        ChargeStatus::Other(other) => other.clone(),
    };
    let tx_ref = event.tx_ref.clone().unwrap_or_default();
    let what = format!("Flutterwave: {tx_ref} {status}");
    match ignored {
        Some(why) => {
            record(&mut tx, tenant, "ignored", "ignored", None, &format!("{what}: {why}"), now).await?
        }
        None => record(&mut tx, tenant, "received", "ok", None, &what, now).await?,
    }
    let mut queued = false;
    if ours {
        let transaction_id = match &event.transaction {
            Some(TransactionId::Numeric(id)) => Some(*id),
            _ => None,
        };
        let job = Job::Payment(PaymentJob { status, transaction_id, tx_ref: TxRef(tx_ref) });
        queued = ingress.queue.enqueue(&mut tx, tenant.client, &job, Some(event_id), None).await?;
    }
    tx.commit().await?;
    Ok(Some(queued))
}
