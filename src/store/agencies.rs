//! Agencies, who belongs to them, and invitations to join.

use crate::ids::{AgencyId, InvitationId, UserId};
use crate::on_tx;
use crate::roles::Role;

use super::{StoreError, Tx};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AgencyRow {
    pub id: AgencyId,
    pub name: String,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct Member {
    pub user_id: UserId,
    pub email: String,
    pub role: Role,
    pub joined_at: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InvitationRow {
    pub id: InvitationId,
    pub agency_id: AgencyId,
    pub email: String,
    pub role: String,
    pub invited_by: Option<UserId>,
    pub created_at: i64,
    pub expires_at: i64,
    pub accepted_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

fn role(text: &str) -> Result<Role, StoreError> {
    text.parse().map_err(StoreError::Corrupt)
}

pub async fn insert(tx: &mut Tx, agency: &AgencyRow) -> Result<(), StoreError> {
    on_tx!(tx, c => sqlx::query("INSERT INTO agencies (id, name, created_at) VALUES ($1, $2, $3)")
        .bind(agency.id)
        .bind(&agency.name)
        .bind(agency.created_at)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(())
}

pub async fn get(tx: &mut Tx, id: AgencyId) -> Result<Option<AgencyRow>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as("SELECT id, name, created_at FROM agencies WHERE id = $1")
        .bind(id)
        .fetch_optional(c)
        .await)?)
}

pub async fn add_member(
    tx: &mut Tx,
    agency: AgencyId,
    user: UserId,
    role: Role,
    at: i64,
) -> Result<(), StoreError> {
    on_tx!(tx, c => sqlx::query(
        "INSERT INTO memberships (agency_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(agency)
    .bind(user)
    .bind(role.as_str())
    .bind(at)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// The user's role in the agency, or `None` if they are not a member: the one question every
/// agency-scoped request asks first.
pub async fn role_of(tx: &mut Tx, agency: AgencyId, user: UserId) -> Result<Option<Role>, StoreError> {
    let found: Option<String> = on_tx!(tx, c => sqlx::query_scalar(
        "SELECT role FROM memberships WHERE agency_id = $1 AND user_id = $2",
    )
    .bind(agency)
    .bind(user)
    .fetch_optional(c)
    .await)?;
    found.as_deref().map(role).transpose()
}

/// Every agency the user belongs to, with their role there.
pub async fn of_user(tx: &mut Tx, user: UserId) -> Result<Vec<(AgencyRow, Role)>, StoreError> {
    let rows: Vec<(AgencyId, String, i64, String)> = on_tx!(tx, c => sqlx::query_as(
        "SELECT a.id, a.name, a.created_at, m.role FROM agencies a \
         JOIN memberships m ON m.agency_id = a.id WHERE m.user_id = $1 ORDER BY a.created_at",
    )
    .bind(user)
    .fetch_all(c)
    .await)?;
    rows.into_iter()
        .map(|(id, name, created_at, r)| Ok((AgencyRow { id, name, created_at }, role(&r)?)))
        .collect()
}

pub async fn members(tx: &mut Tx, agency: AgencyId) -> Result<Vec<Member>, StoreError> {
    let rows: Vec<(UserId, String, String, i64)> = on_tx!(tx, c => sqlx::query_as(
        "SELECT u.id, u.email, m.role, m.created_at FROM memberships m \
         JOIN users u ON u.id = m.user_id WHERE m.agency_id = $1 ORDER BY m.created_at",
    )
    .bind(agency)
    .fetch_all(c)
    .await)?;
    rows.into_iter()
        .map(|(user_id, email, r, joined_at)| Ok(Member { user_id, email, role: role(&r)?, joined_at }))
        .collect()
}

pub async fn set_role(
    tx: &mut Tx,
    agency: AgencyId,
    user: UserId,
    new_role: Role,
) -> Result<bool, StoreError> {
    let done = on_tx!(tx, c => sqlx::query("UPDATE memberships SET role = $3 WHERE agency_id = $1 AND user_id = $2")
        .bind(agency)
        .bind(user)
        .bind(new_role.as_str())
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

pub async fn remove_member(tx: &mut Tx, agency: AgencyId, user: UserId) -> Result<bool, StoreError> {
    let done = on_tx!(tx, c => sqlx::query("DELETE FROM memberships WHERE agency_id = $1 AND user_id = $2")
        .bind(agency)
        .bind(user)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

/// Serialises changes to an agency's members until the transaction ends, so two owners
/// demoting each other at once cannot leave it with none. SQLite already runs one writer at a
/// time (`BEGIN IMMEDIATE`); PostgreSQL's READ COMMITTED would let both counts see two owners.
pub async fn lock_members(tx: &mut Tx, agency: AgencyId) -> Result<(), StoreError> {
    if let Tx::Postgres(t) = tx {
        sqlx::query("SELECT id FROM agencies WHERE id = $1 FOR UPDATE")
            .bind(agency)
            .execute(&mut **t)
            .await?;
    }
    Ok(())
}

pub async fn count_owners(tx: &mut Tx, agency: AgencyId) -> Result<i64, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_scalar(
        "SELECT COUNT(*) FROM memberships WHERE agency_id = $1 AND role = 'owner'",
    )
    .bind(agency)
    .fetch_one(c)
    .await)?)
}

pub async fn insert_invitation(
    tx: &mut Tx,
    row: &InvitationRow,
    token_hash: &[u8],
) -> Result<(), StoreError> {
    on_tx!(tx, c => sqlx::query(
        "INSERT INTO invitations (id, agency_id, email, role, token_hash, invited_by, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(row.id)
    .bind(row.agency_id)
    .bind(&row.email)
    .bind(&row.role)
    .bind(token_hash)
    .bind(row.invited_by)
    .bind(row.created_at)
    .bind(row.expires_at)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

pub async fn invitation_by_token(
    tx: &mut Tx,
    token_hash: &[u8],
) -> Result<Option<InvitationRow>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        "SELECT id, agency_id, email, role, invited_by, created_at, expires_at, accepted_at, revoked_at \
         FROM invitations WHERE token_hash = $1",
    )
    .bind(token_hash)
    .fetch_optional(c)
    .await)?)
}

/// Invitations not yet accepted, revoked or expired.
pub async fn pending_invitations(
    tx: &mut Tx,
    agency: AgencyId,
    now: i64,
) -> Result<Vec<InvitationRow>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        "SELECT id, agency_id, email, role, invited_by, created_at, expires_at, accepted_at, revoked_at \
         FROM invitations WHERE agency_id = $1 AND accepted_at IS NULL AND revoked_at IS NULL \
         AND expires_at > $2 ORDER BY created_at",
    )
    .bind(agency)
    .bind(now)
    .fetch_all(c)
    .await)?)
}

/// Marks the invitation used, only if it is still open: the compare-and-set that makes an
/// invitation link single-use even when two people click it at once.
pub async fn accept_invitation(tx: &mut Tx, id: InvitationId, now: i64) -> Result<bool, StoreError> {
    let done = on_tx!(tx, c => sqlx::query(
        "UPDATE invitations SET accepted_at = $2 WHERE id = $1 AND accepted_at IS NULL \
         AND revoked_at IS NULL AND expires_at > $2",
    )
    .bind(id)
    .bind(now)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

pub async fn revoke_invitation(
    tx: &mut Tx,
    agency: AgencyId,
    id: InvitationId,
    now: i64,
) -> Result<bool, StoreError> {
    let done = on_tx!(tx, c => sqlx::query(
        "UPDATE invitations SET revoked_at = $3 WHERE agency_id = $1 AND id = $2 \
         AND accepted_at IS NULL AND revoked_at IS NULL",
    )
    .bind(agency)
    .bind(id)
    .bind(now)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}
