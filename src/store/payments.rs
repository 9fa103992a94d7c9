//! Payment links as the agency reads them: one client account's links with a search and
//! paging, the Flutterwave webhooks that name a link (where its customer is found), and totals
//! per client account for the agency home. Read-only; `store::links` owns the writes.

use sqlx::{ColumnIndex, Decode, Row, Type};

use crate::ids::{AgencyId, ClientId, LeadId, TxRef};
use crate::money::Money;
use crate::on_tx;

use super::links::{LinkState, money, price};
use super::{StoreError, Tx};

#[derive(Debug, Clone)]
pub struct PaymentRow {
    pub id: uuid::Uuid,
    pub lead_id: LeadId,
    pub tx_ref: TxRef,
    /// What the link asks for (columns `amount`, `currency`).
    pub price: Money,
    pub link: Option<String>,
    pub state: LinkState,
    /// What was paid (columns `paid_amount`, `paid_currency`).
    pub paid: Option<Money>,
    pub closed_at: Option<i64>,
    pub created_at: i64,
}

/// Read as `store::links::LinkRow` is, and failing the same way on an amount that is no decimal.
impl<'r, R> sqlx::FromRow<'r, R> for PaymentRow
where
    R: Row,
    &'r str: ColumnIndex<R>,
    uuid::Uuid: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
{
    fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
        let price = price(row)?;
        Ok(PaymentRow {
            id: row.try_get("id")?,
            lead_id: row.try_get("lead_id")?,
            tx_ref: row.try_get("tx_ref")?,
            price,
            link: row.try_get("link")?,
            state: row.try_get("state")?,
            paid: money(row, "paid_amount", "paid_currency")?,
            closed_at: row.try_get("closed_at")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

/// What to look for: a Kommo deal id (exact), or text found in the link's reference or in a
/// Flutterwave webhook about it (the customer's name or email).
#[derive(Debug, Clone, Default)]
pub struct Search {
    pub lead_id: Option<i64>,
    /// Lower case, already without LIKE's special characters' meaning (see [`like_pattern`]).
    pub text: Option<String>,
}

/// `%text%` for `LIKE .. ESCAPE '\'`, lower case, with `%`, `_` and `\` taken literally.
pub fn like_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// A client account's links, newest first, `limit` from `offset`. Links that never reached
/// Flutterwave (`failed`) are left out: there was nothing to pay. The customer search reads
/// the client account's Flutterwave webhooks that carry the link's reference (the only place
/// pipepay keeps a customer), so it is bounded by one client account's webhooks.
pub async fn list(
    tx: &mut Tx,
    agency: AgencyId,
    client: ClientId,
    search: &Search,
    limit: i64,
    offset: i64,
) -> Result<Vec<PaymentRow>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        "SELECT l.id, l.lead_id, l.tx_ref, l.amount, l.currency, l.link, l.state, l.paid_amount, \
         l.paid_currency, l.closed_at, l.created_at FROM payment_links l \
         JOIN clients c ON c.id = l.client_id \
         WHERE c.agency_id = $1 AND l.client_id = $2 AND l.state <> 'failed' \
         AND (($3 IS NULL AND $4 IS NULL) OR l.lead_id = $3 \
              OR (NOT EXISTS (SELECT 1 FROM payment_links d WHERE d.client_id = l.client_id \
                              AND d.lead_id = $3 AND d.state <> 'failed') \
                  AND (LOWER(l.tx_ref) LIKE $4 ESCAPE '\\' OR EXISTS (SELECT 1 FROM inbound_events e \
                       WHERE e.client_id = l.client_id AND e.source = 'flutterwave' \
                       AND e.payload LIKE '%' || l.tx_ref || '%' AND LOWER(e.payload) LIKE $4 ESCAPE '\\')))) \
         ORDER BY l.created_at DESC, l.id DESC LIMIT $5 OFFSET $6",
    )
    .bind(agency)
    .bind(client)
    .bind(search.lead_id)
    .bind(search.text.as_deref())
    .bind(limit)
    .bind(offset)
    .fetch_all(c)
    .await)?)
}

/// The Flutterwave webhooks (payloads, newest first) of the client account that carry
/// `tx_ref`: where the link's customer is named.
pub async fn webhooks_for(tx: &mut Tx, client: ClientId, tx_ref: &TxRef) -> Result<Vec<String>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_scalar(
        "SELECT payload FROM inbound_events WHERE client_id = $1 AND source = 'flutterwave' \
         AND payload LIKE '%' || $2 || '%' ORDER BY received_at DESC LIMIT 5",
    )
    .bind(client)
    .bind(tx_ref)
    .fetch_all(c)
    .await)?)
}

/// Links per client account and state (failed ones left out): client, state, count.
pub async fn counts(tx: &mut Tx, agency: AgencyId) -> Result<Vec<(ClientId, LinkState, i64)>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        "SELECT l.client_id, l.state, COUNT(*) FROM payment_links l JOIN clients c ON c.id = l.client_id \
         WHERE c.agency_id = $1 AND l.state <> 'failed' GROUP BY l.client_id, l.state",
    )
    .bind(agency)
    .fetch_all(c)
    .await)?)
}

/// Every payment received, per client account and currency: client, currency, amounts (exact
/// decimal text, summed by the caller: SQLite has no exact decimal sum).
pub async fn paid(tx: &mut Tx, agency: AgencyId) -> Result<Vec<(ClientId, String, String)>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        "SELECT l.client_id, l.paid_currency, l.paid_amount FROM payment_links l \
         JOIN clients c ON c.id = l.client_id WHERE c.agency_id = $1 AND l.state = 'paid' \
         AND l.paid_amount IS NOT NULL AND l.paid_currency IS NOT NULL",
    )
    .bind(agency)
    .fetch_all(c)
    .await)?)
}

/// Whether the client account ever received a Flutterwave webhook it kept, other than the
/// tests pipepay sends itself (`tenants::test_event`: their references start `pipepay-test-`).
pub async fn flutterwave_heard(tx: &mut Tx, client: ClientId) -> Result<bool, StoreError> {
    let found: Option<i64> = on_tx!(tx, c => sqlx::query_scalar(
        "SELECT CAST(1 AS BIGINT) FROM inbound_events WHERE client_id = $1 AND source = 'flutterwave' \
         AND payload NOT LIKE '%pipepay-test-%' LIMIT 1",
    )
    .bind(client)
    .fetch_optional(c)
    .await)?;
    Ok(found.is_some())
}

/// The agency's client accounts that ever received a Flutterwave webhook they kept (tests
/// left out, as in [`flutterwave_heard`]).
pub async fn flutterwave_heard_by(tx: &mut Tx, agency: AgencyId) -> Result<Vec<ClientId>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_scalar(
        "SELECT DISTINCT e.client_id FROM inbound_events e JOIN clients c ON c.id = e.client_id \
         WHERE c.agency_id = $1 AND e.source = 'flutterwave' AND e.payload NOT LIKE '%pipepay-test-%'",
    )
    .bind(agency)
    .fetch_all(c)
    .await)?)
}

#[cfg(test)]
mod tests {
    use super::like_pattern;

    #[test]
    fn like_patterns_take_wildcards_literally() {
        assert_eq!(like_pattern("Wanjiru"), "%wanjiru%");
        assert_eq!(like_pattern("50%_off\\"), "%50\\%\\_off\\\\%");
    }
}
