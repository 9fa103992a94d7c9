//! A client account's pages (issue #8): connecting Kommo from the overview, pasting Flutterwave
//! keys, the settings form with stages from the real pipelines, and the activity page with its
//! filters, dead-job replay and payments chart. Over HTTP, through the pages' own forms.

use std::time::Duration;

use reqwest::Method;

use super::{Page, get, location, submit};
use crate::fakes::flutterwave::{Outcome, Payment, Shape, Signature};
use crate::fakes::kommo::{AccountSpec, FakeKommo, Fault};
use crate::kommo::{ACME, app_with_kommo};
use crate::on_both_engines;
use crate::pipeline::{SECRET, Shop, eventually};
use crate::support::agent::Owner;
use crate::support::{Agent, Engine, TestApp};

on_both_engines!(
    an_admin_connects_kommo_and_sets_flutterwave_up_from_the_overview,
    settings_offer_the_real_stages_and_keep_input_when_refused,
    activity_filters_charts_exact_totals_and_replays_dead_jobs,
    members_see_no_change_forms_and_are_refused,
    another_agency_gets_not_found_on_every_page_and_form,
    a_strangers_unreadable_form_is_not_found_and_an_owners_is_refused,
);

const WAIT: Duration = Duration::from_secs(20);
const KEY: &str = "FLWSECK_TEST-0a1b2c3d4e5f60718293a4b5c6d7e8f9-X";

/// pipepay with a fake Kommo holding ACME (pipeline "Sales": 7002, 7003), an agency and one
/// client account.
async fn world(engine: Engine) -> (TestApp, FakeKommo, Owner, String) {
    let fake = FakeKommo::start().await;
    let app = app_with_kommo(engine, &fake, &[]).await;
    fake.add_account(AccountSpec {
        id: ACME,
        subdomain: "acme".into(),
        host: "acme.kommo.com".into(),
        currency: "KES".into(),
    });
    fake.add_pipeline(ACME, 7001, "Sales", &[7002, 7003]);
    let owner = app.sign_up("pages@agency.co.ke", "Pages Agency").await;
    let (client, _) = app.add_client(&owner.agent, &owner.agency, "Acme Kenya").await;
    (app, fake, owner, client)
}

fn base(owner: &Owner, client: &str) -> String {
    format!("/app/agencies/{}/clients/{client}", owner.agency)
}

/// The overview's connect form, "Allow" in Kommo, and back: returns pipepay's landing page.
async fn connect_with_the_form(agent: &Agent, base: &str, fake: &FakeKommo) -> String {
    let started = submit(agent, &format!("{base}/kommo/connect"), &[]).await;
    assert_eq!(started.status(), 303);
    let consent = url::Url::parse(&location(&started)).unwrap();
    assert!(consent.as_str().starts_with(&fake.auth_url()), "{consent}");
    let state = consent.query_pairs().find(|(k, _)| k == "state").map(|(_, v)| v.into_owned()).unwrap();
    let back = agent.http.get(fake.authorize(ACME, Some(&state))).send().await.unwrap();
    assert_eq!(back.status(), 200);
    back.text().await.unwrap()
}

