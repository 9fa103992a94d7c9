//! The audit log: who did what to which client account, and when.

use crate::ids::{AgencyId, AuditId, ClientId};
use crate::on_tx;

use super::{StoreError, Tx};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditRow {
    pub id: AuditId,
    pub agency_id: AgencyId,
    pub client_id: Option<ClientId>,
    /// `user` or `api_key`.
    pub actor_kind: String,
    pub actor_id: Option<uuid::Uuid>,
    /// The user's email or the API key's name, as it was at the time.
    pub actor_label: String,
    pub action: String,
    /// JSON object describing the change; never holds secrets.
    pub detail: String,
    pub at: i64,
}

pub async fn insert(tx: &mut Tx, row: &AuditRow) -> Result<(), StoreError> {
    on_tx!(tx, c => sqlx::query(
        "INSERT INTO audit_log (id, agency_id, client_id, actor_kind, actor_id, actor_label, action, detail, at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(row.id)
    .bind(row.agency_id)
    .bind(row.client_id)
    .bind(&row.actor_kind)
    .bind(row.actor_id)
    .bind(&row.actor_label)
    .bind(&row.action)
    .bind(&row.detail)
    .bind(row.at)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Newest first, optionally for one client account, before an entry id (ids sort by time).
pub async fn list(
    tx: &mut Tx,
    agency: AgencyId,
    client: Option<ClientId>,
    before: Option<AuditId>,
    limit: i64,
) -> Result<Vec<AuditRow>, StoreError> {
    // One statement for every filter combination: a NULL parameter switches its filter off.
    Ok(on_tx!(tx, c => sqlx::query_as(
        "SELECT id, agency_id, client_id, actor_kind, actor_id, actor_label, action, detail, at \
         FROM audit_log WHERE agency_id = $1 \
         AND ($2 IS NULL OR client_id = $2) AND ($3 IS NULL OR id < $3) \
         ORDER BY id DESC LIMIT $4",
    )
    .bind(agency)
    .bind(client)
    .bind(before)
    .bind(limit)
    .fetch_all(c)
    .await)?)
}
