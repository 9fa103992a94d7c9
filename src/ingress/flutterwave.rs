//! `POST /hooks/{token}/flutterwave`: authenticated by the client account's webhook hash over
//! the raw body before anything is stored (401 otherwise), normalised from any of the three
//! payload shapes, and queued only for references pipepay issued. Flutterwave wants exactly 200.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::token_cache::{Tenant, TokenCache};
use super::writer::{Stored, Webhook, WriteError};
use super::{Ingress, count, unavailable};
use crate::clock::now_ms;
use crate::flutterwave::webhook::{self, ChargeStatus, Event, EventKind, TransactionId};
use crate::ids::TxRef;
use crate::problem::Problem;
use crate::queue::job::{Job, PaymentJob};

pub async fn receive(
    State(ingress): State<Arc<Ingress>>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let tenant = match ingress.tokens.get(&token).await {
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
    TokenCache::trace(&tenant);
    if !authentic(&tenant, &headers, &body) {
        // The hash may have been replaced on another instance; check once against the database.
        let reloaded = match ingress.tokens.reload(&tenant).await {
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
        Ok(Stored::TokenGone) => {
            count("flutterwave", "unknown_token");
            Problem::not_found().into_response()
        }
        Ok(stored) => {
            // The writer woke the workers once for the batch.
            count("flutterwave", if stored == Stored::Queued { "stored" } else { "recorded" });
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

/// Hands the event (and its job, for a charge on one of our links) to the writer, which
/// stores it with the others waiting and returns once that is committed.
async fn store(ingress: &Ingress, tenant: &Tenant, event: &Event, body: &[u8]) -> Result<Stored, WriteError> {
    let key = event.dedup_key().unwrap_or_else(|| format!("flw:body:{}", hex::encode(Sha256::digest(body))));
    let status = match &event.status {
        ChargeStatus::Successful => "successful".to_owned(),
        ChargeStatus::Failed => "failed".to_owned(),
        ChargeStatus::Pending => "pending".to_owned(),
        ChargeStatus::Other(other) => other.clone(),
    };
    let tx_ref = event.tx_ref.clone().unwrap_or_default();
    let not_ours =
        "the reference is not a payment link pipepay issued (a dashboard link or another integration)";
    let (ignored, link) = match (&event.kind, &event.tx_ref) {
        (EventKind::Other(kind), _) => {
            (Some(format!("Flutterwave event {kind:?} is not one pipepay acts on")), None)
        }
        (EventKind::ChargeCompleted, Some(tx_ref)) => (None, Some((tx_ref.clone(), not_ours.to_owned()))),
        (EventKind::ChargeCompleted, None) => (Some(not_ours.to_owned()), None),
    };
    let transaction_id = match &event.transaction {
        Some(TransactionId::Numeric(id)) => Some(*id),
        _ => None,
    };
    let job =
        Job::Payment(PaymentJob { status: status.clone(), transaction_id, tx_ref: TxRef(tx_ref.clone()) });
    let webhook = Webhook {
        client: tenant.client,
        token_hash: tenant.token_hash.clone(),
        source: "flutterwave",
        dedup_key: key,
        payload: String::from_utf8_lossy(body).into_owned(),
        received_at: now_ms(),
        what: format!("Flutterwave: {tx_ref} {status}"),
        ignored,
        link,
        job: Some(job),
    };
    ingress.writer.store(webhook).await
}
