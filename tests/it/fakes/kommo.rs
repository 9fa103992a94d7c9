//! A stateful fake of Kommo (amoCRM API v4), following `shared/reference/kommo.md`.
//!
//! One fake serves every tenant: account hosts are routed as path prefixes, so pipepay's
//! `PIPEPAY_KOMMO_API_URL` is `{base}/{host}` and `acme.kommo.com/api/v4/account` becomes
//! `{base}/acme.kommo.com/api/v4/account`. The consent page lives at `{base}/oauth`, like
//! `www.kommo.com/oauth`.
//!
//! Where the reference is silent the fake picks what real Kommo most plausibly does and says so
//! with "UNVERIFIED" in a comment. Where being strict catches client bugs that real Kommo would
//! only punish later (pipeline_id with 142/143), the fake is stricter than Kommo and says so.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use hmac::{KeyInit, Mac};
use serde_json::{Map, Value, json};
use tokio::task::JoinHandle;
use url::form_urlencoded;

/// Kommo answers 429 past 7 requests per second (kommo.md §5).
const RATE_LIMIT_PER_SECOND: usize = 7;
/// The real 429 example says 300 s; 1 s keeps tests fast while still forcing a back-off.
const RATE_LIMIT_RETRY_AFTER: u64 = 1;
/// Authorization codes live 20 minutes (kommo.md §1).
const CODE_LIFETIME: Duration = Duration::from_secs(20 * 60);
/// Account webhooks must be answered within 2 s or they count as failed (kommo.md §3).
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(2);
/// The widget-install GET allows 3 s and is never resent (kommo.md §2).
const INSTALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Longer than any sane client timeout.
const FAULT_HOLD: Duration = Duration::from_secs(35);
/// The admin who installed the integration and who drags leads around in the UI.
const USER_ID: i64 = 8_744_098;
/// Id of the date field added to every lead that has custom fields (see [`FakeKommo::add_lead`]).
pub const FOLLOW_UP_DATE_FIELD_ID: i64 = 990_001;
/// Its value: a midnight timestamp, as date fields hold.
pub const FOLLOW_UP_DATE: i64 = 1_689_282_000;
const OAUTH_PROBLEM_TYPE: &str = "https://developers.amocrm.ru/v3/errors/OAuthProblemJson";
const WEBHOOK_EVENTS: &[&str] = &[
    "add_lead",
    "update_lead",
    "delete_lead",
    "restore_lead",
    "status_lead",
    "responsible_lead",
    "note_lead",
    "add_contact",
    "update_contact",
    "delete_contact",
    "restore_contact",
    "responsible_contact",
    "note_contact",
    "add_company",
    "update_company",
    "delete_company",
    "restore_company",
    "responsible_company",
    "note_company",
    "add_customer",
    "update_customer",
    "delete_customer",
    "responsible_customer",
    "note_customer",
    "add_task",
    "update_task",
    "delete_task",
    "responsible_task",
    "add_talk",
    "update_talk",
    "add_message",
    "add_chat_template_review",
];

// ----------------------------------------------------------------------------------------------
// Public types
// ----------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct AccountSpec {
    pub id: i64,
    pub subdomain: String,
    /// The account host without scheme, e.g. "acme.kommo.com" or "shop.amocrm.ru".
    pub host: String,
    pub currency: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// 429; alternately (1st, 3rd, … of the account) a problem+json body with `retry_after` and
    /// an HTML body (the SDK copes with a non-JSON 429, so a client must too). Both carry a
    /// `Retry-After: {retry_after}` header.
    TooManyRequests {
        retry_after: u64,
    },
    ServerError,
    /// Holds the request ~35 s, then 504.
    Timeout,
    PaymentRequired,
    /// Plain-text `403 Forbidden`, as an IP block after repeated 429s looks.
    Forbidden,
    Unauthorized,
    /// Kommo does what was asked, then the answer never arrives: the gateway's 504. The caller
    /// cannot tell this from a request that never ran.
    AnswerLost,
    /// The connection breaks mid-answer: a transport failure, with causes, on the caller's side.
    Hangup,
}

/// A note as the account keeps it: with its id and when it was made.
#[derive(Clone, Debug)]
struct StoredNote {
    id: i64,
    created_at: i64,
    note: Note,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub lead_id: i64,
    pub text: String,
    pub note_type: String,
}

#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// The account whose host was called; `None` for a host no account has.
    pub account_id: Option<i64>,
    pub method: String,
    /// Path below the account host, without the query: "/api/v4/leads/7".
    pub path: String,
    /// The raw query string ("" when none).
    pub query: String,
    /// Status answered (0 while the request is still being held).
    pub status: u16,
    pub at: Instant,
}

#[derive(Clone, Debug, Default)]
pub struct LeadSpec {
    pub id: i64,
    pub name: String,
    pub price: i64,
    /// Decimal text such as "1500.50", emitted as a JSON number.
    pub price_with_minor_units: Option<String>,
    pub pipeline_id: i64,
    pub status_id: i64,
    /// The first one is the main contact.
    pub contact_ids: Vec<i64>,
    /// v4 shape: `[{"field_id", "field_name"?, "field_code"?, "field_type"?, "values": [...]}]`.
    pub custom_fields_values: Option<Value>,
}

pub struct FakeKommo {
    base: String,
    shared: Shared,
    http: reqwest::Client,
    server: JoinHandle<()>,
}

impl Drop for FakeKommo {
    fn drop(&mut self) {
        self.server.abort();
    }
}

// ----------------------------------------------------------------------------------------------
// State
// ----------------------------------------------------------------------------------------------

type Shared = Arc<Mutex<World>>;

fn lock(shared: &Shared) -> MutexGuard<'_, World> {
    // A panicking test must not poison the fake for the assertions that follow.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Clone)]
struct Integration {
    client_id: String,
    client_secret: String,
    redirect_uri: String,
}

struct Code {
    account_id: i64,
    client_id: String,
    issued: Instant,
    aged: Duration,
    used: bool,
}

struct AccessToken {
    account_id: i64,
    expires: Instant,
    dead: bool,
}

struct RefreshToken {
    account_id: i64,
    client_id: String,
    /// The refresh token this one was issued for; it dies once this one is used.
    parent: Option<String>,
    revoked: bool,
}

struct Pipeline {
    id: i64,
    name: String,
    stage_ids: Vec<i64>,
}

#[derive(Clone)]
struct LeadField {
    id: i64,
    name: String,
    field_type: String,
}

struct Lead {
    id: i64,
    name: String,
    price: i64,
    price_with_minor_units: Option<serde_json::Number>,
    pipeline_id: i64,
    status_id: i64,
    old_status_id: i64,
    contact_ids: Vec<i64>,
    custom_fields: Option<Vec<Value>>,
    tags: Vec<(i64, String)>,
    created_at: i64,
    updated_at: i64,
    closed_at: Option<i64>,
}

#[derive(Default)]
struct Faults {
    next: VecDeque<Fault>,
    /// (method, path) → fault, for the next such request only.
    next_on: Vec<(String, String, Fault)>,
    rate: f64,
    pool: Vec<Fault>,
    too_many_served: usize,
}

struct Account {
    spec: AccountSpec,
    created_at: i64,
    pipelines: Vec<Pipeline>,
    contacts: BTreeMap<i64, Value>,
    leads: BTreeMap<i64, Lead>,
    lead_fields: Vec<LeadField>,
    notes: Vec<StoredNote>,
    webhooks: Vec<Value>,
    webhook_refusal: Option<(u16, String)>,
    faults: Faults,
    /// Requests per second past which this account gets 429, if not Kommo's 7 (see
    /// [`FakeKommo::set_rate_limit`]).
    rate_limit: Option<usize>,
    violations: usize,
    refreshes: usize,
    exchanges: usize,
}

struct World {
    integrations: Vec<Integration>,
    accounts: BTreeMap<i64, Account>,
    codes: HashMap<String, Code>,
    access: HashMap<String, AccessToken>,
    refresh: HashMap<String, RefreshToken>,
    requests: Vec<RecordedRequest>,
    access_ttl: i64,
    last_tick: i64,
    /// Real Kommo stamps changes in whole seconds, so several changes within one second share
    /// a `last_modified`; while set, every change gets the same second as the one before.
    same_second: bool,
    /// The most an API call waits, at random, before Kommo sees it and before its answer leaves:
    /// a network whose delays differ from call to call.
    latency: (Duration, Duration),
    next_id: i64,
}

impl World {
    fn account_by_host(&self, host: &str) -> Option<i64> {
        self.accounts.values().find(|a| a.spec.host.eq_ignore_ascii_case(host)).map(|a| a.spec.id)
    }

    fn account(&mut self, id: i64) -> &mut Account {
        match self.accounts.get_mut(&id) {
            Some(a) => a,
            None => panic!("fake Kommo has no account {id}; call add_account first"),
        }
    }

    fn integration(&self, client_id: &str) -> Option<Integration> {
        self.integrations.iter().find(|i| i.client_id == client_id).cloned()
    }

    /// Modification time: wall clock, but strictly increasing so that every change is
    /// distinguishable by `updated_at` / `last_modified`, unless changes are held to one second.
    fn tick(&mut self) -> i64 {
        if self.same_second && self.last_tick > 0 {
            return self.last_tick;
        }
        self.last_tick = unix_now().max(self.last_tick + 1);
        self.last_tick
    }

    fn next_id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }

    fn issue_code(&mut self, account_id: i64, client_id: &str) -> String {
        let code = random_hex("def50200", 96);
        self.codes.insert(
            code.clone(),
            Code {
                account_id,
                client_id: client_id.to_owned(),
                issued: Instant::now(),
                aged: Duration::ZERO,
                used: false,
            },
        );
        code
    }

    fn issue_tokens(&mut self, account_id: i64, client_id: &str, parent: Option<String>) -> Value {
        let access = random_hex("", 64);
        let refresh = random_hex("def50200", 128);
        let ttl = self.access_ttl;
        let expires = Instant::now() + Duration::from_secs(u64::try_from(ttl).unwrap_or(0));
        self.access.insert(access.clone(), AccessToken { account_id, expires, dead: false });
        self.refresh.insert(
            refresh.clone(),
            RefreshToken { account_id, client_id: client_id.to_owned(), parent, revoked: false },
        );
        json!({
            "token_type": "Bearer",
            "expires_in": ttl,
            "server_time": unix_now(),
            "access_token": access,
            "refresh_token": refresh,
        })
    }

    fn bearer_ok(&self, account_id: i64, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let Some((scheme, token)) = value.split_once(' ') else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case("bearer") {
            return false;
        }
        self.access
            .get(token.trim())
            .is_some_and(|t| t.account_id == account_id && !t.dead && Instant::now() < t.expires)
    }

    /// Arrival bookkeeping for one API call: record it, apply the rate limit, then any fault.
    fn admit(&mut self, account_id: i64, method: &Method, path: &str, query: &str) -> (usize, Admission) {
        let now = Instant::now();
        let index = self.requests.len();
        self.requests.push(RecordedRequest {
            account_id: Some(account_id),
            method: method.to_string(),
            path: path.to_owned(),
            query: query.to_owned(),
            status: 0,
            at: now,
        });
        let window_start = now.checked_sub(Duration::from_secs(1));
        let in_window = self
            .requests
            .iter()
            .rev()
            .take_while(|r| window_start.is_none_or(|start| r.at > start))
            .filter(|r| r.account_id == Some(account_id))
            .count();
        let account = self.account(account_id);
        if in_window > account.rate_limit.unwrap_or(RATE_LIMIT_PER_SECOND) {
            account.violations += 1;
            return (index, Admission::RateLimited);
        }
        let faults = &mut account.faults;
        let aimed = faults.next_on.iter().position(|(m, p, _)| m == method.as_str() && p == path);
        let fault = match aimed.map(|at| faults.next_on.remove(at).2).or_else(|| faults.next.pop_front()) {
            Some(f) => Some(f),
            None if !faults.pool.is_empty() && rand::random_bool(faults.rate.clamp(0.0, 1.0)) => {
                Some(faults.pool[rand::random_range(0..faults.pool.len())].clone())
            }
            None => None,
        };
        match fault {
            Some(Fault::TooManyRequests { retry_after }) => {
                faults.too_many_served += 1;
                let json_body = faults.too_many_served % 2 == 1;
                (index, Admission::Fault(Fault::TooManyRequests { retry_after }, json_body))
            }
            Some(f) => (index, Admission::Fault(f, true)),
            None => (index, Admission::Proceed),
        }
    }
}

enum Admission {
    Proceed,
    RateLimited,
    Fault(Fault, bool),
}

// ----------------------------------------------------------------------------------------------
// The test-facing API
// ----------------------------------------------------------------------------------------------

