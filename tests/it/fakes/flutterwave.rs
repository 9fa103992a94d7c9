//! A stateful fake of Flutterwave's v3 API, as `shared/reference/flutterwave.md` describes the
//! real one: Standard hosted links (`POST /v3/payments`), link disabling, transaction verification by
//! id and by reference, the cheap read-only calls, `charge.completed` webhooks in the three shapes
//! merchants really receive, and a hosted checkout page a browser can click through.
//!
//! Every payload is written here in code (tests never read `shared/` at run time). Where the
//! reference is silent or says UNVERIFIED, the choice made is marked `UNVERIFIED:` next to the code,
//! with the reason. In short:
//!
//! * Merchants are Flutterwave accounts keyed by secret key. A test key and a live key of one business
//!   are two merchants, so test transactions do not verify with live keys (inference, §4).
//! * `currency` defaults to NGN when omitted or `null` (documented), and must otherwise be one of
//!   the currencies the reference lists, spelled in upper case (UNVERIFIED: real case handling).
//! * A reused `tx_ref` is rejected at `POST /v3/payments` with 400 (UNVERIFIED: the real API might
//!   instead fail at pay time; rejecting early is the stricter, more useful behaviour for tests).
//! * Transaction ids are numeric, start at a random 9-digit base and grow by random steps, so nothing
//!   can rely on them being consecutive. One link can carry several transactions (one per attempt).
//! * Money is `Decimal` end to end and every amount is written as an exact JSON number, with
//!   trailing zeros dropped (`1234.50` → `1234.5`), as every Flutterwave sample writes them
//!   (UNVERIFIED that the real API never echoes `1234.50`).
//! * The fee is 1.4% of the amount, rounded to 2 places (the docs' NGN local-card example: 100 →
//!   1.4). By default the merchant bears it (`charged_amount == amount`,
//!   `amount_settled = amount - app_fee`); `set_customer_bears_fee` switches an account to
//!   `charged_amount = amount + app_fee`.
//! * Not-found verification answers HTTP 400 (UNVERIFIED; the reference only knows the body).
//! * In the v4 webhook the charge id is `chg_…`, and nothing in it carries the numeric v3 id. The fake
//!   keeps one `chg_` id per transaction, so [`FakeFlutterwave::charge_id`] gives the v4 id of a
//!   numeric id. The v3 verify endpoint answers only the numeric id (a `chg_` id is "not found"),
//!   so a client receiving a v4 webhook has to verify by reference. The v4 webhook's own id is the
//!   top-level `"id":"wbk_…"`, as in the docs copy (§2), not a `webhook_id` key.
//! * A successful attempt closes the link: later `pay` calls panic and the page says so
//!   (UNVERIFIED). Failed and pending attempts leave it open, as the docs describe for retries.
//! * The hosted page delivers its webhook before answering the redirect, so browser tests are
//!   deterministic; at the real Flutterwave the two race.
//!
//! A test may pass a modified [`Transaction`] to `deliver`/`webhook_body` (a forged amount or
//! status, say). The webhook then says what that value says, while the API keeps answering the
//! truth. This lets tests check that pipepay never trusts a webhook body. Use
//! [`FakeFlutterwave::transaction`] to get the current state after `set_status`.

use std::collections::{HashMap, VecDeque};
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use rust_decimal::Decimal;
use serde_json::{Map, Value};
use sha2::Sha256;

// ------------------------------------------------------------------------------------------------
// Public API
// ------------------------------------------------------------------------------------------------

/// How a customer's attempt on the hosted page ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Successful,
    Failed,
    Pending,
}

/// A customer's attempt to pay a hosted link.
#[derive(Clone, Debug, PartialEq)]
pub struct Payment {
    pub outcome: Outcome,
    /// `None` pays the link's amount.
    pub amount: Option<Decimal>,
    /// `None` pays in the link's currency.
    pub currency: Option<String>,
    /// `"card"`, `"mpesa"`, `"mobilemoneyghana"`, `"bank_transfer"`, `"ussd"`, …
    pub payment_type: String,
}

impl Payment {
    /// The link's amount and currency, paid by card.
    pub fn card(outcome: Outcome) -> Payment {
        Payment::by(outcome, "card")
    }

    /// The link's amount and currency, paid with `payment_type`.
    pub fn by(outcome: Outcome, payment_type: &str) -> Payment {
        Payment { outcome, amount: None, currency: None, payment_type: payment_type.to_owned() }
    }
}

/// One transaction (one attempt on one link), as the fake's API reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    pub id: i64,
    pub tx_ref: String,
    pub flw_ref: String,
    pub amount: Decimal,
    pub charged_amount: Decimal,
    pub currency: String,
    /// `"successful"`, `"failed"` or `"pending"` (or `"cancelled"` after `set_status`).
    pub status: String,
    pub payment_type: String,
    pub customer_email: String,
}

/// The webhook payload shapes that reach merchants (reference §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// `{"event":"charge.completed","data":{…},"meta_data":{…},"event.type":"CARD_TRANSACTION"}`
    V3,
    /// The flat camelCase v2/"Rave" shape: `{"id","txRef","flwRef",…,"event.type"}`, no envelope.
    LegacyFlat,
    /// `{"data":{"id":"chg_…","reference":<tx_ref>,"status":"succeeded",…},"id":"wbk_…","timestamp":…,"type":"charge.completed"}`
    V4,
}

/// How a webhook proves it comes from Flutterwave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signature {
    /// `verif-hash: <webhook hash>` (v3, documented).
    VerifHash,
    /// `flutterwave-signature: base64(HMAC-SHA256(key = webhook hash, msg = raw body))` (2026 docs, per §2).
    HmacBase64,
    /// `flutterwave-signature: <webhook hash>` (the v4 docs copy's wording).
    PlainHash,
    /// No signature header at all.
    Missing,
    /// `verif-hash: not-the-hash`.
    Wrong,
}

/// A failure injected into the next API call made with a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// 401 `Invalid authorization key`, as for a revoked key.
    Unauthorized,
    /// 429, the per-account rate limit.
    TooManyRequests,
    /// 500 with an `error_id`; the request was not processed.
    ServerError,
    /// Process the request, wait, then answer 503 "An error occurred. Please contact support", like
    /// Flutterwave's ~28 s gateway timeout.
    SlowThen503(Duration),
    /// Process the request, then hold the answer for 35 s (past any sane client timeout).
    Timeout,
}

/// A hosted payment created through `POST /v3/payments`.
#[derive(Clone, Debug, PartialEq)]
pub struct CreatedPayment {
    pub tx_ref: String,
    pub link: String,
    /// The JSON body pipepay sent, numbers exactly as written.
    pub request: Value,
    pub disabled: bool,
}

/// The fake. Cheap to clone; the server stops when the last clone is dropped.
#[derive(Clone)]
pub struct FakeFlutterwave {
    shared: Arc<Shared>,
    _server: Arc<ServerGuard>,
}

impl FakeFlutterwave {
    /// Starts the fake on 127.0.0.1 with a port of its own.
    pub async fn start() -> FakeFlutterwave {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("fake Flutterwave binds");
        let addr = listener.local_addr().expect("fake Flutterwave has an address");
        let shared = Arc::new(Shared {
            base: format!("http://{addr}"),
            state: Mutex::new(Ledger {
                merchants: HashMap::new(),
                links: Vec::new(),
                txs: Vec::new(),
                customers: HashMap::new(),
                next_tx_id: rand::random_range(100_000_000..900_000_000),
                next_customer_id: rand::random_range(200_000_000..300_000_000),
            }),
            http: OnceLock::new(),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("fake Flutterwave serves");
        });
        FakeFlutterwave { shared, _server: Arc::new(ServerGuard(server.abort_handle())) }
    }

    /// `http://127.0.0.1:PORT`, pipepay's `PIPEPAY_FLUTTERWAVE_API_URL`.
    pub fn base(&self) -> String {
        self.shared.base.clone()
    }

    /// A Flutterwave account. API calls authenticate with its secret key; its webhooks are signed
    /// with `webhook_hash`. Adding a known key again only changes the hash (a tenant rotating it).
    pub fn add_merchant(&self, secret_key: &str, webhook_hash: &str) {
        let mut st = self.shared.lock();
        if let Some(merchant) = st.merchants.get_mut(secret_key) {
            merchant.webhook_hash = webhook_hash.to_owned();
            return;
        }
        st.merchants.insert(
            secret_key.to_owned(),
            Merchant {
                webhook_hash: webhook_hash.to_owned(),
                account_id: rand::random_range(10_000..99_999),
                customer_bears_fee: false,
                webhook_target: None,
                faults: VecDeque::new(),
                verify_calls: Vec::new(),
                checkout_webhooks: Vec::new(),
            },
        );
    }

    /// Every hosted payment created through the API with this key, oldest first.
    pub fn created(&self, secret_key: &str) -> Vec<CreatedPayment> {
        let st = self.shared.lock();
        st.merchant(secret_key);
        st.links
            .iter()
            .filter(|l| l.merchant == secret_key && l.via_api)
            .map(|l| CreatedPayment {
                tx_ref: l.tx_ref.clone(),
                link: l.url.clone(),
                request: l.request.clone(),
                disabled: l.disabled,
            })
            .collect()
    }

    /// The customer attempts payment on the hosted page for `tx_ref`: a new transaction with a
    /// fresh numeric id. Panics if there is no such link, if it is disabled, or if it was already
    /// paid successfully.
    pub fn pay(&self, tx_ref: &str, payment: Payment) -> Transaction {
        let mut st = self.shared.lock();
        let matching: Vec<usize> =
            st.links.iter().enumerate().filter(|(_, l)| l.tx_ref == tx_ref).map(|(i, _)| i).collect();
        let link = match matching[..] {
            [one] => one,
            [] => {
                drop(st);
                panic!("fake Flutterwave: no hosted payment has tx_ref {tx_ref:?}, so nobody can pay it")
            }
            _ => {
                drop(st);
                panic!(
                    "fake Flutterwave: several merchants have a link with tx_ref {tx_ref:?}; pay is ambiguous"
                )
            }
        };
        match st.attempt(link, &payment) {
            Ok(tx) => tx,
            Err(why) => {
                drop(st);
                panic!("fake Flutterwave: cannot pay {tx_ref:?}: {why}")
            }
        }
    }

    /// Changes a transaction's status, e.g. a pending bank transfer settling later.
    pub fn set_status(&self, transaction_id: i64, status: &str) {
        const STATUSES: [&str; 4] = ["successful", "failed", "pending", "cancelled"];
        assert!(STATUSES.contains(&status), "fake Flutterwave: {status:?} is not one of {STATUSES:?}");
        let mut st = self.shared.lock();
        let Some(tx) = st.txs.iter_mut().find(|t| t.id == transaction_id) else {
            drop(st);
            panic!("fake Flutterwave: no transaction {transaction_id}");
        };
        if tx.status != status {
            tx.status = status.to_owned();
            tx.status_ms = now_ms();
        }
    }

