//! A client account's payments: every deal's link with its state, amount, customer and times,
//! links to the deal in Kommo and to the checkout, a search and pages.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::{ClientHead, Opened, open, when};
use crate::connections;
use crate::error::{Error, Result};
use crate::state::AppState;
use crate::tenants::payments::{self, LinkState, Payment};
use crate::web::Page;
use crate::web::access::ClientPage;
use crate::web::view::{Chrome, grouped, page as render};

const PAGE: i64 = 25;

#[derive(Debug, Default, Deserialize)]
pub struct PaymentsQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    page: String,
}

pub struct Row {
    pub lead_id: i64,
    /// `https://{host}/leads/detail/{id}` when Kommo is connected.
    pub deal_url: Option<String>,
    pub customer: String,
    pub amount: String,
    pub currency: String,
    pub state: &'static str,
    pub tone: &'static str,
    pub checkout: Option<String>,
    pub tx_ref: String,
    pub created: String,
    pub paid: String,
}

#[derive(Template)]
#[template(path = "client_payments.html")]
pub struct PaymentsPage {
    chrome: Chrome,
    client: ClientHead,
    q: String,
    rows: Vec<Row>,
    page: i64,
    newer: Option<String>,
    older: Option<String>,
}

fn tone(state: LinkState) -> &'static str {
    match state {
        LinkState::Paid => "good",
        LinkState::Open | LinkState::Pending => "warn",
        LinkState::Expired | LinkState::Replaced | LinkState::Disabled => "none",
    }
}

fn row(payment: Payment, host: Option<&str>) -> Row {
    // Only a link a customer can still use is offered; a disabled one would only confuse.
    let usable = matches!(payment.state, LinkState::Open | LinkState::Paid);
    Row {
        deal_url: host.map(|h| format!("https://{h}/leads/detail/{}", payment.lead_id)),
        lead_id: payment.lead_id,
        customer: payment.customer.unwrap_or_default(),
        amount: grouped(&payment.amount),
        currency: payment.currency,
        state: payment.state.word(),
        tone: tone(payment.state),
        checkout: payment.checkout.filter(|_| usable),
        tx_ref: payment.tx_ref,
        created: when(payment.created_at),
        paid: payment.paid_at.map(when).unwrap_or_default(),
    }
}

async fn payments_page(state: &AppState, opened: &ClientPage, query: PaymentsQuery) -> Result<PaymentsPage> {
    let client = opened.client;
    let Opened { access, chrome, head, .. } = open(state, opened, "payments", None).await?;
    let host = match connections::status(&state.kommo, &access, client).await {
        Ok(view) => Some(view.host),
        Err(Error::NotFound) => None,
        Err(error) => return Err(error),
    };
    let page = query.page.trim().parse::<i64>().unwrap_or(1).clamp(1, 10_000);
    let search = payments::search(&query.q);
    // One more than a page: whether there is an older page, without counting them all.
    let mut found = payments::list(&state.db, &access, client, &search, PAGE + 1, (page - 1) * PAGE).await?;
    let more = i64::try_from(found.len()).unwrap_or(0) > PAGE;
    found.truncate(usize::try_from(PAGE).unwrap_or(25));
    let q = query.q.trim().to_owned();
    let address = |n: i64| {
        let mut pairs = url::form_urlencoded::Serializer::new(String::new());
        if !q.is_empty() {
            pairs.append_pair("q", &q);
        }
        pairs.append_pair("page", &n.to_string());
        format!("{}/payments?{}", head.base, pairs.finish())
    };
    let newer = (page > 1).then(|| address(page - 1));
    let older = more.then(|| address(page + 1));
    let rows = found.into_iter().map(|p| row(p, host.as_deref())).collect();
    Ok(PaymentsPage { chrome, client: head, q, rows, page, newer, older })
}

pub async fn page(
    State(state): State<AppState>,
    page: ClientPage,
    Query(query): Query<PaymentsQuery>,
) -> Response {
    render(payments_page(&state, &page, query).await.map(|p| Page::render(StatusCode::OK, &p)))
}

#[cfg(test)]
mod tests {
    use crate::web::view::grouped;

    #[test]
    fn amounts_group_thousands_and_keep_every_decimal() {
        assert_eq!(grouped("1234567.50"), "1,234,567.50");
        assert_eq!(grouped("999.99"), "999.99");
        assert_eq!(grouped("1000"), "1,000");
        assert_eq!(grouped("-12345.678"), "-12,345.678");
        assert_eq!(grouped("abc"), "abc");
    }
}
