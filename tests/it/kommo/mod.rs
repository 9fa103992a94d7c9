//! Kommo: connecting, marketplace installs, uninstalls, the token lifecycle and the limits
//! (issue #4), against the stateful fake Kommo.

mod client;
mod connect;
mod install;
mod install_limits;
mod lifecycle;
mod limits;
mod tokens;
mod widget_api;
mod widget_dp;

use reqwest::Method;
use serde_json::Value;

use crate::fakes::kommo::{AccountSpec, FakeKommo};
use crate::support::agent::Owner;
use crate::support::{Agent, Engine, TestApp};

pub const CLIENT_ID: &str = "pipepay-test-integration";
pub const CLIENT_SECRET: &str = "kommo-client-secret-for-tests-0123456789";
pub const ACME: i64 = 29_638_927;
pub const SHOP: i64 = 31_361_463;

/// pipepay, a fake Kommo with two accounts on different hosts, and an agency with one client
/// account.
pub struct World {
    pub app: TestApp,
    pub fake: FakeKommo,
    pub owner: Owner,
    pub client: String,
}

impl World {
    pub async fn new(engine: Engine) -> World {
        Self::with(engine, &[]).await
    }

    pub async fn with(engine: Engine, extra: &[&str]) -> World {
        let fake = FakeKommo::start().await;
        let app = app_with_kommo(engine, &fake, extra).await;
        for (id, subdomain, host, currency) in
            [(ACME, "acme", "acme.kommo.com", "KES"), (SHOP, "shop", "shop.amocrm.ru", "NGN")]
        {
            fake.add_account(AccountSpec {
                id,
                subdomain: subdomain.into(),
                host: host.into(),
                currency: currency.into(),
            });
            fake.add_pipeline(id, 7001, "Sales", &[7002, 7003]);
        }
        let owner = app.sign_up("kommo@agency.co.ke", "Kommo Agency").await;
        let (client, _) = app.add_client(&owner.agent, &owner.agency, "Acme Kenya").await;
        World { app, fake, owner, client }
    }

    pub fn client_path(&self, client: &str, rest: &str) -> String {
        format!("/api/v1/agencies/{}/clients/{client}{rest}", self.owner.agency)
    }

    /// Starts connecting from pipepay; returns the state Kommo's consent page received.
    pub async fn start_connect(&self, client: &str) -> String {
        start_connect(&self.owner.agent, &self.owner.agency, client, &self.fake).await
    }

    /// The whole consent: start, "Allow" in Kommo, back to pipepay. Returns pipepay's page.
    pub async fn connect(&self, client: &str, account: i64) -> (u16, String) {
        connect(&self.owner.agent, &self.owner.agency, client, &self.fake, account).await
    }

    pub async fn connection(&self, client: &str) -> Value {
        self.owner.agent.json(&self.client_path(client, "/kommo")).await
    }
}

/// pipepay started against a fake Kommo, with pipepay's integration registered there.
pub async fn app_with_kommo(engine: Engine, fake: &FakeKommo, extra: &[&str]) -> TestApp {
    app_with_kommo_hosts(engine, fake, "*.kommo.com,*.amocrm.ru", extra).await
}

/// [`app_with_kommo`], allowing Kommo accounts on `hosts` (`--kommo-allowed-hosts`).
pub async fn app_with_kommo_hosts(engine: Engine, fake: &FakeKommo, hosts: &str, extra: &[&str]) -> TestApp {
    let (auth, api) = (fake.auth_url(), fake.api_url_template());
    let mut args = vec![
        "--kommo-client-id",
        CLIENT_ID,
        "--kommo-client-secret",
        CLIENT_SECRET,
        "--kommo-auth-url",
        &auth,
        "--kommo-api-url",
        &api,
        "--kommo-allowed-hosts",
        hosts,
    ];
    args.extend_from_slice(extra);
    let app = TestApp::spawn_with(engine, &args).await;
    fake.register_integration(CLIENT_ID, CLIENT_SECRET, &app.url("/oauth/kommo/callback"));
    app
}

/// Starts connecting as `agent`; returns the state Kommo's consent page received.
pub async fn start_connect(agent: &Agent, agency: &str, client: &str, fake: &FakeKommo) -> String {
    let path = format!("/api/v1/agencies/{agency}/clients/{client}/kommo/connect");
    let started = agent.expect(Method::POST, &path, None, 200).await;
    let url = url::Url::parse(started["authorize_url"].as_str().unwrap()).unwrap();
    assert!(url.as_str().starts_with(&fake.auth_url()), "{url}");
    url.query_pairs().find(|(k, _)| k == "state").map(|(_, v)| v.into_owned()).expect("a state")
}

/// The whole consent as `agent`: start, "Allow" in Kommo, back to pipepay.
pub async fn connect(
    agent: &Agent,
    agency: &str,
    client: &str,
    fake: &FakeKommo,
    account: i64,
) -> (u16, String) {
    let state = start_connect(agent, agency, client, fake).await;
    let redirect = fake.authorize(account, Some(&state));
    let page = agent.http.get(redirect).send().await.unwrap();
    (page.status().as_u16(), page.text().await.unwrap())
}