    /// POSTs the `charge.completed` webhook for `tx` to `url` in `shape`, signed the way
    /// `signature` says with the merchant's webhook hash, and returns the HTTP status. 0 means the
    /// request never got an answer (unreachable, or no answer within Flutterwave's 60 s).
    pub async fn deliver(&self, url: &str, tx: &Transaction, shape: Shape, signature: Signature) -> u16 {
        let (body, hash) = {
            let mut st = self.shared.lock();
            st.webhook(&self.shared.base, tx, shape)
        };
        send_webhook(self.shared.http(), url, body, &hash, signature).await
    }

    /// The exact raw JSON body `deliver` would send for `tx` in `shape`.
    pub fn webhook_body(&self, tx: &Transaction, shape: Shape) -> String {
        let mut st = self.shared.lock();
        st.webhook(&self.shared.base, tx, shape).0
    }

    /// The next `faults.len()` API calls made with this key get these faults, in order.
    pub fn fail_next(&self, secret_key: &str, faults: Vec<Fault>) {
        let mut st = self.shared.lock();
        st.merchant_mut(secret_key).faults.extend(faults);
    }

    /// The path and query of every verify call made with this key, in order, including calls that
    /// failed or got a fault: `/v3/transactions/{id}/verify` and
    /// `/v3/transactions/verify_by_reference?tx_ref=…` (query as sent, still percent-encoded).
    pub fn verify_calls(&self, secret_key: &str) -> Vec<String> {
        let st = self.shared.lock();
        st.merchant(secret_key).verify_calls.clone()
    }

    /// Where the hosted checkout page sends its webhooks on Pay/Fail (for browser tests).
    pub fn set_webhook_target(&self, secret_key: &str, url: &str, shape: Shape, signature: Signature) {
        let mut st = self.shared.lock();
        st.merchant_mut(secret_key).webhook_target = Some((url.to_owned(), shape, signature));
    }

    // --- Extras beyond the brief -----------------------------------------------------------------

    /// The current state of a transaction (after `set_status`, for instance).
    pub fn transaction(&self, transaction_id: i64) -> Transaction {
        let st = self.shared.lock();
        match st.txs.iter().find(|t| t.id == transaction_id) {
            Some(tx) => tx.public(),
            None => {
                drop(st);
                panic!("fake Flutterwave: no transaction {transaction_id}")
            }
        }
    }

    /// Every transaction (attempt) on the link with `tx_ref`, oldest first.
    pub fn transactions(&self, tx_ref: &str) -> Vec<Transaction> {
        let st = self.shared.lock();
        st.txs.iter().filter(|t| t.tx_ref == tx_ref).map(Tx::public).collect()
    }

    /// The v4 charge id (`chg_…`) that stands for this numeric v3 transaction id in V4 webhooks.
    pub fn charge_id(&self, transaction_id: i64) -> String {
        let st = self.shared.lock();
        match st.txs.iter().find(|t| t.id == transaction_id) {
            Some(tx) => tx.charge_id.clone(),
            None => {
                drop(st);
                panic!("fake Flutterwave: no transaction {transaction_id}")
            }
        }
    }

    /// From now on the customer pays the fee on this account: `charged_amount = amount + app_fee`.
    pub fn set_customer_bears_fee(&self, secret_key: &str, customer_bears_fee: bool) {
        let mut st = self.shared.lock();
        st.merchant_mut(secret_key).customer_bears_fee = customer_bears_fee;
    }

    /// A payment link the merchant made elsewhere (dashboard payment link, invoice, another
    /// integration): payable and verifiable with the merchant's key, so its webhooks reach pipepay,
    /// but not listed by `created`. Flutterwave gives dashboard links tx_refs like `Links-…`.
    pub fn create_foreign_link(
        &self,
        secret_key: &str,
        tx_ref: &str,
        amount: Decimal,
        currency: &str,
    ) -> String {
        let mut st = self.shared.lock();
        st.merchant(secret_key);
        let id = format!("flwlnk-{}", rand_chars(CROCKFORD, 26));
        let url = format!("{}/v3/hosted/pay/{id}", self.shared.base);
        st.links.push(Link {
            merchant: secret_key.to_owned(),
            via_api: false,
            tx_ref: tx_ref.to_owned(),
            id,
            url: url.clone(),
            request: Value::Null,
            amount,
            currency: currency.to_owned(),
            redirect_url: None,
            email: "customer@example.com".to_owned(),
            name: None,
            phone: None,
            meta: None,
            title: None,
            description: None,
            disabled: false,
        });
        url
    }

    /// The HTTP status of each webhook the hosted checkout page delivered for this key (0 =
    /// no answer).
    pub fn checkout_webhook_statuses(&self, secret_key: &str) -> Vec<u16> {
        let st = self.shared.lock();
        st.merchant(secret_key).checkout_webhooks.clone()
    }
}

// ------------------------------------------------------------------------------------------------
// State
// ------------------------------------------------------------------------------------------------

struct ServerGuard(tokio::task::AbortHandle);

impl Drop for ServerGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Shared {
    base: String,
    state: Mutex<Ledger>,
    /// Built on the first webhook, not at start: building a reqwest client needs a TLS crypto
    /// provider in some feature sets, and a fake that never sends webhooks should not need one.
    http: OnceLock<reqwest::Client>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Ledger> {
        // A test that panics while holding the lock must not take every later call down with it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn http(&self) -> &reqwest::Client {
        self.http.get_or_init(|| {
            pipepay::install_tls_provider();
            reqwest::Client::builder()
                // Flutterwave waits 60 s for a webhook answer and treats 3xx as failure (§2).
                .timeout(Duration::from_secs(60))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("webhook client")
        })
    }
}

struct Merchant {
    webhook_hash: String,
    account_id: i64,
    customer_bears_fee: bool,
    webhook_target: Option<(String, Shape, Signature)>,
    faults: VecDeque<Fault>,
    verify_calls: Vec<String>,
    checkout_webhooks: Vec<u16>,
}

struct Link {
    merchant: String,
    /// Created through `POST /v3/payments` (and so listed by `created`).
    via_api: bool,
    tx_ref: String,
    /// `flwlnk-…`
    id: String,
    url: String,
    request: Value,
    amount: Decimal,
    currency: String,
    redirect_url: Option<String>,
    email: String,
    name: Option<String>,
    phone: Option<String>,
    meta: Option<Map<String, Value>>,
    title: Option<String>,
    description: Option<String>,
    disabled: bool,
}

struct Customer {
    id: i64,
    v4_id: String,
    created_at: String,
    created_ms: i64,
}

struct Tx {
    merchant: String,
    link: usize,
    id: i64,
    tx_ref: String,
    flw_ref: String,
    order_ref: String,
    device_fingerprint: String,
    ip: String,
    amount: Decimal,
    charged_amount: Decimal,
    app_fee: Decimal,
    currency: String,
    status: String,
    payment_type: String,
    customer_email: String,
    created_at: String,
    created_ms: i64,
    status_ms: i64,
    charge_id: String,
    payment_method_id: String,
    card_token: String,
    /// One `wbk_…` id per status the transaction has been announced with: a redelivery of the same
    /// event keeps its id, a new status is a new event.
    webhook_ids: HashMap<String, String>,
}

impl Tx {
    fn public(&self) -> Transaction {
        Transaction {
            id: self.id,
            tx_ref: self.tx_ref.clone(),
            flw_ref: self.flw_ref.clone(),
            amount: self.amount,
            charged_amount: self.charged_amount,
            currency: self.currency.clone(),
            status: self.status.clone(),
            payment_type: self.payment_type.clone(),
            customer_email: self.customer_email.clone(),
        }
    }
}

struct Ledger {
    merchants: HashMap<String, Merchant>,
    links: Vec<Link>,
    txs: Vec<Tx>,
    /// Flutterwave keeps one customer per (account, email).
    customers: HashMap<(String, String), Customer>,
    next_tx_id: i64,
    next_customer_id: i64,
}

impl Ledger {
    fn merchant(&self, secret_key: &str) -> &Merchant {
        match self.merchants.get(secret_key) {
            Some(m) => m,
            None => panic!(
                "fake Flutterwave: no merchant has the secret key {secret_key:?}; call add_merchant first"
            ),
        }
    }

    fn merchant_mut(&mut self, secret_key: &str) -> &mut Merchant {
        match self.merchants.get_mut(secret_key) {
            Some(m) => m,
            None => panic!(
                "fake Flutterwave: no merchant has the secret key {secret_key:?}; call add_merchant first"
            ),
        }
    }

    /// A customer's attempt on link `link`.
    fn attempt(&mut self, link: usize, payment: &Payment) -> Result<Transaction, String> {
        let l = &self.links[link];
        if l.disabled {
            return Err("the link is disabled (This payment link is currently inactive)".into());
        }
        // UNVERIFIED: a Standard link that has been paid no longer takes payments; the real page
        // shows the completed transaction. Pending and failed attempts leave it open for retries.
        if self.txs.iter().any(|t| t.link == link && t.status == "successful") {
            return Err("the link has already been paid successfully".into());
        }
        let merchant = l.merchant.clone();
        let tx_ref = l.tx_ref.clone();
        let email = l.email.clone();
        let amount = payment.amount.unwrap_or(l.amount);
        let currency = payment.currency.clone().unwrap_or_else(|| l.currency.clone());
        let test_mode = merchant.contains("_TEST");
        let customer_bears_fee = self.merchant(&merchant).customer_bears_fee;

        let now = now_ms();
        let next_customer_id = &mut self.next_customer_id;
        self.customers.entry((merchant.clone(), email.clone())).or_insert_with(|| {
            *next_customer_id += rand::random_range(1..40);
            Customer {
                id: *next_customer_id,
                v4_id: format!("cus_{}", rand_chars(ALNUM, 10)),
                created_at: iso(now),
                created_ms: now,
            }
        });

        self.next_tx_id += rand::random_range(1..25);
        let id = self.next_tx_id;
        let app_fee = (amount * Decimal::new(14, 3)).round_dp(2);
        let charged_amount = if customer_bears_fee { amount + app_fee } else { amount };
        let status = match payment.outcome {
            Outcome::Successful => "successful",
            Outcome::Failed => "failed",
            Outcome::Pending => "pending",
        };
        let flw_ref = if test_mode {
            format!("FLW-MOCK-{}", rand_chars(HEX, 32))
        } else {
            format!("FLW{}", rand::random_range(100_000_000..999_999_999))
        };
        let tx = Tx {
            merchant,
            link,
            id,
            tx_ref,
            flw_ref,
            order_ref: format!("URF_{now}_{}", rand::random_range(1_000_000..9_999_999)),
            device_fingerprint: rand_chars(HEX, 32),
            ip: format!("197.210.{}.{}", rand::random_range(1..255), rand::random_range(1..255)),
            amount,
            charged_amount,
            app_fee,
            currency,
            status: status.to_owned(),
            payment_type: payment.payment_type.clone(),
            customer_email: email,
            created_at: iso(now),
            created_ms: now,
            status_ms: now,
            charge_id: format!("chg_{}", rand_chars(ALNUM, 10)),
            payment_method_id: format!("pmd_{}", rand_chars(ALNUM, 10)),
            card_token: format!("flw-t1nf-{}-m03k", rand_chars(HEX, 32)),
            webhook_ids: HashMap::new(),
        };
        let public = tx.public();
        self.txs.push(tx);
        Ok(public)
    }

