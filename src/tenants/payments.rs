//! A client account's payment links as people follow them (one state word each, the customer,
//! a search), and every client account's totals for the agency home.

use std::collections::{BTreeMap, HashMap};

use rust_decimal::Decimal;
use serde_json::Value;

use crate::auth::Access;
use crate::clock::now_ms;
use crate::error::Result;
use crate::ids::ClientId;
use crate::store::links::LinkState as Stored;
use crate::store::payments::{PaymentRow, Search, like_pattern};
use crate::store::{self, Db};

/// A link's state as the payments view words it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Being made, or Flutterwave's answer was lost: no link to pay yet.
    Pending,
    Open,
    Paid,
    /// A new amount on the deal made a new link; this one was disabled.
    Replaced,
    /// The deal was lost; the link was disabled.
    Disabled,
    /// Open, but older than the checkout's session duration: the customer cannot pay it.
    Expired,
}

impl LinkState {
    pub fn word(self) -> &'static str {
        match self {
            LinkState::Pending => "pending",
            LinkState::Open => "open",
            LinkState::Paid => "paid",
            LinkState::Replaced => "replaced",
            LinkState::Disabled => "disabled",
            LinkState::Expired => "expired",
        }
    }

    /// `store::links::state` in words; `lifetime_ms` is the checkout's session duration, if set.
    pub fn of(stored: Stored, created_at: i64, lifetime_ms: Option<i64>, now: i64) -> LinkState {
        match stored {
            Stored::Paid => LinkState::Paid,
            Stored::Superseded => LinkState::Replaced,
            Stored::Cancelled => LinkState::Disabled,
            Stored::Open if lifetime_ms.is_some_and(|life| created_at.saturating_add(life) < now) => {
                LinkState::Expired
            }
            Stored::Open => LinkState::Open,
            Stored::Creating | Stored::Uncertain | Stored::Failed => LinkState::Pending,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Payment {
    pub lead_id: i64,
    pub tx_ref: String,
    pub state: LinkState,
    /// Asked for, or once paid what was paid: exact decimal text in the currency's decimals.
    pub amount: String,
    pub currency: String,
    pub checkout: Option<String>,
    /// Name and email from Flutterwave's webhook about this link, when one came.
    pub customer: Option<String>,
    pub created_at: i64,
    pub paid_at: Option<i64>,
}

/// A search box's words: a reference, or a customer's name or email. A whole number is a Kommo
/// deal id when the account has a link for that deal, and is looked for as text otherwise: the
/// tail of a reference can be all digits (`store::payments::list`).
pub fn search(text: &str) -> Search {
    let text = text.trim();
    if text.is_empty() {
        return Search::default();
    }
    Search { lead_id: text.parse::<i64>().ok(), text: Some(like_pattern(text)) }
}

/// `data.customer` (v3, v4) or `customer` (the flat legacy shape): "name <email>".
fn customer_of(payload: &str) -> Option<String> {
    let body: Value = serde_json::from_str(payload).ok()?;
    let customer = body.pointer("/data/customer").or_else(|| body.get("customer"))?;
    let text = |key: &str| customer.get(key).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty());
    let name = text("name").or_else(|| text("fullName"));
    let email = text("email");
    match (name, email) {
        (Some(name), Some(email)) => Some(format!("{name} <{email}>")),
        (Some(one), None) | (None, Some(one)) => Some(one.to_owned()),
        (None, None) => None,
    }
}

/// One page of the client account's links, newest first: `limit` (1-200) from `offset`.
pub async fn list(
    db: &Db,
    access: &Access,
    client: ClientId,
    search: &Search,
    limit: i64,
    offset: i64,
) -> Result<Vec<Payment>> {
    // Also the ownership check: another agency's client account is a 404.
    let settings = super::clients::get(db, access, client).await?.settings;
    let lifetime = settings.checkout.session_duration_minutes.map(|m| i64::from(m) * 60_000);
    let mut tx = db.read().await?;
    let rows: Vec<PaymentRow> =
        store::payments::list(&mut tx, access.agency, client, search, limit.clamp(1, 200), offset.max(0))
            .await?;
    let now = now_ms();
    let mut payments = Vec::with_capacity(rows.len());
    for row in rows {
        let mut customer = None;
        for payload in store::payments::webhooks_for(&mut tx, client, &row.tx_ref).await? {
            customer = customer_of(&payload);
            if customer.is_some() {
                break;
            }
        }
        let paid = row.state == Stored::Paid;
        let shown = match (paid, row.paid) {
            (true, Some(paid)) => paid,
            _ => row.price,
        };
        payments.push(Payment {
            lead_id: row.lead_id.0,
            state: LinkState::of(row.state, row.created_at, lifetime, now),
            // What Flutterwave reported is stored as it said it (`123456.5`).
            amount: shown.amount_text(),
            currency: shown.currency,
            checkout: row.link,
            customer,
            created_at: row.created_at,
            paid_at: if paid { row.closed_at } else { None },
            tx_ref: row.tx_ref.0,
        });
    }
    tx.commit().await?;
    Ok(payments)
}

/// Every client account's links in numbers, for the agency home.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    /// Links by stored state.
    pub links: HashMap<Stored, i64>,
    /// Paid ever, per currency: (total, payments).
    pub paid: BTreeMap<String, (Decimal, usize)>,
}

