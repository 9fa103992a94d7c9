//! Per-agency summaries for the agency home page: one query per fact, grouped by client
//! account, always filtered on the agency.

use crate::ids::{AgencyId, ClientId};
use crate::on_tx;

use super::{StoreError, Tx};

/// Kommo connection health and subdomain of each connected client account.
pub async fn connections(
    tx: &mut Tx,
    agency: AgencyId,
) -> Result<Vec<(ClientId, String, String)>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        "SELECT k.client_id, k.health, k.subdomain FROM kommo_connections k \
         JOIN clients c ON c.id = k.client_id WHERE c.agency_id = $1",
    )
    .bind(agency)
    .fetch_all(c)
    .await)?)
}

/// When each client account last received a webhook.
pub async fn last_webhooks(tx: &mut Tx, agency: AgencyId) -> Result<Vec<(ClientId, i64)>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        "SELECT e.client_id, MAX(e.received_at) FROM inbound_events e \
         JOIN clients c ON c.id = e.client_id WHERE c.agency_id = $1 GROUP BY e.client_id",
    )
    .bind(agency)
    .fetch_all(c)
    .await)?)
}

/// Open (unpaid, live) payment links per client account.
pub async fn open_links(tx: &mut Tx, agency: AgencyId) -> Result<Vec<(ClientId, i64)>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        "SELECT l.client_id, COUNT(*) FROM payment_links l \
         JOIN clients c ON c.id = l.client_id WHERE c.agency_id = $1 AND l.state = 'open' GROUP BY l.client_id",
    )
    .bind(agency)
    .fetch_all(c)
    .await)?)
}

/// Payments received since `since` (ms): client, amount (decimal text), currency.
pub async fn payments_since(
    tx: &mut Tx,
    agency: AgencyId,
    since: i64,
) -> Result<Vec<(ClientId, String, String)>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        "SELECT l.client_id, l.paid_amount, l.paid_currency FROM payment_links l \
         JOIN clients c ON c.id = l.client_id \
         WHERE c.agency_id = $1 AND l.state = 'paid' AND l.closed_at >= $2 AND l.paid_amount IS NOT NULL",
    )
    .bind(agency)
    .bind(since)
    .fetch_all(c)
    .await)?)
}

/// Dead jobs (failures that need a person) per client account.
pub async fn dead_jobs(tx: &mut Tx, agency: AgencyId) -> Result<Vec<(ClientId, i64)>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        "SELECT j.client_id, COUNT(*) FROM jobs j \
         JOIN clients c ON c.id = j.client_id WHERE c.agency_id = $1 AND j.state = $2 GROUP BY j.client_id",
    )
    .bind(agency)
    .bind(super::jobs::JobState::Dead)
    .fetch_all(c)
    .await)?)
}

/// Why a client account's pipeline waits for a person, if it does.
pub async fn pauses(tx: &mut Tx, agency: AgencyId) -> Result<Vec<(ClientId, String)>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        "SELECT p.client_id, p.reason FROM client_pauses p \
         JOIN clients c ON c.id = p.client_id WHERE c.agency_id = $1",
    )
    .bind(agency)
    .fetch_all(c)
    .await)?)
}

/// One client account's payments closed since `since` (ms): when, amount (decimal text),
/// currency. Filtered on the agency as well, so a client id alone can never reach another
/// agency's rows.
pub async fn client_payments_since(
    tx: &mut Tx,
    agency: AgencyId,
    client: ClientId,
    since: i64,
) -> Result<Vec<(i64, String, String)>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        "SELECT l.closed_at, l.paid_amount, l.paid_currency FROM payment_links l \
         JOIN clients c ON c.id = l.client_id \
         WHERE c.agency_id = $1 AND l.client_id = $2 AND l.state = 'paid' AND l.closed_at >= $3 \
         AND l.paid_amount IS NOT NULL AND l.paid_currency IS NOT NULL ORDER BY l.closed_at",
    )
    .bind(agency)
    .bind(client)
    .bind(since)
    .fetch_all(c)
    .await)?)
}
