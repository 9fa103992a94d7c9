//! The whole story in a real Chromium, against the fakes: an agency signs up, adds a client
//! account, connects Kommo on the fake's consent page, pastes Flutterwave keys, picks the
//! stage; a deal moves, the link shows in the activity, the customer pays on the fake checkout,
//! the deal is won. A second agency cannot reach any of it.

use crate::fakes::flutterwave::{Shape, Signature};
use crate::fakes::kommo::FakeKommo;
use crate::kommo::{ACME, app_with_kommo};
use crate::pipeline::{HASH, INVOICE, SALES, SECRET};
use crate::support::Engine;
use crate::support::agent::PASSWORD;

use fantoccini::actions::{InputSource, KeyAction, KeyActions};

use super::browser::story;

const TAB: char = '\u{e004}';

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(browser_tests),
    ignore = "install Debian's chromium and chromium-driver to run browser stories"
)]
async fn an_agency_takes_its_first_payment_in_the_browser() {
    let kommo = FakeKommo::start().await;
    let app = app_with_kommo(Engine::Sqlite, &kommo, &["--job-retry-base", "200"]).await;
    crate::pipeline::open_acme(&kommo);
    app.flutterwave_merchant(SECRET, HASH);
    let base = app.url("");
    let (app_ref, kommo_ref) = (&app, &kommo);
    story("first_payment", |browser| async move {
        let (app, kommo) = (app_ref, kommo_ref);
        // Sign up; the agency home says what to do first.
        browser.sign_up(&base, "Savanna Digital", "owner@savanna.example").await;
        assert!(browser.page_text().await.contains("No client accounts yet"));

        // A validation error keeps what was typed; then the client account is added.
        browser.fill("#name", " ").await;
        browser.press("Add client account").await;
        browser.find("#name-error").await;
        browser.fill("#name", "Acme Kenya").await;
        browser.press("Add client account").await;
        browser.wait_for_text("Client account created.", false).await;
        let client_page = browser.url().await;
        let client_page = client_page.split('?').next().unwrap().to_owned();

        // Connect Kommo on the fake's consent page.
        browser.press("Connect Kommo").await;
        browser.click(&format!("#allow-{ACME}")).await;
        browser.wait_for_text("Kommo connected", false).await;
        browser.press("Open the client account").await;
        browser.wait_for_text("acme", false).await;

        // Paste the Flutterwave keys; they are checked with Flutterwave and shown masked.
        browser.fill("#secret_key", SECRET).await;
        browser.fill("#webhook_hash", HASH).await;
        browser.press("Check and save keys").await;
        browser.wait_for_text("Test keys", false).await;
        assert!(!browser.client.source().await.unwrap().contains(SECRET), "the key is never shown again");

        // Where Flutterwave must send webhooks: the fake's checkout delivers to it.
        let flw_hook = browser.text("#flutterwave-url").await;
        app.flw.set_webhook_target(SECRET, &flw_hook, Shape::V3, Signature::VerifHash);

        // Pick the stage that sends the link.
        browser.goto(&format!("{client_page}/settings")).await;
        browser.click(&format!("#trigger-{SALES}-{INVOICE}")).await;
        browser.press("Save settings").await;
        browser.wait_for_text("Settings saved.", false).await;

        // A salesperson moves a deal; the link appears in the activity.
        kommo.add_contact(ACME, 901, "Amani Otieno", Some("amani@example.co.ke"), Some("+254700000009"));
        kommo.add_lead(ACME, crate::pipeline::sale(90, "Solar kit", 15000, 901));
        assert_eq!(kommo.move_lead(ACME, 90, INVOICE).await, [200]);
        browser.goto(&format!("{client_page}/activity")).await;
        browser.wait_for_text_in("table.activity", "Payment link created", true).await;

        // The customer pays on the hosted checkout; the deal is won.
        let link = app.flw.created(SECRET)[0].link.clone();
        browser.goto(&link).await;
        browser.press("Pay").await;
        browser.wait_for_text("Payment successful", false).await;
        browser.goto(&format!("{client_page}/activity")).await;
        browser.wait_for_text_in("table.activity", "Deal won", true).await;
        assert_eq!(kommo.lead(ACME, 90).unwrap()["status_id"], 142);

        // Another agency, in the same browser after logging out, reaches none of it.
        browser.press("Log out").await;
        browser.wait_for_path("/login").await;
        browser.sign_up(&base, "Rival Agency", "owner@rival.example").await;
        for page in
            [client_page.clone(), format!("{client_page}/settings"), format!("{client_page}/activity")]
        {
            browser.goto(&page).await;
            let text = browser.page_text().await;
            assert!(text.contains("Not Found") || text.contains("not found"), "{page}: {text}");
            assert!(!text.contains("Acme Kenya"), "{page}");
        }
    })
    .await;
    app.stop().await;
}

/// On a phone-sized screen every page fits its width (nothing to scroll sideways), and the
/// first Tab reaches the "Skip to content" link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(browser_tests),
    ignore = "install Debian's chromium and chromium-driver to run browser stories"
)]
async fn every_page_fits_a_phone_and_starts_with_a_skip_link() {
    let shop = crate::pipeline::Shop::open(Engine::Sqlite).await;
    let (agency, client) = (shop.owner.agency.clone(), shop.client.clone());
    let base = shop.app.url("");
    story("phone", |browser| async move {
        browser.client.set_window_size(390, 844).await.unwrap();
        browser.log_in(&base, "shop@agency.co.ke", PASSWORD).await;
        let home = format!("{base}/app/agencies/{agency}");
        let client = format!("{home}/clients/{client}");
        for page in [
            home.clone(),
            client.clone(),
            format!("{client}/settings"),
            format!("{client}/activity"),
            format!("{home}/members"),
            format!("{home}/api-keys"),
            format!("{home}/audit"),
            format!("{home}/telemetry"),
            format!("{base}/app/account"),
        ] {
            browser.goto(&page).await;
            assert!(!browser.text("h1").await.contains("Not Found"), "{page} exists");
            let widths = browser
                .client
                .execute("return [document.documentElement.scrollWidth, window.innerWidth]", vec![])
                .await
                .unwrap();
            let (scroll, inner) = (widths[0].as_i64().unwrap(), widths[1].as_i64().unwrap());
            assert!(scroll <= inner, "{page} is {scroll}px wide on a {inner}px phone");
            let tab = KeyActions::new("keyboard".into())
                .then(KeyAction::Down { value: TAB })
                .then(KeyAction::Up { value: TAB });
            browser.client.perform_actions(tab).await.unwrap();
            let focused =
                browser.client.execute("return document.activeElement.textContent", vec![]).await.unwrap();
            assert_eq!(focused.as_str().map(str::trim), Some("Skip to content"), "{page}");
        }
    })
    .await;
    shop.app.stop().await;
}
