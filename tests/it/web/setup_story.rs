//! Issue 15 in a real Chromium: the setup checklist leads a client account from nothing to its
//! first payment (its main button always the next step), the payments view finds the payment,
//! and the activity page shows new entries by itself.

use reqwest::Method;
use serde_json::json;

use super::browser::{Browser, story};
use crate::fakes::flutterwave::{Outcome, Payment, Shape, Signature};
use crate::fakes::kommo::FakeKommo;
use crate::kommo::{ACME, app_with_kommo};
use crate::pipeline::{HASH, INVOICE, SALES, SECRET, eventually, open_acme, sale};
use crate::support::Engine;
use crate::support::agent::PASSWORD;

async fn next_step(browser: &Browser) -> String {
    browser.text("#setup a.next-step").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(browser_tests),
    ignore = "install Debian's chromium and chromium-driver to run browser stories"
)]
async fn the_checklist_and_the_payments_view_in_the_browser() {
    let kommo = FakeKommo::start().await;
    let app = app_with_kommo(Engine::Sqlite, &kommo, &["--job-retry-base", "200"]).await;
    open_acme(&kommo);
    app.flutterwave_merchant(SECRET, HASH);
    let owner = app.sign_up("checklist@savanna.example", "Savanna Digital").await;
    let (client, _) = app.add_client(&owner.agent, &owner.agency, "Acme Kenya").await;
    let base = app.url("");
    let home = format!("{base}/app/agencies/{}", owner.agency);
    let page = format!("{home}/clients/{client}");
    let api = format!("/api/v1/agencies/{}/clients/{client}", owner.agency);
    let (app_ref, kommo_ref, owner_ref) = (&app, &kommo, &owner);
    story("checklist_and_payments", |browser| async move {
        let (app, kommo, owner) = (app_ref, kommo_ref, owner_ref);
        browser.goto(&format!("{base}/login")).await;
        browser.fill("#email", "checklist@savanna.example").await;
        browser.fill("#password", PASSWORD).await;
        browser.press("Log in").await;
        browser.wait_for_text("Client accounts", false).await;
        assert_eq!(browser.text("td[data-label='Setup'] .badge").await, "Not set up");

        // The main button leads to each step in turn.
        browser.goto(&page).await;
        assert_eq!(next_step(&browser).await, "Next: connect Kommo");
        browser.click("#setup a.next-step").await;
        browser.click("form[action$='/kommo/connect'] button").await;
        browser.click(&format!("#allow-{ACME}")).await;
        browser.wait_for_text("Kommo connected", false).await;
        browser.goto(&page).await;
        assert_eq!(next_step(&browser).await, "Next: add the Flutterwave keys");
        browser.click("#setup a.next-step").await;
        browser.fill("#secret_key", SECRET).await;
        browser.fill("#webhook_hash", HASH).await;
        browser.press("Check and save keys").await;
        browser.wait_for_text("Test keys", false).await;
        assert_eq!(browser.text("#setup h2 .badge").await, "Setup unfinished");
        assert_eq!(next_step(&browser).await, "Next: choose the trigger stage");
        browser.click("#setup a.next-step").await;
        browser.wait_for_path(&format!("/app/agencies/{}/clients/{client}/settings", owner.agency)).await;
        let settings =
            json!({"display_name": "Acme Kenya", "trigger": {"pipeline_id": SALES, "stage_ids": [INVOICE]}});
        owner.agent.expect(Method::PUT, &format!("{api}/settings"), Some(settings), 200).await;
        browser.goto(&page).await;
        assert_eq!(browser.text("#setup h2 .badge").await, "Makes links");
        assert_eq!(next_step(&browser).await, "Next: point Flutterwave's webhook here");

        // The activity page shows a deal's link without a reload; the payment ticks the last box.
        let hook = browser.text("#flutterwave-url").await;
        browser.goto(&format!("{page}/activity")).await;
        kommo.add_contact(ACME, 7010, "Wanjiru Kamau", Some("wanjiru@example.co.ke"), None);
        kommo.add_lead(ACME, sale(701, "Order 701", 1500, 7010));
        assert_eq!(kommo.move_lead(ACME, 701, INVOICE).await, [200]);
        browser.wait_for_text_in("#timeline tbody", "Payment link sent", false).await;
        eventually(std::time::Duration::from_secs(20), "a link", || async {
            !app.flw.created(SECRET).is_empty()
        })
        .await;
        let link = app.flw.created(SECRET).remove(0);
        let tx = app.flw.pay(&link.tx_ref, Payment::card(Outcome::Successful));
        assert_eq!(app.flw.deliver(&hook, &tx, Shape::V3, Signature::VerifHash).await, 200);
        browser.wait_for_text_in("#timeline tbody", "Deal won", false).await;
        browser.goto(&page).await;
        assert_eq!(browser.text("#setup h2 .badge").await, "Ready");
        assert!(browser.client.find(fantoccini::Locator::Css("#setup a.next-step")).await.is_err());

        // The payments view: the paid deal, its amount grouped, found by the customer's name.
        browser.click("nav.tabs a[href$='/payments']").await;
        browser.wait_for_text("Payment links", false).await;
        assert_eq!(browser.text("td[data-label='State']").await, "paid");
        assert_eq!(browser.text("td[data-label='Amount']").await, "1,500.00 KES");
        browser.fill("#q", "wanjiru").await;
        browser.press("Search").await;
        browser.wait_for_text("Wanjiru Kamau", false).await;
        browser.fill("#q", "nobody").await;
        browser.press("Search").await;
        browser.wait_for_text("Nothing matches", false).await;

        // The agency home: ready, with the totals.
        browser.goto(&home).await;
        assert_eq!(browser.text("td[data-label='Setup'] .badge").await, "Ready");
        assert_eq!(browser.text("td[data-label='Paid in all']").await, "1,500.00 KES (1 payment)");
    })
    .await;
    app.stop().await;
}
