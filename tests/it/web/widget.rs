//! The Kommo widget's deal card (issue #17) in a real Chromium, loaded the way Kommo loads it:
//! a fake Kommo page (on `acme.localhost`, which Chromium resolves to loopback) provides
//! jQuery, `define`, `AMOCRM`, and the widget API (`i18n`, `get_settings`, `system`,
//! `render_template`, `$authorizedAjax` with a one-time token signed like Kommo's), runs the
//! callbacks, and the script talks to a real pipepay over loopback across origins.

use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use super::browser::{Browser, story};
use crate::fakes::kommo::{AccountSpec, FakeKommo};
use crate::kommo::{CLIENT_ID, CLIENT_SECRET, app_with_kommo_hosts, connect};
use crate::pipeline::{HASH, INVOICE, NEW, SALES, SECRET, sale};
use crate::support::{Engine, TestApp};

const ACCOUNT: i64 = 41_000_017;
const HOST: &str = "acme.localhost";
const JQUERY: &str = "/usr/share/javascript/jquery/jquery.min.js";

#[derive(Clone)]
struct Host {
    pipepay: String,
    aud: String,
}

#[derive(Deserialize)]
struct CardQuery {
    lead: i64,
    admin: u8,
}

/// The deal card page, with a fresh one-time token for this user, as Kommo would mint it.
async fn card(State(host): State<Host>, Query(query): Query<CardQuery>) -> Html<String> {
    let now = chrono::Utc::now().timestamp();
    let claims = json!({
        "iss": format!("http://{HOST}"), "aud": host.aud, "jti": uuid::Uuid::new_v4().to_string(),
        "iat": now, "nbf": now, "exp": now + 600, "account_id": ACCOUNT, "subdomain": "acme",
        "client_uuid": CLIENT_ID, "user_id": 4242, "is_admin": query.admin == 1,
    });
    let key = EncodingKey::from_secret(CLIENT_SECRET.as_bytes()).unwrap();
    let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap();
    let i18n = include_str!("../../../frontend/kommo-widget/i18n/en.json");
    Html(format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>Deal {lead}</title></head><body>
<div id="card"><h1>Deal {lead}</h1><div id="widgets_block"></div></div>
<script src="/jquery.js"></script>
<script>
(function () {{
  var loaded = null;
  window.define = function (deps, factory) {{ loaded = factory; }};
  window.define.amd = {{}};
  window.AMOCRM = {{ data: {{ current_card: {{ id: {lead} }} }},
    constant: function (name) {{ return name === 'account' ? {{ id: {ACCOUNT}, subdomain: 'acme' }} : null; }} }};
  window.loadWidget = function () {{
    var Widget = loaded(window.jQuery);
    var texts = {i18n};
    Widget.prototype.i18n = function (key) {{ return texts[key]; }};
    Widget.prototype.get_settings = function () {{ return {{ widget_code: 'pipepay', path: '/widget', version: '1' }}; }};
    Widget.prototype.system = function () {{ return {{ area: 'lcard', amouser_id: 4242 }}; }};
    Widget.prototype.render_template = function (o) {{
      jQuery('#widgets_block').append('<div class="card-widgets__widget">' + o.render + '</div>');
    }};
    Widget.prototype.$authorizedAjax = function (o) {{
      var options = jQuery.extend({{}}, o);
      options.headers = jQuery.extend({{}}, o.headers, {{ 'X-Auth-Token': '{token}' }});
      return jQuery.ajax(options);
    }};
    var widget = new Widget();
    if (widget.callbacks.render() === true) {{ widget.callbacks.init(); widget.callbacks.bind_actions(); }}
  }};
}})();
</script>
<script src="/widget/script.js" onload="loadWidget()"></script>
</body></html>"#,
        lead = query.lead,
    ))
}

async fn script(State(host): State<Host>) -> impl IntoResponse {
    // As the packer does: the deployment's address over the placeholder.
    let script = include_str!("../../../frontend/kommo-widget/script.js")
        .replace("https://pipepay.example", &host.pipepay);
    ([("content-type", "application/javascript")], script)
}

async fn style() -> impl IntoResponse {
    ([("content-type", "text/css")], include_str!("../../../frontend/kommo-widget/style.css"))
}

async fn jquery() -> impl IntoResponse {
    let bytes = std::fs::read(JQUERY).unwrap_or_else(|e| panic!("{JQUERY} (Debian's libjs-jquery): {e}"));
    ([("content-type", "application/javascript")], bytes)
}

/// Serves the fake Kommo page; returns its base URL on `acme.localhost`.
async fn kommo_page(app: &TestApp) -> String {
    let host =
        Host { pipepay: app.url("").trim_end_matches('/').to_owned(), aud: format!("http://{}", app.addr) };
    let router = axum::Router::new()
        .route("/card", get(card))
        .route("/jquery.js", get(jquery))
        .route("/widget/script.js", get(script))
        .route("/widget/style.css", get(style))
        .with_state(host);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{HOST}:{port}")
}

