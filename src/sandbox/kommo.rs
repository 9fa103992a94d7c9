//! The sandbox Kommo: one account with a sales pipeline and a few deals, its consent page, the
//! token endpoint (single-use codes, refresh tokens that rotate), the v4 API calls pipepay
//! makes, webhook subscriptions, and a deal board whose moves post form-encoded v2 webhooks
//! to the subscribed URLs, unsigned as Kommo's are (kommo.md §3).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Sandbox, bearer, esc, now_secs, page, random_hex, see_other};

/// The sandbox account's host, as the OAuth `referer` names it.
pub const ACCOUNT_HOST: &str = "pipepay-sandbox.kommo.com";
const ACCOUNT_ID: i64 = 31_000_001;
const SUBDOMAIN: &str = "pipepay-sandbox";
const PIPELINE: i64 = 9001;
/// Stages of the one pipeline; 142 and 143 are Kommo's fixed "won" and "lost" ids.
const STAGES: [(i64, &str); 5] = [
    (9101, "Incoming"),
    (9102, "Proposal sent"),
    (9103, "Awaiting payment"),
    (142, "Closed - won"),
    (143, "Closed - lost"),
];
const TOKEN_LIFETIME_SECS: i64 = 86_400;
/// Kommo's codes last 20 minutes.
const CODE_LIFETIME_SECS: i64 = 20 * 60;

#[derive(Default)]
pub struct Books {
    leads: BTreeMap<i64, Lead>,
    contacts: HashMap<i64, Contact>,
    notes: Vec<Note>,
    webhooks: Vec<String>,
    /// code -> expires at
    codes: HashMap<String, i64>,
    /// access token -> expires at
    access: HashMap<String, i64>,
    /// The refresh tokens still valid; each is used once.
    refresh: Vec<String>,
    next_id: i64,
}

struct Lead {
    id: i64,
    name: String,
    price: i64,
    status_id: i64,
    contact_id: i64,
    updated_at: i64,
    fields: BTreeMap<i64, String>,
}

struct Contact {
    name: String,
    email: String,
    phone: String,
}

struct Note {
    id: i64,
    lead_id: i64,
    text: String,
    created_at: i64,
}

impl Books {
    fn next(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }

    fn add_lead(&mut self, name: &str, price: i64, contact: Contact) -> i64 {
        let contact_id = self.next() + 50_000;
        self.contacts.insert(contact_id, contact);
        let id = self.next() + 10_000;
        self.leads.insert(
            id,
            Lead {
                id,
                name: name.into(),
                price,
                status_id: STAGES[0].0,
                contact_id,
                updated_at: now_secs(),
                fields: BTreeMap::new(),
            },
        );
        id
    }
}

pub fn seed(state: &mut Books) {
    let contact = |name: &str, email: &str, phone: &str| Contact {
        name: name.into(),
        email: email.into(),
        phone: phone.into(),
    };
    state.add_lead(
        "Website redesign",
        25_000,
        contact("Amina Wanjiru", "amina@example.com", "+254700000001"),
    );
    state.add_lead(
        "Annual support plan",
        120_000,
        contact("Kofi Mensah", "kofi@example.com", "+233200000002"),
    );
}

pub fn router(sandbox: Arc<Sandbox>) -> Router {
    let api = "/sandbox/kommo-api/{host}";
    // Every v4 call checks the bearer token and account host first, as Kommo does.
    let v4 = Router::new()
        .route(&format!("{api}/api/v4/account"), get(account))
        .route(&format!("{api}/api/v4/leads/pipelines"), get(pipelines))
        .route(&format!("{api}/api/v4/leads/custom_fields"), get(custom_fields))
        .route(&format!("{api}/api/v4/leads/notes"), post(add_notes))
        .route(&format!("{api}/api/v4/leads/{{lead}}"), get(lead).patch(patch_lead))
        .route(&format!("{api}/api/v4/leads/{{lead}}/notes"), get(lead_notes))
        .route(&format!("{api}/api/v4/contacts/{{contact}}"), get(contact))
        .route(&format!("{api}/api/v4/webhooks"), get(webhooks).post(subscribe).delete(unsubscribe))
        .route_layer(middleware::from_fn_with_state(sandbox.clone(), bearer_only));
    Router::new()
        .route("/sandbox/kommo", get(board))
        .route("/sandbox/kommo/deals", post(add_deal))
        .route("/sandbox/kommo/deals/{lead}/move", post(move_deal))
        .route("/sandbox/kommo/oauth", get(consent))
        .route("/sandbox/kommo/oauth/allow", post(allow))
        .route(&format!("{api}/oauth2/access_token"), post(token))
        .merge(v4)
        .with_state(sandbox)
}