async fn an_admin_connects_kommo_and_sets_flutterwave_up_from_the_overview(engine: Engine) {
    let (app, fake, owner, client) = world(engine).await;
    let base = base(&owner, &client);
    let agent = &owner.agent;
    let mut seen = Vec::new();

    let page = get(agent, &base).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.one("h1"), "Acme Kenya");
    assert!(page.text.contains("Not connected"));
    assert_eq!(page.one(&format!("form[action=\"{base}/kommo/connect\"] button")), "Connect Kommo");
    let kommo_origin = url::Url::parse(&fake.auth_url()).unwrap().origin().ascii_serialization();
    assert!(page.csp.as_deref().unwrap().contains(&format!("form-action 'self' {kommo_origin}")));
    let old_url = page.one("#flutterwave-url");
    assert!(old_url.ends_with("/flutterwave"), "{old_url}");
    assert!(page.attr("button[data-copy=\"flutterwave-url\"]", "hidden").is_some());
    assert!(page.text.contains("Settings &gt; Webhooks"), "Flutterwave's dashboard steps");

    // Kommo refuses the automatic webhook: the page explains the manual setup, with the URL.
    fake.refuse_webhook_api(ACME, 403, "webhooks are not available on this plan");
    let landed = connect_with_the_form(agent, &base, &fake).await;
    assert!(landed.contains("acme"), "{landed}");
    let page = get(agent, &base).await;
    assert!(page.text.contains("Connected") && page.text.contains("acme.kommo.com"), "{}", page.text);
    assert!(page.text.contains("Add the Kommo webhook by hand"));
    assert!(page.attr("#manual-url", "value").unwrap().ends_with("/kommo"));
    assert!(
        page.all(&format!("form[action=\"{base}/kommo/connect\"]")).is_empty(),
        "connected: no connect button"
    );

    // A key Flutterwave does not know: the error sits next to the field, nothing typed comes back.
    let refused =
        submit(agent, &format!("{base}/flutterwave-keys"), &[("secret_key", KEY), ("webhook_hash", "")])
            .await;
    assert_eq!(refused.status(), 422);
    let page = Page::read(refused).await;
    assert!(page.one("#secret_key-error").contains("Flutterwave refused"));
    assert_eq!(page.attr("#secret_key", "aria-invalid").as_deref(), Some("true"));
    assert_eq!(page.field("secret_key"), None);
    seen.push(page.text);

    // Accepted, with pipepay making the secret hash: shown once, with a copy button.
    app.flutterwave_merchant(KEY, "set-later-in-the-dashboard");
    let saved =
        submit(agent, &format!("{base}/flutterwave-keys"), &[("secret_key", KEY), ("webhook_hash", "")])
            .await;
    assert_eq!(saved.status(), 200);
    let page = Page::read(saved).await;
    assert_eq!(page.one(".notice"), "Flutterwave keys saved and checked with Flutterwave.");
    let hash = page.attr("#saved-hash", "value").expect("the generated hash, once");
    assert!(hash.len() >= 40);
    assert!(page.attr("button[data-copy=\"saved-hash\"]", "hidden").is_some());
    assert!(page.text.contains("••••f9-X"), "masked to the last four");
    assert!(page.text.contains("Test keys"));
    seen.push(page.text.replace(&hash, ""));
    let page = get(agent, &base).await;
    assert!(!page.text.contains(&hash), "the generated hash is not shown again");
    assert!(page.text.contains("••••f9-X"));
    seen.push(page.text);
    for html in &seen {
        assert!(!html.contains(KEY) && !html.contains("0a1b2c3d4e5f"), "the secret key never reaches a page");
    }

    // New webhook URLs: the old ones stop at once.
    let rotated = submit(agent, &format!("{base}/ingress-token"), &[]).await;
    assert_eq!(location(&rotated), format!("{base}?done=token-rotated"));
    let page = get(agent, &location(&rotated)).await;
    assert!(page.one(".notice").starts_with("New webhook URLs issued"));
    assert_ne!(page.one("#flutterwave-url"), old_url);
    assert!(!page.text.contains(&old_url));

    let disconnected = submit(agent, &format!("{base}/kommo/disconnect"), &[]).await;
    assert_eq!(location(&disconnected), format!("{base}?done=kommo-disconnected"));
    let page = get(agent, &location(&disconnected)).await;
    assert!(page.text.contains("Not connected"));
    assert!(page.attr(&format!("form[action=\"{base}/kommo/disconnect\"]"), "data-confirm").is_none());

    let form = page.attr(&format!("form[action=\"{base}/delete\"]"), "data-confirm").unwrap();
    assert!(form.contains("cannot be undone"));
    let deleted = submit(agent, &format!("{base}/delete"), &[]).await;
    assert_eq!(location(&deleted), format!("/app/agencies/{}?done=client-deleted", owner.agency));
    assert_eq!(get(agent, &base).await.status, 404);
    app.stop().await;
}

