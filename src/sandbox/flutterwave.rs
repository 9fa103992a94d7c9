//! The sandbox Flutterwave: one test-mode merchant whose keys its dashboard page shows, where
//! the webhook URL and secret hash are set as in Flutterwave's Settings > Webhooks; the v3 calls
//! pipepay makes (key check, hosted links, disabling one, verify by id and by reference); and a
//! checkout page whose "Pay" records a successful transaction and posts `charge.completed` with
//! the merchant's hash in `verif-hash`, as Flutterwave does (flutterwave.md).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Sandbox, bearer, esc, page, random_hex, see_other};

/// The merchant's keys, shown on the dashboard page to paste into pipepay.
pub struct Merchant {
    pub secret_key: String,
    pub public_key: String,
}

impl Default for Merchant {
    fn default() -> Merchant {
        Merchant {
            secret_key: format!("FLWSECK_TEST-{}-X", random_hex()),
            public_key: format!("FLWPUBK_TEST-{}-X", random_hex()),
        }
    }
}

#[derive(Default)]
pub struct Books {
    webhook_url: String,
    webhook_hash: String,
    /// Hosted links by their id (the last part of the link).
    links: HashMap<String, Link>,
    transactions: Vec<Transaction>,
}

struct Link {
    tx_ref: String,
    amount: Value,
    currency: String,
    customer_name: String,
    customer_email: String,
    title: String,
    redirect_url: Option<String>,
    disabled: bool,
    paid: bool,
}

#[derive(Clone)]
struct Transaction {
    id: i64,
    tx_ref: String,
    amount: Value,
    currency: String,
    customer_name: String,
    customer_email: String,
    created_at: String,
}

impl Transaction {
    fn json(&self) -> Value {
        json!({
            "id": self.id, "tx_ref": self.tx_ref, "flw_ref": format!("SANDBOX/FLW{}", self.id),
            "amount": self.amount, "currency": self.currency, "charged_amount": self.amount,
            "app_fee": 0, "merchant_fee": 0, "processor_response": "Approved (sandbox)",
            "status": "successful", "payment_type": "card", "created_at": self.created_at,
            "customer": { "id": self.id + 1, "name": self.customer_name, "email": self.customer_email,
                          "phone_number": null, "created_at": self.created_at }
        })
    }
}

pub fn router(sandbox: Arc<Sandbox>) -> Router {
    let api = "/sandbox/flutterwave-api/v3";
    // Every v3 call checks the secret key first, as Flutterwave does.
    let v3 = Router::new()
        .route(&format!("{api}/banks/{{country}}"), get(banks))
        .route(&format!("{api}/payments"), post(create_payment))
        .route(&format!("{api}/payments/link/disable"), post(disable_link))
        .route(&format!("{api}/transactions/verify_by_reference"), get(verify_by_reference))
        .route(&format!("{api}/transactions/{{id}}/verify"), get(verify))
        .route_layer(middleware::from_fn_with_state(sandbox.clone(), secret_key_only));
    Router::new()
        .route("/sandbox/flutterwave", get(dashboard))
        .route("/sandbox/flutterwave/webhook", post(set_webhook))
        .route("/sandbox/flutterwave/pay/{link}", get(checkout).post(pay))
        .merge(v3)
        .with_state(sandbox)
}

// ---- the pages -------------------------------------------------------------------------------

async fn dashboard(State(sandbox): State<Arc<Sandbox>>) -> Response {
    let world = sandbox.world();
    let state = &world.flutterwave;
    let mut body = format!(
        "<section class=\"card\"><h2>API keys (test mode)</h2>\
         <p>Paste these on the client account's page in pipepay, under Flutterwave keys.</p>\
         <label for=\"secret-key\">Secret key</label><input id=\"secret-key\" value=\"{}\" readonly>\
         <label for=\"public-key\">Public key</label><input id=\"public-key\" value=\"{}\" readonly></section>",
        esc(&sandbox.merchant.secret_key),
        esc(&sandbox.merchant.public_key),
    );
    body.push_str(&format!(
        "<section class=\"card\"><h2>Webhooks</h2>\
         <p>After saving the keys, pipepay shows a webhook URL and a secret hash: paste both here, as you would \
         under Settings &gt; Webhooks in Flutterwave's dashboard.</p>\
         <form method=\"post\" action=\"/sandbox/flutterwave/webhook\">\
         <label for=\"url\">URL</label><input id=\"url\" name=\"url\" value=\"{}\">\
         <label for=\"hash\">Secret hash</label><input id=\"hash\" name=\"hash\" value=\"{}\">\
         <button type=\"submit\">Save webhook settings</button></form></section>",
        esc(&state.webhook_url),
        esc(&state.webhook_hash),
    ));
    body.push_str("<section class=\"card\"><h2>Transactions</h2>");
    if state.transactions.is_empty() {
        body.push_str("<p>None yet.</p>");
    }
    for tx in &state.transactions {
        body.push_str(&format!(
            "<p class=\"transaction\">#{} · {} {} · {} · successful</p>",
            tx.id,
            esc(&tx.currency),
            esc(&amount_text(&tx.amount)),
            esc(&tx.tx_ref)
        ));
    }
    body.push_str("</section>");
    page("Flutterwave", "Dashboard", &body)
}