// ---- the pages -------------------------------------------------------------------------------

/// Notes as text, with their links made clickable (the payment link is the point of the demo).
fn note_html(text: &str) -> String {
    text.split_whitespace()
        .map(|word| {
            if word.starts_with("http://") || word.starts_with("https://") {
                format!("<a href=\"{0}\">{0}</a>", esc(word))
            } else {
                esc(word)
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

async fn board(State(sandbox): State<Arc<Sandbox>>) -> Response {
    let world = sandbox.world();
    let state = &world.kommo;
    let mut body = String::from(
        "<p>The deals of the sandbox Kommo account <code>pipepay-sandbox</code>. Move a deal into the stage \
         you chose as the trigger in pipepay: pipepay is told by webhook, creates a payment link and posts it \
         here as a note. Pay it, and pipepay moves the deal to <em>Closed - won</em>. Reload to see changes.</p>",
    );
    if state.webhooks.is_empty() {
        body.push_str(
            "<p class=\"alert\" id=\"no-webhook\">No webhook is subscribed yet: connect this account from a client \
             account's page in pipepay first.</p>",
        );
    }
    for (stage, name) in STAGES {
        body.push_str(&format!(
            "<section class=\"card stage\" data-stage=\"{stage}\"><h2>{}</h2>",
            esc(name)
        ));
        for lead in state.leads.values().filter(|l| l.status_id == stage) {
            let contact = state.contacts.get(&lead.contact_id);
            body.push_str(&format!(
                "<article class=\"deal\" id=\"deal-{id}\" data-stage=\"{stage}\"><h3>{name}</h3><p>KES {price} · {contact}</p>",
                id = lead.id,
                name = esc(&lead.name),
                price = lead.price,
                contact = esc(contact.map_or("", |c| c.name.as_str())),
            ));
            for note in state.notes.iter().filter(|n| n.lead_id == lead.id) {
                body.push_str(&format!("<p class=\"note\">{}</p>", note_html(&note.text)));
            }
            body.push_str(&format!(
                "<form method=\"post\" action=\"/sandbox/kommo/deals/{id}/move\" class=\"inline\">\
                 <label for=\"to-{id}\">Move to</label><select id=\"to-{id}\" name=\"status_id\">",
                id = lead.id
            ));
            for (to, to_name) in STAGES.iter().filter(|(s, _)| *s != stage) {
                body.push_str(&format!("<option value=\"{to}\">{}</option>", esc(to_name)));
            }
            body.push_str("</select><button type=\"submit\">Move deal</button></form></article>");
        }
        body.push_str("</section>");
    }
    body.push_str(
        "<section class=\"card\"><h2>Add a deal</h2><form method=\"post\" action=\"/sandbox/kommo/deals\">\
         <label for=\"name\">Deal name</label><input id=\"name\" name=\"name\" required value=\"New deal\">\
         <label for=\"price\">Price (KES, whole shillings)</label><input id=\"price\" name=\"price\" inputmode=\"numeric\" value=\"5000\">\
         <label for=\"contact\">Customer name</label><input id=\"contact\" name=\"contact\" value=\"Jane Doe\">\
         <label for=\"email\">Customer email</label><input id=\"email\" name=\"email\" value=\"jane@example.com\">\
         <button type=\"submit\">Add deal</button></form></section>",
    );
    page("Kommo", "Deal board", &body)
}

#[derive(Deserialize)]
struct NewDeal {
    name: String,
    price: String,
    contact: String,
    email: String,
}

async fn add_deal(State(sandbox): State<Arc<Sandbox>>, Form(form): Form<NewDeal>) -> Response {
    let price = form.price.trim().parse::<i64>().unwrap_or(0).max(0);
    let name = if form.name.trim().is_empty() { "New deal" } else { form.name.trim() };
    sandbox.world().kommo.add_lead(
        name,
        price,
        Contact { name: form.contact.trim().into(), email: form.email.trim().into(), phone: String::new() },
    );
    see_other("/sandbox/kommo")
}

#[derive(Deserialize)]
struct MoveForm {
    status_id: i64,
}

async fn move_deal(
    State(sandbox): State<Arc<Sandbox>>,
    Path(lead): Path<i64>,
    Form(form): Form<MoveForm>,
) -> Response {
    if !STAGES.iter().any(|(s, _)| *s == form.status_id) {
        return (StatusCode::BAD_REQUEST, "no such stage").into_response();
    }
    match set_status(&sandbox, lead, form.status_id) {
        Some(()) => see_other(&format!("/sandbox/kommo#deal-{lead}")),
        None => (StatusCode::NOT_FOUND, "no such deal").into_response(),
    }
}

/// Moves a lead and tells every subscribed URL, as Kommo does after any change of stage.
fn set_status(sandbox: &Arc<Sandbox>, lead_id: i64, status_id: i64) -> Option<()> {
    let (body, destinations) = {
        let mut world = sandbox.world();
        let state = &mut world.kommo;
        let lead = state.leads.get_mut(&lead_id)?;
        let old = lead.status_id;
        if old == status_id {
            return Some(());
        }
        lead.status_id = status_id;
        lead.updated_at = now_secs();
        let prefix = "leads[status][0]";
        let fields = [
            (format!("{prefix}[id]"), lead.id.to_string()),
            (format!("{prefix}[name]"), lead.name.clone()),
            (format!("{prefix}[status_id]"), status_id.to_string()),
            (format!("{prefix}[old_status_id]"), old.to_string()),
            (format!("{prefix}[price]"), lead.price.to_string()),
            (format!("{prefix}[pipeline_id]"), PIPELINE.to_string()),
            (format!("{prefix}[old_pipeline_id]"), PIPELINE.to_string()),
            (format!("{prefix}[last_modified]"), lead.updated_at.to_string()),
            (format!("{prefix}[account_id]"), ACCOUNT_ID.to_string()),
            ("account[subdomain]".to_owned(), SUBDOMAIN.to_owned()),
            ("account[id]".to_owned(), ACCOUNT_ID.to_string()),
            ("account[_links][self]".to_owned(), format!("https://{ACCOUNT_HOST}")),
        ];
        let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish();
        (body, state.webhooks.clone())
    };
    for destination in destinations {
        let http = sandbox.http.clone();
        let body = body.clone();
        // Kommo posts after the change, on its own schedule: the mover does not wait.
        tokio::spawn(async move {
            let sent = http
                .post(&destination)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await;
            if let Err(error) = sent {
                tracing::warn!(%error, "the sandbox Kommo could not deliver a webhook");
            }
        });
    }
    Some(())
}

#[derive(Deserialize)]
struct ConsentQuery {
    client_id: Option<String>,
    state: Option<String>,
}

async fn consent(State(sandbox): State<Arc<Sandbox>>, Query(query): Query<ConsentQuery>) -> Response {
    if query.client_id.as_deref() != Some(sandbox.kommo_client_id.as_str()) {
        return page(
            "Kommo",
            "Unknown integration",
            "<p>This consent link names an integration the sandbox does not know.</p>",
        );
    }
    let body = format!(
        "<p>The integration <strong>pipepay (demo)</strong> asks for access to the Kommo account \
         <code>{SUBDOMAIN}</code>: reading and editing deals and contacts, adding notes, and webhooks.</p>\
         <form method=\"post\" action=\"/sandbox/kommo/oauth/allow\">\
         <input type=\"hidden\" name=\"state\" value=\"{}\"><button type=\"submit\">Allow</button></form>",
        esc(query.state.as_deref().unwrap_or_default())
    );
    page("Kommo", "Allow access to your Kommo account?", &body)
}

#[derive(Deserialize)]
struct AllowForm {
    state: String,
}

/// Back to the integration's redirect URI with a single-use code, as Kommo does.
async fn allow(State(sandbox): State<Arc<Sandbox>>, Form(form): Form<AllowForm>) -> Response {
    let code = format!("def{}", random_hex());
    sandbox.world().kommo.codes.insert(code.clone(), now_secs() + CODE_LIFETIME_SECS);
    let mut back = sandbox.url("oauth/kommo/callback");
    back.push('?');
    back.push_str(
        &url::form_urlencoded::Serializer::new(String::new())
            .append_pair("code", &code)
            .append_pair("state", &form.state)
            .append_pair("referer", ACCOUNT_HOST)
            .append_pair("platform", "2")
            .append_pair("client_id", &sandbox.kommo_client_id)
            .finish(),
    );
    see_other(&back)
}

fn grant_refused(detail: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "title": "Bad request", "type": "https://httpstatus.es/400", "status": 400,
                     "detail": detail, "hint": detail })),
    )
        .into_response()
}

