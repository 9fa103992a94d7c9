//! Payment links pipepay issued, and the notes on their leads it must post only once.

use sqlx::{ColumnIndex, Decode, Row, Type};

use crate::ids::{ClientId, LeadId, TxRef};
use crate::money::Money;
use crate::on_tx;

use super::{StoreError, Tx};

#[derive(Debug, Clone)]
pub struct LinkRow {
    pub id: uuid::Uuid,
    pub client_id: ClientId,
    pub lead_id: LeadId,
    /// The Kommo pipeline the lead was in when the link was made (its deal is won there).
    pub pipeline_id: i64,
    pub tx_ref: TxRef,
    /// What the link asks for (columns `amount`, `currency`).
    pub price: Money,
    pub link: Option<String>,
    pub state: LinkState,
    pub note_posted_at: Option<i64>,
    pub field_written_at: Option<i64>,
    pub transaction_id: Option<i64>,
    /// What the payment that closed it paid (columns `paid_amount`, `paid_currency`).
    pub paid: Option<Money>,
    pub payment_type: Option<String>,
    pub flw_ref: Option<String>,
    pub closed_at: Option<i64>,
    pub paid_note_posted_at: Option<i64>,
    pub created_at: i64,
}

/// Read by hand because an amount is two columns. A stored amount that is no decimal fails the
/// read naming the column and the text: only pipepay writes these, so such text means the row
/// was damaged or written by something else, and guessing a price would charge or close wrong.
impl<'r, R> sqlx::FromRow<'r, R> for LinkRow
where
    R: Row,
    &'r str: ColumnIndex<R>,
    uuid::Uuid: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
{
    fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
        let price = price(row)?;
        Ok(LinkRow {
            id: row.try_get("id")?,
            client_id: row.try_get("client_id")?,
            lead_id: row.try_get("lead_id")?,
            pipeline_id: row.try_get("pipeline_id")?,
            tx_ref: row.try_get("tx_ref")?,
            price,
            link: row.try_get("link")?,
            state: row.try_get("state")?,
            note_posted_at: row.try_get("note_posted_at")?,
            field_written_at: row.try_get("field_written_at")?,
            transaction_id: row.try_get("transaction_id")?,
            paid: money(row, "paid_amount", "paid_currency")?,
            payment_type: row.try_get("payment_type")?,
            flw_ref: row.try_get("flw_ref")?,
            closed_at: row.try_get("closed_at")?,
            paid_note_posted_at: row.try_get("paid_note_posted_at")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

/// The amount stored as decimal text in one column and its currency in another; `None` when
/// neither is set. One without the other, or text that is no decimal, is an error naming the
/// column (as sqlx names one whose value it cannot decode).
pub(super) fn money<'r, R>(
    row: &'r R,
    amount: &'static str,
    currency: &'static str,
) -> Result<Option<Money>, sqlx::Error>
where
    R: Row,
    &'r str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
{
    let text: Option<String> = row.try_get(amount)?;
    let code: Option<String> = row.try_get(currency)?;
    match (text, code) {
        (None, None) => Ok(None),
        (Some(text), Some(code)) => match text.parse() {
            Ok(value) => Ok(Some(Money::new(value, code))),
            Err(_) => Err(decode_error(amount, format!("{text:?} is no decimal amount").into())),
        },
        (Some(text), None) => Err(decode_error(currency, format!("missing, with {amount} {text:?}").into())),
        (None, Some(code)) => Err(decode_error(amount, format!("missing, with {currency} {code:?}").into())),
    }
}

/// What a link asks for (`amount`, `currency`): never missing.
pub(super) fn price<'r, R>(row: &'r R) -> Result<Money, sqlx::Error>
where
    R: Row,
    &'r str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
{
    money(row, "amount", "currency")?
        .ok_or_else(|| decode_error("amount", "a link's amount is never missing".into()))
}

pub(super) fn decode_error(column: &str, source: sqlx::error::BoxDynError) -> sqlx::Error {
    sqlx::Error::ColumnDecode { index: format!("{column:?}"), source }
}

/// Every column of `LinkRow`, in order; one list for every query that reads a link.
macro_rules! link_columns {
    () => {
        "id, client_id, lead_id, pipeline_id, tx_ref, amount, currency, link, state, note_posted_at, \
         field_written_at, transaction_id, paid_amount, paid_currency, payment_type, flw_ref, closed_at, \
         paid_note_posted_at, created_at"
    };
}

crate::text_enum! {
    /// Where a link is in its life.
    pub enum LinkState {
        /// Recorded before Flutterwave is asked; never re-posted if the answer is lost.
        Creating = "creating",
        Open = "open",
        /// Flutterwave may or may not have created it (timeout, crash): never re-posted.
        Uncertain = "uncertain",
        Failed = "failed",
        /// Replaced by a link for a new amount, and disabled.
        Superseded = "superseded",
        /// The lead was lost; disabled.
        Cancelled = "cancelled",
        Paid = "paid",
    }
}

#[allow(clippy::too_many_arguments)]
pub async fn insert_creating(
    tx: &mut Tx,
    id: uuid::Uuid,
    client: ClientId,
    lead_id: LeadId,
    pipeline_id: i64,
    tx_ref: &TxRef,
    price: &Money,
    now: i64,
) -> Result<(), StoreError> {
    on_tx!(tx, c => sqlx::query(
        "INSERT INTO payment_links (id, client_id, lead_id, pipeline_id, tx_ref, amount, currency, state, \
         created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 'creating', $8, $8)",
    )
    .bind(id)
    .bind(client)
    .bind(lead_id)
    .bind(pipeline_id)
    .bind(tx_ref)
    .bind(price.amount_text())
    .bind(&price.currency)
    .bind(now)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// The lead's links that still matter (not failed), newest first.
pub async fn for_lead(tx: &mut Tx, client: ClientId, lead_id: LeadId) -> Result<Vec<LinkRow>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        concat!("SELECT ", link_columns!(), " FROM payment_links WHERE client_id = $1 AND lead_id = $2 AND state <> 'failed' \
         ORDER BY created_at DESC, id DESC"),
    )
    .bind(client)
    .bind(lead_id)
    .fetch_all(c)
    .await)?)
}