impl FakeKommo {
    pub async fn start() -> FakeKommo {
        let shared: Shared = Arc::new(Mutex::new(World {
            integrations: Vec::new(),
            accounts: BTreeMap::new(),
            codes: HashMap::new(),
            access: HashMap::new(),
            refresh: HashMap::new(),
            requests: Vec::new(),
            access_ttl: 86_400,
            last_tick: 0,
            same_second: false,
            latency: (Duration::ZERO, Duration::ZERO),
            next_id: 50_000_000,
        }));
        let app = Router::new()
            .route("/oauth", get(consent_page))
            // The oauth2-amocrm provider builds `{baseDomain}/oauth/`.
            .route("/oauth/", get(consent_page))
            .route("/oauth/allow", post(consent_allow))
            .route("/oauth/deny", post(consent_deny))
            .fallback(account_host)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind fake Kommo");
        let addr = listener.local_addr().expect("fake Kommo address");
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("fake Kommo server");
        });
        pipepay::install_tls_provider();
        let http = reqwest::Client::builder()
            // Kommo does not follow redirects when delivering hooks (UNVERIFIED; a redirect
            // answer is not 1xx/2xx, so it would count as invalid anyway).
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("fake Kommo HTTP client");
        FakeKommo { base: format!("http://{addr}"), shared, http, server }
    }

    pub fn base(&self) -> String {
        self.base.clone()
    }

    pub fn auth_url(&self) -> String {
        format!("{}/oauth", self.base)
    }

    pub fn api_url_template(&self) -> String {
        format!("{}/{{host}}", self.base)
    }

    /// The API base of one account, e.g. "http://127.0.0.1:PORT/acme.kommo.com".
    pub fn api_base(&self, account_id: i64) -> String {
        let host = self.state().account(account_id).spec.host.clone();
        format!("{}/{host}", self.base)
    }

    /// Id of the "Incoming leads" stage that [`add_pipeline`](Self::add_pipeline) adds.
    pub fn incoming_stage_id(pipeline_id: i64) -> i64 {
        1_000_000_000 + pipeline_id
    }

    pub fn register_integration(&self, client_id: &str, client_secret: &str, redirect_uri: &str) {
        let mut w = self.state();
        w.integrations.retain(|i| i.client_id != client_id);
        w.integrations.push(Integration {
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            redirect_uri: redirect_uri.to_owned(),
        });
    }

    pub fn add_account(&self, spec: AccountSpec) {
        let mut w = self.state();
        let created_at = unix_now() - 86_400 * 30;
        w.accounts.insert(
            spec.id,
            Account {
                spec,
                created_at,
                pipelines: Vec::new(),
                contacts: BTreeMap::new(),
                leads: BTreeMap::new(),
                lead_fields: Vec::new(),
                notes: Vec::new(),
                webhooks: Vec::new(),
                webhook_refusal: None,
                faults: Faults::default(),
                rate_limit: None,
                violations: 0,
                refreshes: 0,
                exchanges: 0,
            },
        );
    }

    // --- OAuth ------------------------------------------------------------------------------

    /// What clicking "Allow" for this account does, with the most recently registered
    /// integration: the full redirect URL carrying a fresh code.
    pub fn authorize(&self, account_id: i64, state: Option<&str>) -> String {
        let mut w = self.state();
        let integration = w.integrations.last().cloned().expect("register_integration first");
        let host = w.account(account_id).spec.host.clone();
        let code = w.issue_code(account_id, &integration.client_id);
        allow_redirect(&integration, &code, state, &host)
    }

    /// The URL of the server-side GET Kommo makes when the widget is installed from inside Kommo.
    pub fn marketplace_install_url(&self, account_id: i64) -> String {
        let mut w = self.state();
        let integration = w.integrations.last().cloned().expect("register_integration first");
        let host = w.account(account_id).spec.host.clone();
        let code = w.issue_code(account_id, &integration.client_id);
        with_query(
            &integration.redirect_uri,
            &[
                ("code", &code),
                ("referer", &host),
                // Real Kommo's `platform` value is UNVERIFIED; amoCRM captures show 1.
                ("platform", "2"),
                ("client_id", &integration.client_id),
                ("from_widget", "1"),
            ],
        )
    }

    /// Makes the widget-install GET itself, as Kommo does: 3 s to answer, status ignored, never
    /// resent. Returns the status (0 on timeout or connection failure).
    pub async fn install_from_marketplace(&self, account_id: i64) -> u16 {
        let url = self.marketplace_install_url(account_id);
        let sent = self.http.get(url).timeout(INSTALL_TIMEOUT).send().await;
        sent.map_or(0, |r| r.status().as_u16())
    }

    /// An uninstall: every token dies, then the "access revoked" hook is called the way Kommo
    /// does (GET, `client_uuid`, `account_id`, hex HMAC-SHA256 `signature`). Returns its status
    /// (0 on failure). The hook's timeout is UNVERIFIED; 3 s like the install GET.
    pub async fn uninstall(&self, account_id: i64, hook_url: &str) -> u16 {
        self.revoke_all(account_id);
        let integration = self.state().integrations.last().cloned().expect("register_integration first");
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(integration.client_secret.as_bytes())
            .expect("HMAC takes any key length");
        mac.update(format!("{}|{account_id}", integration.client_id).as_bytes());
        let signature = hex(&mac.finalize().into_bytes());
        let url = with_query(
            hook_url,
            &[
                ("client_uuid", &integration.client_id),
                ("account_id", &account_id.to_string()),
                ("signature", &signature),
            ],
        );
        let sent = self
            .http
            .get(url)
            .header(header::USER_AGENT, "amoService-oAuth-Code-Sender/1.0")
            .timeout(INSTALL_TIMEOUT)
            .send()
            .await;
        sent.map_or(0, |r| r.status().as_u16())
    }

    pub fn age_codes(&self, by: Duration) {
        for code in self.state().codes.values_mut() {
            code.aged += by;
        }
    }

    pub fn expire_access_tokens(&self, account_id: i64) {
        for token in self.state().access.values_mut().filter(|t| t.account_id == account_id) {
            token.dead = true;
        }
    }

    pub fn revoke_all(&self, account_id: i64) {
        let mut w = self.state();
        for token in w.access.values_mut().filter(|t| t.account_id == account_id) {
            token.dead = true;
        }
        for token in w.refresh.values_mut().filter(|t| t.account_id == account_id) {
            token.revoked = true;
        }
    }

    pub fn refresh_count(&self, account_id: i64) -> usize {
        self.state().account(account_id).refreshes
    }

    /// Every access and refresh token ever issued for the account, to prove none leaks.
    pub fn issued_tokens(&self, account_id: i64) -> Vec<String> {
        let st = self.state();
        let access = st.access.iter().filter(|(_, t)| t.account_id == account_id).map(|(k, _)| k.clone());
        let refresh = st.refresh.iter().filter(|(_, t)| t.account_id == account_id).map(|(k, _)| k.clone());
        access.chain(refresh).collect()
    }

    pub fn code_exchanges(&self, account_id: i64) -> usize {
        self.state().account(account_id).exchanges
    }

    /// `expires_in` of tokens issued from now on; they really stop working after it.
    pub fn set_access_ttl(&self, secs: i64) {
        self.state().access_ttl = secs;
    }

    // --- CRM data -----------------------------------------------------------------------------

    /// Stages get the names "Stage 1", "Stage 2", … in the order given. The system stages
    /// "Incoming leads" ([`incoming_stage_id`](Self::incoming_stage_id)), 142 and 143 are added.
    pub fn add_pipeline(&self, account_id: i64, pipeline_id: i64, name: &str, stage_ids: &[i64]) {
        let mut w = self.state();
        let account = w.account(account_id);
        account.pipelines.retain(|p| p.id != pipeline_id);
        account.pipelines.push(Pipeline {
            id: pipeline_id,
            name: name.to_owned(),
            stage_ids: stage_ids.to_vec(),
        });
    }

    pub fn add_contact(
        &self,
        account_id: i64,
        contact_id: i64,
        name: &str,
        email: Option<&str>,
        phone: Option<&str>,
    ) {
        let (first, last) = name.split_once(' ').unwrap_or((name, ""));
        let mut fields = Vec::new();
        if let Some(phone) = phone {
            fields.push(json!({
                "field_id": 264_911, "field_name": "Phone", "field_code": "PHONE", "field_type": "multitext",
                "values": [{"value": phone, "enum_id": 120_347, "enum_code": "WORK"}],
            }));
        }
        if let Some(email) = email {
            fields.push(json!({
                "field_id": 264_913, "field_name": "Email", "field_code": "EMAIL", "field_type": "multitext",
                "values": [{"value": email, "enum_id": 120_359, "enum_code": "WORK"}],
            }));
        }
        let created = unix_now() - 3_600;
        self.add_contact_json(
            account_id,
            json!({
                "id": contact_id,
                "name": name,
                "first_name": first,
                "last_name": last,
                "responsible_user_id": USER_ID,
                "group_id": 0,
                "created_by": USER_ID,
                "updated_by": USER_ID,
                "created_at": created,
                "updated_at": created,
                "closest_task_at": null,
                "is_deleted": false,
                "is_unsorted": false,
                // Kommo sends null, not [], for an entity without custom field values.
                "custom_fields_values": if fields.is_empty() { Value::Null } else { Value::Array(fields) },
                "account_id": account_id,
            }),
        );
    }

    /// Stores the contact as given (it needs an integer `id`); `account_id`, `_links` and
    /// `_embedded` are filled in when missing.
    pub fn add_contact_json(&self, account_id: i64, contact: Value) {
        let mut w = self.state();
        let account = w.account(account_id);
        let Value::Object(mut contact) = contact else { panic!("a contact is a JSON object") };
        let id = contact.get("id").and_then(Value::as_i64).expect("a contact needs an integer id");
        let href = format!("https://{}/api/v4/contacts/{id}", account.spec.host);
        contact.entry("account_id").or_insert(json!(account_id));
        contact.entry("_links").or_insert(json!({"self": {"href": href}}));
        contact.entry("_embedded").or_insert(json!({"tags": [], "companies": []}));
        account.contacts.insert(id, Value::Object(contact));
    }

    /// Every lead carries the tag `web` (id 55515). A lead given custom fields also gets a date
    /// field ([`FOLLOW_UP_DATE_FIELD_ID`], "Follow-up date") unless it already has one, so that
    /// its webhooks show the real date quirk: `…[values][0]=1689282000` with no `[value]`.
    pub fn add_lead(&self, account_id: i64, lead: LeadSpec) {
        let mut w = self.state();
        let now = w.tick();
        let account = w.account(account_id);
        let price_with_minor_units = lead.price_with_minor_units.map(|text| {
            serde_json::from_str::<serde_json::Number>(&text)
                .unwrap_or_else(|e| panic!("price_with_minor_units {text:?} is not a number: {e}"))
        });
        let custom_fields = lead.custom_fields_values.map(|cfv| {
            let Value::Array(mut fields) = cfv else { panic!("custom_fields_values is an array") };
            for field in &mut fields {
                fill_field_meta(field, &account.lead_fields);
            }
            let has_date = fields.iter().any(|f| is_date_type(f["field_type"].as_str().unwrap_or("")));
            if !fields.is_empty() && !has_date {
                fields.push(json!({
                    "field_id": FOLLOW_UP_DATE_FIELD_ID, "field_name": "Follow-up date", "field_code": null,
                    "field_type": "date", "values": [{"value": FOLLOW_UP_DATE}],
                }));
            }
            fields
        });
        // Kommo reads an entity without field values as null, never [].
        let custom_fields = custom_fields.filter(|f| !f.is_empty());
        account.leads.insert(
            lead.id,
            Lead {
                id: lead.id,
                name: lead.name,
                price: lead.price,
                price_with_minor_units,
                pipeline_id: lead.pipeline_id,
                status_id: lead.status_id,
                old_status_id: lead.status_id,
                contact_ids: lead.contact_ids,
                custom_fields,
                tags: vec![(55_515, "web".to_owned())],
                created_at: now - 3_600,
                updated_at: now,
                closed_at: None,
            },
        );
    }

    pub fn add_lead_custom_field(&self, account_id: i64, field_id: i64, name: &str, field_type: &str) {
        let mut w = self.state();
        let account = w.account(account_id);
        account.lead_fields.retain(|f| f.id != field_id);
        account.lead_fields.push(LeadField {
            id: field_id,
            name: name.to_owned(),
            field_type: field_type.to_owned(),
        });
    }

    /// The lead as `GET /api/v4/leads/{id}?with=contacts` would return it.
    pub fn lead(&self, account_id: i64, lead_id: i64) -> Option<Value> {
        let mut w = self.state();
        let account = w.account(account_id);
        account.leads.get(&lead_id).map(|lead| lead_json(account, lead, true))
    }

    pub fn notes(&self, account_id: i64, lead_id: i64) -> Vec<Note> {
        let mut w = self.state();
        w.account(account_id)
            .notes
            .iter()
            .filter(|n| n.note.lead_id == lead_id)
            .map(|n| n.note.clone())
            .collect()
    }

    // --- Webhooks -------------------------------------------------------------------------------

    pub fn webhooks(&self, account_id: i64) -> Vec<Value> {
        self.state().account(account_id).webhooks.clone()
    }

    pub fn refuse_webhook_api(&self, account_id: i64, status: u16, detail: &str) {
        self.state().account(account_id).webhook_refusal = Some((status, detail.to_owned()));
    }

    // --- Connection lifecycle (issue #12) -------------------------------------------------------

    /// A webhook someone else set up in the account (another integration, or by hand in
    /// Settings > Integrations > Web hooks), as the API would have stored it.
    pub fn add_foreign_webhook(&self, account_id: i64, destination: &str) {
        let mut w = self.state();
        let (now, id) = (w.tick(), w.next_id());
        w.account(account_id).webhooks.push(json!({
            "id": id, "destination": destination, "created_by": USER_ID, "created_at": now,
            "updated_at": now, "sort": 10, "disabled": false, "settings": ["status_lead"],
            "account_id": account_id,
        }));
    }

    /// The destinations subscribed in the account, in the order they were added.
    pub fn webhook_destinations(&self, account_id: i64) -> Vec<String> {
        let w = self.state();
        let hooks = &w.accounts.get(&account_id).expect("add_account first").webhooks;
        hooks.iter().filter_map(|h| h["destination"].as_str().map(str::to_owned)).collect()
    }

    /// A user drags the lead to `status_id`: the lead changes, then a `status_lead` hook goes to
    /// every subscribed destination. Dropping a lead onto the stage it is already in changes
    /// nothing, so nothing is sent (empty result). A stage of another pipeline moves the lead
    /// to that pipeline.
    pub async fn move_lead(&self, account_id: i64, lead_id: i64, status_id: i64) -> Vec<u16> {
        let (body, destinations) = {
            let mut w = self.state();
            let now = w.tick();
            let account = w.account(account_id);
            let pipeline_of_stage = account
                .pipelines
                .iter()
                .find(|p| p.stage_ids.contains(&status_id) || FakeKommo::incoming_stage_id(p.id) == status_id)
                .map(|p| p.id);
            let lead = account.leads.get_mut(&lead_id).unwrap_or_else(|| panic!("no lead {lead_id}"));
            if lead.status_id == status_id {
                return Vec::new();
            }
            lead.old_status_id = lead.status_id;
            lead.status_id = status_id;
            if let Some(pipeline_id) = pipeline_of_stage {
                lead.pipeline_id = pipeline_id;
            }
            lead.closed_at = is_closed(status_id).then_some(now);
            lead.updated_at = now;
            let account = &*account;
            let body = lead_webhook_form(account, "status", &[&account.leads[&lead_id]]);
            (body, subscribers(account, "status_lead"))
        };
        self.deliver_to_all(&destinations, &body).await
    }

    /// A user edits the lead's price in its card: the lead changes (its stage does not), then
    /// an `update_lead` hook goes to every destination subscribed to edits.
    pub async fn edit_price(&self, account_id: i64, lead_id: i64, price_with_minor_units: &str) -> Vec<u16> {
        let exact: serde_json::Number = serde_json::from_str(price_with_minor_units).unwrap();
        let (body, destinations) = {
            let mut w = self.state();
            let now = w.tick();
            let account = w.account(account_id);
            let lead = account.leads.get_mut(&lead_id).unwrap_or_else(|| panic!("no lead {lead_id}"));
            let whole = price_with_minor_units.parse::<rust_decimal::Decimal>().unwrap().trunc();
            lead.price = i64::try_from(whole).unwrap();
            lead.price_with_minor_units = Some(exact);
            lead.updated_at = now;
            let account = &*account;
            let body = lead_webhook_form(account, "update", &[&account.leads[&lead_id]]);
            (body, subscribers(account, "update_lead"))
        };
        self.deliver_to_all(&destinations, &body).await
    }

    /// From now on every change happens in the same second as the last one (as fast hands or a
    /// robot make them in real Kommo, whose timestamps are whole seconds); `false` lets time run.
    pub fn hold_the_second(&self, hold: bool) {
        self.state().same_second = hold;
    }

    /// From now on each API call waits a random time up to `before` before Kommo sees it (and
    /// counts it against the account's limit), and up to `after` before its answer leaves.
    pub fn set_latency(&self, before: Duration, after: Duration) {
        self.state().latency = (before, after);
    }

    /// One `status_lead` hook carrying these leads (as they are now) to `url`.
    pub async fn send_status_webhook(&self, url: &str, account_id: i64, lead_ids: &[i64]) -> u16 {
        self.send_status_webhook_answer(url, account_id, lead_ids).await.0
    }

    async fn deliver_to_all(&self, destinations: &[String], body: &str) -> Vec<u16> {
        let mut statuses = Vec::new();
        for destination in destinations {
            statuses.push(self.deliver(destination, body.to_owned()).await);
        }
        statuses
    }

    /// Like [`Self::send_status_webhook`], with pipepay's answer: status and body.
    pub async fn send_status_webhook_answer(
        &self,
        url: &str,
        account_id: i64,
        lead_ids: &[i64],
    ) -> (u16, String) {
        let body = {
            let mut w = self.state();
            let account = &*w.account(account_id);
            let leads: Vec<&Lead> = lead_ids
                .iter()
                .map(|id| account.leads.get(id).unwrap_or_else(|| panic!("no lead {id}")))
                .collect();
            lead_webhook_form(account, "status", &leads)
        };
        match self.post_hook(url, body).await {
            Ok(response) => (response.status().as_u16(), response.text().await.unwrap_or_default()),
            Err(_) => (0, String::new()),
        }
    }

    async fn deliver(&self, url: &str, body: String) -> u16 {
        self.post_hook(url, body).await.map_or(0, |r| r.status().as_u16())
    }

    async fn post_hook(&self, url: &str, body: String) -> reqwest::Result<reqwest::Response> {
        self.http
            .post(url)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::USER_AGENT, "amoCRM-Webhooks/3.0")
            .header("X-Amocrm-Requestid", uuid::Uuid::new_v4().to_string())
            .header(header::ACCEPT_ENCODING, "gzip")
            .timeout(WEBHOOK_TIMEOUT)
            .body(body)
            .send()
            .await
    }

    // --- Faults and metering ----------------------------------------------------------------------

    pub fn fail_next(&self, account_id: i64, faults: Vec<Fault>) {
        self.state().account(account_id).faults.next.extend(faults);
    }

    /// A note someone made on the lead `secs_ago` seconds ago (in Kommo, by hand).
    pub fn add_note_made_earlier(&self, account_id: i64, lead_id: i64, text: &str, secs_ago: i64) {
        let mut w = self.state();
        let id = w.next_id();
        let created_at = unix_now() - secs_ago;
        let note = Note { lead_id, text: text.to_owned(), note_type: "common".to_owned() };
        w.account(account_id).notes.push(StoredNote { id, created_at, note });
    }

    /// The next `method` request to `path` (e.g. `POST`, `/api/v4/leads/notes`) meets `fault`.
    pub fn fail_next_on(&self, account_id: i64, method: &str, path: &str, fault: Fault) {
        self.state().account(account_id).faults.next_on.push((method.to_owned(), path.to_owned(), fault));
    }

    pub fn set_fault_rate(&self, account_id: i64, rate: f64, faults: Vec<Fault>) {
        let mut w = self.state();
        let f = &mut w.account(account_id).faults;
        f.rate = rate;
        f.pool = faults;
    }

    /// API calls only (not the consent page or the token endpoint), oldest first.
    pub fn requests(&self, account_id: i64) -> Vec<RecordedRequest> {
        self.state().requests.iter().filter(|r| r.account_id == Some(account_id)).cloned().collect()
    }

    /// Calls to hosts that belong to no account (a client that built the API host wrongly).
    pub fn stray_requests(&self) -> Vec<RecordedRequest> {
        self.state().requests.iter().filter(|r| r.account_id.is_none()).cloned().collect()
    }

    pub fn max_requests_per_second(&self, account_id: i64) -> usize {
        let times: Vec<Instant> = self.requests(account_id).iter().map(|r| r.at).collect();
        let (mut best, mut start) = (0, 0);
        for end in 0..times.len() {
            while times[end].duration_since(times[start]) >= Duration::from_secs(1) {
                start += 1;
            }
            best = best.max(end - start + 1);
        }
        best
    }

    pub fn rate_violations(&self, account_id: i64) -> usize {
        self.state().account(account_id).violations
    }

    /// From now on this account answers 429 past `per_second` requests in any second (`None`:
    /// Kommo's 7 again), as an account whose quota another integration eats up, or a limit
    /// counted per IP, looks to one client.
    pub fn set_rate_limit(&self, account_id: i64, per_second: Option<usize>) {
        self.state().account(account_id).rate_limit = per_second;
    }

    fn state(&self) -> MutexGuard<'_, World> {
        lock(&self.shared)
    }
}