async fn settings_offer_the_real_stages_and_keep_input_when_refused(engine: Engine) {
    let (app, fake, owner, client) = world(engine).await;
    let base = base(&owner, &client);
    let agent = &owner.agent;
    let settings = format!("{base}/settings");

    let page = get(agent, &settings).await;
    assert!(page.one("#kommo-problem").contains("not connected"), "{}", page.text);
    assert!(page.all("fieldset.pipeline").is_empty());

    fake.add_lead_custom_field(ACME, 555, "Payment link", "url");
    connect_with_the_form(agent, &base, &fake).await;
    let page = get(agent, &settings).await;
    // Trigger stages are checkboxes grouped by pipeline, each with its own label.
    assert_eq!(page.one("fieldset.pipeline legend"), "Sales");
    let stages = page.all("fieldset.pipeline label");
    assert!(stages.contains(&"Stage 1".to_owned()) && stages.contains(&"Stage 2".to_owned()), "{stages:?}");
    assert!(page.attr("#trigger-7001-7003[type=checkbox][name=\"trigger.stage_ids\"]", "value").is_some());
    assert!(page.attr("label[for=\"trigger-7001-7003\"]", "for").is_some());
    assert!(page.attr("input[value=\"7001:142\"]", "value").is_none());
    // Payment methods by the names people know, not Flutterwave's codes.
    assert_eq!(page.one("label[for=\"po-mpesa\"]"), "M-Pesa");
    assert_eq!(page.one("label[for=\"po-mobilemoneyghana\"]"), "MTN MoMo / mobile money Ghana");
    assert!(page.attr("#link_field_id option[value=\"555\"]", "value").is_some());
    assert!(page.attr("label[for=\"tax.rate_percent\"]", "for").is_some());

    let bad = [
        ("display_name", "Acme Kenya Ltd"),
        ("trigger.stage_ids", "7001:7002"),
        ("won_stage_id", "7002"),
        ("currency", "KES"),
        ("tax.rate_percent", "seven"),
        ("checkout.payment_options", "card"),
        ("checkout.payment_options", "mpesa"),
        ("checkout.session_duration_minutes", "2000"),
        ("checkout.redirect_url", "http://acme.example/thanks"),
        ("notes.link_created", "Pay here please"),
    ];
    let refused = submit(agent, &settings, &bad).await;
    assert_eq!(refused.status(), 422);
    let page = Page::read(refused).await;
    for field in [
        "tax.rate_percent",
        "won_stage_id",
        "checkout.session_duration_minutes",
        "checkout.redirect_url",
        "notes.link_created",
    ] {
        assert!(!page.one(&format!("[id=\"{field}-error\"]")).is_empty(), "{field}: {}", page.text);
        assert_eq!(
            page.attr(&format!("[id=\"{field}\"]"), "aria-invalid").as_deref(),
            Some("true"),
            "{field}"
        );
    }
    assert_eq!(page.field("display_name").as_deref(), Some("Acme Kenya Ltd"));
    assert_eq!(page.field("tax.rate_percent").as_deref(), Some("seven"));
    assert_eq!(page.field("checkout.redirect_url").as_deref(), Some("http://acme.example/thanks"));
    assert_eq!(page.field("checkout.session_duration_minutes").as_deref(), Some("2000"));
    assert!(page.attr("input[value=\"7001:7002\"]", "checked").is_some());
    assert!(page.attr("#won_stage_id option[value=\"7002\"]", "selected").is_some());
    assert!(page.attr("#po-mpesa", "checked").is_some() && page.attr("#po-ussd", "checked").is_none());
    assert_eq!(page.one("[id=\"notes.link_created\"]"), "Pay here please");
    assert!(page.attr("#form-errors", "role").is_some());

    let good = [
        ("display_name", "Acme Kenya Ltd"),
        ("trigger.stage_ids", "7001:7003"),
        ("won_stage_id", ""),
        ("currency", "KES"),
        ("tax.rate_percent", "7.5"),
        ("checkout.payment_options", "card"),
        ("checkout.payment_options", "mpesa"),
        ("checkout.redirect_url", "https://acme.example/thanks"),
        ("link_field_id", "555"),
        ("notes.link_created", "Pay {amount} {currency} here: {link}"),
        (
            "notes.payment_received",
            "Payment received: {amount} {currency} by {method}. Flutterwave reference {reference}.",
        ),
    ];
    let saved = submit(agent, &settings, &good).await;
    assert_eq!(location(&saved), format!("{settings}?done=settings-saved"));
    let page = get(agent, &location(&saved)).await;
    assert_eq!(page.one(".notice"), "Settings saved.");
    assert_eq!(page.one("h1"), "Acme Kenya Ltd");
    assert!(page.attr("input[value=\"7001:7003\"]", "checked").is_some());
    let stored = agent.json(&format!("/api/v1/agencies/{}/clients/{client}/settings", owner.agency)).await;
    assert_eq!(stored["trigger"]["pipeline_id"], 7001);
    assert_eq!(stored["trigger"]["stage_ids"], serde_json::json!([7003]));
    assert_eq!(stored["tax"]["rate_percent"].to_string().trim_matches('"'), "7.5");
    assert_eq!(stored["link_field_id"], 555);
    assert_eq!(stored["checkout"]["payment_options"], serde_json::json!(["card", "mpesa"]));
    assert_eq!(stored["notes"]["link_created"], "Pay {amount} {currency} here: {link}");
    assert!(stored["notes"]["payment_received"].is_null(), "an unchanged default is not pinned");
    app.stop().await;
}