    /// The body of the `charge.completed` webhook for `tx` in `shape`, and the hash to sign it with.
    fn webhook(&mut self, base: &str, tx: &Transaction, shape: Shape) -> (String, String) {
        let known = self.txs.iter().position(|t| t.id == tx.id);
        let link = match known {
            Some(i) => Some(self.txs[i].link),
            None => self.links.iter().rposition(|l| l.tx_ref == tx.tx_ref),
        };
        let merchant_key = match (link, self.merchants.len()) {
            (Some(l), _) => self.links[l].merchant.clone(),
            (None, 1) => self.merchants.keys().next().cloned().unwrap_or_default(),
            (None, _) => panic!(
                "fake Flutterwave: transaction {} / tx_ref {:?} is unknown, so there is no merchant whose \
                 webhook hash could sign it; pay a link (or create_foreign_link) first",
                tx.id, tx.tx_ref
            ),
        };
        let status_ms = match known {
            Some(i) => self.txs[i].status_ms,
            None => now_ms(),
        };
        // The same event (transaction, status) keeps its webhook id across redeliveries.
        let webhook_id = match known {
            Some(i) => self.txs[i]
                .webhook_ids
                .entry(tx.status.clone())
                .or_insert_with(|| format!("wbk_{}", rand_chars(ALNUM, 20)))
                .clone(),
            None => format!("wbk_{}", rand_chars(ALNUM, 20)),
        };
        let merchant = self.merchant(&merchant_key);
        let link = link.map(|l| &self.links[l]);
        let stored = known.map(|i| &self.txs[i]);
        let customer = self.customers.get(&(merchant_key.clone(), tx.customer_email.clone()));
        let ctx = Ctx { base, tx, merchant, link, stored, customer, webhook_id: &webhook_id, status_ms };
        let body = match shape {
            Shape::V3 => ctx.v3_webhook(),
            Shape::LegacyFlat => ctx.legacy_webhook(),
            Shape::V4 => ctx.v4_webhook(),
        };
        (body, merchant.webhook_hash.clone())
    }
}

// ------------------------------------------------------------------------------------------------
// Payload rendering. Bodies are written by hand so keys come out in Flutterwave's order (as in the
// reference fixtures), not re-sorted: a client that re-serialises a webhook before checking its HMAC
// gets different bytes, as it would in production.
// ------------------------------------------------------------------------------------------------

/// Everything one transaction's payloads are made of. `tx` is what the caller says the transaction
/// is (possibly forged); `stored`, `link` and `customer` supply the details `Transaction` lacks.
struct Ctx<'a> {
    base: &'a str,
    tx: &'a Transaction,
    merchant: &'a Merchant,
    link: Option<&'a Link>,
    stored: Option<&'a Tx>,
    customer: Option<&'a Customer>,
    webhook_id: &'a str,
    status_ms: i64,
}

const TEST_CARD: (&str, &str, &str, &str, &str, &str) =
    ("553188", "2950", "MASTERCARD ACCESS BANK PLC  CREDIT", "NG", "MASTERCARD", "09/32");

impl Ctx<'_> {
    fn created_at(&self) -> String {
        self.stored.map(|t| t.created_at.clone()).unwrap_or_else(|| iso(now_ms()))
    }

    fn created_ms(&self) -> i64 {
        self.stored.map(|t| t.created_ms).unwrap_or_else(now_ms)
    }

    fn fingerprint(&self) -> String {
        self.stored.map(|t| t.device_fingerprint.clone()).unwrap_or_else(|| "N/A".into())
    }

    fn ip(&self) -> String {
        self.stored.map(|t| t.ip.clone()).unwrap_or_else(|| "197.210.64.96".into())
    }

    fn app_fee(&self) -> Decimal {
        self.stored.map(|t| t.app_fee).unwrap_or_else(|| (self.tx.amount * Decimal::new(14, 3)).round_dp(2))
    }

    fn customer_id(&self) -> i64 {
        self.customer.map(|c| c.id).unwrap_or(1)
    }

    fn customer_created_at(&self) -> String {
        self.customer.map(|c| c.created_at.clone()).unwrap_or_else(|| self.created_at())
    }

    fn name(&self) -> Option<&str> {
        self.link.and_then(|l| l.name.as_deref())
    }

    fn phone(&self) -> Option<&str> {
        self.link.and_then(|l| l.phone.as_deref())
    }

    fn is_card(&self) -> bool {
        self.tx.payment_type == "card"
    }

    /// The merchant's meta as Flutterwave hands it back: with its own `__CheckoutInitAddress`
    /// added, as in the verify-by-reference fixture; `null` when the merchant sent none.
    fn meta(&self) -> Option<Map<String, Value>> {
        let link = self.link?;
        let mut meta = link.meta.clone()?;
        meta.insert("__CheckoutInitAddress".into(), Value::String(format!("{}/v3/hosted/pay", self.base)));
        Some(meta)
    }

    /// UNVERIFIED beyond card/bank transfer: Flutterwave's `event.type` for the other methods is
    /// guessed from its naming pattern.
    fn event_type(&self) -> String {
        match self.tx.payment_type.as_str() {
            "card" => "CARD_TRANSACTION".into(),
            "bank_transfer" => "BANK_TRANSFER_TRANSACTION".into(),
            "mobilemoneyghana" => "MOBILEMONEYGH_TRANSACTION".into(),
            other => format!("{}_TRANSACTION", other.to_uppercase()),
        }
    }

    /// Free text, unreliable by design (§3): never a status signal.
    fn processor_response(&self) -> &'static str {
        match (self.tx.status.as_str(), self.is_card()) {
            ("successful", true) => "Approved by Financial Institution",
            ("successful", false) => "Approved",
            ("failed", true) => "Insufficient Funds",
            ("failed", false) => "Transaction failed",
            ("pending", _) => "Transaction is pending. Please wait for confirmation",
            _ => "Transaction cancelled",
        }
    }

    /// UNVERIFIED for non-card methods.
    fn auth_model(&self) -> &'static str {
        match self.tx.payment_type.as_str() {
            "card" => "PIN",
            "bank_transfer" => "AUTH",
            "ussd" => "USSD",
            p if p == "mpesa" || p.starts_with("mobilemoney") => "MOBILEMONEY",
            _ => "NOAUTH",
        }
    }

    /// Card payments say "CARD Transaction " (trailing space and all); others carry the business name.
    fn narration(&self) -> &'static str {
        if self.is_card() { "CARD Transaction " } else { "Pipepay Test Merchant" }
    }

    fn amount_settled(&self) -> Decimal {
        // UNVERIFIED: nothing settles for an attempt that did not succeed.
        if self.tx.status == "successful" { self.tx.charged_amount - self.app_fee() } else { Decimal::ZERO }
    }

    /// The `data` object of the v3 verify response and (without token, meta, amount_settled) of
    /// the v3 webhook, in the fixtures' key order.
    fn v3_data(&self, verify: bool) -> String {
        let tx = self.tx;
        let mut fields = vec![
            ("id", tx.id.to_string()),
            ("tx_ref", s(&tx.tx_ref)),
            ("flw_ref", s(&tx.flw_ref)),
            ("device_fingerprint", s(&self.fingerprint())),
            ("amount", num(tx.amount)),
            ("currency", s(&tx.currency)),
            ("charged_amount", num(tx.charged_amount)),
            ("app_fee", num(self.app_fee())),
            ("merchant_fee", "0".into()),
            ("processor_response", s(self.processor_response())),
            ("auth_model", s(self.auth_model())),
            ("ip", s(&self.ip())),
            ("narration", s(self.narration())),
            ("status", s(&tx.status)),
            ("payment_type", s(&tx.payment_type)),
            ("created_at", s(&self.created_at())),
            ("account_id", self.merchant.account_id.to_string()),
        ];
        let (first6, last4, issuer, country, kind, expiry) = TEST_CARD;
        if verify {
            if self.is_card() {
                let token = self.stored.map(|t| t.card_token.clone()).unwrap_or_default();
                fields.push((
                    "card",
                    obj(&[
                        ("first_6digits", s(first6)),
                        ("last_4digits", s(last4)),
                        ("issuer", s(issuer)),
                        ("country", s("NIGERIA NG")),
                        ("type", s(kind)),
                        ("token", s(&token)),
                        ("expiry", s(expiry)),
                    ]),
                ));
            }
            fields.push(("meta", self.meta().map(|m| json(&Value::Object(m))).unwrap_or_else(null)));
            fields.push(("amount_settled", num(self.amount_settled())));
            fields.push((
                "customer",
                obj(&[
                    ("id", self.customer_id().to_string()),
                    ("name", s(self.name().unwrap_or("N/A"))),
                    ("phone_number", s(self.phone().unwrap_or("N/A"))),
                    ("email", s(&tx.customer_email)),
                    ("created_at", s(&self.customer_created_at())),
                ]),
            ));
        } else {
            fields.push((
                "customer",
                obj(&[
                    ("id", self.customer_id().to_string()),
                    ("name", opt_s(self.name())),
                    ("phone_number", opt_s(self.phone())),
                    ("email", s(&tx.customer_email)),
                    ("created_at", s(&self.customer_created_at())),
                ]),
            ));
            if self.is_card() {
                fields.push((
                    "card",
                    obj(&[
                        ("first_6digits", s(first6)),
                        ("last_4digits", s(last4)),
                        ("issuer", s(issuer)),
                        ("country", s(country)),
                        ("type", s(kind)),
                        ("expiry", s(expiry)),
                    ]),
                ));
            }
        }
        obj(&fields)
    }

    /// `{"event":"charge.completed","data":{…},"meta_data":{…},"event.type":"…"}`.
    fn v3_webhook(&self) -> String {
        let mut fields = vec![("event", s("charge.completed")), ("data", self.v3_data(false))];
        // The merchant meta comes back as top-level `meta_data`; bank transfers add the
        // originator's details (UNVERIFIED key names, from memory of the real 2025 capture).
        let mut meta = self.meta();
        if self.tx.payment_type == "bank_transfer" {
            let m = meta.get_or_insert_with(Map::new);
            m.insert("originatoraccountnumber".into(), Value::String("123*******90".into()));
            m.insert("originatorname".into(), Value::String("JOHN DOE".into()));
            m.insert("bankname".into(), Value::String("Access Bank".into()));
            m.insert("originatoramount".into(), Value::String("N/A".into()));
        }
        if let Some(meta) = meta {
            fields.push(("meta_data", json(&Value::Object(meta))));
        }
        fields.push(("event.type", s(&self.event_type())));
        obj(&fields)
    }

    /// The flat camelCase v2/"Rave" shape (no `event`, no `data`).
    fn legacy_webhook(&self) -> String {
        let tx = self.tx;
        let created = self.created_at();
        let order_ref =
            self.stored.map(|t| t.order_ref.clone()).unwrap_or_else(|| format!("URF_{}", now_ms()));
        let entity = if self.is_card() {
            obj(&[
                ("card6", s(TEST_CARD.0)),
                ("card_last4", s(TEST_CARD.1)),
                ("card_country_iso", s(TEST_CARD.3)),
                ("createdAt", s(&created)),
            ])
        } else {
            // UNVERIFIED: the v2 entity of non-card payments.
            obj(&[
                ("account_number", s("0690000037")),
                ("first_name", s(self.name().unwrap_or("N/A"))),
                ("last_name", s("N/A")),
                ("createdAt", s(&created)),
            ])
        };
        obj(&[
            ("id", tx.id.to_string()),
            ("txRef", s(&tx.tx_ref)),
            ("flwRef", s(&tx.flw_ref)),
            ("orderRef", s(&order_ref)),
            ("paymentPlan", null()),
            ("paymentPage", null()),
            ("createdAt", s(&created)),
            ("amount", num(tx.amount)),
            ("charged_amount", num(tx.charged_amount)),
            ("status", s(&tx.status)),
            ("IP", s(&self.ip())),
            ("currency", s(&tx.currency)),
            ("appfee", num(self.app_fee())),
            ("merchantfee", "0".into()),
            ("merchantbearsfee", if tx.charged_amount == tx.amount { "1" } else { "0" }.into()),
            (
                "customer",
                obj(&[
                    ("id", self.customer_id().to_string()),
                    ("phone", opt_s(self.phone())),
                    ("fullName", s(self.name().unwrap_or("Anonymous customer"))),
                    ("customertoken", null()),
                    ("email", s(&tx.customer_email)),
                    ("createdAt", s(&self.customer_created_at())),
                    ("updatedAt", s(&self.customer_created_at())),
                    ("deletedAt", null()),
                    ("AccountId", self.merchant.account_id.to_string()),
                ]),
            ),
            ("entity", entity),
            ("event.type", s(&self.event_type())),
        ])
    }

    /// The v4 shape of the docs copy (keys sorted as in its sample). The top-level `id` is the
    /// webhook's `wbk_…` id, not the charge: a client that normalises `data.id|id` naively trips here.
    fn v4_webhook(&self) -> String {
        let tx = self.tx;
        let created = secs(self.created_ms());
        let customer_created = secs(self.customer.map(|c| c.created_ms).unwrap_or_else(|| self.created_ms()));
        let customer_id = self.customer.map(|c| c.v4_id.clone()).unwrap_or_else(|| "cus_0000000000".into());
        let charge_id = self.stored.map(|t| t.charge_id.clone()).unwrap_or_else(|| format!("chg_{}", tx.id));
        let pmd_id =
            self.stored.map(|t| t.payment_method_id.clone()).unwrap_or_else(|| "pmd_0000000000".into());
        let status = match tx.status.as_str() {
            "successful" => "succeeded",
            other => other,
        };
        // UNVERIFIED: only the approved response appears in the docs copy.
        let processor = match status {
            "succeeded" => obj(&[("code", s("00")), ("type", s("approved"))]),
            "pending" => obj(&[("code", s("02")), ("type", s("pending"))]),
            _ => obj(&[("code", s("51")), ("type", s("insufficient_funds"))]),
        };
        // UNVERIFIED: v4 customer names are {first, middle, last}; the sample has null.
        let name = match self.name() {
            Some(full) => {
                let (first, last) = full.split_once(' ').unwrap_or((full, ""));
                obj(&[("first", s(first)), ("last", s(last)), ("middle", null())])
            }
            None => null(),
        };
        let phone = match self.phone() {
            Some(p) => obj(&[("country_code", s("234")), ("number", s(p.trim_start_matches('0')))]),
            None => null(),
        };
        let (kind, details) = match tx.payment_type.as_str() {
            "card" => (
                "card",
                Some(obj(&[
                    ("expiry_month", "9".into()),
                    ("expiry_year", "32".into()),
                    ("first_six", s(TEST_CARD.0)),
                    ("last_four", s(TEST_CARD.1)),
                    ("network", s("MASTERCARD")),
                ])),
            ),
            p if p == "mpesa" || p.starts_with("mobilemoney") => {
                let (country, network) = match p {
                    "mpesa" => ("254", "MPESA"),
                    "mobilemoneyghana" => ("233", "MTN"),
                    _ => ("256", "MTN"),
                };
                let number = self.phone().unwrap_or("700000000").trim_start_matches('0').to_owned();
                (
                    "mobile_money",
                    Some(obj(&[
                        ("country_code", s(country)),
                        ("network", s(network)),
                        ("phone_number", s(&number)),
                    ])),
                )
            }
            "account" => ("bank_account", None),
            other => (other, None),
        };
        let mut payment_method = vec![
            ("client_ip", s(&self.ip())),
            ("created_datetime", created.clone()),
            ("customer_id", s(&customer_id)),
            ("device_fingerprint", s(&self.fingerprint())),
            ("id", s(&pmd_id)),
            ("meta", "{}".into()),
        ];
        if let Some(details) = details {
            payment_method.push((kind, details));
        }
        payment_method.push(("type", s(kind)));
        payment_method.sort_by_key(|(key, _)| *key);
        let meta = self.link.and_then(|l| l.meta.clone()).unwrap_or_default();
        let redirect = self.link.and_then(|l| l.redirect_url.as_deref());
        let data = obj(&[
            ("amount", num(tx.amount)),
            ("created_datetime", created),
            ("currency", s(&tx.currency)),
            (
                "customer",
                obj(&[
                    ("address", null()),
                    ("created_datetime", customer_created),
                    ("email", s(&tx.customer_email)),
                    ("id", s(&customer_id)),
                    ("meta", "{}".into()),
                    ("name", name),
                    ("phone", phone),
                ]),
            ),
            ("description", null()),
            ("id", s(&charge_id)),
            ("meta", json(&Value::Object(meta))),
            ("payment_method", obj(&payment_method)),
            ("processor_response", processor),
            ("redirect_url", opt_s(redirect)),
            ("reference", s(&tx.tx_ref)),
            ("status", s(status)),
        ]);
        obj(&[
            ("data", data),
            ("id", s(self.webhook_id)),
            ("timestamp", self.status_ms.to_string()),
            ("type", s("charge.completed")),
        ])
    }
}