// ----------------------------------------------------------------------------------------------
// Consent page
// ----------------------------------------------------------------------------------------------

async fn consent_page(State(shared): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let w = lock(&shared);
    let client_id = q.get("client_id").map(String::as_str).unwrap_or("");
    if w.integration(client_id).is_none() {
        return (StatusCode::BAD_REQUEST, Html(error_page("This integration does not exist.")))
            .into_response();
    }
    let hidden = |name: &str, value: Option<&String>| {
        value.map_or(String::new(), |v| {
            format!(r#"<input type="hidden" name="{name}" value="{}">"#, escape_html(v))
        })
    };
    let common = format!(
        "{}{}{}",
        hidden("client_id", q.get("client_id")),
        hidden("state", q.get("state")),
        hidden("mode", q.get("mode"))
    );
    let mut items = String::new();
    for account in w.accounts.values() {
        let id = account.spec.id;
        items.push_str(&format!(
            r#"<li><h2 id="account-{id}">{sub} <small>({host})</small></h2>
<form method="post" action="/oauth/allow">{common}<input type="hidden" name="account_id" value="{id}">
<button type="submit" id="allow-{id}" aria-describedby="account-{id}">Allow</button></form></li>
"#,
            sub = escape_html(&account.spec.subdomain),
            host = escape_html(&account.spec.host),
        ));
    }
    if items.is_empty() {
        items.push_str("<li>You are not an administrator of any account.</li>");
    }
    Html(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Grant access - Kommo</title></head>
<body><main>
<h1>Grant access to your Kommo account</h1>
<p>The integration <code>{client}</code> asks for access to your account. Choose the account to connect.</p>
<ul>
{items}</ul>
<form method="post" action="/oauth/deny">{common}<button type="submit" id="deny">Deny</button></form>
</main></body></html>
"#,
        client = escape_html(client_id),
    ))
    .into_response()
}

/// `mode` (popup / post_message) only decides which window Kommo navigates; the fake always
/// answers with the redirect itself.
async fn consent_allow(State(shared): State<Shared>, Form(f): Form<HashMap<String, String>>) -> Response {
    let mut w = lock(&shared);
    let Some(integration) = f.get("client_id").and_then(|c| w.integration(c)) else {
        return (StatusCode::BAD_REQUEST, Html(error_page("This integration does not exist.")))
            .into_response();
    };
    let account_id = f.get("account_id").and_then(|a| a.parse::<i64>().ok());
    let Some(account_id) = account_id.filter(|a| w.accounts.contains_key(a)) else {
        return (StatusCode::BAD_REQUEST, Html(error_page("Choose an account."))).into_response();
    };
    let host = w.account(account_id).spec.host.clone();
    let code = w.issue_code(account_id, &integration.client_id);
    found(&allow_redirect(&integration, &code, f.get("state").map(String::as_str), &host))
}

async fn consent_deny(State(shared): State<Shared>, Form(f): Form<HashMap<String, String>>) -> Response {
    let w = lock(&shared);
    let Some(integration) = f.get("client_id").and_then(|c| w.integration(c)) else {
        return (StatusCode::BAD_REQUEST, Html(error_page("This integration does not exist.")))
            .into_response();
    };
    let mut pairs = vec![("error", "access_denied"), ("client_id", integration.client_id.as_str())];
    if let Some(state) = f.get("state") {
        pairs.push(("state", state));
    }
    found(&with_query(&integration.redirect_uri, &pairs))
}

fn allow_redirect(integration: &Integration, code: &str, state: Option<&str>, host: &str) -> String {
    let mut pairs = vec![("code", code)];
    if let Some(state) = state {
        pairs.push(("state", state));
    }
    pairs.push(("referer", host));
    pairs.push(("client_id", &integration.client_id));
    with_query(&integration.redirect_uri, &pairs)
}

fn error_page(message: &str) -> String {
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Error - Kommo</title></head>
<body><main><h1>Something went wrong</h1><p role="alert">{}</p></main></body></html>"#,
        escape_html(message)
    )
}

// ----------------------------------------------------------------------------------------------
// Account hosts: token endpoint and REST API
// ----------------------------------------------------------------------------------------------

async fn account_host(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let full = uri.path();
    let trimmed = full.trim_start_matches('/');
    let (host, rest) = match trimmed.find('/') {
        Some(i) => (&trimmed[..i], &trimmed[i..]),
        None => (trimmed, "/"),
    };
    let query = uri.query().unwrap_or("");
    let account_id = lock(&shared).account_by_host(host);
    let Some(account_id) = account_id else {
        if !rest.starts_with("/oauth2/") {
            lock(&shared).requests.push(RecordedRequest {
                account_id: None,
                method: method.to_string(),
                path: rest.to_owned(),
                query: query.to_owned(),
                status: 404,
                at: Instant::now(),
            });
        }
        // An unknown subdomain: real Kommo shows a "no such account" page (UNVERIFIED shape).
        return problem(StatusCode::NOT_FOUND, "Not Found", &format!("Cannot {method} https://{host}{rest}"));
    };
    if rest.starts_with("/oauth2/") {
        return oauth2(&mut lock(&shared), account_id, &method, rest, &headers, &body);
    }
    let (before, after) = lock(&shared).latency;
    tokio::time::sleep(random_up_to(before)).await;
    let (index, admission) = lock(&shared).admit(account_id, &method, rest, query);
    let response = match admission {
        Admission::RateLimited => too_many_requests(RATE_LIMIT_RETRY_AFTER, true),
        Admission::Fault(Fault::AnswerLost, _) => {
            drop(api(&mut lock(&shared), account_id, &method, rest, query, &headers, &body));
            gateway_timeout()
        }
        Admission::Fault(fault, json_body) => fault_response(fault, json_body).await,
        Admission::Proceed => api(&mut lock(&shared), account_id, &method, rest, query, &headers, &body),
    };
    lock(&shared).requests[index].status = response.status().as_u16();
    tokio::time::sleep(random_up_to(after)).await;
    response
}

fn random_up_to(most: Duration) -> Duration {
    if most.is_zero() {
        return Duration::ZERO;
    }
    Duration::from_micros(rand::random_range(0..=u64::try_from(most.as_micros()).unwrap_or(u64::MAX)))
}

/// The gateway gives up; its page is nginx HTML, not problem+json (UNVERIFIED).
fn gateway_timeout() -> Response {
    text(StatusCode::GATEWAY_TIMEOUT, "text/html", "<html><body><h1>504 Gateway Time-out</h1></body></html>")
}