/// The client's link with this reference; another client's reference is simply not found.
pub async fn by_tx_ref(tx: &mut Tx, client: ClientId, tx_ref: &TxRef) -> Result<Option<LinkRow>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        concat!("SELECT ", link_columns!(), " FROM payment_links WHERE client_id = $1 AND tx_ref = $2"),
    )
    .bind(client)
    .bind(tx_ref)
    .fetch_optional(c)
    .await)?)
}

/// Open links created before `before`, least recently checked first (never checked: oldest
/// first): what reconciliation checks next.
pub async fn open_before(
    tx: &mut Tx,
    client: ClientId,
    before: i64,
    limit: i64,
) -> Result<Vec<LinkRow>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_as(
        concat!("SELECT ", link_columns!(), " FROM payment_links WHERE client_id = $1 AND state IN ('open', 'uncertain') AND created_at < $2 \
         ORDER BY COALESCE(checked_at, 0), created_at, id LIMIT $3"),
    )
    .bind(client)
    .bind(before)
    .bind(limit)
    .fetch_all(c)
    .await)?)
}

/// Reconciliation asked Flutterwave about this link (whatever came of it): it goes to the back
/// of the line.
pub async fn checked(tx: &mut Tx, id: uuid::Uuid, now: i64) -> Result<(), StoreError> {
    on_tx!(tx, c => sqlx::query("UPDATE payment_links SET checked_at = $2 WHERE id = $1")
        .bind(id)
        .bind(now)
        .execute(c)
        .await
        .map(drop))?;
    Ok(())
}

