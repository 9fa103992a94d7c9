//! Agency API keys for automation: shown once, stored hashed, revocable.
//!
//! A key never has more power than the person who created it has now: leaving the agency
//! revokes their keys and being made a member lowers their admin keys to member, in the same
//! transaction as the change of membership (see `follow_creator`). Revoking rather than
//! capping on removal is deliberate: a key that came back to life when its creator was invited
//! again would surprise everyone who saw it stop.

use serde::Serialize;
use serde_json::json;

use super::audit;
use crate::auth::{Access, tokens};
use crate::clock::{now_ms, rfc3339};
use crate::error::{Checks, Error, Result};
use crate::ids::{ApiKeyId, UserId};
use crate::roles::Role;
use crate::store::api_keys::ApiKeyRow;
use crate::store::{self, Db, Tx};
use crate::vault::Secret;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ApiKeyView {
    pub id: ApiKeyId,
    pub name: String,
    pub role: Role,
    /// The key's first characters, to recognise it; the key itself is never shown again.
    pub prefix: String,
    /// The email of the person who created the key (`null` once their account is gone).
    pub created_by: Option<String>,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
}

fn view(row: ApiKeyRow, created_by: Option<String>) -> ApiKeyView {
    ApiKeyView {
        id: row.id,
        name: row.name,
        role: row.role.parse().unwrap_or(Role::Member),
        prefix: row.prefix,
        created_by,
        created_at: rfc3339(row.created_at),
        last_used_at: row.last_used_at.map(rfc3339),
        revoked_at: row.revoked_at.map(rfc3339),
    }
}

/// Creates a key with `role` (admin or member). Only people create keys, not other keys.
pub async fn create(db: &Db, access: &Access, name: &str, role: Role) -> Result<(ApiKeyView, Secret)> {
    let creator = access.require_person(Role::Admin)?;
    let creator_email = access.actor.label.clone();
    let name = name.trim();
    let mut checks = Checks::new();
    super::settings::check_name(&mut checks, "name", name);
    checks.check(role != Role::Owner, "role", "Choose admin or member: an API key cannot be owner.");
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
    // `access` was read before this transaction: an owner may have removed or demoted the
    // creator since, and already revoked or lowered their keys. Re-read under the members lock
    // so no key is made afterwards with the power they lost.
    store::agencies::lock_members(&mut tx, access.agency).await?;
    match store::agencies::role_of(&mut tx, access.agency, creator).await? {
        Some(now) if now >= Role::Admin => {}
        Some(_) => return Err(Error::Forbidden("this needs the admin or owner role")),
        None => return Err(Error::NotFound),
    }
    store::api_keys::insert(&mut tx, &row, &hash).await?;
    audit::record(&mut tx, access, None, "api_key.created", json!({ "name": name, "role": role })).await?;
    tx.commit().await?;
    Ok((view(row, Some(creator_email)), key))
}

pub async fn list(db: &Db, access: &Access) -> Result<Vec<ApiKeyView>> {
    let mut tx = db.read().await?;
    let rows = store::api_keys::list(&mut tx, access.agency).await?;
    tx.commit().await?;
    Ok(rows.into_iter().map(|r| view(r.key, r.creator_email)).collect())
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

/// Brings `creator`'s keys in line with their new standing in the agency, in the caller's
/// transaction (the one that changes the membership): `None` (they left) revokes every key,
/// `Member` lowers admin keys to member. Each change is audited as the caller's.
pub(super) async fn follow_creator(
    tx: &mut Tx,
    access: &Access,
    creator: UserId,
    new_role: Option<Role>,
) -> Result<()> {
    let (changed, action, why) = match new_role {
        None => (
            store::api_keys::revoke_created_by(tx, access.agency, creator, now_ms()).await?,
            "api_key.revoked",
            "its creator left the agency",
        ),
        Some(Role::Member) => (
            store::api_keys::demote_created_by(tx, access.agency, creator).await?,
            "api_key.role_lowered",
            "its creator was made a member",
        ),
        // Admins and owners may hold admin keys; keys are never raised.
        Some(Role::Admin | Role::Owner) => return Ok(()),
    };
    for key in changed {
        let mut detail = json!({ "id": key.id, "name": key.name, "reason": why });
        if new_role.is_some() {
            detail["to"] = json!(Role::Member);
        }
        audit::record(tx, access, None, action, detail).await?;
    }
    Ok(())
}