/// `{"k":v,…}` from already-serialised values, in the given order.
fn obj(fields: &[(&str, String)]) -> String {
    let mut out = String::from("{");
    for (i, (key, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&s(key));
        out.push(':');
        out.push_str(value);
    }
    out.push('}');
    out
}

fn s(text: &str) -> String {
    serde_json::to_string(text).expect("a string serialises")
}

fn opt_s(text: Option<&str>) -> String {
    text.map(s).unwrap_or_else(null)
}

fn null() -> String {
    "null".into()
}

fn json(value: &Value) -> String {
    serde_json::to_string(value).expect("a JSON value serialises")
}

/// An exact JSON number: never through f64. Trailing zeros go, as from a JavaScript backend.
fn num(amount: Decimal) -> String {
    amount.normalize().to_string()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// `2020-07-15T14:31:16.000Z`, Flutterwave's timestamp format.
fn iso(ms: i64) -> String {
    let at = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
    at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// `1735116842.116`: v4's seconds-with-milliseconds timestamps.
fn secs(ms: i64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

const HEX: &[u8] = b"0123456789abcdef";
const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/// Link ids look like lower-case ULIDs: `flwlnk-01hynrt7cd1fpm6gtef6khn93g`.
const CROCKFORD: &[u8] = b"0123456789abcdefghjkmnpqrstvwxyz";

fn rand_chars(alphabet: &[u8], n: usize) -> String {
    (0..n).map(|_| alphabet[rand::random_range(0..alphabet.len())] as char).collect()
}

async fn send_webhook(
    http: &reqwest::Client,
    url: &str,
    body: String,
    hash: &str,
    signature: Signature,
) -> u16 {
    let mut request = http.post(url).header(header::CONTENT_TYPE, "application/json");
    request = match signature {
        Signature::VerifHash => request.header("verif-hash", hash),
        Signature::HmacBase64 => request.header("flutterwave-signature", hmac_base64(hash, body.as_bytes())),
        Signature::PlainHash => request.header("flutterwave-signature", hash),
        Signature::Missing => request,
        Signature::Wrong => request.header("verif-hash", "not-the-hash"),
    };
    match request.body(body).send().await {
        Ok(response) => response.status().as_u16(),
        Err(e) => {
            eprintln!("fake Flutterwave: webhook to {url} got no answer: {e}");
            0
        }
    }
}

fn hmac_base64(key: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

// ------------------------------------------------------------------------------------------------
// HTTP
// ------------------------------------------------------------------------------------------------

fn respond(status: u16, body: String) -> Response {
    let status = StatusCode::from_u16(status).expect("a valid status");
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"))], body)
        .into_response()
}

/// `{"status":"error","message":…,"data":null}`, v3's error envelope.
fn error(status: u16, message: &str) -> Response {
    respond(status, obj(&[("status", s("error")), ("message", s(message)), ("data", null())]))
}

fn success(message: &str, data: String) -> Response {
    respond(200, obj(&[("status", s("success")), ("message", s(message)), ("data", data)]))
}

fn not_found_transaction() -> Response {
    // UNVERIFIED: the HTTP status of this body; 400 like the other v3 client errors.
    error(400, "No transaction was found for this id")
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| key.to_owned())
}

fn is_verify(path: &str) -> bool {
    path == "/v3/transactions/verify_by_reference"
        || (path.starts_with("/v3/transactions/") && path.ends_with("/verify"))
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(link_id) = uri.path().strip_prefix("/v3/hosted/pay/") {
        return hosted(&shared, &method, link_id, &body).await;
    }
    let key = bearer(&headers);
    let fault = {
        let mut st = shared.lock();
        match key.as_deref().and_then(|k| st.merchants.get_mut(k)) {
            Some(merchant) => {
                if is_verify(uri.path()) {
                    let call = uri.path_and_query().map(|p| p.as_str()).unwrap_or(uri.path());
                    merchant.verify_calls.push(call.to_owned());
                }
                merchant.faults.pop_front()
            }
            None => None,
        }
    };
    let answer = || api(&shared, &method, &uri, &headers, key.as_deref(), &body);
    match fault {
        None => answer(),
        Some(Fault::Unauthorized) => error(401, "Invalid authorization key"),
        // UNVERIFIED: the 429 body; v3's error envelope with a plain message, no Retry-After.
        Some(Fault::TooManyRequests) => error(429, "Too many requests. Please try again later"),
        Some(Fault::ServerError) => {
            let data = obj(&[("error_id", s(&uuid::Uuid::new_v4().to_string()))]);
            respond(
                500,
                obj(&[
                    ("status", s("error")),
                    ("message", s("An error occurred while processing your request. Please try again")),
                    ("data", data),
                ]),
            )
        }
        Some(Fault::SlowThen503(delay)) => {
            // The request was processed; only the answer is lost (D-TO: "still processing").
            let _ = answer();
            tokio::time::sleep(delay).await;
            error(503, "An error occurred. Please contact support")
        }
        Some(Fault::Timeout) => {
            let response = answer();
            tokio::time::sleep(Duration::from_secs(35)).await;
            response
        }
    }
}

/// One authenticated v3 API call.
fn api(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    key: Option<&str>,
    body: &[u8],
) -> Response {
    let mut st = shared.lock();
    let Some(key) = key.filter(|k| st.merchants.contains_key(*k)) else {
        return error(401, "Invalid authorization key");
    };
    let path = uri.path();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method.as_str(), segments.as_slice()) {
        ("POST", ["v3", "payments"]) => create_payment(&mut st, &shared.base, key, headers, body),
        ("POST", ["v3", "payments", "link", "disable"]) => disable_link(&mut st, key, headers, body),
        ("GET", ["v3", "transactions", "verify_by_reference"]) => {
            let tx_ref = url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
                .find(|(k, _)| k == "tx_ref")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            if tx_ref.is_empty() {
                return error(400, "tx_ref is required");
            }
            // UNVERIFIED which attempt the real endpoint returns; the most recent one here.
            match st.txs.iter().rev().find(|t| t.merchant == key && t.tx_ref == tx_ref) {
                Some(tx) => verify_response(&st, &shared.base, tx),
                None => not_found_transaction(),
            }
        }
        ("GET", ["v3", "transactions", id, "verify"]) => {
            let found =
                id.parse::<i64>().ok().and_then(|id| st.txs.iter().find(|t| t.id == id && t.merchant == key));
            match found {
                Some(tx) => verify_response(&st, &shared.base, tx),
                None => not_found_transaction(),
            }
        }
        ("GET", ["v3", "banks", country]) => banks(country),
        ("GET", ["v3", "balances"]) => balances(),
        // UNVERIFIED: the real body for an unknown route.
        _ => error(404, "Route not found"),
    }
}

fn verify_response(st: &Ledger, base: &str, tx: &Tx) -> Response {
    let public = tx.public();
    let ctx = Ctx {
        base,
        tx: &public,
        merchant: st.merchant(&tx.merchant),
        link: Some(&st.links[tx.link]),
        stored: Some(tx),
        customer: st.customers.get(&(tx.merchant.clone(), tx.customer_email.clone())),
        webhook_id: "",
        status_ms: tx.status_ms,
    };
    success("Transaction fetched successfully", ctx.v3_data(true))
}

/// The request body as Express's JSON body parser sees it: only an `application/json` body is
/// parsed; anything else reads as `{}` and fails validation, as it does at Flutterwave (UNVERIFIED:
/// the real message for a body sent without the header).
fn json_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, String> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with("application/json"));
    if !is_json {
        return Ok(Value::Object(Map::new()));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(value @ Value::Object(_)) => Ok(value),
        Ok(_) | Err(_) => Err("Invalid JSON payload".into()),
    }
}