pub async fn totals(db: &Db, access: &Access) -> Result<HashMap<ClientId, Totals>> {
    let mut tx = db.read().await?;
    let counts = store::payments::counts(&mut tx, access.agency).await?;
    let paid = store::payments::paid(&mut tx, access.agency).await?;
    tx.commit().await?;
    let mut totals: HashMap<ClientId, Totals> = HashMap::new();
    for (client, state, count) in counts {
        totals.entry(client).or_default().links.insert(state, count);
    }
    for (client, currency, amount) in paid {
        // Stored as exact decimal text by the pipeline; a row that does not parse is skipped
        // rather than guessed at.
        let Ok(amount) = amount.parse::<Decimal>() else { continue };
        let sum = totals.entry(client).or_default().paid.entry(currency).or_insert((Decimal::ZERO, 0));
        sum.0 += amount;
        sum.1 += 1;
    }
    Ok(totals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_states_read_as_words_and_open_links_expire_with_the_session() {
        let hour = 3_600_000;
        assert_eq!(LinkState::of(Stored::Open, 0, None, 10 * hour), LinkState::Open);
        assert_eq!(LinkState::of(Stored::Open, 0, Some(hour), 10 * hour), LinkState::Expired);
        assert_eq!(LinkState::of(Stored::Open, 0, Some(hour), hour / 2), LinkState::Open);
        assert_eq!(LinkState::of(Stored::Superseded, 0, None, 0).word(), "replaced");
        assert_eq!(LinkState::of(Stored::Cancelled, 0, None, 0).word(), "disabled");
        assert_eq!(LinkState::of(Stored::Uncertain, 0, None, 0).word(), "pending");
        assert_eq!(LinkState::of(Stored::Paid, 0, Some(1), hour).word(), "paid");
    }

    #[test]
    fn customers_come_from_every_webhook_shape() {
        let v3 = r#"{"event":"charge.completed","data":{"tx_ref":"pp-1","customer":{"name":"Yemi Desola","email":"user@gmail.com"}}}"#;
        assert_eq!(customer_of(v3).as_deref(), Some("Yemi Desola <user@gmail.com>"));
        let legacy = r#"{"txRef":"pp-1","customer":{"fullName":"Anonymous customer","email":null}}"#;
        assert_eq!(customer_of(legacy).as_deref(), Some("Anonymous customer"));
        assert_eq!(customer_of("not json"), None);
    }

    #[test]
    fn a_whole_number_searches_deals_and_words_search_the_rest() {
        assert_eq!(search(" 501 ").lead_id, Some(501));
        assert_eq!(search(" 501 ").text.as_deref(), Some("%501%"), "a number is also looked for as text");
        assert_eq!(search("Wanjiru").text.as_deref(), Some("%wanjiru%"));
        assert!(search("  ").lead_id.is_none() && search("").text.is_none());
    }
}