async fn fault_response(fault: Fault, json_body: bool) -> Response {
    match fault {
        Fault::TooManyRequests { retry_after } => too_many_requests(retry_after, json_body),
        Fault::ServerError => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "application/problem+json",
            &json!({
                "title": "ErrInternalServer",
                "type": "https://httpstatus.es/500",
                "status": 500,
                "detail": "Internal server error",
                "trace_id": uuid::Uuid::new_v4().simple().to_string(),
            }),
        ),
        Fault::Timeout => {
            tokio::time::sleep(FAULT_HOLD).await;
            gateway_timeout()
        }
        Fault::AnswerLost => gateway_timeout(),
        Fault::PaymentRequired => {
            problem(StatusCode::PAYMENT_REQUIRED, "Payment Required", "Payment required")
        }
        Fault::Forbidden => text(StatusCode::FORBIDDEN, "text/plain", "403 Forbidden"),
        Fault::Unauthorized => unauthorized(),
        Fault::Hangup => {
            let broken = futures_util::stream::once(async {
                Err::<Bytes, std::io::Error>(std::io::Error::other("the connection broke"))
            });
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/hal+json")
                .body(Body::from_stream(broken))
                .unwrap()
        }
    }
}

fn too_many_requests(retry_after: u64, json_body: bool) -> Response {
    let mut response = if json_body {
        json_response(
            StatusCode::TOO_MANY_REQUESTS,
            "application/problem+json",
            &json!({
                "title": "Too Many Requests",
                "type": "https://httpstatus.es/429",
                "status": 429,
                "detail": "Too many requests",
                "retry_after": retry_after,
            }),
        )
    } else {
        text(
            StatusCode::TOO_MANY_REQUESTS,
            "text/html",
            "<html><body><h1>429 Too Many Requests</h1></body></html>",
        )
    };
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    response
}

fn oauth2(
    w: &mut World,
    account_id: i64,
    method: &Method,
    rest: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    match (method.as_str(), rest.trim_end_matches('/')) {
        ("POST", "/oauth2/access_token") => token_endpoint(w, account_id, headers, body),
        ("GET", "/oauth2/account/current/subdomain") => current_subdomain(w, headers),
        (_, "/oauth2/access_token" | "/oauth2/account/current/subdomain") => {
            problem(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed", "Method not allowed")
        }
        _ => {
            let host = w.account(account_id).spec.host.clone();
            problem(StatusCode::NOT_FOUND, "Not Found", &format!("Cannot {method} https://{host}{rest}"))
        }
    }
}

fn token_endpoint(w: &mut World, account_id: i64, headers: &HeaderMap, body: &[u8]) -> Response {
    // Only JSON is documented (kommo.md §1); whether Kommo also takes a form body is UNVERIFIED,
    // so the fake refuses one rather than let a client depend on it.
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !content_type.trim_start().to_ascii_lowercase().starts_with("application/json") {
        return problem(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported Media Type",
            "The request body must be application/json",
        );
    }
    let Ok(Value::Object(req)) = serde_json::from_slice::<Value>(body) else {
        return oauth_problem(StatusCode::BAD_REQUEST, "The request body is not a JSON object");
    };
    let field = |name: &str| req.get(name).and_then(Value::as_str).filter(|s| !s.is_empty());
    // Kommo's hints are league/oauth2-server's, so the fake follows that library's order: the
    // client is checked first and a bad one is 401 (UNVERIFIED beyond the matching hints).
    let Some(integration) = field("client_id").and_then(|c| w.integration(c)) else {
        return oauth_problem(StatusCode::UNAUTHORIZED, "Client authentication failed");
    };
    if field("client_secret") != Some(integration.client_secret.as_str()) {
        return oauth_problem(StatusCode::UNAUTHORIZED, "Client authentication failed");
    }
    let Some(redirect_uri) = field("redirect_uri") else {
        return oauth_problem(StatusCode::BAD_REQUEST, "Check the `redirect_uri` parameter");
    };
    if redirect_uri != integration.redirect_uri {
        return oauth_problem(
            StatusCode::UNAUTHORIZED,
            "redirect_uri does not match the integration settings",
        );
    }
    match field("grant_type") {
        Some("authorization_code") => {
            let Some(code_text) = field("code") else {
                return oauth_problem(StatusCode::BAD_REQUEST, "Check the `code` parameter");
            };
            let Some(code) = w.codes.get_mut(code_text) else {
                return oauth_problem(StatusCode::BAD_REQUEST, "Cannot decrypt the authorization code");
            };
            if code.used {
                return oauth_problem(StatusCode::BAD_REQUEST, "Authorization code has been revoked");
            }
            if code.issued.elapsed() + code.aged >= CODE_LIFETIME {
                return oauth_problem(StatusCode::BAD_REQUEST, "Authorization code has expired");
            }
            if code.client_id != integration.client_id {
                return oauth_problem(
                    StatusCode::BAD_REQUEST,
                    "Authorization code was not issued to this client",
                );
            }
            if code.account_id != account_id {
                // The code must be exchanged at the host in `referer`; the wording is ours.
                return oauth_problem(
                    StatusCode::BAD_REQUEST,
                    "Authorization code was not issued for this account",
                );
            }
            code.used = true;
            w.account(account_id).exchanges += 1;
            let tokens = w.issue_tokens(account_id, &integration.client_id, None);
            json_response(StatusCode::OK, "application/json", &tokens)
        }
        Some("refresh_token") => {
            let Some(token_text) = field("refresh_token") else {
                return oauth_problem(StatusCode::BAD_REQUEST, "Check the `refresh_token` parameter");
            };
            let Some(token) = w.refresh.get(token_text) else {
                return oauth_problem(StatusCode::UNAUTHORIZED, "Cannot decrypt the refresh token");
            };
            if token.revoked {
                return oauth_problem(StatusCode::UNAUTHORIZED, "Token has been revoked");
            }
            if token.client_id != integration.client_id {
                return oauth_problem(StatusCode::UNAUTHORIZED, "Token is not linked to client");
            }
            if token.account_id != account_id {
                return oauth_problem(StatusCode::UNAUTHORIZED, "Token was not issued for this account");
            }
            // Kommo keeps the old refresh token usable until the new one is used, so a client
            // can retry a refresh whose answer it lost. Using this one therefore kills its
            // parent. Siblings issued by such a retry stay valid (UNVERIFIED). Access tokens are
            // JWTs and keep working until they expire.
            if let Some(parent) = token.parent.clone()
                && let Some(parent) = w.refresh.get_mut(&parent)
            {
                parent.revoked = true;
            }
            w.account(account_id).refreshes += 1;
            let tokens = w.issue_tokens(account_id, &integration.client_id, Some(token_text.to_owned()));
            json_response(StatusCode::OK, "application/json", &tokens)
        }
        _ => oauth_problem(StatusCode::BAD_REQUEST, "The authorization grant type is not supported"),
    }
}

fn current_subdomain(w: &mut World, headers: &HeaderMap) -> Response {
    let token = headers.get("x-refresh-token").and_then(|v| v.to_str().ok()).unwrap_or("");
    let Some(account_id) = w.refresh.get(token).filter(|t| !t.revoked).map(|t| t.account_id) else {
        return oauth_problem(StatusCode::UNAUTHORIZED, "Token has been revoked");
    };
    let spec = &w.account(account_id).spec;
    let domain = spec.host.split_once('.').map_or(spec.host.as_str(), |(_, d)| d);
    let tld = domain.rsplit('.').next().unwrap_or(domain);
    json_response(
        StatusCode::OK,
        "application/json",
        &json!({"id": spec.id, "subdomain": spec.subdomain, "domain": domain, "top_level_domain": tld}),
    )
}

fn api(
    w: &mut World,
    account_id: i64,
    method: &Method,
    rest: &str,
    query: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let host = w.account(account_id).spec.host.clone();
    let cannot =
        || problem(StatusCode::NOT_FOUND, "Not Found", &format!("Cannot {method} https://{host}{rest}"));
    let Some(api_path) = rest.strip_prefix("/api/v4/") else {
        return cannot();
    };
    if !w.bearer_ok(account_id, headers) {
        return unauthorized();
    }
    let params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let with: Vec<&str> = param("with").map(|w| w.split(',').map(str::trim).collect()).unwrap_or_default();
    let segments: Vec<&str> = api_path.trim_end_matches('/').split('/').collect();
    let num = |s: &str| s.parse::<i64>().ok();
    match (segments.as_slice(), method.as_str()) {
        (["account"], "GET") => get_account(w, account_id),
        (["leads", "notes"], "POST") => add_notes(w, account_id, None, body),
        (["leads", "pipelines"], "GET") => get_pipelines(w, account_id, None),
        (["leads", "pipelines", id], "GET") if num(id).is_some() => get_pipelines(w, account_id, num(id)),
        (["leads", "custom_fields"], "GET") => get_lead_fields(w, account_id, param("page")),
        (["leads", id, "notes"], "POST") if num(id).is_some() => add_notes(w, account_id, num(id), body),
        (["leads", id, "notes"], "GET") if num(id).is_some() => {
            lead_notes(w, account_id, num(id).unwrap_or_default(), &params)
        }
        (["leads", id], "GET") if num(id).is_some() => {
            let account = w.account(account_id);
            match account.leads.get(&num(id).unwrap_or_default()) {
                Some(lead) => hal(lead_json(account, lead, with.contains(&"contacts"))),
                None => no_content(),
            }
        }
        (["leads", id], "PATCH") if num(id).is_some() => {
            patch_lead(w, account_id, num(id).unwrap_or_default(), body)
        }
        (["contacts", id], "GET") if num(id).is_some() => {
            get_contact(w, account_id, num(id).unwrap_or_default(), with.contains(&"leads"))
        }
        (["webhooks"], "GET") => list_webhooks(w, account_id, param("filter[destination]")),
        (["webhooks"], "POST") => add_webhook(w, account_id, body),
        (["webhooks"], "DELETE") => delete_webhook(w, account_id, body),
        (shape, _) if known_shape(shape) => {
            problem(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed", "Method not allowed")
        }
        _ => cannot(),
    }
}

fn known_shape(segments: &[&str]) -> bool {
    let num = |s: &str| s.parse::<i64>().is_ok();
    match segments {
        ["account"]
        | ["leads", "notes"]
        | ["leads", "pipelines"]
        | ["leads", "custom_fields"]
        | ["webhooks"] => true,
        ["leads", "pipelines", id] | ["leads", id] | ["leads", id, "notes"] | ["contacts", id] => num(id),
        _ => false,
    }
}

fn get_account(w: &mut World, account_id: i64) -> Response {
    let account = w.account(account_id);
    let spec = &account.spec;
    let country = if spec.host.ends_with(".ru") { "RU" } else { "US" };
    hal(json!({
        "id": spec.id,
        "name": spec.subdomain,
        "subdomain": spec.subdomain,
        "created_at": account.created_at,
        "created_by": USER_ID,
        "updated_at": account.created_at,
        "updated_by": USER_ID,
        "current_user_id": USER_ID,
        "country": country,
        "currency": spec.currency,
        "currency_symbol": currency_symbol(&spec.currency),
        "customers_mode": "disabled",
        "is_unsorted_on": true,
        "is_loss_reason_enabled": true,
        "is_helpbot_enabled": false,
        "is_technical_account": false,
        "contact_name_display_order": 1,
        "_links": {"self": {"href": format!("https://{}/api/v4/account", spec.host)}},
    }))
}

fn currency_symbol(code: &str) -> &str {
    match code {
        "USD" => "$",
        "EUR" => "€",
        "GBP" => "£",
        "RUB" => "₽",
        "NGN" => "₦",
        "GHS" => "₵",
        "KES" => "KSh",
        "ZAR" => "R",
        "UGX" => "USh",
        "TZS" => "TSh",
        "XAF" | "XOF" => "CFA",
        other => other,
    }
}

fn get_pipelines(w: &mut World, account_id: i64, only: Option<i64>) -> Response {
    let account = w.account(account_id);
    let host = account.spec.host.clone();
    let pipelines: Vec<Value> = account
        .pipelines
        .iter()
        .enumerate()
        .filter(|(_, p)| only.is_none_or(|id| p.id == id))
        .map(|(i, p)| pipeline_json(account_id, &host, p, i == 0, i))
        .collect();
    match (only, pipelines.into_iter().collect::<Vec<_>>()) {
        (_, list) if list.is_empty() => no_content(),
        (Some(_), mut list) => hal(list.remove(0)),
        (None, list) => hal(json!({
            "_total_items": list.len(),
            "_links": {"self": {"href": format!("https://{host}/api/v4/leads/pipelines")}},
            "_embedded": {"pipelines": list},
        })),
    }
}

fn pipeline_json(account_id: i64, host: &str, p: &Pipeline, is_main: bool, position: usize) -> Value {
    let status = |id: i64, name: &str, sort: i64, editable: bool, color: &str, kind: i64| {
        json!({
            "id": id, "name": name, "sort": sort, "is_editable": editable, "pipeline_id": p.id,
            "color": color, "type": kind, "account_id": account_id,
            "_links": {"self": {"href": format!("https://{host}/api/v4/leads/pipelines/{}/statuses/{id}", p.id)}},
        })
    };
    let mut statuses =
        vec![status(FakeKommo::incoming_stage_id(p.id), "Incoming leads", 10, false, "#c1c1c1", 1)];
    let palette = ["#99ccff", "#ffff99", "#ffcc66", "#deff81", "#87f2c0"];
    for (i, id) in p.stage_ids.iter().enumerate() {
        let sort = 20 + 10 * i64::try_from(i).unwrap_or(0);
        statuses.push(status(*id, &format!("Stage {}", i + 1), sort, true, palette[i % palette.len()], 0));
    }
    statuses.push(status(142, "Closed - won", 10_000, false, "#CCFF66", 0));
    statuses.push(status(143, "Closed - lost", 11_000, false, "#D5D8DB", 0));
    json!({
        "id": p.id,
        "name": p.name,
        "sort": 1 + position,
        "is_main": is_main,
        "is_unsorted_on": true,
        "is_archive": false,
        "account_id": account_id,
        "_links": {"self": {"href": format!("https://{host}/api/v4/leads/pipelines/{}", p.id)}},
        "_embedded": {"statuses": statuses},
    })
}

fn get_lead_fields(w: &mut World, account_id: i64, page: Option<&str>) -> Response {
    let account = w.account(account_id);
    let host = &account.spec.host;
    // Past the last page Kommo answers 204, not an empty list.
    if account.lead_fields.is_empty() || page.and_then(|p| p.parse::<i64>().ok()).is_some_and(|p| p > 1) {
        return no_content();
    }
    let fields: Vec<Value> = account
        .lead_fields
        .iter()
        .enumerate()
        .map(|(i, f)| {
            json!({
                "id": f.id, "name": f.name, "type": f.field_type, "account_id": account_id, "code": null,
                "sort": 500 + i, "is_api_only": false,
                "enums": if f.field_type == "select" || f.field_type == "multiselect" { json!([]) } else { Value::Null },
                "group_id": null, "required_statuses": [], "is_deletable": true, "is_predefined": false,
                "entity_type": "leads", "remind": null, "settings": null,
                "_links": {"self": {"href": format!("https://{host}/api/v4/leads/custom_fields/{}", f.id)}},
            })
        })
        .collect();
    hal(json!({
        "_total_items": fields.len(),
        "_page": 1,
        "_links": {"self": {"href": format!("https://{host}/api/v4/leads/custom_fields?page=1&limit=50")}},
        "_embedded": {"custom_fields": fields},
    }))
}

fn lead_json(account: &Account, lead: &Lead, with_contacts: bool) -> Value {
    let host = &account.spec.host;
    let mut embedded = json!({
        "tags": lead.tags.iter().map(|(id, name)| json!({"id": id, "name": name, "color": null})).collect::<Vec<_>>(),
        "companies": [],
    });
    if with_contacts {
        embedded["contacts"] = lead
            .contact_ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                json!({"id": id, "is_main": i == 0,
                       "_links": {"self": {"href": format!("https://{host}/api/v4/contacts/{id}")}}})
            })
            .collect();
    }
    let mut value = json!({
        "id": lead.id,
        "name": lead.name,
        "price": lead.price,
        "responsible_user_id": USER_ID,
        "group_id": 0,
        "status_id": lead.status_id,
        "pipeline_id": lead.pipeline_id,
        "loss_reason_id": null,
        "created_by": 0,
        "updated_by": USER_ID,
        "created_at": lead.created_at,
        "updated_at": lead.updated_at,
        "closed_at": lead.closed_at,
        "closest_task_at": null,
        "is_deleted": false,
        "custom_fields_values": lead.custom_fields.clone(),
        "score": null,
        "account_id": account.spec.id,
        "labor_cost": null,
        "_links": {"self": {"href": format!("https://{host}/api/v4/leads/{}", lead.id)}},
        "_embedded": embedded,
    });
    if let Some(minor) = &lead.price_with_minor_units {
        value["price_with_minor_units"] = Value::Number(minor.clone());
    }
    value
}