/// Currencies the reference lists (docs' method table ∪ Odoo's list from Flutterwave support).
const CURRENCIES: &[&str] = &[
    "NGN", "USD", "EUR", "GBP", "GHS", "XAF", "XOF", "ZAR", "MWK", "KES", "UGX", "RWF", "TZS", "CAD", "CLP",
    "COP", "EGP", "GNF", "MAD", "SLL", "STD", "ZMW",
];

/// An amount written as a JSON number or a numeric string, parsed exactly.
fn parse_amount(value: &Value) -> Option<Decimal> {
    let text = match value {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => return None,
    };
    Decimal::from_str_exact(&text).or_else(|_| Decimal::from_scientific(&text)).ok()
}

fn optional_string(object: &Map<String, Value>, key: &str, label: &str) -> Result<Option<String>, String> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("{label} must be a string")),
    }
}

fn optional_object<'a>(
    object: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a Map<String, Value>>, String> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(inner)) => Ok(Some(inner)),
        Some(_) => Err(format!("{key} must be an object")),
    }
}

/// `session_duration` (minutes, at most 1440) and `max_retry_attempt`, nested under
/// `configurations` as in the docs' code sample, or at the top level as in its table: both forms
/// are accepted (UNVERIFIED which one the real API honours), and out-of-range values are refused
/// (UNVERIFIED: the docs give the limit, not what happens past it).
fn check_configuration(object: &Map<String, Value>, label: &str) -> Result<(), String> {
    if let Some(value) = object.get("session_duration").filter(|v| !v.is_null())
        && value.as_i64().filter(|m| (1..=1440).contains(m)).is_none()
    {
        return Err(format!("{label}session_duration must be a whole number of minutes from 1 to 1440"));
    }
    if let Some(value) = object.get("max_retry_attempt").filter(|v| !v.is_null())
        && value.as_i64().filter(|n| *n >= 1).is_none()
    {
        return Err(format!("{label}max_retry_attempt must be a positive whole number"));
    }
    Ok(())
}

/// `POST /v3/payments` (Flutterwave Standard). Every refusal is a 400 in v3's error envelope.
fn create_payment(st: &mut Ledger, base: &str, key: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    match new_link(st, base, key, headers, body) {
        Ok(url) => success("Hosted Link", obj(&[("link", s(&url))])),
        Err(message) => error(400, &message),
    }
}

/// Validates a create request and records the link; returns its URL.
fn new_link(
    st: &mut Ledger,
    base: &str,
    key: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<String, String> {
    let request = json_body(headers, body)?;
    let empty = Map::new();
    let fields = request.as_object().unwrap_or(&empty);

    let tx_ref = match fields.get("tx_ref") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        _ => return Err("tx_ref is required".into()),
    };
    let amount = match fields.get("amount") {
        None | Some(Value::Null) => return Err("amount is required".into()),
        Some(value) => match parse_amount(value) {
            Some(amount) if amount > Decimal::ZERO => amount,
            Some(_) => return Err("amount must be greater than 0".into()),
            None => return Err("Invalid amount".into()),
        },
    };
    // UNVERIFIED: the precision accepted per currency; any exact decimal is taken as sent.
    //
    // Documented: no currency means NGN. `null` is treated as omitted (UNVERIFIED), which is the
    // trap a client serialising `None` as null falls into. Case is not folded (UNVERIFIED).
    let currency = match fields.get("currency") {
        None | Some(Value::Null) => "NGN".to_owned(),
        Some(Value::String(c)) if CURRENCIES.contains(&c.as_str()) => c.clone(),
        Some(_) => return Err("Invalid currency".into()),
    };
    let customer = optional_object(fields, "customer")?.ok_or("customer.email is required")?;
    let email = match customer.get("email") {
        Some(Value::String(e)) if !e.trim().is_empty() => e.clone(),
        _ => return Err("customer.email is required".into()),
    };
    let looks_like_email = email
        .split_once('@')
        .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.') && !domain.ends_with('.'));
    if !looks_like_email {
        return Err("customer.email must be a valid email".into());
    }
    let name = optional_string(customer, "name", "customer.name")?;
    // Standard spells it `phonenumber`; `phone_number` (Inline's spelling) is silently ignored.
    let phone = optional_string(customer, "phonenumber", "customer.phonenumber")?;
    let redirect_url = optional_string(fields, "redirect_url", "redirect_url")?;
    // UNVERIFIED: a redirect_url that is not an absolute http(s) URL is refused.
    if let Some(redirect) = &redirect_url
        && !url::Url::parse(redirect).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
    {
        return Err("redirect_url must be a valid URL".into());
    }
    let (title, description) = match optional_object(fields, "customizations")? {
        None => (None, None),
        Some(c) => {
            optional_string(c, "logo", "customizations.logo")?;
            (
                optional_string(c, "title", "customizations.title")?,
                optional_string(c, "description", "customizations.description")?,
            )
        }
    };
    // UNVERIFIED: meta must be an object (the docs only ever show objects).
    let meta = optional_object(fields, "meta")?.cloned();
    optional_string(fields, "payment_options", "payment_options")?;
    check_configuration(fields, "")?;
    if let Some(configurations) = optional_object(fields, "configurations")? {
        check_configuration(configurations, "configurations.")?;
    }
    // UNVERIFIED: the real API's answer to a reused reference; rejected here, per account.
    if st.links.iter().any(|l| l.merchant == key && l.tx_ref == tx_ref) {
        return Err("Duplicate transaction reference. Please use a unique tx_ref".into());
    }

    let id = format!("flwlnk-{}", rand_chars(CROCKFORD, 26));
    let url = format!("{base}/v3/hosted/pay/{id}");
    st.links.push(Link {
        merchant: key.to_owned(),
        via_api: true,
        tx_ref,
        id,
        url: url.clone(),
        request: request.clone(),
        amount,
        currency,
        redirect_url,
        email,
        name,
        phone,
        meta,
        title,
        description,
        disabled: false,
    });
    Ok(url)
}

/// `POST /v3/payments/link/disable`.
fn disable_link(st: &mut Ledger, key: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    let request = match json_body(headers, body) {
        Ok(v) => v,
        Err(message) => return error(400, &message),
    };
    let link = request.get("link").and_then(Value::as_str).unwrap_or_default();
    // Another merchant's link is as inactive as an unknown one, as far as this key can tell.
    match st.links.iter_mut().find(|l| l.merchant == key && l.url == link && !l.disabled) {
        Some(found) => {
            found.disabled = true;
            // The success body is UNVERIFIED (a code comment in the MCP server is its only source).
            success("LINK DISABLED", "true".into())
        }
        None => error(400, "This payment link is currently inactive"),
    }
}

