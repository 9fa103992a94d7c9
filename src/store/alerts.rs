//! Alerts: each agency's alert settings, the incidents opened and closed for its client
//! accounts, and the stored facts the alert conditions are read from.

use crate::ids::{AgencyId, ClientId};
use crate::on_tx;

use super::pauses::PauseCause;
use super::{StoreError, Tx};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AlertSettingsRow {
    pub agency_id: AgencyId,
    /// 1: mail the owners, 0: do not (an integer in both engines).
    pub email_owners: i64,
    pub webhook_url: Option<String>,
    pub webhook_secret: Option<String>,
    pub updated_at: i64,
}

pub async fn settings(tx: &mut Tx, agency: AgencyId) -> Result<Option<AlertSettingsRow>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        "SELECT agency_id, email_owners, webhook_url, webhook_secret, updated_at FROM alert_settings \
         WHERE agency_id = $1",
    )
    .bind(agency)
    .fetch_optional(c)
    .await)?)
}

pub async fn put_settings(tx: &mut Tx, row: &AlertSettingsRow) -> Result<(), StoreError> {
    on_tx!(tx, c => sqlx::query(
        "INSERT INTO alert_settings (agency_id, email_owners, webhook_url, webhook_secret, updated_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (agency_id) DO UPDATE SET email_owners = excluded.email_owners, \
         webhook_url = excluded.webhook_url, webhook_secret = excluded.webhook_secret, \
         updated_at = excluded.updated_at",
    )
    .bind(row.agency_id)
    .bind(row.email_owners)
    .bind(&row.webhook_url)
    .bind(&row.webhook_secret)
    .bind(row.updated_at)
    .execute(c)
    .await
    .map(drop))?;
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct IncidentRow {
    pub id: uuid::Uuid,
    pub agency_id: AgencyId,
    pub client_id: ClientId,
    pub kind: String,
    pub detail: String,
    pub opened_at: i64,
    pub closed_at: Option<i64>,
}

/// Every open incident (the evaluation compares them with what is true now).
pub async fn open_incidents(tx: &mut Tx) -> Result<Vec<IncidentRow>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        "SELECT id, agency_id, client_id, kind, detail, opened_at, closed_at FROM incidents WHERE closed_at IS NULL",
    )
    .fetch_all(c)
    .await)?)
}

/// Opens an incident unless one of that kind is open for the client account already; returns
/// whether this call opened it (the unique index decides, so two evaluators cannot both).
pub async fn open(tx: &mut Tx, row: &IncidentRow) -> Result<bool, StoreError> {
    let done = on_tx!(tx, c => sqlx::query(
        "INSERT INTO incidents (id, agency_id, client_id, kind, detail, opened_at) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (client_id, kind) WHERE closed_at IS NULL DO NOTHING",
    )
    .bind(row.id)
    .bind(row.agency_id)
    .bind(row.client_id)
    .bind(&row.kind)
    .bind(&row.detail)
    .bind(row.opened_at)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

/// Closes an open incident; `false` if it was closed meanwhile.
pub async fn close(tx: &mut Tx, id: uuid::Uuid, now: i64) -> Result<bool, StoreError> {
    let done = on_tx!(tx, c => sqlx::query("UPDATE incidents SET closed_at = $2 WHERE id = $1 AND closed_at IS NULL")
        .bind(id)
        .bind(now)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

/// An agency's incidents, newest first.
pub async fn incidents_for(
    tx: &mut Tx,
    agency: AgencyId,
    limit: i64,
) -> Result<Vec<IncidentRow>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        "SELECT id, agency_id, client_id, kind, detail, opened_at, closed_at FROM incidents WHERE agency_id = $1 \
         ORDER BY opened_at DESC LIMIT $2",
    )
    .bind(agency)
    .bind(limit)
    .fetch_all(c)
    .await)?)
}

