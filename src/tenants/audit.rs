//! Writing and reading the audit log.

use serde::Serialize;

use crate::auth::Access;
use crate::clock::{now_ms, rfc3339};
use crate::error::Result;
use crate::ids::{AuditId, ClientId};
use crate::store::audit::AuditRow;
use crate::store::{self, Db, Tx};

/// Records `action` by the caller. `detail` must never carry a secret: callers pass names of
/// changed fields and masked values only.
pub async fn record(
    tx: &mut Tx,
    access: &Access,
    client: Option<ClientId>,
    action: &str,
    detail: serde_json::Value,
) -> Result<()> {
    let row = AuditRow {
        id: AuditId::new(),
        agency_id: access.agency,
        client_id: client,
        actor_kind: access.actor.kind.to_owned(),
        actor_id: Some(access.actor.id),
        actor_label: access.actor.label.clone(),
        action: action.to_owned(),
        detail: detail.to_string(),
        at: now_ms(),
    };
    store::audit::insert(tx, &row).await?;
    Ok(())
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: AuditId,
    #[schema(value_type = Option<String>, format = Uuid)]
    pub client_id: Option<ClientId>,
    /// `user` or `api_key`.
    pub actor_kind: String,
    /// The user's email or the API key's name.
    pub actor: String,
    /// e.g. `client.created`, `client.settings_changed`, `client.flutterwave_keys_replaced`.
    pub action: String,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    pub at: String,
}

/// Newest first; every member may read it.
pub async fn list(
    db: &Db,
    access: &Access,
    client: Option<ClientId>,
    before: Option<AuditId>,
    limit: u32,
) -> Result<Vec<AuditEntry>> {
    let mut tx = db.read().await?;
    let rows =
        store::audit::list(&mut tx, access.agency, client, before, i64::from(limit.clamp(1, 500))).await?;
    tx.commit().await?;
    Ok(rows
        .into_iter()
        .map(|r| AuditEntry {
            id: r.id,
            client_id: r.client_id,
            actor_kind: r.actor_kind,
            actor: r.actor_label,
            action: r.action,
            detail: serde_json::from_str(&r.detail).unwrap_or(serde_json::Value::Null),
            at: rfc3339(r.at),
        })
        .collect())
}