async fn token(
    State(sandbox): State<Arc<Sandbox>>,
    Path(host): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    if host != ACCOUNT_HOST {
        return StatusCode::NOT_FOUND.into_response();
    }
    if body["client_id"].as_str() != Some(&sandbox.kommo_client_id)
        || body["client_secret"].as_str() != Some(&sandbox.kommo_client_secret)
    {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"title": "Unauthorized", "status": 401, "detail": "Client authentication failed"})),
        )
            .into_response();
    }
    let now = now_secs();
    let mut world = sandbox.world();
    let state = &mut world.kommo;
    match body["grant_type"].as_str() {
        Some("authorization_code") => {
            let code = body["code"].as_str().unwrap_or_default();
            if state.codes.remove(code).is_none_or(|until| until < now) {
                return grant_refused("Authorization code has expired or was already used");
            }
        }
        Some("refresh_token") => {
            let given = body["refresh_token"].as_str().unwrap_or_default();
            let Some(at) = state.refresh.iter().position(|r| r == given) else {
                return grant_refused("Token has been revoked");
            };
            // Rotation: a refresh token works once; the answer carries its successor.
            state.refresh.remove(at);
        }
        _ => return grant_refused("Unsupported grant type"),
    }
    let access = format!("sbx_{}", random_hex());
    let refresh = format!("def{}", random_hex());
    state.access.insert(access.clone(), now + TOKEN_LIFETIME_SECS);
    state.refresh.push(refresh.clone());
    Json(json!({ "token_type": "Bearer", "expires_in": TOKEN_LIFETIME_SECS,
                 "access_token": access, "refresh_token": refresh }))
    .into_response()
}