fn amount_text(amount: &Value) -> String {
    amount.as_str().map_or_else(|| amount.to_string(), str::to_owned)
}

#[derive(Deserialize)]
struct WebhookForm {
    url: String,
    hash: String,
}

async fn set_webhook(State(sandbox): State<Arc<Sandbox>>, Form(form): Form<WebhookForm>) -> Response {
    let mut world = sandbox.world();
    world.flutterwave.webhook_url = form.url.trim().to_owned();
    world.flutterwave.webhook_hash = form.hash.trim().to_owned();
    see_other("/sandbox/flutterwave")
}

async fn checkout(State(sandbox): State<Arc<Sandbox>>, Path(link): Path<String>) -> Response {
    let world = sandbox.world();
    let Some(found) = world.flutterwave.links.get(&link) else {
        return page("Flutterwave", "No such payment link", "<p>This link does not exist.</p>");
    };
    if found.disabled || found.paid {
        let why =
            if found.paid { "This link has been paid." } else { "This payment link is currently inactive." };
        return page("Flutterwave", "Payment link inactive", &format!("<p id=\"inactive\">{why}</p>"));
    }
    let body = format!(
        "<section class=\"card\"><h2>{title}</h2><p>Amount: <strong id=\"amount\">{currency} {amount}</strong></p>\
         <p>Customer: {name} ({email})</p>\
         <form method=\"post\" action=\"/sandbox/flutterwave/pay/{link}\"><button type=\"submit\">Pay {currency} {amount}</button></form>\
         <p class=\"help\">Nothing is charged: the sandbox records a successful test card payment.</p></section>",
        title = esc(&found.title),
        currency = esc(&found.currency),
        amount = esc(&amount_text(&found.amount)),
        name = esc(&found.customer_name),
        email = esc(&found.customer_email),
        link = esc(&link),
    );
    page("Flutterwave", "Checkout", &body)
}

/// A successful payment: the transaction is recorded, the merchant's webhook told, and the
/// customer sent to the link's redirect URL with Flutterwave's query parameters.
async fn pay(State(sandbox): State<Arc<Sandbox>>, Path(link): Path<String>) -> Response {
    let (transaction, redirect, url, hash) = {
        let mut world = sandbox.world();
        let state = &mut world.flutterwave;
        let next_id = 700_000_000 + i64::try_from(state.transactions.len()).unwrap_or(0) + 1;
        let Some(found) = state.links.get_mut(&link).filter(|l| !l.disabled && !l.paid) else {
            return page(
                "Flutterwave",
                "Payment link inactive",
                "<p id=\"inactive\">This payment link is currently inactive.</p>",
            );
        };
        found.paid = true;
        let transaction = Transaction {
            id: next_id,
            tx_ref: found.tx_ref.clone(),
            amount: found.amount.clone(),
            currency: found.currency.clone(),
            customer_name: found.customer_name.clone(),
            customer_email: found.customer_email.clone(),
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        };
        let redirect = found.redirect_url.clone();
        state.transactions.push(transaction.clone());
        (transaction, redirect, state.webhook_url.clone(), state.webhook_hash.clone())
    };
    let delivered = if url.is_empty() {
        "No webhook URL is set on the sandbox dashboard, so pipepay was not told; its reconciliation will find \
         the payment later."
            .to_owned()
    } else {
        let event = json!({ "event": "charge.completed", "data": transaction.json() });
        match sandbox.http.post(&url).header("verif-hash", &hash).json(&event).send().await {
            Ok(answer) => format!("The webhook was delivered; pipepay answered {}.", answer.status()),
            Err(error) => format!("The webhook could not be delivered: {error}."),
        }
    };
    if let Some(redirect) = redirect.filter(|r| r.starts_with("http")) {
        let separator = if redirect.contains('?') { '&' } else { '?' };
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("status", "successful")
            .append_pair("tx_ref", &transaction.tx_ref)
            .append_pair("transaction_id", &transaction.id.to_string())
            .finish();
        return see_other(&format!("{redirect}{separator}{query}"));
    }
    let body = format!(
        "<p class=\"card ok\" id=\"paid\">Paid: {} {} (transaction {}).</p><p>{}</p>\
         <p><a href=\"/sandbox/kommo\">Back to the sandbox deal board</a></p>",
        esc(&transaction.currency),
        esc(&amount_text(&transaction.amount)),
        transaction.id,
        esc(&delivered)
    );
    page("Flutterwave", "Payment successful", &body)
}