/// pipepay with a client account connected to the Kommo account on `acme.localhost`.
async fn world(engine: Engine, kommo: &FakeKommo) -> TestApp {
    let hosts = "*.kommo.com,acme.localhost";
    let app = app_with_kommo_hosts(engine, kommo, hosts, &["--job-retry-base", "200"]).await;
    kommo.add_account(AccountSpec {
        id: ACCOUNT,
        subdomain: "acme".into(),
        host: HOST.into(),
        currency: "KES".into(),
    });
    kommo.add_pipeline(ACCOUNT, SALES, "Sales", &[NEW, INVOICE]);
    app.flw.add_merchant(SECRET, HASH);
    let owner = app.sign_up("card@agency.example", "Card Agency").await;
    let (client, _) = app.add_client(&owner.agent, &owner.agency, "Acme").await;
    let (status, page) = connect(&owner.agent, &owner.agency, &client, kommo, ACCOUNT).await;
    assert_eq!(status, 200, "{page}");
    let base = format!("/api/v1/agencies/{}/clients/{client}", owner.agency);
    let keys = json!({"secret_key": SECRET, "webhook_hash": HASH});
    owner.agent.expect(Method::PUT, &format!("{base}/flutterwave-keys"), Some(keys), 200).await;
    let settings = json!({"display_name": "Acme", "trigger": {"pipeline_id": SALES, "stage_ids": [INVOICE]}});
    owner.agent.expect(Method::PUT, &format!("{base}/settings"), Some(settings), 200).await;
    for lead in [701, 702] {
        kommo.add_contact(ACCOUNT, lead * 10, "Wanjiru Kamau", Some("wanjiru@example.co.ke"), None);
        kommo.add_lead(ACCOUNT, sale(lead, &format!("Order {lead}"), 1500, lead * 10));
    }
    assert_eq!(kommo.move_lead(ACCOUNT, 701, INVOICE).await, [200]);
    app.queue_settled().await;
    app
}

async fn the_deal_card_shows_sends_and_disables_a_link(engine: Engine) {
    let kommo = FakeKommo::start().await;
    let app = world(engine, &kommo).await;
    let page = kommo_page(&app).await;
    let app_ref = &app;
    story("widget_card", |browser: Browser| async move {
        // A deal with a link: amount, date, the link and its copy button; a user without
        // admin rights gets no actions.
        browser.goto(&format!("{page}/card?lead=701&admin=0")).await;
        browser.wait_for_text_in(".pipepay-widget__state", "Link sent", false).await;
        let text = browser.text(".pipepay-widget--card").await;
        assert!(text.contains("1500.00 KES"), "{text}");
        let link = browser.find(".pipepay-widget__link").await.prop("value").await.unwrap().unwrap();
        assert!(link.starts_with("http"), "{link}");
        browser.find(".pipepay-widget__copy").await;
        assert!(!text.contains("Send the link again") && !text.contains("Disable link"), "{text}");

        // An admin on a deal outside the trigger stages: no link, then "send now".
        browser.goto(&format!("{page}/card?lead=702&admin=1")).await;
        browser.wait_for_text_in(".pipepay-widget__state", "No payment link yet.", false).await;
        browser.press("Send link now").await;
        browser.wait_for_text_in(".pipepay-widget--card", "pipepay is on it", false).await;
        app_ref.queue_settled().await;
        browser.client.refresh().await.unwrap();
        browser.wait_for_text_in(".pipepay-widget__state", "Link sent", false).await;

        // And disabled again.
        browser.press("Disable link").await;
        browser.wait_for_text_in(".pipepay-widget--card", "pipepay is on it", false).await;
        app_ref.queue_settled().await;
        browser.client.refresh().await.unwrap();
        browser.wait_for_text_in(".pipepay-widget__state", "No payment link yet.", false).await;
    })
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(browser_tests),
    ignore = "install Debian's chromium and chromium-driver to run browser stories"
)]
async fn the_deal_card_shows_sends_and_disables_a_link_sqlite() {
    the_deal_card_shows_sends_and_disables_a_link(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(all(browser_tests, pg_tests)), ignore = "needs Chromium and PIPEPAY_TEST_DATABASE_URL")]
async fn the_deal_card_shows_sends_and_disables_a_link_postgres() {
    the_deal_card_shows_sends_and_disables_a_link(Engine::Postgres).await;
}

crate::on_both_engines!(the_overview_says_what_sends_links_and_gives_the_digital_pipeline_key);

async fn the_overview_says_what_sends_links_and_gives_the_digital_pipeline_key(engine: Engine) {
    let shop = crate::pipeline::Shop::open(engine).await;
    let page = super::get(
        &shop.owner.agent,
        &format!("/app/agencies/{}/clients/{}", shop.owner.agency, shop.client),
    )
    .await;
    assert_eq!(page.status, 200);
    assert_eq!(page.one("#drivers-title"), "What sends payment links");
    let now = page.one("#drivers-now");
    assert!(now.contains("pipepay's trigger stages. No call from Kommo's Digital Pipeline"), "{now}");
    let key = page.attr("#dp-key", "value").unwrap();
    assert!(key.starts_with("pph_"), "{key}");
    assert!(shop.kommo_hook.ends_with(&format!("/hooks/{key}/kommo")), "the key is the ingress token");
    shop.app.stop().await;
}