/// Kommo's 401, unless the bearer token is current and the host is the sandbox account's.
async fn bearer_only(
    State(sandbox): State<Arc<Sandbox>>,
    Path(params): Path<HashMap<String, String>>,
    request: Request,
    next: Next,
) -> Response {
    let host = params.get("host").map(String::as_str).unwrap_or_default();
    let token = bearer(request.headers());
    let valid = host == ACCOUNT_HOST
        && sandbox.world().kommo.access.get(token).is_some_and(|until| *until > now_secs());
    if !valid {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "title": "Unauthorized", "type": "https://httpstatus.es/401", "status": 401,
                     "detail": "Access token is invalid or expired" })),
        )
            .into_response();
    }
    next.run(request).await
}

async fn account() -> Response {
    Json(json!({ "id": ACCOUNT_ID, "name": "pipepay sandbox", "subdomain": SUBDOMAIN, "currency": "KES",
                 "country": "KE", "current_user_id": 1 }))
    .into_response()
}

async fn pipelines() -> Response {
    let statuses: Vec<Value> = STAGES
        .iter()
        .enumerate()
        .map(|(sort, (id, name))| json!({ "id": id, "name": name, "sort": (sort + 1) * 10, "pipeline_id": PIPELINE, "type": 0 }))
        .collect();
    Json(json!({ "_total_items": 1, "_embedded": { "pipelines": [
        { "id": PIPELINE, "name": "Sales", "sort": 1, "is_main": true, "_embedded": { "statuses": statuses } }
    ] } }))
    .into_response()
}

async fn custom_fields() -> Response {
    Json(json!({ "_embedded": { "custom_fields": [
        { "id": 7001, "name": "Payment link", "type": "url", "code": null, "entity_type": "leads" }
    ] } }))
    .into_response()
}

fn lead_json(lead: &Lead) -> Value {
    let fields: Vec<Value> = lead
        .fields
        .iter()
        .map(|(id, value)| json!({ "field_id": id, "values": [{ "value": value }] }))
        .collect();
    json!({
        "id": lead.id, "name": lead.name, "price": lead.price, "status_id": lead.status_id,
        "pipeline_id": PIPELINE, "updated_at": lead.updated_at, "account_id": ACCOUNT_ID,
        "custom_fields_values": if fields.is_empty() { Value::Null } else { Value::Array(fields) },
        "_embedded": { "contacts": [{ "id": lead.contact_id, "is_main": true }] }
    })
}