/// `GET /v3/banks/{country}`: a cheap read-only call. Lists are short excerpts.
fn banks(country: &str) -> Response {
    let list: &[(i64, &str, &str)] = match country {
        "NG" => &[
            (191, "044", "Access Bank"),
            (192, "023", "Citibank Nigeria"),
            (193, "050", "Ecobank Nigeria"),
            (194, "070", "Fidelity Bank"),
            (195, "011", "First Bank of Nigeria"),
            (196, "214", "First City Monument Bank"),
            (197, "058", "Guaranty Trust Bank"),
            (198, "082", "Keystone Bank"),
            (199, "076", "Polaris Bank"),
            (200, "221", "Stanbic IBTC Bank"),
            (201, "232", "Sterling Bank"),
            (202, "032", "Union Bank of Nigeria"),
            (203, "033", "United Bank For Africa"),
            (204, "035", "Wema Bank"),
            (205, "057", "Zenith Bank"),
        ],
        "GH" => &[(1, "280100", "Access Bank Ghana"), (2, "300303", "Absa Bank Ghana")],
        "KE" => &[(338, "01", "Kenya Commercial Bank"), (339, "68", "Equity Bank")],
        // UNVERIFIED: the real answer for a country Flutterwave does not serve.
        _ => return error(400, "Invalid country code"),
    };
    let data: Vec<String> = list
        .iter()
        .map(|(id, code, name)| obj(&[("id", id.to_string()), ("code", s(code)), ("name", s(name))]))
        .collect();
    success("Banks fetched successfully", format!("[{}]", data.join(",")))
}

/// `GET /v3/balances`: the fixture's three wallets.
fn balances() -> Response {
    let wallets: Vec<String> =
        [("NGN", "2367840", "253125.82"), ("KES", "0", "1226.72"), ("USD", "0", "472.08")]
            .iter()
            .map(|(currency, available, ledger)| {
                obj(&[
                    ("currency", s(currency)),
                    ("available_balance", (*available).to_owned()),
                    ("ledger_balance", (*ledger).to_owned()),
                ])
            })
            .collect();
    success("Wallet balances fetched", format!("[{}]", wallets.join(",")))
}

// ------------------------------------------------------------------------------------------------
// Hosted checkout page
// ------------------------------------------------------------------------------------------------

fn html(status: StatusCode, title: &str, body: &str) -> Response {
    let page = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title></head>\n<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n",
        title = escape(title)
    );
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"))], page)
        .into_response()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// `{redirect_url}?status=…&tx_ref=…[&transaction_id=…]`, keeping any query the URL already has.
fn redirect_to(redirect_url: &str, status: &str, tx_ref: &str, transaction_id: Option<i64>) -> String {
    let mut url = url::Url::parse(redirect_url).expect("redirect_url was checked at creation");
    {
        let mut query = url.query_pairs_mut();
        query.append_pair("status", status).append_pair("tx_ref", tx_ref);
        if let Some(id) = transaction_id {
            query.append_pair("transaction_id", &id.to_string());
        }
    }
    url.into()
}

/// `GET|POST /v3/hosted/pay/{flwlnk-…}`: the page the customer opens. No API key: it is public.
async fn hosted(shared: &Shared, method: &Method, link_id: &str, body: &[u8]) -> Response {
    let action = url::form_urlencoded::parse(body).find(|(k, _)| k == "action").map(|(_, v)| v.into_owned());
    let outcome = {
        let mut st = shared.lock();
        let Some(index) = st.links.iter().position(|l| l.id == link_id) else {
            return html(StatusCode::NOT_FOUND, "Payment link not found", "<h1>Payment link not found</h1>");
        };
        let link = &st.links[index];
        if link.disabled {
            return html(
                StatusCode::GONE,
                "Payment link inactive",
                "<h1>This payment link is currently inactive</h1>",
            );
        }
        let paid = st.txs.iter().any(|t| t.link == index && t.status == "successful");
        if paid {
            return html(
                StatusCode::OK,
                "Payment completed",
                "<h1>This payment has already been completed</h1>",
            );
        }
        let title = link.title.clone().unwrap_or_else(|| "Flutterwave Checkout".into());
        if *method == Method::GET {
            let description =
                link.description.as_deref().map(|d| format!("<p>{}</p>\n", escape(d))).unwrap_or_default();
            let amount = num(link.amount);
            let body = format!(
                "<h1>{title}</h1>\n{description}<p>Amount to pay: <strong id=\"amount\">{currency} {amount}</strong></p>\n\
                 <p>Paying as {email}</p>\n\
                 <form method=\"post\" action=\"/v3/hosted/pay/{id}\" aria-label=\"Payment\">\n\
                 <button type=\"submit\" name=\"action\" value=\"pay\">Pay</button>\n\
                 <button type=\"submit\" name=\"action\" value=\"fail\">Fail</button>\n\
                 <button type=\"submit\" name=\"action\" value=\"cancel\">Cancel</button>\n\
                 </form>",
                title = escape(&title),
                currency = escape(&link.currency),
                email = escape(&link.email),
                id = escape(&link.id),
            );
            return html(StatusCode::OK, &format!("Pay {title}"), &body);
        }
        if *method != Method::POST {
            return html(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed", "<h1>Method not allowed</h1>");
        }
        let redirect_url = link.redirect_url.clone();
        let tx_ref = link.tx_ref.clone();
        let merchant = link.merchant.clone();
        let outcome = match action.as_deref() {
            Some("pay") => Outcome::Successful,
            Some("fail") => Outcome::Failed,
            Some("cancel") => {
                return match redirect_url {
                    Some(r) => found(&redirect_to(&r, "cancelled", &tx_ref, None)),
                    None => html(StatusCode::OK, "Payment cancelled", "<h1>Payment cancelled</h1>"),
                };
            }
            _ => return html(StatusCode::BAD_REQUEST, "Bad request", "<h1>Choose Pay, Fail or Cancel</h1>"),
        };
        let tx = match st.attempt(index, &Payment::card(outcome)) {
            Ok(tx) => tx,
            Err(why) => {
                return html(
                    StatusCode::BAD_REQUEST,
                    "Payment refused",
                    &format!("<h1>{}</h1>", escape(&why)),
                );
            }
        };
        let target = st.merchant(&merchant).webhook_target.clone();
        let webhook = target.map(|(url, shape, signature)| {
            let (body, hash) = st.webhook(&shared.base, &tx, shape);
            (url, body, hash, signature)
        });
        (tx, redirect_url, merchant, webhook)
    };
    let (tx, redirect_url, merchant, webhook) = outcome;
    // The webhook goes out before the redirect is answered, so a browser test finds it delivered
    // when the customer lands. (At the real Flutterwave the two race; pipepay must verify either way.)
    if let Some((url, body, hash, signature)) = webhook {
        let status = send_webhook(shared.http(), &url, body, &hash, signature).await;
        shared.lock().merchant_mut(&merchant).checkout_webhooks.push(status);
    }
    match redirect_url {
        Some(r) => found(&redirect_to(&r, &tx.status, &tx.tx_ref, Some(tx.id))),
        None => html(StatusCode::OK, "Payment finished", &format!("<h1>Payment {}</h1>", escape(&tx.status))),
    }
}

fn found(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(value) => (StatusCode::FOUND, [(header::LOCATION, value)]).into_response(),
        Err(_) => html(StatusCode::INTERNAL_SERVER_ERROR, "Bad redirect", "<h1>Bad redirect URL</h1>"),
    }
}

