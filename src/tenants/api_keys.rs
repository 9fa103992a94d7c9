//! Agency API keys for automation: shown once, stored hashed, revocable.

use serde::Serialize;
use serde_json::json;

use super::audit;
use crate::auth::{Access, tokens};
use crate::clock::{now_ms, rfc3339};
use crate::error::{Checks, Error, Result};
use crate::ids::ApiKeyId;
use crate::roles::Role;
use crate::store::api_keys::ApiKeyRow;
use crate::store::{self, Db};
use crate::vault::Secret;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ApiKeyView {
    pub id: ApiKeyId,
    pub name: String,
    pub role: Role,
    /// The key's first characters, to recognise it; the key itself is never shown again.
    pub prefix: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
}

fn view(row: ApiKeyRow) -> ApiKeyView {
    ApiKeyView {
        id: row.id,
        name: row.name,
        role: row.role.parse().unwrap_or(Role::Member),
        prefix: row.prefix,
        created_at: rfc3339(row.created_at),
        last_used_at: row.last_used_at.map(rfc3339),
        revoked_at: row.revoked_at.map(rfc3339),
    }
}

/// Creates a key with `role` (admin or member). Only people create keys, not other keys.
pub async fn create(db: &Db, access: &Access, name: &str, role: Role) -> Result<(ApiKeyView, Secret)> {
    let creator = access.require_person(Role::Admin)?;
    let name = name.trim();
    let mut checks = Checks::new();
    super::settings::check_name(&mut checks, "name", name);
    checks.check(role != Role::Owner, "role", "an API key can be admin or member, not owner");
    checks.finish()?;
    let (key, hash) = tokens::generate(tokens::API_KEY_PREFIX);
    let row = ApiKeyRow {
        id: ApiKeyId::new(),
        agency_id: access.agency,
        name: name.to_owned(),
        role: role.as_str().to_owned(),
        prefix: key.expose().chars().take(tokens::API_KEY_PREFIX.len() + 4).collect(),
        created_by: Some(creator),
        created_at: now_ms(),
        last_used_at: None,
        revoked_at: None,
    };
    let mut tx = db.write().await?;
    store::api_keys::insert(&mut tx, &row, &hash).await?;
    audit::record(&mut tx, access, None, "api_key.created", json!({ "name": name, "role": role })).await?;
    tx.commit().await?;
    Ok((view(row), key))
}

pub async fn list(db: &Db, access: &Access) -> Result<Vec<ApiKeyView>> {
    let mut tx = db.read().await?;
    let rows = store::api_keys::list(&mut tx, access.agency).await?;
    tx.commit().await?;
    Ok(rows.into_iter().map(view).collect())
}

pub async fn revoke(db: &Db, access: &Access, id: ApiKeyId) -> Result<()> {
    let mut tx = db.write().await?;
    if !store::api_keys::revoke(&mut tx, access.agency, id, now_ms()).await? {
        return Err(Error::NotFound);
    }
    // Checked after the lookup (and rolled back if refused) so a foreign id is always a 404.
    access.require_person(Role::Admin)?;
    audit::record(&mut tx, access, None, "api_key.revoked", json!({ "id": id })).await?;
    tx.commit().await?;
    Ok(())
}
