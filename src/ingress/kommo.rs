//! `POST /hooks/{token}/kommo`: Kommo's form-encoded v2 webhooks. Unsigned, so they are trusted
//! for nothing but "look at this lead": the token must be current, `account[id]` must be the
//! connected account, and the pipeline re-reads the lead from Kommo before acting.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::token_cache::{Tenant, TokenCache};
use super::{Ingress, count, unavailable};
use crate::clock::now_ms;
use crate::ids::LeadId;
use crate::kommo::webhook::{self, LeadAction, LeadEvent, Webhook};
use crate::problem::Problem;
use crate::queue::job::{Job, LeadJob};
use crate::store::activity::{ActivityKind, ActivityOutcome, ActivityRow};
use crate::store::events::{self, NewEvent};
use crate::store::{self, StoreError};
use crate::tenants::settings::{KOMMO_LOST, Trigger};

pub async fn receive(
    State(ingress): State<Arc<Ingress>>,
    Path(token): Path<String>,
    body: Bytes,
) -> Response {
    let tenant = match ingress.tokens.get(&token).await {
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
    TokenCache::trace(&tenant);
    let hook = match webhook::parse(&body) {
        Ok(hook) => hook,
        Err(error) => {
            count("kommo", "malformed");
            return Problem::new(StatusCode::BAD_REQUEST, "malformed", "Not a Kommo webhook")
                .with_detail(error.to_string())
                .into_response();
        }
    };
    if hook.leads.len() > ingress.caps.max_leads {
        return too_many_leads(&ingress, &tenant, hook.leads.len()).await;
    }
    let tenant = match fresh_enough(&ingress, tenant, &hook).await {
        Ok(tenant) => tenant,
        Err(error) => {
            count("kommo", "unavailable");
            return unavailable(&error);
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
        Ok(Stored::Backlog) => {
            count("kommo", "backlog");
            Problem::new(StatusCode::TOO_MANY_REQUESTS, "backlog", "Too many jobs waiting")
                .with_detail(format!(
                    "This client account has {} or more jobs waiting; send the webhook again later.",
                    ingress.caps.max_ready_jobs
                ))
                .with_retry_after(BACKLOG_RETRY_AFTER)
                .into_response()
        }
        Ok(Stored::Answer(answer)) => {
            count(
                "kommo",
                if !connected {
                    "foreign_account"
                } else if answer.stored > 0 {
                    "stored"
                } else if answer.duplicates > 0 {
                    "duplicate"
                } else {
                    "ignored"
                },
            );
            if answer.jobs > 0 {
                ingress.backlog.queued(tenant.client);
                ingress.queue.wake();
            }
            (StatusCode::OK, Json(answer)).into_response()
        }
        Err(error) => {
            count("kommo", "unavailable");
            unavailable(&error)
        }
    }
}

/// Lead events stored per transaction: a large webhook holds the write lock (SQLite's is the
/// whole database) for a few milliseconds at a time, not for all of its leads at once. A
/// failure part-way is a 503; Kommo sends the body again and the stored part collapses into
/// duplicates.
const LEADS_PER_TRANSACTION: usize = 100;

/// Seconds a client account over its backlog is asked to wait. Kommo retries on its own
/// schedule (minutes) whatever this says; other senders may honour it.
const BACKLOG_RETRY_AFTER: u64 = 60;

/// A body naming more leads than `PIPEPAY_INGRESS_MAX_LEADS`: refused whole with 413 (nothing
/// stored, so nothing half-done), and said on the timeline, so the refusal is not silent.
/// Kommo retries it (and gives up after its retries); pipepay never cuts a body short.
async fn too_many_leads(ingress: &Ingress, tenant: &Tenant, leads: usize) -> Response {
    count("kommo", "too_many_leads");
    let detail = format!(
        "a Kommo webhook with {leads} lead events was refused: at most {} are accepted in one \
         (PIPEPAY_INGRESS_MAX_LEADS)",
        ingress.caps.max_leads
    );
    tracing::warn!(leads, max = ingress.caps.max_leads, "Kommo webhook over the lead cap refused");
    record_refusal(ingress, tenant, None, &detail, "Kommo webhook").await;
    Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "too-many-leads", "Too many leads in one webhook")
        .with_detail(detail)
        .into_response()
}

enum Stored {
    /// The token was rotated or deleted meanwhile.
    UnknownToken,
    /// The client account has too many jobs waiting; nothing was stored.
    Backlog,
    Answer(Answer),
}

/// The answer to Kommo (and to whoever reads it while debugging a hook): what became of each
/// lead event in the body. Kommo only looks at the status; 200 means "stop sending this".
#[derive(Debug, Default, Serialize)]
pub(super) struct Answer {
    /// Lead events stored for the pipeline to act on.
    stored: usize,
    /// Lead events (or bodies) received before: Kommo delivering the same change again.
    duplicates: usize,
    /// What was received and will not be acted on, and why.
    ignored: Vec<Ignored>,
    #[serde(skip)]
    jobs: usize,
}

#[derive(Debug, Serialize)]
pub(super) struct Ignored {
    /// The lead, when the reason concerns one lead rather than the whole body.
    #[serde(skip_serializing_if = "Option::is_none")]
    lead_id: Option<i64>,
    /// A stable code: `foreign_account`, `not_connected`, `no_account`, `no_trigger_stage`,
    /// `not_trigger_stage`, `edit_outside_trigger`, `not_acted_on`, `unreadable`, `no_leads`.
    reason: &'static str,
    /// The same in words.
    detail: String,
}

impl Ignored {
    fn new(lead_id: Option<i64>, reason: &'static str, detail: impl Into<String>) -> Ignored {
        Ignored { lead_id, reason, detail: detail.into() }
    }
}

/// How old cached trigger stages may be when they decide to ignore an event: a stage added
/// to the settings on another instance moments ago must not cost a deal its link.
const TRIGGER_TRUSTED_FOR: std::time::Duration = std::time::Duration::from_secs(5);

/// The tenant, read again when a lead event would be ignored on cached trigger stages older
/// than [`TRIGGER_TRUSTED_FOR`] (at most one read per client account per that period).
async fn fresh_enough(
    ingress: &Ingress,
    tenant: Arc<Tenant>,
    hook: &Webhook,
) -> Result<Arc<Tenant>, crate::error::Error> {
    let hinges_on_trigger = hook.leads.iter().any(|lead| {
        verdict(tenant.trigger.as_ref(), lead).is_some_and(|(reason, _)| reason != "not_acted_on")
    });
    if !hinges_on_trigger || tenant.read_at.elapsed() < TRIGGER_TRUSTED_FOR {
        return Ok(tenant);
    }
    Ok(ingress.tokens.reload(&tenant).await?.unwrap_or(tenant))
}

/// Whether a lead event is worth a job: `None` if so, else the reason code and its words.
/// Only what a job would certainly do nothing with is ignored (the job reads the lead again
/// and decides for itself): a lead entering or created in a stage that sends no link and is
/// not lost (lost disables its link), an edit outside the trigger stages, other lead events.
fn verdict(trigger: Option<&Trigger>, lead: &LeadEvent) -> Option<(&'static str, String)> {
    let in_trigger = |t: &Trigger| {
        lead.pipeline_id == Some(t.pipeline_id)
            && lead.status_id.is_some_and(|stage| t.stage_ids.contains(&stage))
    };
    match &lead.action {
        LeadAction::Status | LeadAction::Add => {
            let stage = lead.status_id?;
            if stage == KOMMO_LOST {
                return None;
            }
            match trigger {
                None => Some((
                    "no_trigger_stage",
                    "no trigger stage is set in the client account's settings".into(),
                )),
                Some(t) if in_trigger(t) => None,
                Some(_) => Some(("not_trigger_stage", format!("stage {stage} is not a trigger stage"))),
            }
        }
        // An edit matters only in a trigger stage (a price set or changed there); every
        // other edit of every lead would be a job that reads the lead for nothing.
        LeadAction::Other(action) if action == "update" => match trigger {
            Some(t) if in_trigger(t) => None,
            _ => Some(("edit_outside_trigger", "a lead edit outside the trigger stages".into())),
        },
        LeadAction::Other(action) => {
            Some(("not_acted_on", format!("Kommo lead event {action:?} is not one pipepay acts on")))
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
    Ok(ingress.tokens.reload(tenant).await?.is_some_and(|t| t.kommo_account == Some(sent)))
}

/// Why a body from another (or no) Kommo account is ignored whole.
fn not_ours(tenant: &Tenant, hook: &Webhook) -> Ignored {
    match (hook.account_id, tenant.kommo_account) {
        (None, _) => Ignored::new(None, "no_account", "the webhook names no Kommo account"),
        (Some(id), None) => Ignored::new(
            None,
            "not_connected",
            format!("account[id] {id}: the client account has no Kommo connection"),
        ),
        (Some(id), Some(_)) => Ignored::new(
            None,
            "foreign_account",
            format!("account[id] {id} is not the connected Kommo account"),
        ),
    }
}

/// Stores what the webhook says, [`LEADS_PER_TRANSACTION`] lead events at a time.
async fn store_all(
    ingress: &Ingress,
    tenant: &Tenant,
    hook: &Webhook,
    body: &[u8],
    connected: bool,
) -> Result<Stored, StoreError> {
    let now = now_ms();
    let mut answer = Answer::default();
    if !connected {
        let mut tx = ingress.db.write().await?;
        if !events::token_is_current(&mut tx, tenant.client, &tenant.token_hash).await? {
            return Ok(Stored::UnknownToken);
        }
        // Recorded, answered 2xx (so Kommo does not disable the hook), and otherwise ignored.
        let why = not_ours(tenant, hook);
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
            detail: Some(&why.detail),
        };
        if events::insert(&mut tx, &event).await? {
            record(&mut tx, tenant, ActivityKind::Ignored, ActivityOutcome::Ignored, None, &why.detail, now)
                .await?;
            answer.ignored.push(why);
        } else {
            answer.duplicates += 1;
        }
        tx.commit().await?;
        return Ok(Stored::Answer(answer));
    }
    let queues_any = hook.leads.iter().any(|lead| verdict(tenant.trigger.as_ref(), lead).is_none());
    // Checked once, before anything is stored: a body is taken whole or not at all.
    if queues_any && ingress.backlog.full(tenant.client, ingress.caps.max_ready_jobs).await? {
        return Ok(Stored::Backlog);
    }
    for chunk in hook.leads.chunks(LEADS_PER_TRANSACTION) {
        let mut tx = ingress.db.write().await?;
        if !events::token_is_current(&mut tx, tenant.client, &tenant.token_hash).await? {
            return Ok(Stored::UnknownToken);
        }
        for lead in chunk {
            store_lead(ingress, &mut tx, tenant, lead, now, &mut answer).await?;
        }
        tx.commit().await?;
    }
    answer.ignored.extend(hook.skipped.iter().map(|why| Ignored::new(None, "unreadable", why.clone())));
    if hook.leads.is_empty() && hook.skipped.is_empty() {
        answer.ignored.push(Ignored::new(
            None,
            "no_leads",
            "the webhook carries no lead events (contacts, tasks and the like are not acted on)",
        ));
    }
    Ok(Stored::Answer(answer))
}

/// Stores one lead event (and its job, when it is worth one) in `tx`, and says so in `answer`.
async fn store_lead(
    ingress: &Ingress,
    tx: &mut store::Tx,
    tenant: &Tenant,
    lead: &LeadEvent,
    now: i64,
    answer: &mut Answer,
) -> Result<(), StoreError> {
    let key = lead.dedup_key();
    let verdict = verdict(tenant.trigger.as_ref(), lead);
    let acts = verdict.is_none();
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
        detail: verdict.as_ref().map(|(_, detail)| detail.as_str()),
    };
    if !events::insert(tx, &event).await? {
        answer.duplicates += 1;
        if let Some(original) = events::id_by_dedup(tx, tenant.client, &key).await? {
            ingress.queue.caused_again(tx, tenant.client, original).await?;
        }
        return Ok(());
    }
    let mut what = match lead.status_id {
        Some(stage) => format!("Kommo: lead {} in stage {stage}", lead.lead_id),
        None => format!("Kommo: lead {} changed", lead.lead_id),
    };
    if let Some((_, detail)) = &verdict {
        what = format!("{what}: {detail}");
    }
    let outcome = if acts { ActivityOutcome::Ok } else { ActivityOutcome::Ignored };
    record(tx, tenant, ActivityKind::Received, outcome, Some(lead.lead_id), &what, now).await?;
    let Some((reason, detail)) = verdict else {
        answer.stored += 1;
        let job = Job::Lead(LeadJob {
            lead_id: LeadId(lead.lead_id),
            pipeline_id: lead.pipeline_id,
            status_id: lead.status_id,
            request: None,
        });
        if ingress.queue.enqueue(tx, tenant.client, &job, Some(event_id), None).await? {
            answer.jobs += 1;
        }
        return Ok(());
    };
    answer.ignored.push(Ignored::new(Some(lead.lead_id), reason, detail));
    Ok(())
}

/// A refused call still leaves a timeline entry saying why; not being able to write it is only
/// logged, as the refusal stands either way.
pub(super) async fn record_refusal(
    ingress: &Ingress,
    tenant: &Tenant,
    lead: Option<i64>,
    detail: &str,
    what: &str,
) {
    let recorded = async {
        let mut tx = ingress.db.write().await?;
        record(&mut tx, tenant, ActivityKind::Ignored, ActivityOutcome::Refused, lead, detail, now_ms())
            .await?;
        tx.commit().await
    };
    if let Err(error) = recorded.await {
        tracing::warn!(%error, "could not record a refused {what}");
    }
}

pub(super) async fn record(
    tx: &mut store::Tx,
    tenant: &Tenant,
    kind: ActivityKind,
    outcome: ActivityOutcome,
    lead: Option<i64>,
    detail: &str,
    now: i64,
) -> Result<(), StoreError> {
    let row = ActivityRow {
        id: uuid::Uuid::now_v7(),
        client_id: tenant.client,
        at: now,
        kind,
        outcome,
        lead_id: lead.map(LeadId),
        tx_ref: None,
        job_id: None,
        detail: detail.into(),
    };
    store::activity::insert(tx, &row).await
}