// ------------------------------------------------------------------------------------------------
// Self-tests
// ------------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KEY: &str = "FLWSECK_TEST-0123456789abcdef0123456789abcdef-X";
    const HASH: &str = "tenant-one-webhook-hash";
    const OTHER_KEY: &str = "FLWSECK_TEST-fedcba9876543210fedcba9876543210-X";
    const OTHER_HASH: &str = "tenant-two-webhook-hash";

    async fn fake() -> FakeFlutterwave {
        let fake = FakeFlutterwave::start().await;
        fake.add_merchant(KEY, HASH);
        fake.add_merchant(OTHER_KEY, OTHER_HASH);
        fake
    }

    fn http() -> reqwest::Client {
        pipepay::install_tls_provider();
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client")
    }

    /// Sends a v3 call; returns the status and the raw body text.
    async fn call(
        fake: &FakeFlutterwave,
        key: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, String) {
        let mut request = http().request(method, format!("{}{path}", fake.base())).bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the fake answers");
        (response.status().as_u16(), response.text().await.expect("a body"))
    }

    fn parse(text: &str) -> Value {
        serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }

    async fn create(fake: &FakeFlutterwave, key: &str, body: Value) -> (u16, Value) {
        let (status, text) = call(fake, key, reqwest::Method::POST, "/v3/payments", Some(body)).await;
        (status, parse(&text))
    }

    fn request(tx_ref: &str) -> Value {
        json!({
            "tx_ref": tx_ref,
            "amount": "7500",
            "currency": "KES",
            "redirect_url": "https://crm.example.com/pay/done?deal=42",
            "customer": {"email": "ada@example.com", "name": "Ada Obi", "phonenumber": "0712345678"},
            "customizations": {"title": "Deal #42", "description": "Consulting <retainer>"},
            "meta": {"tenant": "t1", "deal_id": 42},
            "payment_options": "card, mpesa",
            "configurations": {"session_duration": 60, "max_retry_attempt": 3}
        })
    }

    /// A webhook receiver that records each request's headers and raw body, answering 200.
    async fn receiver() -> (String, Arc<Mutex<Vec<(HeaderMap, Bytes)>>>) {
        let seen: Arc<Mutex<Vec<(HeaderMap, Bytes)>>> = Arc::default();
        let log = seen.clone();
        let app = Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let log = log.clone();
                async move {
                    log.lock().unwrap().push((headers, body));
                    StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, seen)
    }

    #[tokio::test]
    async fn a_payment_without_currency_is_created_in_naira() {
        let fake = fake().await;
        let (status, body) = create(
            &fake,
            KEY,
            json!({"tx_ref": "t1-d1-a", "amount": 5000, "customer": {"email": "ada@example.com"}}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "success");
        assert_eq!(body["message"], "Hosted Link");
        let link = body["data"]["link"].as_str().unwrap();
        assert!(link.starts_with(&format!("{}/v3/hosted/pay/flwlnk-", fake.base())), "{link}");

        let created = fake.created(KEY);
        assert_eq!(created.len(), 1);
        assert_eq!(created[0].tx_ref, "t1-d1-a");
        assert_eq!(created[0].link, link);
        assert!(!created[0].disabled);
        assert!(created[0].request.get("currency").is_none());
        let tx = fake.pay("t1-d1-a", Payment::card(Outcome::Successful));
        assert_eq!(tx.currency, "NGN");
        assert_eq!(tx.amount, Decimal::from(5000));
        assert!(fake.created(OTHER_KEY).is_empty());
    }

    #[tokio::test]
    async fn an_exact_amount_round_trips_through_create_pay_and_verify() {
        let fake = fake().await;
        let mut body = request("t1-d2-a");
        body["amount"] = json!("1234.56");
        let (status, created) = create(&fake, KEY, body).await;
        assert_eq!(status, 200, "{created}");

        let tx = fake.pay("t1-d2-a", Payment::card(Outcome::Successful));
        assert_eq!(tx.amount, Decimal::from_str("1234.56").unwrap());
        assert_eq!(tx.status, "successful");
        assert!(tx.flw_ref.starts_with("FLW-MOCK-"));

        let (status, text) =
            call(&fake, KEY, reqwest::Method::GET, &format!("/v3/transactions/{}/verify", tx.id), None).await;
        assert_eq!(status, 200, "{text}");
        assert!(text.contains("\"amount\":1234.56,"), "{text}");
        let verified = parse(&text);
        assert_eq!(verified["status"], "success");
        assert_eq!(verified["message"], "Transaction fetched successfully");
        let data = &verified["data"];
        assert_eq!(data["amount"].to_string(), "1234.56");
        assert_eq!(data["charged_amount"].to_string(), "1234.56");
        assert_eq!(data["app_fee"].to_string(), "17.28");
        assert_eq!(data["amount_settled"].to_string(), "1217.28");
        assert_eq!(data["id"].as_i64(), Some(tx.id));
        assert_eq!(data["tx_ref"], "t1-d2-a");
        assert_eq!(data["currency"], "KES");
        assert_eq!(data["status"], "successful");
        assert_eq!(data["payment_type"], "card");
        assert_eq!(data["card"]["last_4digits"], "2950");
        assert_eq!(data["meta"]["deal_id"].to_string(), "42");
        assert_eq!(data["meta"]["tenant"], "t1");
        assert!(data["meta"]["__CheckoutInitAddress"].is_string());
        assert_eq!(data["customer"]["email"], "ada@example.com");
        assert_eq!(data["customer"]["phone_number"], "0712345678");
        for key in [
            "flw_ref",
            "device_fingerprint",
            "processor_response",
            "auth_model",
            "ip",
            "narration",
            "created_at",
        ] {
            assert!(data[key].is_string(), "{key} in {data}");
        }
        assert!(data["account_id"].is_i64());
        assert_eq!(fake.verify_calls(KEY), vec![format!("/v3/transactions/{}/verify", tx.id)]);

        // The request is kept exactly as sent.
        assert_eq!(fake.created(KEY)[0].request["amount"], "1234.56");
    }

    #[tokio::test]
    async fn a_reused_tx_ref_is_refused_and_bad_requests_are_400() {
        let fake = fake().await;
        assert_eq!(create(&fake, KEY, request("t1-d3-a")).await.0, 200);
        let (status, body) = create(&fake, KEY, request("t1-d3-a")).await;
        assert_eq!(status, 400);
        assert_eq!(body["status"], "error");
        assert!(body["message"].as_str().unwrap().contains("Duplicate transaction reference"), "{body}");
        assert_eq!(body["data"], Value::Null);
        // Another account may use the same reference.
        assert_eq!(create(&fake, OTHER_KEY, request("t1-d3-a")).await.0, 200);
        assert_eq!(fake.created(KEY).len(), 1);

        for (field, value) in [
            ("amount", json!("0")),
            ("amount", json!("-5")),
            ("amount", json!("abc")),
            ("amount", Value::Null),
            ("tx_ref", json!("")),
            ("currency", json!("naira")),
            ("customer", json!({"name": "No Email"})),
            ("configurations", json!({"session_duration": 5000})),
        ] {
            let mut body = request("t1-d3-b");
            body[field] = value.clone();
            let (status, answer) = create(&fake, KEY, body).await;
            assert_eq!(status, 400, "{field} = {value}: {answer}");
            assert_eq!(answer["status"], "error");
        }
        // A non-JSON body reads as empty, like Express's body parser.
        let response = http()
            .post(format!("{}/v3/payments", fake.base()))
            .bearer_auth(KEY)
            .body(request("t1-d3-c").to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 400);
        assert_eq!(fake.created(KEY).len(), 1);
    }

    #[tokio::test]
    async fn a_link_disables_once_and_then_cannot_be_paid() {
        let fake = fake().await;
        let (_, created) = create(&fake, KEY, request("t1-d4-a")).await;
        let link = created["data"]["link"].as_str().unwrap().to_owned();

        // Another merchant cannot disable it.
        let (status, _) = call(
            &fake,
            OTHER_KEY,
            reqwest::Method::POST,
            "/v3/payments/link/disable",
            Some(json!({"link": link})),
        )
        .await;
        assert_eq!(status, 400);

        let (status, text) =
            call(&fake, KEY, reqwest::Method::POST, "/v3/payments/link/disable", Some(json!({"link": link})))
                .await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(parse(&text), json!({"status": "success", "message": "LINK DISABLED", "data": true}));
        assert!(fake.created(KEY)[0].disabled);

        let (status, text) =
            call(&fake, KEY, reqwest::Method::POST, "/v3/payments/link/disable", Some(json!({"link": link})))
                .await;
        assert_eq!(status, 400);
        assert_eq!(
            parse(&text),
            json!({"status": "error", "message": "This payment link is currently inactive", "data": null})
        );

        let page = http().get(&link).send().await.unwrap();
        assert_eq!(page.status().as_u16(), 410);
        let paid = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            fake.pay("t1-d4-a", Payment::card(Outcome::Successful))
        }));
        let message = paid.expect_err("a disabled link cannot be paid");
        let message = message.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(message.contains("disabled"), "{message}");
        assert!(fake.transactions("t1-d4-a").is_empty());
    }

    #[tokio::test]
    async fn a_wrong_or_missing_key_is_401() {
        let fake = fake().await;
        for key in ["FLWSECK_TEST-nobody-X", ""] {
            let (status, body) = create(&fake, key, request("t1-d5-a")).await;
            assert_eq!(status, 401);
            assert_eq!(
                body,
                json!({"status": "error", "message": "Invalid authorization key", "data": null})
            );
        }
        let response = http().get(format!("{}/v3/banks/NG", fake.base())).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 401);
        assert!(fake.created(KEY).is_empty());

        let (status, text) = call(&fake, KEY, reqwest::Method::GET, "/v3/banks/NG", None).await;
        assert_eq!(status, 200);
        let banks = parse(&text);
        assert_eq!(banks["message"], "Banks fetched successfully");
        assert_eq!(banks["data"][0], json!({"id": 191, "code": "044", "name": "Access Bank"}));
        let (status, text) = call(&fake, KEY, reqwest::Method::GET, "/v3/balances", None).await;
        assert_eq!(status, 200);
        assert_eq!(parse(&text)["data"][0]["ledger_balance"].to_string(), "253125.82");
    }

    #[tokio::test]
    async fn verification_only_finds_the_callers_own_transactions() {
        let fake = fake().await;
        create(&fake, KEY, request("t1-d6-a")).await;
        let tx = fake.pay("t1-d6-a", Payment::card(Outcome::Successful));
        let not_found =
            json!({"status": "error", "message": "No transaction was found for this id", "data": null});

        for path in [
            format!("/v3/transactions/{}/verify", tx.id),
            "/v3/transactions/verify_by_reference?tx_ref=t1-d6-a".to_owned(),
        ] {
            let (status, text) = call(&fake, OTHER_KEY, reqwest::Method::GET, &path, None).await;
            assert_eq!((status, parse(&text)), (400, not_found.clone()), "{path}");
        }
        for bad in ["t1-d6-a", "abc", "999", &tx.flw_ref, &fake.charge_id(tx.id)] {
            let (status, text) =
                call(&fake, KEY, reqwest::Method::GET, &format!("/v3/transactions/{bad}/verify"), None).await;
            assert_eq!((status, parse(&text)), (400, not_found.clone()), "{bad}");
        }
        assert_eq!(fake.verify_calls(OTHER_KEY).len(), 2);
        assert_eq!(fake.verify_calls(KEY).len(), 5);
    }

    #[tokio::test]
    async fn verify_by_reference_returns_the_latest_attempt_and_status_changes_show() {
        let fake = fake().await;
        create(&fake, KEY, request("t1-d7-a")).await;
        let (status, _) = call(
            &fake,
            KEY,
            reqwest::Method::GET,
            "/v3/transactions/verify_by_reference?tx_ref=t1-d7-a",
            None,
        )
        .await;
        assert_eq!(status, 400, "no transaction exists before the customer pays");

        let failed = fake.pay("t1-d7-a", Payment::card(Outcome::Failed));
        let pending = fake.pay("t1-d7-a", Payment::by(Outcome::Pending, "mpesa"));
        assert!(pending.id > failed.id);
        assert_eq!(fake.transactions("t1-d7-a").len(), 2);
        let (status, text) = call(
            &fake,
            KEY,
            reqwest::Method::GET,
            "/v3/transactions/verify_by_reference?tx_ref=t1-d7-a",
            None,
        )
        .await;
        assert_eq!(status, 200);
        let data = parse(&text)["data"].clone();
        assert_eq!(data["id"].as_i64(), Some(pending.id));
        assert_eq!(data["status"], "pending");
        assert!(data.get("card").is_none());

        let v4 = parse(&fake.webhook_body(&pending, Shape::V4));
        assert_eq!(v4["data"]["status"], "pending");
        assert_eq!(v4["data"]["payment_method"]["type"], "mobile_money");
        assert_eq!(v4["data"]["payment_method"]["mobile_money"]["network"], "MPESA");

        fake.set_status(pending.id, "successful");
        assert_eq!(fake.transaction(pending.id).status, "successful");
        let (_, text) =
            call(&fake, KEY, reqwest::Method::GET, &format!("/v3/transactions/{}/verify", pending.id), None)
                .await;
        assert_eq!(parse(&text)["data"]["status"], "successful");
        assert_eq!(
            fake.verify_calls(KEY),
            vec![
                "/v3/transactions/verify_by_reference?tx_ref=t1-d7-a".to_owned(),
                "/v3/transactions/verify_by_reference?tx_ref=t1-d7-a".to_owned(),
                format!("/v3/transactions/{}/verify", pending.id),
            ]
        );
    }

    #[tokio::test]
    async fn each_webhook_shape_carries_the_reference_and_status() {
        let fake = fake().await;
        let mut body = request("t1-d8-a");
        body["amount"] = json!(1234.5);
        create(&fake, KEY, body).await;
        let ok = fake.pay("t1-d8-a", Payment::card(Outcome::Successful));
        create(&fake, KEY, request("t1-d8-b")).await;
        let failed = fake.pay("t1-d8-b", Payment::by(Outcome::Failed, "bank_transfer"));

        let v3 = parse(&fake.webhook_body(&ok, Shape::V3));
        assert_eq!(v3["event"], "charge.completed");
        assert_eq!(v3["event.type"], "CARD_TRANSACTION");
        assert_eq!(v3["data"]["id"].as_i64(), Some(ok.id));
        assert_eq!(v3["data"]["tx_ref"], "t1-d8-a");
        assert_eq!(v3["data"]["status"], "successful");
        assert_eq!(v3["data"]["amount"].to_string(), "1234.5");
        assert_eq!(v3["data"]["customer"]["email"], "ada@example.com");
        assert_eq!(v3["data"]["card"]["first_6digits"], "553188");
        assert!(v3["data"].get("meta").is_none());
        assert_eq!(v3["meta_data"]["deal_id"].to_string(), "42");
        let v3_failed = parse(&fake.webhook_body(&failed, Shape::V3));
        assert_eq!(v3_failed["data"]["status"], "failed");
        assert_eq!(v3_failed["event.type"], "BANK_TRANSFER_TRANSACTION");
        assert!(v3_failed["data"].get("card").is_none());
        assert!(v3_failed["meta_data"]["originatorname"].is_string());

        let flat = parse(&fake.webhook_body(&ok, Shape::LegacyFlat));
        assert!(flat.get("data").is_none() && flat.get("event").is_none());
        assert_eq!(flat["id"].as_i64(), Some(ok.id));
        assert_eq!(flat["txRef"], "t1-d8-a");
        assert_eq!(flat["flwRef"], ok.flw_ref.as_str());
        assert_eq!(flat["status"], "successful");
        assert_eq!(flat["event.type"], "CARD_TRANSACTION");
        assert_eq!(flat["customer"]["email"], "ada@example.com");
        assert_eq!(parse(&fake.webhook_body(&failed, Shape::LegacyFlat))["status"], "failed");

        let v4_text = fake.webhook_body(&ok, Shape::V4);
        assert!(!v4_text.contains(&ok.id.to_string()), "v4 carries no numeric id: {v4_text}");
        let v4 = parse(&v4_text);
        assert_eq!(v4["type"], "charge.completed");
        assert!(v4["id"].as_str().unwrap().starts_with("wbk_"));
        assert!(v4["timestamp"].is_i64());
        assert_eq!(v4["data"]["id"], fake.charge_id(ok.id).as_str());
        assert!(v4["data"]["id"].as_str().unwrap().starts_with("chg_"));
        assert_eq!(v4["data"]["reference"], "t1-d8-a");
        assert_eq!(v4["data"]["status"], "succeeded");
        assert_eq!(v4["data"]["payment_method"]["type"], "card");
        assert_eq!(v4["data"]["meta"]["tenant"], "t1");
        assert_eq!(parse(&fake.webhook_body(&failed, Shape::V4))["data"]["status"], "failed");
        // Redelivery of the same event is byte-identical, so webhook_body is what deliver sends.
        assert_eq!(fake.webhook_body(&ok, Shape::V4), v4_text);

        // A forged body says what the caller says; the API still tells the truth.
        let mut forged = failed.clone();
        forged.status = "successful".into();
        assert_eq!(parse(&fake.webhook_body(&forged, Shape::V3))["data"]["status"], "successful");
        assert_eq!(fake.transaction(failed.id).status, "failed");
    }

    #[tokio::test]
    async fn webhooks_are_signed_as_asked() {
        let fake = fake().await;
        create(&fake, KEY, request("t1-d9-a")).await;
        let tx = fake.pay("t1-d9-a", Payment::card(Outcome::Successful));
        let (url, seen) = receiver().await;

        for signature in [
            Signature::VerifHash,
            Signature::HmacBase64,
            Signature::PlainHash,
            Signature::Missing,
            Signature::Wrong,
        ] {
            assert_eq!(fake.deliver(&url, &tx, Shape::V3, signature).await, 200);
        }
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 5);
        let expected_body = fake.webhook_body(&tx, Shape::V3);
        for (headers, body) in &seen {
            assert_eq!(body.as_ref(), expected_body.as_bytes());
            assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        }
        let get = |i: usize, name: &str| seen[i].0.get(name).map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(get(0, "verif-hash").as_deref(), Some(HASH));
        assert_eq!(get(0, "flutterwave-signature"), None);

        // An independent HMAC-SHA256 (RFC 2104 by hand over sha2), base64 of the raw bytes received.
        use sha2::Digest;
        let mut key = [0u8; 64];
        key[..HASH.len()].copy_from_slice(HASH.as_bytes());
        let inner: Vec<u8> = key.iter().map(|b| b ^ 0x36).chain(seen[1].1.iter().copied()).collect();
        let inner = Sha256::digest(&inner);
        let outer: Vec<u8> = key.iter().map(|b| b ^ 0x5c).chain(inner.iter().copied()).collect();
        let expected = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&outer));
        assert_eq!(get(1, "flutterwave-signature"), Some(expected));
        assert_eq!(get(1, "verif-hash"), None);

        assert_eq!(get(2, "flutterwave-signature").as_deref(), Some(HASH));
        assert_eq!((get(3, "verif-hash"), get(3, "flutterwave-signature")), (None, None));
        assert_eq!(get(4, "verif-hash").as_deref(), Some("not-the-hash"));

        // The other merchant's transactions are signed with its own hash.
        create(&fake, OTHER_KEY, request("t2-d9-a")).await;
        let theirs = fake.pay("t2-d9-a", Payment::card(Outcome::Successful));
        let (url2, seen2) = receiver().await;
        fake.deliver(&url2, &theirs, Shape::LegacyFlat, Signature::VerifHash).await;
        assert_eq!(seen2.lock().unwrap()[0].0["verif-hash"], OTHER_HASH);

        // Nobody listening: 0.
        assert_eq!(fake.deliver("http://127.0.0.1:9/hook", &tx, Shape::V3, Signature::VerifHash).await, 0);
    }

    #[tokio::test]
    async fn a_slow_503_still_creates_the_payment_and_faults_come_in_order() {
        let fake = fake().await;
        fake.fail_next(KEY, vec![Fault::SlowThen503(Duration::from_millis(200))]);
        let started = std::time::Instant::now();
        let (status, body) = create(&fake, KEY, request("t1-d10-a")).await;
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(status, 503);
        assert_eq!(
            body,
            json!({"status": "error", "message": "An error occurred. Please contact support", "data": null})
        );
        let created = fake.created(KEY);
        assert_eq!(created.len(), 1, "the request was processed despite the 503");
        assert_eq!(created[0].tx_ref, "t1-d10-a");
        // Retrying the same reference now hits the duplicate.
        assert_eq!(create(&fake, KEY, request("t1-d10-a")).await.0, 400);

        fake.fail_next(KEY, vec![Fault::Unauthorized, Fault::TooManyRequests, Fault::ServerError]);
        let (status, body) = create(&fake, KEY, request("t1-d10-b")).await;
        assert_eq!((status, body["message"].as_str()), (401, Some("Invalid authorization key")));
        let (status, body) = create(&fake, KEY, request("t1-d10-b")).await;
        assert_eq!((status, body["status"].as_str()), (429, Some("error")));
        let (status, body) = create(&fake, KEY, request("t1-d10-b")).await;
        assert_eq!(status, 500);
        assert!(body["data"]["error_id"].is_string(), "{body}");
        assert_eq!(fake.created(KEY).len(), 1, "failed calls create nothing");
        assert_eq!(create(&fake, KEY, request("t1-d10-b")).await.0, 200);
        // Faults are per key.
        fake.fail_next(OTHER_KEY, vec![Fault::ServerError]);
        assert_eq!(create(&fake, KEY, request("t1-d10-c")).await.0, 200);
    }

    #[tokio::test]
    async fn the_hosted_page_pays_delivers_the_webhook_and_redirects() {
        let fake = fake().await;
        let (hook, seen) = receiver().await;
        fake.set_webhook_target(KEY, &hook, Shape::V3, Signature::VerifHash);
        let (_, created) = create(&fake, KEY, request("t1-d11-a")).await;
        let link = created["data"]["link"].as_str().unwrap().to_owned();

        let page = http().get(&link).send().await.unwrap();
        assert_eq!(page.status().as_u16(), 200);
        let html = page.text().await.unwrap();
        assert!(html.contains("KES 7500"), "{html}");
        assert!(html.contains("Consulting &lt;retainer&gt;"), "{html}");
        for label in [">Pay<", ">Fail<", ">Cancel<"] {
            assert!(html.contains(label), "{label} in {html}");
        }

        let post = |action: &'static str| {
            http()
                .post(&link)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(format!("action={action}"))
                .send()
        };
        let cancelled = post("cancel").await.unwrap();
        assert_eq!(cancelled.status().as_u16(), 302);
        assert_eq!(
            cancelled.headers()[header::LOCATION],
            "https://crm.example.com/pay/done?deal=42&status=cancelled&tx_ref=t1-d11-a"
        );
        assert!(fake.transactions("t1-d11-a").is_empty());

        let failed = post("fail").await.unwrap();
        assert_eq!(failed.status().as_u16(), 302);
        let paid = post("pay").await.unwrap();
        assert_eq!(paid.status().as_u16(), 302);
        let location = url::Url::parse(paid.headers()[header::LOCATION].to_str().unwrap()).unwrap();
        let query: HashMap<String, String> = location.query_pairs().into_owned().collect();
        assert_eq!(query["status"], "successful");
        assert_eq!(query["tx_ref"], "t1-d11-a");
        let id: i64 = query["transaction_id"].parse().unwrap();

        let attempts = fake.transactions("t1-d11-a");
        assert_eq!(attempts.len(), 2);
        assert_eq!(attempts[0].status, "failed");
        assert_eq!(attempts[1].id, id);
        assert_eq!(attempts[1].amount, Decimal::from(7500));
        assert_eq!(fake.checkout_webhook_statuses(KEY), vec![200, 200]);
        let seen = seen.lock().unwrap().clone();
        let last = parse(std::str::from_utf8(&seen[1].1).unwrap());
        assert_eq!(last["data"]["id"].as_i64(), Some(id));
        assert_eq!(last["data"]["status"], "successful");
        assert_eq!(seen[1].0["verif-hash"], HASH);

        // Paid: the page no longer takes payments.
        let again = http().get(&link).send().await.unwrap().text().await.unwrap();
        assert!(again.contains("already been completed"), "{again}");
    }

    #[tokio::test]
    async fn foreign_links_and_customer_borne_fees() {
        let fake = fake().await;
        let link = fake.create_foreign_link(KEY, "Links-616626414629", Decimal::from(100), "NGN");
        assert!(link.contains("/v3/hosted/pay/flwlnk-"));
        assert!(fake.created(KEY).is_empty(), "dashboard links are not API creations");
        fake.set_customer_bears_fee(KEY, true);
        let tx = fake.pay("Links-616626414629", Payment::card(Outcome::Successful));
        assert_eq!(tx.charged_amount, Decimal::from_str("101.4").unwrap());
        let (status, text) =
            call(&fake, KEY, reqwest::Method::GET, &format!("/v3/transactions/{}/verify", tx.id), None).await;
        assert_eq!(status, 200);
        let data = parse(&text)["data"].clone();
        assert_eq!(data["amount"].to_string(), "100");
        assert_eq!(data["charged_amount"].to_string(), "101.4");
        assert_eq!(data["amount_settled"].to_string(), "100");
        assert_eq!(data["meta"], Value::Null);
        let (hook, seen) = receiver().await;
        assert_eq!(fake.deliver(&hook, &tx, Shape::V3, Signature::VerifHash).await, 200);
        assert_eq!(seen.lock().unwrap()[0].0["verif-hash"], HASH);
    }
}