fn get_contact(w: &mut World, account_id: i64, contact_id: i64, with_leads: bool) -> Response {
    let account = w.account(account_id);
    let Some(mut contact) = account.contacts.get(&contact_id).cloned() else {
        return no_content();
    };
    if with_leads {
        let leads: Vec<Value> = account
            .leads
            .values()
            .filter(|l| l.contact_ids.contains(&contact_id))
            .map(|l| {
                json!({"id": l.id,
                       "_links": {"self": {"href": format!("https://{}/api/v4/leads/{}", account.spec.host, l.id)}}})
            })
            .collect();
        if let Some(embedded) = contact.get_mut("_embedded").and_then(Value::as_object_mut) {
            embedded.insert("leads".to_owned(), Value::Array(leads));
        }
    }
    hal(contact)
}

fn patch_lead(w: &mut World, account_id: i64, lead_id: i64, body: &[u8]) -> Response {
    let Ok(Value::Object(patch)) = serde_json::from_slice::<Value>(body) else {
        return problem(StatusCode::BAD_REQUEST, "Bad Request", "The request body must be a JSON object");
    };
    let now = w.tick();
    let account = w.account(account_id);
    if !account.leads.contains_key(&lead_id) {
        // What real Kommo answers here is UNVERIFIED; 204 is what it uses for "no such entity".
        return no_content();
    }
    let mut errors = Vec::new();
    let mut int_field = |name: &str| match patch.get(name) {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_i64() {
            Some(n) => Some(n),
            None => {
                errors.push(validation_error("InvalidType", name, &format!("{name} must be an integer")));
                None
            }
        },
    };
    let status_id = int_field("status_id");
    let pipeline_id = int_field("pipeline_id");
    let lead = &account.leads[&lead_id];
    if status_id.is_some_and(is_closed) && pipeline_id.is_none() {
        // Stricter than Kommo: 142/143 exist in every pipeline, so a client must say which.
        errors.push(validation_error(
            "FieldMissing",
            "pipeline_id",
            "pipeline_id is required when status_id is 142 or 143",
        ));
    }
    let target_pipeline = pipeline_id.unwrap_or(lead.pipeline_id);
    let mut new_status = status_id;
    if !account.pipelines.is_empty() {
        match account.pipelines.iter().find(|p| p.id == target_pipeline) {
            None => errors.push(validation_error("NotSupportedChoice", "pipeline_id", "Unknown pipeline")),
            Some(p) => {
                let incoming = FakeKommo::incoming_stage_id(p.id);
                let in_pipeline = |s: i64| is_closed(s) || s == incoming || p.stage_ids.contains(&s);
                match status_id {
                    Some(s) if !in_pipeline(s) => errors.push(validation_error(
                        "NotSupportedChoice",
                        "status_id",
                        "The status does not belong to the pipeline",
                    )),
                    // Moving to another pipeline without a stage lands in its first stage
                    // (UNVERIFIED; it is what the UI does).
                    None if pipeline_id.is_some_and(|id| id != lead.pipeline_id) => {
                        new_status = Some(p.stage_ids.first().copied().unwrap_or(incoming));
                    }
                    _ => {}
                }
            }
        }
    }
    let mut new_price = None;
    match patch.get("price") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) => new_price = Some(n.clone()),
        Some(_) => errors.push(validation_error("InvalidType", "price", "price must be a number")),
    }
    let new_name = match patch.get("name") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            errors.push(validation_error("InvalidType", "name", "name must be a string"));
            None
        }
    };
    let mut fields = lead.custom_fields.clone().unwrap_or_default();
    let mut fields_touched = false;
    match patch.get("custom_fields_values") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            fields_touched = true;
            merge_custom_fields(&mut fields, items, &account.lead_fields, &mut errors);
        }
        Some(_) => errors.push(validation_error("InvalidType", "custom_fields_values", "must be an array")),
    }
    if !errors.is_empty() {
        return validation_problem(vec![json!({"request_id": "0", "errors": errors})]);
    }

    let host = account.spec.host.clone();
    let lead = account.leads.get_mut(&lead_id).expect("checked above");
    if let Some(pipeline_id) = pipeline_id {
        lead.pipeline_id = pipeline_id;
    }
    if let Some(status) = new_status.filter(|s| *s != lead.status_id) {
        lead.old_status_id = lead.status_id;
        lead.status_id = status;
        lead.closed_at = is_closed(status).then_some(now);
    }
    if let Some(price) = new_price {
        let integral = price.as_i64();
        lead.price = integral.unwrap_or_else(|| price.as_f64().unwrap_or(0.0).trunc() as i64);
        // A fractional price is only kept in price_with_minor_units (UNVERIFIED: whether Kommo
        // keeps that field once an integral price is written; we keep it in step).
        if integral.is_none() || lead.price_with_minor_units.is_some() {
            lead.price_with_minor_units = Some(price);
        }
    }
    if let Some(name) = new_name {
        lead.name = name;
    }
    if fields_touched {
        lead.custom_fields = if fields.is_empty() { None } else { Some(fields) };
    }
    lead.updated_at = now;
    // A PATCH does not send status_lead back here; whether real Kommo does is UNVERIFIED
    // (kommo.md §3), so clients must not depend on either.
    hal(json!({
        "id": lead_id,
        "updated_at": now,
        "_links": {"self": {"href": format!("https://{host}/api/v4/leads/{lead_id}")}},
    }))
}

fn merge_custom_fields(
    fields: &mut Vec<Value>,
    items: &[Value],
    known: &[LeadField],
    errors: &mut Vec<Value>,
) {
    for (i, item) in items.iter().enumerate() {
        let path = format!("custom_fields_values.{i}");
        let by_id = item.get("field_id").and_then(Value::as_i64);
        let by_code = item.get("field_code").and_then(Value::as_str);
        let existing = fields.iter().position(|f| {
            by_id.is_some_and(|id| f["field_id"] == id) || by_code.is_some_and(|c| f["field_code"] == c)
        });
        let registered = by_id.and_then(|id| known.iter().find(|f| f.id == id));
        let (field_id, name, code, field_type) = match (registered, existing) {
            (Some(f), _) => (f.id, f.name.clone(), Value::Null, f.field_type.clone()),
            (None, Some(at)) => {
                let f = &fields[at];
                (
                    f["field_id"].as_i64().unwrap_or_default(),
                    f["field_name"].as_str().unwrap_or("").to_owned(),
                    f["field_code"].clone(),
                    f["field_type"].as_str().unwrap_or("text").to_owned(),
                )
            }
            (None, None) => {
                errors.push(validation_error(
                    "NotSupportedChoice",
                    &format!("{path}.field_id"),
                    "The field does not exist",
                ));
                continue;
            }
        };
        let values = match item.get("values") {
            // Kommo clears a field when its values are null.
            None | Some(Value::Null) => {
                if let Some(at) = existing {
                    fields.remove(at);
                }
                continue;
            }
            Some(Value::Array(values)) => values,
            Some(_) => {
                errors.push(validation_error(
                    "InvalidType",
                    &format!("{path}.values"),
                    "values must be an array",
                ));
                continue;
            }
        };
        let mut ok = true;
        for (j, v) in values.iter().enumerate() {
            let has_value = v.get("value").is_some_and(|x| !x.is_null());
            let has_enum = v.get("enum_id").is_some() || v.get("enum_code").is_some();
            let text_needed = matches!(field_type.as_str(), "url" | "text" | "textarea");
            if !(has_value || has_enum) || (text_needed && !v["value"].is_string()) {
                errors.push(validation_error(
                    "InvalidType",
                    &format!("{path}.values.{j}.value"),
                    "This value is not valid for the field type",
                ));
                ok = false;
            }
        }
        if !ok {
            continue;
        }
        let stored = json!({
            "field_id": field_id, "field_name": name, "field_code": code, "field_type": field_type,
            "values": values,
        });
        match existing {
            Some(at) => fields[at] = stored,
            None => fields.push(stored),
        }
    }
}

fn add_notes(w: &mut World, account_id: i64, path_lead: Option<i64>, body: &[u8]) -> Response {
    let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(body) else {
        return problem(StatusCode::BAD_REQUEST, "Bad Request", "The request body must be a JSON array");
    };
    if items.is_empty() {
        return problem(StatusCode::BAD_REQUEST, "Bad Request", "Empty request");
    }
    let mut ids = Vec::new();
    for _ in &items {
        ids.push(w.next_id());
    }
    let now = w.tick();
    let account = w.account(account_id);
    let host = account.spec.host.clone();
    let mut invalid = Vec::new();
    let mut accepted = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let request_id = match item.get("request_id") {
            Some(Value::String(s)) => s.clone(),
            Some(other) if !other.is_null() => other.to_string(),
            _ => i.to_string(),
        };
        let mut errors = Vec::new();
        let lead_id = path_lead.or_else(|| item.get("entity_id").and_then(Value::as_i64));
        match lead_id {
            None => errors.push(validation_error("FieldMissing", "entity_id", "entity_id is required")),
            Some(id) if !account.leads.contains_key(&id) => {
                errors.push(validation_error("NotSupportedChoice", "entity_id", "The lead does not exist"))
            }
            Some(_) => {}
        }
        let note_type = item.get("note_type").and_then(Value::as_str).unwrap_or("");
        let text = item.pointer("/params/text").and_then(Value::as_str);
        if note_type.is_empty() {
            errors.push(validation_error("FieldMissing", "note_type", "note_type is required"));
        } else if matches!(note_type, "common" | "service_message" | "extended_service_message")
            && text.is_none()
        {
            errors.push(validation_error("FieldMissing", "params.text", "params.text is required"));
        }
        if errors.is_empty() {
            accepted.push((ids[i], lead_id.unwrap_or_default(), note_type.to_owned(), text, request_id));
        } else {
            invalid.push(json!({"request_id": request_id, "errors": errors}));
        }
    }
    if !invalid.is_empty() {
        return validation_problem(invalid);
    }
    let mut out = Vec::new();
    for (id, lead_id, note_type, text, request_id) in accepted {
        let note = Note { lead_id, text: text.unwrap_or("").to_owned(), note_type };
        account.notes.push(StoredNote { id, created_at: now, note });
        out.push(json!({
            "id": id, "entity_id": lead_id, "request_id": request_id,
            "_links": {"self": {"href": format!("https://{host}/api/v4/leads/{lead_id}/notes/{id}")}},
        }));
    }
    hal(json!({
        "_links": {"self": {"href": format!("https://{host}/api/v4/leads/notes")}},
        "_embedded": {"notes": out},
    }))
}