/// A lead at `price` moved to the invoice stage and paid; waits until the deal is won.
async fn paid(shop: &Shop, lead: i64, price: &str) {
    shop.lead(lead, price);
    shop.to_invoice(lead).await;
    eventually(WAIT, "a link", || async { shop.notes(lead).len() == 1 }).await;
    let link = shop.flw.created(SECRET).into_iter().find(|c| shop.notes(lead)[0].contains(&c.link)).unwrap();
    let tx = shop.flw.pay(&link.tx_ref, Payment::card(Outcome::Successful));
    assert_eq!(shop.flw.deliver(&shop.flw_hook, &tx, Shape::V3, Signature::VerifHash).await, 200);
    eventually(WAIT, "the deal won", || async { shop.stage(lead) == 142 }).await;
}

async fn activity_filters_charts_exact_totals_and_replays_dead_jobs(engine: Engine) {
    let shop = Shop::open_with(engine, &["--job-max-attempts", "2"]).await;
    let base = format!("/app/agencies/{}/clients/{}", shop.owner.agency, shop.client);
    let activity = format!("{base}/activity");
    let agent = &shop.owner.agent;
    paid(&shop, 501, "1234.56").await;
    paid(&shop, 502, "10.44").await;

    let page = get(agent, &activity).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.attr("svg.chart", "role").as_deref(), Some("img"));
    assert!(page.one("svg.chart title").contains("KES"));
    assert!(page.one("svg.chart desc").contains("1,245.00 KES from 2 payments"), "{}", page.text);
    assert_eq!(page.one("#totals-KES tfoot td"), "1,245.00 KES");
    assert!(!page.all("svg.chart rect.bar").is_empty());
    assert!(!page.text.contains("style="), "no inline styles under the page policy");
    // In words, not codes.
    let kinds = page.all("table.activity tbody td[data-label=\"What\"]");
    assert!(
        kinds.iter().any(|k| k == "Deal won") && kinds.iter().any(|k| k == "Webhook received"),
        "{kinds:?}"
    );
    assert!(kinds.iter().any(|k| k == "Payment link sent"), "{kinds:?}");
    assert!(!kinds.iter().any(|k| k.contains('_')), "{kinds:?}");
    assert_eq!(page.one("#kind option[value=\"deal_closed\"]"), "Deal won");

    let closed = get(agent, &format!("{activity}?kind=deal_closed&outcome=&lead_id=")).await;
    let kinds = closed.all("table.activity tbody td[data-label=\"What\"]");
    assert_eq!(kinds, ["Deal won", "Deal won"]);
    assert!(closed.attr("#kind option[value=\"deal_closed\"]", "selected").is_some());
    let one_lead = get(agent, &format!("{activity}?kind=&outcome=ok&lead_id=502")).await;
    let leads = one_lead.all("table.activity tbody td[data-label=\"Deal\"]");
    assert!(!leads.is_empty() && leads.iter().all(|l| l == "502"), "{leads:?}");
    assert!(one_lead.all("table.activity tbody td[data-label=\"Outcome\"]").iter().all(|o| o == "Done"));

    // A job that fails every attempt dies, shows up, and an admin replays it from the page.
    shop.lead(503, "40");
    shop.kommo.set_fault_rate(ACME, 1.0, vec![Fault::ServerError]);
    shop.to_invoice(503).await;
    eventually(WAIT, "a dead job on the page", || async {
        !get(agent, &activity).await.all("#dead-jobs tbody tr").is_empty()
    })
    .await;
    shop.kommo.set_fault_rate(ACME, 0.0, vec![]);
    let page = get(agent, &activity).await;
    let action = page.attr("#dead-jobs form", "action").unwrap();
    let replayed = submit(agent, &action, &[]).await;
    assert_eq!(location(&replayed), format!("{activity}?done=job-replayed"));
    assert_eq!(get(agent, &location(&replayed)).await.one(".notice"), "The job will run again shortly.");
    eventually(WAIT, "the replayed job's link", || async { shop.notes(503).len() == 1 }).await;
    assert_eq!(submit(agent, &action, &[]).await.status(), 409, "only a dead job replays");

    // Members read the activity but cannot replay.
    let member = shop.app.add_member(&shop.owner, "reader@agency.co.ke", "member").await;
    let page = get(&member, &activity).await;
    assert_eq!(page.one("#totals-KES tfoot td"), "1,245.00 KES");
    assert!(page.all("#dead-jobs form").is_empty());
    assert_eq!(submit(&member, &action, &[]).await.status(), 403);
    shop.app.stop().await;
}

