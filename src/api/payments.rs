//! `/api/v1/agencies/{agency}/clients/{client}/payments` and `/api/v1/agencies/{agency}/payments/totals`:
//! the payments view and the agency home's totals, as JSON over `tenants::payments`.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::clock::rfc3339;
use crate::connections;
use crate::error::{Error, Result};
use crate::extract::{AgencyAccess, ClientAccess};
use crate::ids::ClientId;
use crate::problem::Problem;
use crate::state::AppState;
use crate::tenants::payments::{self, LinkState, Payment};

/// Links per page, as on the payments page.
const PER_PAGE: i64 = 25;
/// The last page one may ask for: paging is by offset, and deep offsets are slow scans.
const LAST_PAGE: i64 = 10_000;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list)).routes(routes!(totals))
}

/// Query values as typed, checked here so that a bad one is a 422 naming its field.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PaymentsQuery {
    /// Words found in the payment reference or the customer's name or email. A whole number is
    /// a Kommo deal id when the client account has a link for that deal, else it is searched
    /// as words (the tail of a reference can be all digits).
    pub q: Option<String>,
    /// The page, from 1 (newest first, 25 a page).
    pub page: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PaymentView {
    pub lead_id: i64,
    /// The deal in Kommo, when Kommo is connected.
    pub deal_url: Option<String>,
    /// The payment reference pipepay gave Flutterwave.
    pub tx_ref: String,
    /// pending, open, paid, replaced, disabled or expired.
    pub state: String,
    /// Exact decimal text in the currency's decimals: what was asked for, or once paid what
    /// was paid.
    #[schema(example = "1075.00")]
    pub amount: String,
    pub currency: String,
    /// Flutterwave's hosted checkout; only an open or paid link's can still be used (the page
    /// offers no other).
    pub checkout: Option<String>,
    /// "name <email>" from Flutterwave's webhook about the link, when one came.
    pub customer: Option<String>,
    pub created_at: String,
    pub paid_at: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PaymentsPage {
    pub page: i64,
    /// Whether an older page exists.
    pub more: bool,
    pub payments: Vec<PaymentView>,
}

fn view(payment: Payment, host: Option<&str>) -> PaymentView {
    PaymentView {
        deal_url: host.map(|h| format!("https://{h}/leads/detail/{}", payment.lead_id)),
        lead_id: payment.lead_id,
        tx_ref: payment.tx_ref,
        state: payment.state.word().to_owned(),
        amount: payment.amount,
        currency: payment.currency,
        checkout: payment.checkout,
        customer: payment.customer,
        created_at: rfc3339(payment.created_at),
        paid_at: payment.paid_at.map(rfc3339),
    }
}

fn page_of(text: Option<&str>) -> Result<i64> {
    let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else { return Ok(1) };
    match text.parse::<i64>() {
        Ok(page) if (1..=LAST_PAGE).contains(&page) => Ok(page),
        _ => Err(Error::invalid("page", format!("must be a whole number from 1 to {LAST_PAGE}"))),
    }
}

/// The client account's payment links, newest first, with a search.
#[utoipa::path(get, path = "/api/v1/agencies/{agency}/clients/{client}/payments", tag = "payments",
    params(("agency" = String, Path, format = Uuid), ("client" = String, Path, format = Uuid), PaymentsQuery),
    responses((status = 200, body = PaymentsPage), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn list(
    State(state): State<AppState>,
    ClientAccess { access, client, .. }: ClientAccess,
    Query(query): Query<PaymentsQuery>,
) -> Result<Json<PaymentsPage>> {
    let page = page_of(query.page.as_deref())?;
    let search = payments::search(query.q.as_deref().unwrap_or_default());
    // One more than a page says whether there is an older one, without counting them all.
    let mut found =
        payments::list(&state.db, &access, client, &search, PER_PAGE + 1, (page - 1) * PER_PAGE).await?;
    let more = i64::try_from(found.len()).unwrap_or(0) > PER_PAGE;
    found.truncate(usize::try_from(PER_PAGE).unwrap_or(25));
    let host = match connections::status(&state.kommo, &access, client).await {
        Ok(connection) => Some(connection.host),
        Err(Error::NotFound) => None,
        Err(error) => return Err(error),
    };
    let payments = found.into_iter().map(|p| view(p, host.as_deref())).collect();
    Ok(Json(PaymentsPage { page, more, payments }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PaidTotal {
    pub currency: String,
    /// Exact decimal text.
    #[schema(example = "1245.00")]
    pub amount: String,
    pub payments: usize,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ClientTotals {
    #[schema(value_type = String, format = Uuid)]
    pub client_id: ClientId,
    /// Links by state (pending, open, paid, replaced, disabled; an expired link counts as open).
    pub links: BTreeMap<String, i64>,
    /// Paid ever, per currency.
    pub paid: Vec<PaidTotal>,
}

/// Every client account's links and payments in numbers (client accounts with no links are
/// left out).
#[utoipa::path(get, path = "/api/v1/agencies/{agency}/payments/totals", tag = "payments",
    params(("agency" = String, Path, format = Uuid)),
    responses((status = 200, body = Vec<ClientTotals>), (status = 404, body = Problem)))]
async fn totals(
    State(state): State<AppState>,
    AgencyAccess { access, .. }: AgencyAccess,
) -> Result<Json<Vec<ClientTotals>>> {
    let mut all: Vec<ClientTotals> = payments::totals(&state.db, &access)
        .await?
        .into_iter()
        .map(|(client_id, totals)| {
            let mut links = BTreeMap::new();
            for (stored, count) in totals.links {
                *links.entry(LinkState::of(stored, 0, None, 0).word().to_owned()).or_insert(0) += count;
            }
            let paid = totals
                .paid
                .into_iter()
                .map(|(currency, (sum, payments))| PaidTotal {
                    amount: crate::money::format(&currency, sum),
                    currency,
                    payments,
                })
                .collect();
            ClientTotals { client_id, links, paid }
        })
        .collect();
    all.sort_by_key(|t| t.client_id);
    Ok(Json(all))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_whole_numbers_in_range() {
        assert_eq!(page_of(None).ok(), Some(1));
        assert_eq!(page_of(Some(" ")).ok(), Some(1));
        assert_eq!(page_of(Some("3")).ok(), Some(3));
        for bad in ["0", "-1", "two", "10001"] {
            assert!(matches!(page_of(Some(bad)), Err(Error::Invalid(e)) if e[0].field == "page"), "{bad}");
        }
    }
}