/// A fact that makes a condition true: the client account, its agency, its name, a detail.
pub type Fact = (ClientId, AgencyId, String, String);
/// A counted fact: the client account, its agency, its name, and how many.
pub type Counted = (ClientId, AgencyId, String, i64);

/// Kommo connections that need a person: re-authorisation, or the integration uninstalled.
pub async fn kommo_needs_person(tx: &mut Tx) -> Result<Vec<Fact>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        "SELECT k.client_id, c.agency_id, c.name, k.health FROM kommo_connections k JOIN clients c ON c.id = k.client_id \
         WHERE k.health IN ('needs_reauth', 'revoked')",
    )
    .fetch_all(c)
    .await)?)
}

/// Client accounts paused for the given cause, with the pause's reason in words.
pub async fn paused_for(tx: &mut Tx, cause: PauseCause) -> Result<Vec<Fact>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        "SELECT p.client_id, c.agency_id, c.name, p.reason FROM client_pauses p JOIN clients c ON c.id = p.client_id \
         WHERE p.cause = $1",
    )
    .bind(cause)
    .fetch_all(c)
    .await)?)
}

/// Client accounts with dead jobs, and how many.
pub async fn dead_jobs(tx: &mut Tx) -> Result<Vec<Counted>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        "SELECT j.client_id, c.agency_id, c.name, COUNT(*) FROM jobs j JOIN clients c ON c.id = j.client_id \
         WHERE j.state = $1 GROUP BY j.client_id, c.agency_id, c.name",
    )
    .bind(super::jobs::JobState::Dead)
    .fetch_all(c)
    .await)?)
}

/// Client accounts with a link open since before `since` and no Flutterwave webhook since then.
pub async fn quiet_flutterwave(tx: &mut Tx, since: i64) -> Result<Vec<Counted>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        "SELECT l.client_id, c.agency_id, c.name, COUNT(*) FROM payment_links l JOIN clients c ON c.id = l.client_id \
         WHERE l.state = 'open' AND l.created_at < $1 AND NOT EXISTS (SELECT 1 FROM inbound_events e \
           WHERE e.client_id = l.client_id AND e.source = 'flutterwave' AND e.received_at >= $1) \
         GROUP BY l.client_id, c.agency_id, c.name",
    )
    .bind(since)
    .fetch_all(c)
    .await)?)
}

/// Client accounts with an open link whose payment was refused as too small (or in another
/// currency): the customer paid, and the deal is not won.
pub async fn underpaid(tx: &mut Tx) -> Result<Vec<Counted>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        "SELECT l.client_id, c.agency_id, c.name, COUNT(DISTINCT l.id) FROM payment_links l \
         JOIN clients c ON c.id = l.client_id \
         JOIN activity a ON a.client_id = l.client_id AND a.tx_ref = l.tx_ref AND a.kind = 'payment_rejected' \
         WHERE l.state = 'open' GROUP BY l.client_id, c.agency_id, c.name",
    )
    .fetch_all(c)
    .await)?)
}

/// The owners' addresses of an agency.
pub async fn owner_emails(tx: &mut Tx, agency: AgencyId) -> Result<Vec<String>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_scalar(
        "SELECT u.email FROM memberships m JOIN users u ON u.id = m.user_id \
         WHERE m.agency_id = $1 AND m.role = 'owner' ORDER BY u.email",
    )
    .bind(agency)
    .fetch_all(c)
    .await)?)
}

/// Deletes up to `limit` incidents closed before `before`; how many went. Open ones stay
/// whatever their age: they hold the "one open incident per client account and kind" rule.
pub async fn delete_closed_before(tx: &mut Tx, before: i64, limit: i64) -> Result<u64, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query(
        "DELETE FROM incidents WHERE id IN \
         (SELECT id FROM incidents WHERE closed_at IS NOT NULL AND closed_at < $1 ORDER BY closed_at LIMIT $2)",
    )
    .bind(before)
    .bind(limit)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?)
}