/// `GET /api/v4/leads/{id}/notes`: the lead's notes, `_embedded.notes[]` with `params.text`;
/// `filter[note_type]`, `order[id]` or `order[created_at]` (`asc`/`desc`, default ascending by
/// id), `limit` (default 50, at most 250) and `page`. Nothing to show is a 204, as for every
/// Kommo list.
fn lead_notes(w: &mut World, account_id: i64, lead_id: i64, params: &[(String, String)]) -> Response {
    let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let account = w.account(account_id);
    let host = account.spec.host.clone();
    let limit = match param("limit").map(str::parse::<usize>) {
        None => 50,
        Some(Ok(limit @ 1..=250)) => limit,
        Some(_) => return problem(StatusCode::BAD_REQUEST, "Bad Request", "limit must be 1 to 250"),
    };
    let page = param("page").and_then(|p| p.parse::<usize>().ok()).unwrap_or(1).max(1);
    let mut notes: Vec<&StoredNote> = account
        .notes
        .iter()
        .filter(|n| n.note.lead_id == lead_id)
        .filter(|n| param("filter[note_type]").is_none_or(|t| n.note.note_type == t))
        .collect();
    if param("order[id]") == Some("desc") || param("order[created_at]") == Some("desc") {
        notes.reverse();
    }
    let shown: Vec<Value> = notes
        .into_iter()
        .skip((page - 1) * limit)
        .take(limit)
        .map(|n| {
            json!({
                "id": n.id, "entity_id": lead_id, "created_by": USER_ID, "updated_by": USER_ID,
                "created_at": n.created_at, "updated_at": n.created_at, "responsible_user_id": USER_ID,
                "group_id": 0, "note_type": n.note.note_type, "params": {"text": n.note.text},
                "account_id": account_id,
                "_links": {"self": {"href": format!("https://{host}/api/v4/leads/{lead_id}/notes/{}", n.id)}},
            })
        })
        .collect();
    if shown.is_empty() {
        return no_content();
    }
    hal(json!({
        "_page": page,
        "_links": {"self": {"href": format!("https://{host}/api/v4/leads/{lead_id}/notes?page={page}&limit={limit}")}},
        "_embedded": {"notes": shown},
    }))
}

fn list_webhooks(w: &mut World, account_id: i64, destination: Option<&str>) -> Response {
    let hooks: Vec<Value> = w
        .account(account_id)
        .webhooks
        .iter()
        .filter(|h| destination.is_none_or(|d| h["destination"] == d))
        .cloned()
        .collect();
    if hooks.is_empty() {
        return no_content();
    }
    hal(json!({"_total_items": hooks.len(), "_embedded": {"webhooks": hooks}}))
}

fn add_webhook(w: &mut World, account_id: i64, body: &[u8]) -> Response {
    let now = w.tick();
    let id = w.next_id();
    let account = w.account(account_id);
    if let Some((status, detail)) = account.webhook_refusal.clone() {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
        return problem(status, status.canonical_reason().unwrap_or("Error"), &detail);
    }
    let Ok(Value::Object(req)) = serde_json::from_slice::<Value>(body) else {
        return problem(StatusCode::BAD_REQUEST, "Bad Request", "The request body must be a JSON object");
    };
    let mut errors = Vec::new();
    let destination = req.get("destination").and_then(Value::as_str).unwrap_or("");
    let valid_url = url::Url::parse(destination).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
    if !valid_url {
        errors.push(validation_error("InvalidUrl", "destination", "destination must be an http(s) URL"));
    }
    let settings: Vec<&str> = req
        .get("settings")
        .and_then(Value::as_array)
        .map(|s| s.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if settings.is_empty() || settings.iter().any(|s| !WEBHOOK_EVENTS.contains(s)) {
        errors.push(validation_error("NotSupportedChoice", "settings", "Unknown or missing events"));
    }
    let existing = account.webhooks.iter().position(|h| h["destination"] == destination);
    if existing.is_none() && account.webhooks.len() >= 100 {
        errors.push(validation_error("LimitExceeded", "destination", "At most 100 webhooks per account"));
    }
    if !errors.is_empty() {
        return validation_problem(vec![json!({"request_id": "0", "errors": errors})]);
    }
    let sort = req.get("sort").and_then(Value::as_i64).unwrap_or(10);
    // Saving an existing destination again updates it and re-enables it (UNVERIFIED for the API;
    // it is what re-saving in the settings UI does).
    let hook = match existing {
        Some(at) => {
            let hook = &mut account.webhooks[at];
            hook["settings"] = json!(settings);
            hook["sort"] = json!(sort);
            hook["disabled"] = json!(false);
            hook["updated_at"] = json!(now);
            hook.clone()
        }
        None => {
            let hook = json!({
                "id": id, "destination": destination, "created_by": USER_ID, "created_at": now,
                "updated_at": now, "sort": sort, "disabled": false, "settings": settings,
                "account_id": account_id,
            });
            account.webhooks.push(hook.clone());
            hook
        }
    };
    hal(hook)
}

fn delete_webhook(w: &mut World, account_id: i64, body: &[u8]) -> Response {
    let destination = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("destination").and_then(Value::as_str).map(str::to_owned));
    let Some(destination) = destination else {
        return validation_problem(vec![json!({"request_id": "0", "errors": [
            validation_error("FieldMissing", "destination", "destination is required")]})]);
    };
    // Deleting an unknown destination is not an error (UNVERIFIED).
    w.account(account_id).webhooks.retain(|h| h["destination"] != destination.as_str());
    no_content()
}

// ----------------------------------------------------------------------------------------------
// The status_lead webhook body
// ----------------------------------------------------------------------------------------------

/// Where the account sends `event` hooks (`status_lead`, `update_lead`, ...).
fn subscribers(account: &Account, event: &str) -> Vec<String> {
    account
        .webhooks
        .iter()
        .filter(|h| h["settings"].as_array().is_some_and(|s| s.iter().any(|e| e == event)))
        .filter_map(|h| h["destination"].as_str().map(str::to_owned))
        .collect()
}

/// A v2 lead hook: `leads[{action}][i][...]` for each lead, as Kommo sends for `status`,
/// `update`, `add`.
fn lead_webhook_form(account: &Account, action: &str, leads: &[&Lead]) -> String {
    let spec = &account.spec;
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("account[subdomain]", &spec.subdomain);
    form.append_pair("account[id]", &spec.id.to_string());
    // Real captures show .amocrm.com here even for Kommo accounts.
    form.append_pair("account[_links][self]", &format!("https://{}.amocrm.com", spec.subdomain));
    for (i, lead) in leads.iter().enumerate() {
        let p = format!("leads[{action}][{i}]");
        let mut put = |key: &str, value: String| {
            form.append_pair(&format!("{p}{key}"), &value);
        };
        put("[id]", lead.id.to_string());
        put("[name]", lead.name.clone());
        put("[status_id]", lead.status_id.to_string());
        put("[old_status_id]", lead.old_status_id.to_string());
        // The v2 body carries the integral price (what it shows for fractional prices is
        // UNVERIFIED).
        put("[price]", lead.price.to_string());
        put("[responsible_user_id]", USER_ID.to_string());
        put("[last_modified]", lead.updated_at.to_string());
        put("[modified_user_id]", USER_ID.to_string());
        put("[created_user_id]", "0".to_owned());
        put("[date_create]", lead.created_at.to_string());
        put("[pipeline_id]", lead.pipeline_id.to_string());
        for (n, (id, name)) in lead.tags.iter().enumerate() {
            put(&format!("[tags][{n}][id]"), id.to_string());
            put(&format!("[tags][{n}][name]"), name.clone());
        }
        put("[account_id]", spec.id.to_string());
        for (n, field) in lead.custom_fields.iter().flatten().enumerate() {
            let f = format!("[custom_fields][{n}]");
            put(&format!("{f}[id]"), scalar(&field["field_id"]));
            put(&format!("{f}[name]"), scalar(&field["field_name"]));
            if field["field_code"].is_string() {
                put(&format!("{f}[code]"), scalar(&field["field_code"]));
            }
            let date = is_date_type(field["field_type"].as_str().unwrap_or(""));
            for (m, v) in field["values"].as_array().into_iter().flatten().enumerate() {
                if date {
                    put(&format!("{f}[values][{m}]"), scalar(&v["value"]));
                    continue;
                }
                put(&format!("{f}[values][{m}][value]"), scalar(&v["value"]));
                if let Some(e) = v.get("enum_id").filter(|e| !e.is_null()) {
                    put(&format!("{f}[values][{m}][enum]"), scalar(e));
                }
            }
        }
        put("[created_at]", lead.created_at.to_string());
        put("[updated_at]", lead.updated_at.to_string());
    }
    form.finish()
}

/// Every value in a form-encoded hook is a string.
fn scalar(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "1" } else { "0" }.to_owned(),
        other => other.to_string(),
    }
}

fn is_date_type(field_type: &str) -> bool {
    matches!(field_type, "date" | "date_time" | "birthday")
}

fn is_closed(status_id: i64) -> bool {
    status_id == 142 || status_id == 143
}

/// Fills `field_name` / `field_type` / `field_code` from the registered lead fields when a
/// test's raw value leaves them out.
fn fill_field_meta(field: &mut Value, known: &[LeadField]) {
    let Some(obj) = field.as_object_mut() else { return };
    let registered =
        obj.get("field_id").and_then(Value::as_i64).and_then(|id| known.iter().find(|f| f.id == id));
    let (name, field_type) = registered.map_or(("", "text"), |f| (f.name.as_str(), f.field_type.as_str()));
    obj.entry("field_name").or_insert(json!(name));
    obj.entry("field_code").or_insert(Value::Null);
    obj.entry("field_type").or_insert(json!(field_type));
}

// ----------------------------------------------------------------------------------------------
// Responses and small helpers
// ----------------------------------------------------------------------------------------------

fn json_response(status: StatusCode, content_type: &'static str, value: &Value) -> Response {
    let body = serde_json::to_vec(value).expect("JSON serialises");
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn text(status: StatusCode, content_type: &'static str, body: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

fn hal(value: Value) -> Response {
    json_response(StatusCode::OK, "application/hal+json", &value)
}

/// "Not found" and "empty list" in Kommo: 204 with no body and no content type.
fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

fn found(location: &str) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, location.to_owned())]).into_response()
}

fn problem(status: StatusCode, title: &str, detail: &str) -> Response {
    json_response(
        status,
        "application/problem+json",
        &json!({
            "title": title,
            "type": format!("https://httpstatus.es/{}", status.as_u16()),
            "status": status.as_u16(),
            "detail": detail,
        }),
    )
}

fn unauthorized() -> Response {
    // Kommo's 401 detail is this generic text whatever the cause (kommo.md §6).
    problem(StatusCode::UNAUTHORIZED, "Unauthorized", "Invalid user name or password")
}

fn validation_error(code: &str, path: &str, detail: &str) -> Value {
    json!({"code": code, "path": path, "detail": detail})
}

fn validation_problem(errors: Vec<Value>) -> Response {
    let mut body = Map::new();
    body.insert("title".to_owned(), json!("Bad Request"));
    body.insert("type".to_owned(), json!("https://httpstatus.es/400"));
    body.insert("status".to_owned(), json!(400));
    body.insert("detail".to_owned(), json!("Request validation failed"));
    body.insert("validation-errors".to_owned(), Value::Array(errors));
    json_response(StatusCode::BAD_REQUEST, "application/problem+json", &Value::Object(body))
}

fn oauth_problem(status: StatusCode, hint: &str) -> Response {
    // Kommo's token endpoint answers with the same title and detail (in the account's
    // language) whatever went wrong; only `hint` tells the cause.
    json_response(
        status,
        "application/problem+json",
        &json!({
            "hint": hint,
            "title": "Bad request",
            "type": OAUTH_PROBLEM_TYPE,
            "status": status.as_u16(),
            "detail": "Some request parameters are missing or invalid",
        }),
    )
}