async fn members_see_no_change_forms_and_are_refused(engine: Engine) {
    let (app, fake, owner, client) = world(engine).await;
    let base = base(&owner, &client);
    connect_with_the_form(&owner.agent, &base, &fake).await;
    let member = app.add_member(&owner, "member@agency.co.ke", "member").await;
    for path in [base.clone(), format!("{base}/settings"), format!("{base}/activity")] {
        let page = get(&member, &path).await;
        assert_eq!(page.status, 200, "{path}");
        let forms = page.all("form[method=\"post\"]:not([action=\"/logout\"])");
        assert!(forms.is_empty(), "{path} shows a member no change form");
        assert!(page.all("#flutterwave-url").is_empty(), "{path}: the URLs carry the token");
    }
    assert!(get(&member, &format!("{base}/settings")).await.attr("fieldset.plain", "disabled").is_some());
    for (path, fields) in [
        ("/kommo/connect", vec![]),
        ("/kommo/disconnect", vec![]),
        ("/flutterwave-keys", vec![("secret_key", KEY)]),
        ("/ingress-token", vec![]),
        ("/settings", vec![("display_name", "Member's name")]),
        ("/delete", vec![]),
    ] {
        let refused = submit(&member, &format!("{base}{path}"), &fields).await;
        assert_eq!(refused.status(), 403, "{path}");
    }
    let client_now = owner.agent.json(&format!("/api/v1/agencies/{}/clients/{client}", owner.agency)).await;
    assert_eq!(client_now["name"], "Acme Kenya", "nothing changed");
    owner
        .agent
        .expect(Method::GET, &format!("/api/v1/agencies/{}/clients/{client}", owner.agency), None, 200)
        .await;
    app.stop().await;
}

async fn another_agency_gets_not_found_on_every_page_and_form(engine: Engine) {
    let (app, _fake, owner, client) = world(engine).await;
    let stranger = app.sign_up("stranger@other.example", "Other Agency").await;
    let job = uuid::Uuid::new_v4();
    for base in [base(&owner, &client), format!("/app/agencies/{}/clients/{client}", stranger.agency)] {
        for page in ["", "/settings", "/activity", "/activity?kind=dead"] {
            let seen = get(&stranger.agent, &format!("{base}{page}")).await;
            assert_eq!(seen.status, 404, "{base}{page}");
            assert!(!seen.text.contains("Acme"), "{base}{page}");
        }
        for path in [
            "/kommo/connect",
            "/kommo/disconnect",
            "/flutterwave-keys",
            "/ingress-token",
            "/settings",
            "/delete",
            &format!("/jobs/{job}/replay"),
        ] {
            let posted = submit(&stranger.agent, &format!("{base}{path}"), &[("secret_key", KEY)]).await;
            assert_eq!(posted.status(), 404, "{base}{path}");
        }
    }
    assert_eq!(get(&owner.agent, &base(&owner, &client)).await.status, 200, "still there");
    app.stop().await;
}

/// Who may post is settled before the form is read (issue #13): a stranger's form that cannot
/// be read (a field given twice) is the 404 page like any other; the owner's is the 400 page.
async fn a_strangers_unreadable_form_is_not_found_and_an_owners_is_refused(engine: Engine) {
    let (app, _fake, owner, client) = world(engine).await;
    let stranger = app.sign_up("stranger@other.example", "Other Agency").await;
    let agency = format!("/app/agencies/{}", owner.agency);
    let forms: [(String, &[(&str, &str)]); 5] = [
        (format!("{agency}/clients"), &[("name", "One"), ("name", "Two")]),
        (
            format!("{agency}/invitations"),
            &[("email", "a@x.example"), ("email", "b@x.example"), ("role", "member")],
        ),
        (
            format!("{agency}/telemetry"),
            &[("endpoint", "https://a.example"), ("endpoint", "https://b.example")],
        ),
        (format!("{}/flutterwave-keys", base(&owner, &client)), &[("secret_key", KEY), ("secret_key", KEY)]),
        (format!("{}/delete", base(&owner, &client)), &[("force", "true"), ("force", "false")]),
    ];
    for (path, fields) in &forms {
        let refused = submit(&stranger.agent, path, fields).await;
        assert_eq!(refused.status(), 404, "stranger: {path}");
        let page = Page::read(refused).await;
        assert!(!page.text.contains("Acme") && !page.text.contains("Pages Agency"), "{path}");
    }
    for (path, fields) in &forms {
        let refused = submit(&owner.agent, path, fields).await;
        assert_eq!(refused.status(), 400, "owner: {path}");
        assert!(Page::read(refused).await.text.contains("could not be read"), "{path}");
    }
    assert_eq!(get(&owner.agent, &base(&owner, &client)).await.status, 200, "still there");
    app.stop().await;
}