/// Client accounts with open links, those whose links waited longest for a check first, so
/// that past `limit` the next run reaches the others.
pub async fn clients_with_open_links(tx: &mut Tx, limit: i64) -> Result<Vec<ClientId>, StoreError> {
    Ok(on_tx!(tx, c => sqlx::query_scalar(
        "SELECT client_id FROM payment_links WHERE state IN ('open', 'uncertain') \
         GROUP BY client_id ORDER BY MIN(COALESCE(checked_at, 0)), client_id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(c)
    .await)?)
}

pub async fn set_state(tx: &mut Tx, id: uuid::Uuid, state: LinkState, now: i64) -> Result<(), StoreError> {
    on_tx!(tx, c => sqlx::query("UPDATE payment_links SET state = $2, updated_at = $3 WHERE id = $1")
        .bind(id)
        .bind(state)
        .bind(now)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(())
}

pub async fn opened(tx: &mut Tx, id: uuid::Uuid, link: &str, now: i64) -> Result<(), StoreError> {
    on_tx!(tx, c => sqlx::query(
        "UPDATE payment_links SET state = 'open', link = $2, updated_at = $3 WHERE id = $1 AND state = 'creating'",
    )
    .bind(id)
    .bind(link)
    .bind(now)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Stamps one of the link's once-only steps as done.
pub async fn mark(tx: &mut Tx, id: uuid::Uuid, step: Step, now: i64) -> Result<(), StoreError> {
    match step {
        Step::Note => {
            on_tx!(tx, c => sqlx::query("UPDATE payment_links SET note_posted_at = $2, updated_at = $2 WHERE id = $1")
            .bind(id).bind(now).execute(c).await.map(|r| r.rows_affected()))?
        }
        Step::Field => {
            on_tx!(tx, c => sqlx::query("UPDATE payment_links SET field_written_at = $2, updated_at = $2 WHERE id = $1")
            .bind(id).bind(now).execute(c).await.map(|r| r.rows_affected()))?
        }
        Step::PaidNote => {
            on_tx!(tx, c => sqlx::query("UPDATE payment_links SET paid_note_posted_at = $2, updated_at = $2 WHERE id = $1")
            .bind(id).bind(now).execute(c).await.map(|r| r.rows_affected()))?
        }
    };
    Ok(())
}

/// A note sent before: its words and when (ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub text: String,
    pub at: i64,
}

pub(super) fn attempt_of(row: Option<(Option<String>, Option<i64>)>) -> Option<Attempt> {
    match row {
        Some((Some(text), Some(at))) => Some(Attempt { text, at }),
        _ => None,
    }
}

/// A link's note (`Note` or `PaidNote`) is about to be sent as `text`: records it as the
/// attempt unless one was made before, and returns that earlier attempt if so (it may have
/// reached Kommo).
pub async fn attempt(
    tx: &mut Tx,
    id: uuid::Uuid,
    step: Step,
    text: &str,
    now: i64,
) -> Result<Option<Attempt>, StoreError> {
    let (read, write): (&'static str, &'static str) = match step {
        Step::Note => (
            "SELECT note_attempt, note_attempted_at FROM payment_links WHERE id = $1",
            "UPDATE payment_links SET note_attempt = $2, note_attempted_at = $3 \
             WHERE id = $1 AND note_attempt IS NULL",
        ),
        Step::PaidNote => (
            "SELECT paid_note_attempt, paid_note_attempted_at FROM payment_links WHERE id = $1",
            "UPDATE payment_links SET paid_note_attempt = $2, paid_note_attempted_at = $3 \
             WHERE id = $1 AND paid_note_attempt IS NULL",
        ),
        Step::Field => return Ok(None),
    };
    let earlier = on_tx!(tx, c => sqlx::query_as(read).bind(id).fetch_optional(c).await)?;
    on_tx!(tx, c => sqlx::query(write).bind(id).bind(text).bind(now).execute(c).await.map(drop))?;
    Ok(attempt_of(earlier))
}

#[derive(Debug, Clone, Copy)]
pub enum Step {
    Note,
    Field,
    PaidNote,
}

/// Records the closing payment. Only the first one counts: a link is paid once.
#[allow(clippy::too_many_arguments)]
pub async fn paid(
    tx: &mut Tx,
    id: uuid::Uuid,
    transaction_id: i64,
    paid: &Money,
    payment_type: &str,
    flw_ref: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let done = on_tx!(tx, c => sqlx::query(
        "UPDATE payment_links SET state = 'paid', transaction_id = $2, paid_amount = $3, paid_currency = $4, \
         payment_type = $5, flw_ref = $6, closed_at = $7, updated_at = $7 WHERE id = $1 AND state <> 'paid'",
    )
    .bind(id)
    .bind(transaction_id)
    .bind(paid.amount.to_string())
    .bind(&paid.currency)
    .bind(payment_type)
    .bind(flw_ref)
    .bind(now)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

/// Whether any link of the lead is paid: a won deal is never reopened by later events.
pub async fn lead_is_paid(tx: &mut Tx, client: ClientId, lead_id: LeadId) -> Result<bool, StoreError> {
    let found: Option<i64> = on_tx!(tx, c => sqlx::query_scalar(
        "SELECT CAST(1 AS BIGINT) FROM payment_links WHERE client_id = $1 AND lead_id = $2 AND state = 'paid' LIMIT 1",
    )
    .bind(client)
    .bind(lead_id)
    .fetch_optional(c)
    .await)?;
    Ok(found.is_some())
}
