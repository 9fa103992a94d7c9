//! The per-client activity timeline: what the pipeline received, did, skipped and failed.

use crate::ids::{ClientId, LeadId, TxRef};
use crate::on_tx;

use super::{StoreError, Tx};

crate::text_enum! {
    /// What a timeline entry is about.
    pub enum ActivityKind {
        Received = "received",
        Ignored = "ignored",
        LinkCreated = "link_created",
        LinkReused = "link_reused",
        LinkDisabled = "link_disabled",
        NotePosted = "note_posted",
        PaymentVerified = "payment_verified",
        PaymentRejected = "payment_rejected",
        PaymentFailed = "payment_failed",
        PaymentUnknown = "payment_unknown",
        DealClosed = "deal_closed",
        /// An attempt failed and the job will be retried.
        Failure = "failure",
        /// The job waits for a person (keys missing, Kommo revoked).
        Paused = "paused",
        /// The job gave up.
        Dead = "dead",
    }
}

crate::text_enum! {
    /// How what an entry reports turned out.
    pub enum ActivityOutcome {
        Ok = "ok",
        Failed = "failed",
        Ignored = "ignored",
        /// A webhook turned away (wrong account, bad signature) and recorded for the agency.
        Refused = "refused",
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ActivityRow {
    pub id: uuid::Uuid,
    pub client_id: ClientId,
    pub at: i64,
    /// A stored word that is no `ActivityKind` fails the read with the word and column named:
    /// only pipepay writes this table, so such a word means a newer version wrote it.
    pub kind: ActivityKind,
    pub outcome: ActivityOutcome,
    pub lead_id: Option<LeadId>,
    pub tx_ref: Option<TxRef>,
    pub job_id: Option<uuid::Uuid>,
    pub detail: String,
}

pub async fn insert(tx: &mut Tx, row: &ActivityRow) -> Result<(), StoreError> {
    on_tx!(tx, c => sqlx::query(
        "INSERT INTO activity (id, client_id, at, kind, outcome, lead_id, tx_ref, job_id, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(row.id)
    .bind(row.client_id)
    .bind(row.at)
    .bind(row.kind)
    .bind(row.outcome)
    .bind(row.lead_id)
    .bind(&row.tx_ref)
    .bind(row.job_id)
    .bind(&row.detail)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub kind: Option<String>,
    pub outcome: Option<String>,
    pub lead_id: Option<LeadId>,
    pub before: Option<uuid::Uuid>,
}

/// Newest first. One statement for every filter combination: a NULL parameter switches its
/// filter off.
pub async fn list(
    tx: &mut Tx,
    client: ClientId,
    filter: &Filter,
    limit: i64,
) -> Result<Vec<ActivityRow>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        "SELECT id, client_id, at, kind, outcome, lead_id, tx_ref, job_id, detail FROM activity \
         WHERE client_id = $1 AND ($2 IS NULL OR kind = $2) AND ($3 IS NULL OR outcome = $3) \
         AND ($4 IS NULL OR lead_id = $4) AND ($5 IS NULL OR id < $5) ORDER BY id DESC LIMIT $6",
    )
    .bind(client)
    .bind(&filter.kind)
    .bind(&filter.outcome)
    .bind(filter.lead_id)
    .bind(filter.before)
    .bind(limit)
    .fetch_all(c)
    .await)?)
}