// ---- the API ---------------------------------------------------------------------------------

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "status": "error", "message": message, "data": null }))).into_response()
}

/// Flutterwave's 401 envelope, unless the bearer token is the merchant's secret key.
async fn secret_key_only(State(sandbox): State<Arc<Sandbox>>, request: Request, next: Next) -> Response {
    if bearer(request.headers()) != sandbox.merchant.secret_key {
        return error(StatusCode::UNAUTHORIZED, "Authorization required");
    }
    next.run(request).await
}

async fn banks() -> Response {
    Json(json!({ "status": "success", "message": "Banks fetched successfully",
                 "data": [{ "id": 1, "code": "044", "name": "Sandbox Bank" }] }))
    .into_response()
}

async fn create_payment(State(sandbox): State<Arc<Sandbox>>, Json(body): Json<Value>) -> Response {
    let text = |v: &Value| v.as_str().map(str::to_owned);
    let (Some(tx_ref), Some(currency)) = (text(&body["tx_ref"]), text(&body["currency"])) else {
        return error(StatusCode::BAD_REQUEST, "tx_ref and currency are required");
    };
    if body["amount"].is_null() {
        return error(StatusCode::BAD_REQUEST, "amount is required");
    }
    let id = format!("sbxlnk-{}", random_hex());
    let link = Link {
        tx_ref,
        amount: body["amount"].clone(),
        currency,
        customer_name: text(&body["customer"]["name"]).unwrap_or_default(),
        customer_email: text(&body["customer"]["email"]).unwrap_or_default(),
        title: text(&body["customizations"]["title"]).unwrap_or_else(|| "Payment".into()),
        redirect_url: text(&body["redirect_url"]),
        disabled: false,
        paid: false,
    };
    sandbox.world().flutterwave.links.insert(id.clone(), link);
    Json(json!({ "status": "success", "message": "Hosted Link",
                 "data": { "link": sandbox.url(&format!("sandbox/flutterwave/pay/{id}")) } }))
    .into_response()
}

async fn disable_link(State(sandbox): State<Arc<Sandbox>>, Json(body): Json<Value>) -> Response {
    let id = body["link"].as_str().and_then(|l| l.rsplit('/').next()).unwrap_or_default().to_owned();
    let mut world = sandbox.world();
    match world.flutterwave.links.get_mut(&id).filter(|l| !l.disabled) {
        Some(link) => {
            link.disabled = true;
            Json(json!({ "status": "success", "message": "Payment link disabled", "data": { "link": body["link"] } }))
                .into_response()
        }
        None => error(StatusCode::BAD_REQUEST, "This payment link is currently inactive"),
    }
}

async fn verify(State(sandbox): State<Arc<Sandbox>>, Path(id): Path<i64>) -> Response {
    let world = sandbox.world();
    fetched(world.flutterwave.transactions.iter().find(|t| t.id == id))
}

#[derive(Deserialize)]
struct ByReference {
    tx_ref: String,
}

async fn verify_by_reference(
    State(sandbox): State<Arc<Sandbox>>,
    Query(query): Query<ByReference>,
) -> Response {
    let world = sandbox.world();
    fetched(world.flutterwave.transactions.iter().rev().find(|t| t.tx_ref == query.tx_ref))
}

/// Both verify calls answer alike, including the "for this id" wording when a reference misses.
fn fetched(tx: Option<&Transaction>) -> Response {
    match tx {
        Some(tx) => Json(
            json!({ "status": "success", "message": "Transaction fetched successfully", "data": tx.json() }),
        )
        .into_response(),
        None => error(StatusCode::BAD_REQUEST, "No transaction was found for this id"),
    }
}
