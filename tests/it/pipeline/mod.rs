//! The pipeline end to end (issues #5 and #6): a deal reaches a stage in the fake Kommo, a link
//! appears at the fake Flutterwave, the customer pays, the deal is won. Over real HTTP, with
//! the real queue, on both databases.

mod agency_api;
mod crash;
mod group_commit;
mod ingress;
mod queue;
mod stories;

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::fakes::flutterwave::FakeFlutterwave;
use crate::fakes::kommo::{AccountSpec, FakeKommo, LeadSpec};
use crate::kommo::{ACME, app_with_kommo, connect};
use crate::support::Agent;
use crate::support::agent::Owner;
use crate::support::{Engine, TestApp, TestDb};

pub const SECRET: &str = "FLWSECK_TEST-0123456789abcdef0123456789abcdef-X";
pub const HASH: &str = "acme-webhook-hash-7c1d2e3f4a5b";
pub const SALES: i64 = 7001;
pub const NEW: i64 = 7002;
pub const INVOICE: i64 = 7003;

/// A client account wired end to end: Kommo connected, Flutterwave keys set, a trigger stage.
pub struct Shop {
    pub app: TestApp,
    pub kommo: FakeKommo,
    pub flw: FakeFlutterwave,
    pub owner: Owner,
    pub client: String,
    pub kommo_hook: String,
    pub flw_hook: String,
}

impl Shop {
    pub async fn open(engine: Engine) -> Shop {
        Self::open_with(engine, &[]).await
    }

    pub async fn open_with(engine: Engine, extra: &[&str]) -> Shop {
        let kommo = FakeKommo::start().await;
        let mut args: Vec<&str> = extra.to_vec();
        for (flag, default) in
            [("--job-lease", "3"), ("--job-retry-base", "200"), ("--reconcile-every", "3600")]
        {
            if !extra.contains(&flag) {
                args.extend([flag, default]);
            }
        }
        let app = app_with_kommo(engine, &kommo, &args).await;
        let flw = app.flw.clone();
        open_acme(&kommo);
        let owner = app.sign_up("shop@agency.co.ke", "Shop Agency").await;
        let (client, _) = app.add_client(&owner.agent, &owner.agency, "Acme Kenya").await;
        let (kommo_hook, flw_hook) = wire(&owner.agent, &owner.agency, &client, &kommo, &flw).await;
        Shop { kommo_hook, flw_hook, app, kommo, flw, owner, client }
    }

    pub fn path(&self, rest: &str) -> String {
        format!("/api/v1/agencies/{}/clients/{}{rest}", self.owner.agency, self.client)
    }

    /// A lead in the first stage with a contact who has an email.
    pub fn lead(&self, id: i64, price: &str) {
        self.kommo.add_contact(
            ACME,
            id * 10,
            "Wanjiru Kamau",
            Some("wanjiru@example.co.ke"),
            Some("+254700000001"),
        );
        let whole: i64 = price.split('.').next().unwrap().parse().unwrap();
        self.kommo.add_lead(
            ACME,
            LeadSpec {
                id,
                name: format!("Order {id}"),
                price: whole,
                price_with_minor_units: price.contains('.').then(|| price.to_owned()),
                pipeline_id: SALES,
                status_id: NEW,
                contact_ids: vec![id * 10],
                custom_fields_values: None,
            },
        );
    }

    /// A salesperson drags the lead into the invoice stage; Kommo tells pipepay.
    pub async fn to_invoice(&self, lead: i64) {
        let statuses = self.kommo.move_lead(ACME, lead, INVOICE).await;
        assert_eq!(statuses, [200], "pipepay acknowledged Kommo's webhook");
    }

    pub async fn activity(&self) -> Vec<Value> {
        self.owner.agent.json(&self.path("/activity?limit=500")).await.as_array().unwrap().clone()
    }

    pub fn notes(&self, lead: i64) -> Vec<String> {
        self.kommo.notes(ACME, lead).into_iter().map(|n| n.text).collect()
    }

    pub fn stage(&self, lead: i64) -> i64 {
        self.kommo.lead(ACME, lead).unwrap()["status_id"].as_i64().unwrap()
    }
}

/// The ACME Kommo account (KES) with its Sales pipeline: New, then Invoice.
pub fn open_acme(kommo: &FakeKommo) {
    kommo.add_account(AccountSpec {
        id: ACME,
        subdomain: "acme".into(),
        host: "acme.kommo.com".into(),
        currency: "KES".into(),
    });
    kommo.add_pipeline(ACME, SALES, "Sales", &[NEW, INVOICE]);
}

/// A deal in the first stage of Sales, in whole currency units, for one contact.
pub fn sale(id: i64, name: &str, price: i64, contact: i64) -> LeadSpec {
    LeadSpec {
        id,
        name: name.into(),
        price,
        price_with_minor_units: None,
        pipeline_id: SALES,
        status_id: NEW,
        contact_ids: vec![contact],
        custom_fields_values: None,
    }
}

/// Wires a client account up as `agent` (an admin): Kommo connected to ACME, Flutterwave keys
/// set, the invoice stage as trigger. Returns its Kommo and Flutterwave webhook URLs.
pub async fn wire(
    agent: &Agent,
    agency: &str,
    client: &str,
    kommo: &FakeKommo,
    flw: &FakeFlutterwave,
) -> (String, String) {
    flw.add_merchant(SECRET, HASH);
    let (status, page) = connect(agent, agency, client, kommo, ACME).await;
    assert_eq!(status, 200, "{page}");
    let base = format!("/api/v1/agencies/{agency}/clients/{client}");
    agent
        .expect(
            Method::PUT,
            &format!("{base}/flutterwave-keys"),
            Some(json!({"secret_key": SECRET, "webhook_hash": HASH})),
            200,
        )
        .await;
    let settings = json!({
        "display_name": "Acme Kenya",
        "trigger": {"pipeline_id": SALES, "stage_ids": [INVOICE]},
        "checkout": {"payment_options": ["card", "mpesa"], "redirect_url": "https://acme.example/thanks"}
    });
    agent.expect(Method::PUT, &format!("{base}/settings"), Some(settings), 200).await;
    let urls = agent.json(&format!("{base}/webhook-urls")).await;
    (urls["kommo"].as_str().unwrap().to_owned(), urls["flutterwave"].as_str().unwrap().to_owned())
}

/// The environment of a pipepay child process on `db`, wired to these fakes.
pub fn child_env(
    db: &TestDb,
    master: &str,
    kommo: &FakeKommo,
    flw: &FakeFlutterwave,
) -> Vec<(&'static str, String)> {
    vec![
        ("PIPEPAY_DATABASE_URL", db.url.clone()),
        ("PIPEPAY_MASTER_KEYS", master.to_owned()),
        ("PIPEPAY_KOMMO_CLIENT_ID", crate::kommo::CLIENT_ID.to_owned()),
        ("PIPEPAY_KOMMO_CLIENT_SECRET", crate::kommo::CLIENT_SECRET.to_owned()),
        ("PIPEPAY_KOMMO_AUTH_URL", kommo.auth_url()),
        ("PIPEPAY_KOMMO_API_URL", kommo.api_url_template()),
        ("PIPEPAY_KOMMO_ALLOWED_HOSTS", "*.kommo.com".to_owned()),
        ("PIPEPAY_FLUTTERWAVE_API_URL", flw.base()),
    ]
}

/// Borrows an owned environment for `Running::start_at`.
pub fn borrowed<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Waits until `done` holds, polling; panics with `what` after `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !done().await {
        assert!(started.elapsed() < within, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