fn with_query(base: &str, pairs: &[(&str, &str)]) -> String {
    let mut url = url::Url::parse(base).unwrap_or_else(|e| panic!("{base:?} is not a URL: {e}"));
    url.query_pairs_mut().extend_pairs(pairs);
    url.to_string()
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn unix_now() -> i64 {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs();
    i64::try_from(secs).expect("time fits i64")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_hex(prefix: &str, len: usize) -> String {
    let mut bytes = vec![0u8; len.div_ceil(2)];
    rand::fill(&mut bytes[..]);
    let mut out = String::from(prefix);
    out.push_str(&hex(&bytes)[..len]);
    out
}

// ----------------------------------------------------------------------------------------------
// The fake's own tests
// ----------------------------------------------------------------------------------------------

mod self_tests {
    use super::*;

    const CLIENT_ID: &str = "0c9e4b1a-5d3f-4c39-9a8e-1f0e2b3c4d5e";
    const SECRET: &str = "s3cret";
    const REDIRECT: &str = "http://pipepay.test/kommo/callback";
    const ACME: i64 = 29_638_927;
    const SHOP: i64 = 31_000_001;

    async fn fake() -> FakeKommo {
        let fake = FakeKommo::start().await;
        fake.register_integration(CLIENT_ID, SECRET, REDIRECT);
        fake.add_account(AccountSpec {
            id: ACME,
            subdomain: "acme".into(),
            host: "acme.kommo.com".into(),
            currency: "NGN".into(),
        });
        fake.add_account(AccountSpec {
            id: SHOP,
            subdomain: "shop".into(),
            host: "shop.amocrm.ru".into(),
            currency: "RUB".into(),
        });
        fake
    }

    fn http() -> reqwest::Client {
        pipepay::install_tls_provider();
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
    }

    fn query_of(url: &str) -> Vec<(String, String)> {
        url::Url::parse(url).unwrap().query_pairs().into_owned().collect()
    }

    fn param(pairs: &[(String, String)], name: &str) -> Option<String> {
        pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    async fn token_call(fake: &FakeKommo, host: &str, body: Value) -> (u16, Value) {
        let url = format!("{}/{host}/oauth2/access_token", fake.base());
        let response = http().post(url).json(&body).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    fn code_grant(code: &str) -> Value {
        json!({"client_id": CLIENT_ID, "client_secret": SECRET, "grant_type": "authorization_code",
               "code": code, "redirect_uri": REDIRECT})
    }

    fn refresh_grant(token: &Value) -> Value {
        json!({"client_id": CLIENT_ID, "client_secret": SECRET, "grant_type": "refresh_token",
               "refresh_token": token, "redirect_uri": REDIRECT})
    }

    /// Goes through consent and code exchange; returns the access token.
    async fn connect(fake: &FakeKommo, account_id: i64) -> String {
        let redirect = query_of(&fake.authorize(account_id, None));
        let host = param(&redirect, "referer").unwrap();
        let (status, tokens) = token_call(fake, &host, code_grant(&param(&redirect, "code").unwrap())).await;
        assert_eq!(status, 200, "{tokens}");
        tokens["access_token"].as_str().unwrap().to_owned()
    }

    async fn api_get(fake: &FakeKommo, account_id: i64, token: &str, path: &str) -> reqwest::Response {
        let url = format!("{}{path}", fake.api_base(account_id));
        http().get(url).bearer_auth(token).send().await.unwrap()
    }

    #[tokio::test]
    async fn code_exchange_then_refresh_rotation_revokes_the_spent_token() {
        let fake = fake().await;
        let redirect = fake.authorize(ACME, Some("csrf-1"));
        assert!(redirect.starts_with(REDIRECT), "{redirect}");
        let q = query_of(&redirect);
        let keys: Vec<&str> = q.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["code", "state", "referer", "client_id"]);
        assert_eq!(param(&q, "state").as_deref(), Some("csrf-1"));
        assert_eq!(param(&q, "referer").as_deref(), Some("acme.kommo.com"));
        assert_eq!(param(&q, "client_id").as_deref(), Some(CLIENT_ID));
        let code = param(&q, "code").unwrap();

        let url = format!("{}/acme.kommo.com/oauth2/access_token", fake.base());
        let form = http()
            .post(&url)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form_urlencoded::Serializer::new(String::new()).append_pair("code", &code).finish())
            .send()
            .await
            .unwrap();
        assert_eq!(form.status(), 415);
        let mut wrong_secret = code_grant(&code);
        wrong_secret["client_secret"] = json!("nope");
        assert_eq!(token_call(&fake, "acme.kommo.com", wrong_secret).await.0, 401);
        let mut wrong_redirect = code_grant(&code);
        wrong_redirect["redirect_uri"] = json!("http://elsewhere.test/cb");
        assert!(matches!(token_call(&fake, "acme.kommo.com", wrong_redirect).await.0, 400 | 401));

        let (status, t1) = token_call(&fake, "acme.kommo.com", code_grant(&code)).await;
        assert_eq!(status, 200, "{t1}");
        assert_eq!(t1["token_type"], "Bearer");
        assert_eq!(t1["expires_in"], 86_400);
        assert!(t1["server_time"].as_i64().unwrap() > 1_700_000_000);
        let (status, reused) = token_call(&fake, "acme.kommo.com", code_grant(&code)).await;
        assert_eq!(status, 400);
        assert_eq!(reused["type"], OAUTH_PROBLEM_TYPE);
        assert_eq!(fake.code_exchanges(ACME), 1);

        let account = api_get(&fake, ACME, t1["access_token"].as_str().unwrap(), "/api/v4/account").await;
        assert_eq!(account.status(), 200);
        assert_eq!(account.headers()[header::CONTENT_TYPE], "application/hal+json");
        let account: Value = account.json().await.unwrap();
        assert_eq!((account["id"].clone(), account["currency"].clone()), (json!(ACME), json!("NGN")));

        let (status, t2) = token_call(&fake, "acme.kommo.com", refresh_grant(&t1["refresh_token"])).await;
        assert_eq!(status, 200, "{t2}");
        assert_ne!(t2["refresh_token"], t1["refresh_token"]);
        // The answer got lost: the old refresh token still works until the new one is used.
        let (status, t2_again) =
            token_call(&fake, "acme.kommo.com", refresh_grant(&t1["refresh_token"])).await;
        assert_eq!(status, 200, "{t2_again}");
        let (status, _t3) = token_call(&fake, "acme.kommo.com", refresh_grant(&t2["refresh_token"])).await;
        assert_eq!(status, 200);
        let (status, spent) = token_call(&fake, "acme.kommo.com", refresh_grant(&t1["refresh_token"])).await;
        assert_eq!(status, 401);
        assert_eq!(spent["hint"], "Token has been revoked");
        assert_eq!(spent["type"], OAUTH_PROBLEM_TYPE);
        assert_eq!(fake.refresh_count(ACME), 3);

        fake.expire_access_tokens(ACME);
        let expired = api_get(&fake, ACME, t2["access_token"].as_str().unwrap(), "/api/v4/account").await;
        assert_eq!(expired.status(), 401);
        assert_eq!(expired.headers()[header::CONTENT_TYPE], "application/problem+json");
        fake.revoke_all(ACME);
        let (status, _) =
            token_call(&fake, "acme.kommo.com", refresh_grant(&t2_again["refresh_token"])).await;
        assert_eq!(status, 401);
    }

    #[tokio::test]
    async fn a_code_is_only_good_at_its_own_host_and_for_twenty_minutes() {
        let fake = fake().await;
        let code = param(&query_of(&fake.authorize(ACME, None)), "code").unwrap();
        let (status, refused) = token_call(&fake, "shop.amocrm.ru", code_grant(&code)).await;
        assert_eq!(status, 400);
        assert!(refused["hint"].as_str().unwrap().contains("account"), "{refused}");
        let (status, _) = token_call(&fake, "nowhere.kommo.com", code_grant(&code)).await;
        assert_eq!(status, 404);

        let stale = param(&query_of(&fake.authorize(ACME, None)), "code").unwrap();
        fake.age_codes(Duration::from_secs(21 * 60));
        let (status, expired) = token_call(&fake, "acme.kommo.com", code_grant(&stale)).await;
        assert_eq!(status, 400);
        assert_eq!(expired["hint"], "Authorization code has expired");
        assert_eq!(fake.code_exchanges(ACME), 0);

        let install = query_of(&fake.marketplace_install_url(SHOP));
        let keys: Vec<&str> = install.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["code", "referer", "platform", "client_id", "from_widget"]);
        let (status, _) =
            token_call(&fake, "shop.amocrm.ru", code_grant(&param(&install, "code").unwrap())).await;
        assert_eq!(status, 200);
    }

    #[tokio::test]
    async fn leads_and_contacts_read_like_kommo_and_missing_ones_are_204() {
        let fake = fake().await;
        fake.add_contact(ACME, 7_143_599, "Jane Doe", Some("jane@example.com"), Some("+2348000000000"));
        fake.add_lead_custom_field(ACME, 184_994, "Payment link", "url");
        fake.add_lead(
            ACME,
            LeadSpec {
                id: 152_464,
                name: "Order #1042".into(),
                price: 1500,
                price_with_minor_units: Some("1500.50".into()),
                pipeline_id: 6_950_551,
                status_id: 58_141_807,
                contact_ids: vec![7_143_599, 7_767_065],
                custom_fields_values: None,
            },
        );
        let token = connect(&fake, ACME).await;

        let lead = api_get(&fake, ACME, &token, "/api/v4/leads/152464?with=contacts").await;
        assert_eq!(lead.status(), 200);
        let text = lead.text().await.unwrap();
        assert!(text.contains(r#""price_with_minor_units":1500.50"#), "{text}");
        let lead: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(lead["price"], 1500);
        assert_eq!(lead["custom_fields_values"], Value::Null);
        assert_eq!(lead["_embedded"]["contacts"][0]["is_main"], true);
        assert_eq!(lead["_embedded"]["contacts"][1]["is_main"], false);
        let plain: Value = api_get(&fake, ACME, &token, "/api/v4/leads/152464").await.json().await.unwrap();
        assert!(plain["_embedded"].get("contacts").is_none());

        let contact: Value =
            api_get(&fake, ACME, &token, "/api/v4/contacts/7143599").await.json().await.unwrap();
        let codes: Vec<&Value> =
            contact["custom_fields_values"].as_array().unwrap().iter().map(|f| &f["field_code"]).collect();
        assert_eq!(codes, [&json!("PHONE"), &json!("EMAIL")]);
        assert_eq!(contact["custom_fields_values"][1]["values"][0]["value"], "jane@example.com");

        let fields: Value =
            api_get(&fake, ACME, &token, "/api/v4/leads/custom_fields").await.json().await.unwrap();
        assert_eq!(fields["_embedded"]["custom_fields"][0]["type"], "url");
        // A token of another account opens nothing here.
        let other = connect(&fake, SHOP).await;
        assert_eq!(api_get(&fake, ACME, &other, "/api/v4/account").await.status(), 401);

        // Kommo allows 7 calls a second, so the rest of the checks use the other account.
        let missing = [(ACME, &token, "/api/v4/leads/999"), (ACME, &token, "/api/v4/contacts/999")];
        let empty = [(SHOP, &other, "/api/v4/leads/pipelines"), (SHOP, &other, "/api/v4/webhooks")];
        for (account, token, path) in missing.into_iter().chain(empty) {
            let response = api_get(&fake, account, token, path).await;
            assert_eq!(response.status(), 204, "{path}");
            assert!(response.bytes().await.unwrap().is_empty());
        }
        let unknown = api_get(&fake, SHOP, &other, "/api/v4/nothing").await;
        assert_eq!(unknown.status(), 404);
        let unknown: Value = unknown.json().await.unwrap();
        assert!(unknown["detail"].as_str().unwrap().starts_with("Cannot GET https://shop.amocrm.ru/"));
        assert!(fake.rate_violations(ACME) == 0 && fake.rate_violations(SHOP) == 0);
    }

    #[tokio::test]
    async fn patch_to_won_needs_the_pipeline_and_notes_need_a_lead() {
        let fake = fake().await;
        fake.add_pipeline(ACME, 6_950_551, "Sales", &[58_141_807, 58_141_811]);
        fake.add_lead_custom_field(ACME, 184_994, "Payment link", "url");
        fake.add_lead(
            ACME,
            LeadSpec {
                id: 1,
                name: "Deal".into(),
                price: 10,
                pipeline_id: 6_950_551,
                status_id: 58_141_807,
                ..LeadSpec::default()
            },
        );
        let token = connect(&fake, ACME).await;
        let url = format!("{}/api/v4/leads/1", fake.api_base(ACME));

        let refused =
            http().patch(&url).bearer_auth(&token).json(&json!({"status_id": 142})).send().await.unwrap();
        assert_eq!(refused.status(), 400);
        let refused: Value = refused.json().await.unwrap();
        assert_eq!(refused["validation-errors"][0]["errors"][0]["path"], "pipeline_id");
        assert_eq!(fake.lead(ACME, 1).unwrap()["status_id"], 58_141_807);

        let body = json!({"status_id": 142, "pipeline_id": 6_950_551, "price": 12.5,
                          "custom_fields_values": [{"field_id": 184_994, "values": [{"value": "https://pay.test/x"}]}]});
        let moved = http().patch(&url).bearer_auth(&token).json(&body).send().await.unwrap();
        assert_eq!(moved.status(), 200);
        let moved: Value = moved.json().await.unwrap();
        assert_eq!(moved["id"], 1);
        let lead = fake.lead(ACME, 1).unwrap();
        assert_eq!((lead["status_id"].clone(), lead["price"].clone()), (json!(142), json!(12)));
        assert_eq!(lead["price_with_minor_units"].to_string(), "12.5");
        assert_eq!(lead["custom_fields_values"][0]["values"][0]["value"], "https://pay.test/x");
        assert_eq!(lead["updated_at"], moved["updated_at"]);
        let missing = format!("{}/api/v4/leads/2", fake.api_base(ACME));
        let missing =
            http().patch(missing).bearer_auth(&token).json(&json!({"name": "x"})).send().await.unwrap();
        assert_eq!(missing.status(), 204);

        let notes = format!("{}/api/v4/leads/notes", fake.api_base(ACME));
        let note = json!([{"entity_id": 1, "note_type": "common", "params": {"text": "Paid 12.50 NGN"}, "request_id": "r1"}]);
        let added = http().post(&notes).bearer_auth(&token).json(&note).send().await.unwrap();
        assert_eq!(added.status(), 200);
        let added: Value = added.json().await.unwrap();
        assert_eq!(added["_embedded"]["notes"][0]["request_id"], "r1");
        assert_eq!(
            fake.notes(ACME, 1),
            [Note { lead_id: 1, text: "Paid 12.50 NGN".into(), note_type: "common".into() }]
        );
        // Past the 7-per-second meter with the calls above.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let listed = format!(
            "{}/api/v4/leads/1/notes?filter[note_type]=common&order[id]=desc&limit=50",
            fake.api_base(ACME)
        );
        let listed: Value =
            http().get(&listed).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
        assert_eq!(listed["_embedded"]["notes"][0]["params"]["text"], "Paid 12.50 NGN");
        assert_eq!(listed["_embedded"]["notes"][0]["entity_id"], 1);
        let none = format!("{}/api/v4/leads/1/notes?filter[note_type]=call_in", fake.api_base(ACME));
        assert_eq!(http().get(&none).bearer_auth(&token).send().await.unwrap().status(), 204);
        let too_many = format!("{}/api/v4/leads/1/notes?limit=251", fake.api_base(ACME));
        assert_eq!(http().get(&too_many).bearer_auth(&token).send().await.unwrap().status(), 400);
        let orphan = json!([{"entity_id": 404, "note_type": "common", "params": {"text": "?"}}]);
        let orphan = http().post(&notes).bearer_auth(&token).json(&orphan).send().await.unwrap();
        assert_eq!(orphan.status(), 400);

        let pipelines: Value =
            api_get(&fake, ACME, &token, "/api/v4/leads/pipelines").await.json().await.unwrap();
        let statuses = &pipelines["_embedded"]["pipelines"][0]["_embedded"]["statuses"];
        let ids: Vec<i64> = statuses.as_array().unwrap().iter().map(|s| s["id"].as_i64().unwrap()).collect();
        assert_eq!(ids, [FakeKommo::incoming_stage_id(6_950_551), 58_141_807, 58_141_811, 142, 143]);
        assert_eq!(statuses[0]["type"], 1);
    }

    #[tokio::test]
    async fn more_than_seven_requests_in_a_second_get_429() {
        let fake = fake().await;
        let token = connect(&fake, ACME).await;
        let client = http();
        let url = format!("{}/api/v4/account", fake.api_base(ACME));
        let calls = (0..12).map(|_| {
            let call = client.get(&url).bearer_auth(&token).send();
            async move {
                let response = call.await.unwrap();
                let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
                (response.status().as_u16(), retry_after, response.bytes().await.unwrap())
            }
        });
        let answers = futures_join_all(calls).await;
        let limited: Vec<_> = answers.iter().filter(|(status, _, _)| *status == 429).collect();
        // 5 when all 12 land within one second, as they do unless the machine is badly loaded.
        assert!((1..=5).contains(&limited.len()), "{} answered 429", limited.len());
        let (_, retry_after, body) = limited[0];
        assert_eq!(retry_after.as_ref().unwrap(), "1");
        assert_eq!(serde_json::from_slice::<Value>(body).unwrap()["retry_after"], 1);
        assert_eq!(fake.rate_violations(ACME), limited.len());
        assert!(fake.max_requests_per_second(ACME) >= 8);
        assert_eq!(fake.requests(ACME).iter().filter(|r| r.status == 429).count(), limited.len());
        assert_eq!(fake.requests(SHOP).len(), 0);
    }

    /// Awaits all futures concurrently without pulling in the futures crate.
    async fn futures_join_all<F: std::future::Future + Send + 'static>(
        futures: impl Iterator<Item = F>,
    ) -> Vec<F::Output>
    where
        F::Output: Send,
    {
        let handles: Vec<_> = futures.map(tokio::spawn).collect();
        let mut out = Vec::new();
        for handle in handles {
            out.push(handle.await.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn faults_come_in_order_then_calls_succeed() {
        let fake = fake().await;
        let token = connect(&fake, ACME).await;
        fake.fail_next(
            ACME,
            vec![
                Fault::ServerError,
                Fault::PaymentRequired,
                Fault::Forbidden,
                Fault::Unauthorized,
                Fault::TooManyRequests { retry_after: 3 },
                Fault::TooManyRequests { retry_after: 3 },
            ],
        );
        let mut seen = Vec::new();
        for _ in 0..7 {
            let r = api_get(&fake, ACME, &token, "/api/v4/account").await;
            let content_type = r.headers().get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap().to_owned());
            seen.push((r.status().as_u16(), content_type.unwrap_or_default()));
        }
        let statuses: Vec<u16> = seen.iter().map(|(s, _)| *s).collect();
        assert_eq!(statuses, [500, 402, 403, 401, 429, 429, 200]);
        assert_eq!(seen[2].1, "text/plain");
        assert_eq!(seen[4].1, "application/problem+json");
        assert_eq!(seen[5].1, "text/html");

        // A Base-plan account (a second account, to stay under 7 calls a second).
        let token = connect(&fake, SHOP).await;
        fake.refuse_webhook_api(SHOP, 403, "Webhooks are not available on your plan");
        let url = format!("{}/api/v4/webhooks", fake.api_base(SHOP));
        let body = json!({"destination": "https://hooks.test/x", "settings": ["status_lead"]});
        let refused = http().post(url).bearer_auth(&token).json(&body).send().await.unwrap();
        assert_eq!(refused.status(), 403);
        assert_eq!(refused.headers()[header::CONTENT_TYPE], "application/problem+json");
        let refused: Value = refused.json().await.unwrap();
        assert_eq!(refused["detail"], "Webhooks are not available on your plan");
        assert!(fake.webhooks(SHOP).is_empty());
    }

    #[tokio::test]
    async fn moving_a_lead_posts_the_v2_form_to_subscribers() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(HeaderMap, Bytes)>();
        let receiver = Router::new().route(
            "/hook",
            post(move |headers: HeaderMap, body: Bytes| {
                let tx = tx.clone();
                async move {
                    tx.send((headers, body)).unwrap();
                    StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hook = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, receiver).await.unwrap() });

        let fake = fake().await;
        fake.add_pipeline(ACME, 4_542_166, "Sales", &[41_893_093]);
        fake.add_lead_custom_field(ACME, 644_897, "Currency", "select");
        fake.add_lead(
            ACME,
            LeadSpec {
                id: 30_307_415,
                name: "Order #1042".into(),
                price: 1500,
                pipeline_id: 4_542_166,
                status_id: 41_893_093,
                custom_fields_values: Some(
                    json!([{"field_id": 644_897, "values": [{"value": "EUR", "enum_id": 853_027}]}]),
                ),
                ..LeadSpec::default()
            },
        );
        let token = connect(&fake, ACME).await;
        let url = format!("{}/api/v4/webhooks", fake.api_base(ACME));
        let body = json!({"destination": hook, "settings": ["status_lead"], "sort": 10});
        let subscribed = http().post(&url).bearer_auth(&token).json(&body).send().await.unwrap();
        assert_eq!(subscribed.status(), 200);
        assert_eq!(fake.webhooks(ACME)[0]["destination"], hook.as_str());

        let before = fake.lead(ACME, 30_307_415).unwrap()["updated_at"].as_i64().unwrap();
        assert_eq!(fake.move_lead(ACME, 30_307_415, 142).await, [200]);
        let (headers, body) = rx.recv().await.unwrap();
        assert_eq!(headers[header::USER_AGENT], "amoCRM-Webhooks/3.0");
        assert_eq!(headers[header::CONTENT_TYPE], "application/x-www-form-urlencoded");
        uuid::Uuid::parse_str(headers["x-amocrm-requestid"].to_str().unwrap()).unwrap();
        let pairs: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
        let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
        let l = "leads[status][0]";
        let expected: Vec<String> = ["account[subdomain]", "account[id]", "account[_links][self]"]
            .into_iter()
            .map(str::to_owned)
            .chain(
                [
                    "[id]",
                    "[name]",
                    "[status_id]",
                    "[old_status_id]",
                    "[price]",
                    "[responsible_user_id]",
                    "[last_modified]",
                    "[modified_user_id]",
                    "[created_user_id]",
                    "[date_create]",
                    "[pipeline_id]",
                    "[tags][0][id]",
                    "[tags][0][name]",
                    "[account_id]",
                    "[custom_fields][0][id]",
                    "[custom_fields][0][name]",
                    "[custom_fields][0][values][0][value]",
                    "[custom_fields][0][values][0][enum]",
                    "[custom_fields][1][id]",
                    "[custom_fields][1][name]",
                    "[custom_fields][1][values][0]",
                    "[created_at]",
                    "[updated_at]",
                ]
                .into_iter()
                .map(|k| format!("{l}{k}")),
            )
            .collect();
        assert_eq!(keys, expected);
        let value = |k: &str| param(&pairs, k).unwrap();
        assert_eq!(value("account[subdomain]"), "acme");
        assert_eq!(value("account[id]"), ACME.to_string());
        assert_eq!(value("account[_links][self]"), "https://acme.amocrm.com");
        assert_eq!(value(&format!("{l}[status_id]")), "142");
        assert_eq!(value(&format!("{l}[old_status_id]")), "41893093");
        assert_eq!(value(&format!("{l}[pipeline_id]")), "4542166");
        assert_eq!(value(&format!("{l}[price]")), "1500");
        assert_eq!(value(&format!("{l}[custom_fields][0][name]")), "Currency");
        assert_eq!(value(&format!("{l}[custom_fields][0][values][0][value]")), "EUR");
        assert_eq!(value(&format!("{l}[custom_fields][0][values][0][enum]")), "853027");
        assert_eq!(value(&format!("{l}[custom_fields][1][values][0]")), FOLLOW_UP_DATE.to_string());
        let modified: i64 = value(&format!("{l}[last_modified]")).parse().unwrap();
        assert!(modified > before);
        assert_eq!(value(&format!("{l}[updated_at]")), modified.to_string());

        // Dropping it where it already is changes nothing.
        assert!(fake.move_lead(ACME, 30_307_415, 142).await.is_empty());
        // Two leads in one body; a dead receiver counts as status 0.
        assert_eq!(fake.send_status_webhook(&hook, ACME, &[30_307_415, 30_307_415]).await, 200);
        let (_, body) = rx.recv().await.unwrap();
        let pairs: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
        assert_eq!(param(&pairs, "leads[status][1][id]").as_deref(), Some("30307415"));
        assert_eq!(fake.send_status_webhook("http://127.0.0.1:9/hook", ACME, &[30_307_415]).await, 0);

        let deleted =
            http().delete(&url).bearer_auth(&token).json(&json!({"destination": hook})).send().await.unwrap();
        assert_eq!(deleted.status(), 204);
        assert!(fake.webhooks(ACME).is_empty());
    }

    #[tokio::test]
    async fn widget_install_and_uninstall_call_our_endpoints_like_kommo() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(HeaderMap, String)>();
        let receiver = Router::new().fallback(move |headers: HeaderMap, uri: Uri| {
            let tx = tx.clone();
            async move {
                tx.send((headers, uri.to_string())).unwrap();
                StatusCode::OK
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ours = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, receiver).await.unwrap() });

        let fake = FakeKommo::start().await;
        fake.register_integration(CLIENT_ID, SECRET, &format!("{ours}/kommo/callback"));
        fake.add_account(AccountSpec {
            id: ACME,
            subdomain: "acme".into(),
            host: "acme.kommo.com".into(),
            currency: "USD".into(),
        });
        assert_eq!(fake.install_from_marketplace(ACME).await, 200);
        let (_, install) = rx.recv().await.unwrap();
        let q = query_of(&format!("{ours}{install}"));
        assert_eq!(param(&q, "from_widget").as_deref(), Some("1"));
        assert!(param(&q, "state").is_none());
        let (status, tokens) = token_call_to(&fake, &format!("{ours}/kommo/callback"), &q).await;
        assert_eq!(status, 200, "{tokens}");

        assert_eq!(fake.uninstall(ACME, &format!("{ours}/kommo/uninstall")).await, 200);
        let (headers, hook) = rx.recv().await.unwrap();
        assert_eq!(headers[header::USER_AGENT], "amoService-oAuth-Code-Sender/1.0");
        let q = query_of(&format!("{ours}{hook}"));
        assert_eq!(param(&q, "client_uuid").as_deref(), Some(CLIENT_ID));
        assert_eq!(param(&q, "account_id"), Some(ACME.to_string()));
        // Lowercase hex HMAC-SHA256(secret, "{client_id}|{account_id}"), computed independently
        // (Python's hmac module), as the official PHP sample does it.
        let expected = "64feb569c3cd02317d41d4a78b7243f0615287608affddd231edfdee2ed372f3";
        assert_eq!(param(&q, "signature").as_deref(), Some(expected));
        let access = tokens["access_token"].as_str().unwrap();
        assert_eq!(api_get(&fake, ACME, access, "/api/v4/account").await.status(), 401);
        let stray = http().get(format!("{}/www.kommo.com/api/v4/account", fake.base())).send().await.unwrap();
        assert_eq!(stray.status(), 404);
        assert_eq!(fake.stray_requests().len(), 1);
    }

    async fn token_call_to(
        fake: &FakeKommo,
        redirect_uri: &str,
        install: &[(String, String)],
    ) -> (u16, Value) {
        let mut grant = code_grant(&param(install, "code").unwrap());
        grant["redirect_uri"] = json!(redirect_uri);
        token_call(fake, &param(install, "referer").unwrap(), grant).await
    }

    #[tokio::test]
    async fn consent_page_allow_and_deny_redirect_back() {
        let fake = fake().await;
        let client = http();
        let page = client
            .get(format!("{}?client_id={CLIENT_ID}&state=st%26x&mode=post_message", fake.auth_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
        let html = page.text().await.unwrap();
        for needle in [
            &format!(r#"id="allow-{ACME}""#),
            &format!(r#"id="allow-{SHOP}""#),
            r#"id="deny""#,
            ">Allow<",
            ">Deny<",
            "st&amp;x",
        ] {
            assert!(html.contains(needle), "{needle} missing from {html}");
        }

        let form = |pairs: &[(&str, &str)]| {
            form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
        };
        let post_form = |path: &str, body: String| {
            client
                .post(format!("{}{path}", fake.base()))
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(body)
                .send()
        };
        let acme = ACME.to_string();
        let allow = post_form(
            "/oauth/allow",
            form(&[("client_id", CLIENT_ID), ("state", "st&x"), ("account_id", &acme)]),
        )
        .await
        .unwrap();
        assert_eq!(allow.status(), 302);
        let q = query_of(allow.headers()[header::LOCATION].to_str().unwrap());
        assert_eq!(param(&q, "state").as_deref(), Some("st&x"));
        assert_eq!(param(&q, "referer").as_deref(), Some("acme.kommo.com"));
        assert!(param(&q, "code").is_some());

        let deny =
            post_form("/oauth/deny", form(&[("client_id", CLIENT_ID), ("state", "st&x")])).await.unwrap();
        assert_eq!(deny.status(), 302);
        let location = deny.headers()[header::LOCATION].to_str().unwrap().to_owned();
        assert!(location.starts_with(REDIRECT));
        let q = query_of(&location);
        assert_eq!(param(&q, "error").as_deref(), Some("access_denied"));
        assert_eq!(param(&q, "client_id").as_deref(), Some(CLIENT_ID));
        assert_eq!(param(&q, "state").as_deref(), Some("st&x"));
        assert!(param(&q, "code").is_none());

        let unknown = client.get(format!("{}?client_id=nope", fake.auth_url())).send().await.unwrap();
        assert_eq!(unknown.status(), 400);
        // Consent and token calls are not API calls: nothing metered.
        assert!(fake.requests(ACME).is_empty());
    }
}