async fn lead(State(sandbox): State<Arc<Sandbox>>, Path((_, lead)): Path<(String, i64)>) -> Response {
    match sandbox.world().kommo.leads.get(&lead) {
        Some(lead) => Json(lead_json(lead)).into_response(),
        // Kommo answers 204, not 404, for an entity it does not have.
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

async fn patch_lead(
    State(sandbox): State<Arc<Sandbox>>,
    Path((_, lead_id)): Path<(String, i64)>,
    Json(body): Json<Value>,
) -> Response {
    {
        let mut world = sandbox.world();
        let Some(lead) = world.kommo.leads.get_mut(&lead_id) else {
            return StatusCode::NO_CONTENT.into_response();
        };
        for field in body["custom_fields_values"].as_array().into_iter().flatten() {
            if let (Some(id), Some(value)) =
                (field["field_id"].as_i64(), field["values"][0]["value"].as_str())
            {
                lead.fields.insert(id, value.to_owned());
            }
        }
        lead.updated_at = now_secs();
    }
    if let Some(status) = body["status_id"].as_i64() {
        set_status(&sandbox, lead_id, status);
    }
    Json(json!({ "id": lead_id, "updated_at": now_secs() })).into_response()
}

async fn contact(State(sandbox): State<Arc<Sandbox>>, Path((_, contact)): Path<(String, i64)>) -> Response {
    let world = sandbox.world();
    let Some(found) = world.kommo.contacts.get(&contact) else {
        return StatusCode::NO_CONTENT.into_response();
    };
    let mut fields = Vec::new();
    if !found.email.is_empty() {
        fields.push(json!({ "field_code": "EMAIL", "field_name": "Email", "values": [{ "value": found.email, "enum_code": "WORK" }] }));
    }
    if !found.phone.is_empty() {
        fields.push(json!({ "field_code": "PHONE", "field_name": "Phone", "values": [{ "value": found.phone, "enum_code": "WORK" }] }));
    }
    Json(json!({ "id": contact, "name": found.name, "custom_fields_values": fields })).into_response()
}

async fn add_notes(State(sandbox): State<Arc<Sandbox>>, Json(body): Json<Value>) -> Response {
    let mut world = sandbox.world();
    let state = &mut world.kommo;
    let mut made = Vec::new();
    for note in body.as_array().into_iter().flatten() {
        let (Some(lead_id), Some(text)) = (note["entity_id"].as_i64(), note["params"]["text"].as_str())
        else {
            return (StatusCode::BAD_REQUEST, Json(json!({ "title": "Bad Request", "status": 400, "detail": "entity_id and params.text are required" })))
                .into_response();
        };
        let id = state.next() + 900_000;
        state.notes.push(Note { id, lead_id, text: text.to_owned(), created_at: now_secs() });
        made.push(json!({ "id": id, "entity_id": lead_id, "request_id": made.len().to_string() }));
    }
    Json(json!({ "_embedded": { "notes": made } })).into_response()
}

async fn lead_notes(State(sandbox): State<Arc<Sandbox>>, Path((_, lead)): Path<(String, i64)>) -> Response {
    let world = sandbox.world();
    let notes: Vec<Value> = world
        .kommo
        .notes
        .iter()
        .rev()
        .filter(|n| n.lead_id == lead)
        .map(|n| {
            json!({ "id": n.id, "entity_id": n.lead_id, "note_type": "common",
                          "params": { "text": n.text }, "created_at": n.created_at })
        })
        .collect();
    if notes.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    Json(json!({ "_embedded": { "notes": notes } })).into_response()
}

async fn webhooks(State(sandbox): State<Arc<Sandbox>>) -> Response {
    let world = sandbox.world();
    if world.kommo.webhooks.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    let hooks: Vec<Value> = world
        .kommo
        .webhooks
        .iter()
        .map(|d| json!({ "destination": d, "settings": subscribed_events(), "disabled": false }))
        .collect();
    Json(json!({ "_embedded": { "webhooks": hooks } })).into_response()
}

fn subscribed_events() -> Value {
    json!(["status_lead", "add_lead", "update_lead"])
}

async fn subscribe(State(sandbox): State<Arc<Sandbox>>, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or_default();
    let Some(destination) = body["destination"].as_str().filter(|d| d.starts_with("http")) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "title": "Bad Request", "status": 400, "detail": "destination is required" })),
        )
            .into_response();
    };
    let mut world = sandbox.world();
    if !world.kommo.webhooks.iter().any(|d| d == destination) {
        world.kommo.webhooks.push(destination.to_owned());
    }
    Json(json!({ "destination": destination, "settings": body["settings"], "sort": 10,
                 "created_at": now_secs(), "disabled": false }))
    .into_response()
}

async fn unsubscribe(State(sandbox): State<Arc<Sandbox>>, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or_default();
    let destination = body["destination"].as_str().unwrap_or_default();
    sandbox.world().kommo.webhooks.retain(|d| d != destination);
    StatusCode::NO_CONTENT.into_response()
}
