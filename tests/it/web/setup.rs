//! Issue 15, client account pages: the setup checklist that walks an agency from a new client
//! account to its first payment, and the payments view with its states, amounts, customers and
//! search. Over HTTP, as a browser without JavaScript would.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use super::{Page, get};
use crate::fakes::flutterwave::{Outcome, Payment, Shape, Signature};
use crate::fakes::kommo::FakeKommo;
use crate::kommo::{ACME, app_with_kommo, connect};
use crate::on_both_engines;
use crate::pipeline::{HASH, INVOICE, SALES, SECRET, Shop, eventually, open_acme, sale};
use crate::support::Engine;

on_both_engines!(
    the_checklist_leads_a_new_client_account_to_its_first_payment,
    payments_show_each_deals_link_in_words_and_can_be_searched,
    an_entry_opens_its_masked_webhook_and_job_and_runs_again,
    a_test_event_shows_whether_webhooks_get_in_and_moves_nothing,
);

const WAIT: Duration = Duration::from_secs(20);

fn done_steps(page: &Page) -> usize {
    page.all("#setup ol.checklist li.done").len()
}

async fn the_checklist_leads_a_new_client_account_to_its_first_payment(engine: Engine) {
    let kommo = FakeKommo::start().await;
    let app = app_with_kommo(engine, &kommo, &[]).await;
    open_acme(&kommo);
    let owner = app.sign_up("setup@agency.co.ke", "Setup Agency").await;
    let (client, _) = app.add_client(&owner.agent, &owner.agency, "Acme Kenya").await;
    let agent = &owner.agent;
    let home = format!("/app/agencies/{}", owner.agency);
    let base = format!("{home}/clients/{client}");
    let api = format!("/api/v1/agencies/{}/clients/{client}", owner.agency);

    let page = get(agent, &base).await;
    assert_eq!(page.one("#setup h2 .badge"), "Not set up");
    assert_eq!(done_steps(&page), 0);
    assert_eq!(page.one("#setup a.next-step"), "Next: connect Kommo");
    assert_eq!(page.attr("#setup a.next-step", "href"), Some(format!("{base}#kommo-title")));
    let listed = get(agent, &home).await;
    assert_eq!(listed.one("td[data-label=\"Setup\"] .badge"), "Not set up");
    assert_eq!(listed.one("td[data-label=\"Setup\"] a.next-step"), "Next: connect Kommo");

    assert_eq!(connect(agent, &owner.agency, &client, &kommo, ACME).await.0, 200);
    let page = get(agent, &base).await;
    assert_eq!((page.one("#setup h2 .badge"), done_steps(&page)), ("Setup unfinished".into(), 1));
    assert_eq!(page.one("#setup a.next-step"), "Next: add the Flutterwave keys");

    app.flw.add_merchant(SECRET, HASH);
    let keys = json!({"secret_key": SECRET, "webhook_hash": HASH});
    agent.expect(Method::PUT, &format!("{api}/flutterwave-keys"), Some(keys), 200).await;
    let page = get(agent, &base).await;
    assert_eq!(page.one("#setup a.next-step"), "Next: choose the trigger stage");
    assert_eq!(page.attr("#setup a.next-step", "href"), Some(format!("{base}/settings")));
    assert_eq!(page.one("#setup h2 .badge"), "Setup unfinished", "no link can be made without a trigger");
    assert!(page.text.contains("No payment link is made until"));

    let settings =
        json!({"display_name": "Acme Kenya", "trigger": {"pipeline_id": SALES, "stage_ids": [INVOICE]}});
    agent.expect(Method::PUT, &format!("{api}/settings"), Some(settings), 200).await;
    let page = get(agent, &base).await;
    assert_eq!((page.one("#setup h2 .badge"), done_steps(&page)), ("Makes links".into(), 3));
    assert_eq!(page.attr("#setup h2 .badge", "class").as_deref(), Some("badge good"));
    assert_eq!(page.one("#setup a.next-step"), "Next: point Flutterwave's webhook here");
    assert!(!page.text.contains("No payment link is made until"));
    assert_eq!(get(agent, &home).await.one("td[data-label=\"Setup\"] .badge"), "Makes links");

    // The first payment's webhook ticks the last box.
    let urls = agent.json(&format!("{api}/webhook-urls")).await;
    kommo.add_contact(ACME, 7010, "Wanjiru Kamau", Some("wanjiru@example.co.ke"), None);
    kommo.add_lead(ACME, sale(701, "Order 701", 500, 7010));
    assert_eq!(kommo.move_lead(ACME, 701, INVOICE).await, [200]);
    eventually(WAIT, "a link", || async { !app.flw.created(SECRET).is_empty() }).await;
    let link = app.flw.created(SECRET).remove(0);
    let tx = app.flw.pay(&link.tx_ref, Payment::card(Outcome::Successful));
    let hook = urls["flutterwave"].as_str().unwrap();
    assert_eq!(app.flw.deliver(hook, &tx, Shape::V3, Signature::VerifHash).await, 200);
    let page = get(agent, &base).await;
    assert_eq!((page.one("#setup h2 .badge"), done_steps(&page)), ("Ready".into(), 4));
    assert!(page.all("#setup a.next-step").is_empty(), "nothing left to do");
    let listed = get(agent, &home).await;
    assert_eq!(listed.one("td[data-label=\"Setup\"] .badge"), "Ready");

    // Members read the checklist too.
    let member = app.add_member(&owner, "reader@agency.co.ke", "member").await;
    assert_eq!(get(&member, &base).await.one("#setup h2 .badge"), "Ready");
    app.stop().await;
}

/// The states of the rows on the payments page, by deal, in page order.
fn states(page: &Page) -> Vec<(String, String)> {
    let deals = page.all("table.payments tbody th[data-label=\"Deal\"]");
    let states = page.all("table.payments tbody td[data-label=\"State\"]");
    deals.into_iter().zip(states).collect()
}

async fn payments_show_each_deals_link_in_words_and_can_be_searched(engine: Engine) {
    let shop = Shop::open(engine).await;
    let agent = &shop.owner.agent;
    let home = format!("/app/agencies/{}", shop.owner.agency);
    let payments = format!("{home}/clients/{}/payments", shop.client);

    let empty = get(agent, &payments).await;
    assert_eq!(empty.status, 200);
    assert!(empty.text.contains("No payment links yet"), "{}", empty.text);

    // Paid, with an amount that needs grouping.
    shop.lead(801, "123456.50");
    shop.to_invoice(801).await;
    eventually(WAIT, "a link for 801", || async { shop.notes(801).len() == 1 }).await;
    let paid = shop.flw.created(SECRET).into_iter().find(|c| shop.notes(801)[0].contains(&c.link)).unwrap();
    let tx = shop.flw.pay(&paid.tx_ref, Payment::card(Outcome::Successful));
    assert_eq!(shop.flw.deliver(&shop.flw_hook, &tx, Shape::V3, Signature::VerifHash).await, 200);
    eventually(WAIT, "the deal won", || async { shop.stage(801) == 142 }).await;
    // A new price replaces the open link.
    shop.lead(802, "100");
    shop.to_invoice(802).await;
    eventually(WAIT, "a link for 802", || async { shop.notes(802).len() == 1 }).await;
    assert_eq!(shop.kommo.edit_price(ACME, 802, "250").await, [200]);
    eventually(WAIT, "a second link for 802", || async { shop.notes(802).len() == 2 }).await;
    // A lost deal's link is disabled.
    shop.lead(803, "40");
    shop.to_invoice(803).await;
    eventually(WAIT, "a link for 803", || async { shop.notes(803).len() == 1 }).await;
    shop.kommo.move_lead(ACME, 803, 143).await;
    eventually(WAIT, "803's link disabled", || async {
        states(&get(agent, &payments).await).iter().any(|(d, s)| d == "#803" && s == "disabled")
    })
    .await;

    let page = get(agent, &payments).await;
    let mut seen = states(&page);
    seen.sort();
    let expected: Vec<(String, String)> =
        [("#801", "paid"), ("#802", "open"), ("#802", "replaced"), ("#803", "disabled")]
            .iter()
            .map(|(d, s)| ((*d).to_owned(), (*s).to_owned()))
            .collect();
    assert_eq!(seen, expected);
    let row = format!("table.payments tr[data-tx-ref=\"{}\"]", paid.tx_ref);
    assert_eq!(page.one(&format!("{row} td[data-label=\"Amount\"]")), "123,456.50 KES");
    assert_eq!(
        page.one(&format!("{row} td[data-label=\"Customer\"]")),
        "Wanjiru Kamau <wanjiru@example.co.ke>"
    );
    assert_ne!(page.one(&format!("{row} td[data-label=\"Paid\"]")), "—");
    assert_eq!(
        page.attr(&format!("{row} th a"), "href").as_deref(),
        Some("https://acme.kommo.com/leads/detail/801")
    );
    assert_eq!(page.attr(&format!("{row} td[data-label=\"Checkout\"] a"), "href"), Some(paid.link.clone()));
    assert_eq!(page.all("td[data-label=\"Checkout\"] a").len(), 2, "paid and open links only");
    assert!(
        page.all("table.payments tbody td[data-label=\"Paid\"]").iter().filter(|p| *p != "—").count() == 1
    );

    // Search: a deal number, a customer, a reference.
    let by_deal = get(agent, &format!("{payments}?q=802")).await;
    assert_eq!(by_deal.all("table.payments tbody tr").len(), 2);
    let by_customer = get(agent, &format!("{payments}?q=WANJIRU%40example")).await;
    // Once seen empty under CI's load and never again: the page itself, should it recur.
    assert_eq!(by_customer.status, 200, "{}", by_customer.text);
    assert!(
        !by_customer.all("table.payments tbody tr").is_empty(),
        "no row for the customer; the page said:\n{}",
        by_customer.text
    );
    assert_eq!(
        states(&by_customer),
        [("#801".to_owned(), "paid".to_owned())],
        "only paid links have a webhook"
    );
    assert_eq!(by_customer.field("q").as_deref(), Some("WANJIRU@example"));
    let by_ref = get(agent, &format!("{payments}?q={}", &paid.tx_ref[paid.tx_ref.len() - 10..])).await;
    assert_eq!(states(&by_ref), [("#801".to_owned(), "paid".to_owned())]);
    let nothing = get(agent, &format!("{payments}?q=100%25_off")).await;
    assert!(nothing.all("table.payments").is_empty() && nothing.text.contains("Nothing matches"));
    let past_the_end = get(agent, &format!("{payments}?page=2")).await;
    assert!(past_the_end.all("table.payments").is_empty());
    assert_eq!(past_the_end.attr(".pager a[rel=\"prev\"]", "href"), Some(format!("{payments}?page=1")));

    // The agency home: totals per client account.
    let listed = get(agent, &home).await;
    assert_eq!(listed.one("td[data-label=\"Links\"]"), "1 open, 1 paid, 1 replaced, 1 disabled");
    assert_eq!(listed.one("td[data-label=\"Paid in all\"]"), "123,456.50 KES (1 payment)");
    assert_eq!(listed.one("td[data-label=\"Paid this month\"]"), "123,456.50 KES (1 payment)");

    // Members may read it; strangers get a 404.
    let member = shop.app.add_member(&shop.owner, "reader@agency.co.ke", "member").await;
    assert_eq!(get(&member, &payments).await.all("table.payments tbody tr").len(), 4);
    let stranger = shop.app.sign_up("stranger@other.example", "Other Agency").await;
    assert_eq!(get(&stranger.agent, &payments).await.status, 404);
    shop.app.stop().await;
}

async fn an_entry_opens_its_masked_webhook_and_job_and_runs_again(engine: Engine) {
    let shop = Shop::open(engine).await;
    let agent = &shop.owner.agent;
    let activity = format!("/app/agencies/{}/clients/{}/activity", shop.owner.agency, shop.client);
    shop.lead(901, "75");
    shop.to_invoice(901).await;
    eventually(WAIT, "a link for 901", || async { shop.notes(901).len() == 1 }).await;
    let link = shop.flw.created(SECRET).remove(0);
    let tx = shop.flw.pay(&link.tx_ref, Payment::card(Outcome::Successful));
    assert_eq!(shop.flw.deliver(&shop.flw_hook, &tx, Shape::V3, Signature::VerifHash).await, 200);
    eventually(WAIT, "the deal won", || async { shop.stage(901) == 142 }).await;
    shop.app.queue_settled().await;

    let page = get(agent, &activity).await;
    assert_eq!(
        page.attr("#timeline", "data-refresh").as_deref(),
        Some("10"),
        "the timeline refreshes itself"
    );
    let rows =
        page.html.select(&scraper::Selector::parse("table.activity tbody tr").unwrap()).collect::<Vec<_>>();
    let href_of = |what: &str, needle: &str| {
        rows.iter()
            .find(|r| {
                let text: String = r.text().collect();
                text.contains(what) && text.contains(needle)
            })
            .and_then(|r| r.select(&scraper::Selector::parse("td[data-label=\"Detail\"] a").unwrap()).next())
            .and_then(|a| a.value().attr("href").map(str::to_owned))
            .unwrap_or_else(|| panic!("no {what} entry with {needle} in {}", page.text))
    };
    // Stage ids read as names from Kommo's pipelines.
    assert!(page.text.contains("in stage Stage 2 (Sales)"), "{}", page.text);

    // The Flutterwave webhook, as received but with the customer hidden.
    let flw = get(agent, &href_of("Webhook received", "Flutterwave")).await;
    assert_eq!(flw.status, 200);
    let body = flw.one("pre.payload");
    assert!(body.contains(&link.tx_ref) && body.contains("[hidden]"), "{body}");
    for personal in ["wanjiru@example.co.ke", "Wanjiru", "+254700000001"] {
        assert!(!body.contains(personal), "{personal} shown in {body}");
    }
    // The Kommo webhook the ingress recorded (it names no job) still finds its job.
    let kommo = get(agent, &href_of("Webhook received", "in stage Stage 2 (Sales)")).await;
    assert!(kommo.one("#webhook dd").contains("Kommo"));
    assert!(kommo.one("pre.payload").contains("901"));
    assert!(kommo.all("#job ol.steps li").iter().any(|s| s.contains("Payment link sent")), "{}", kommo.text);

    // "Deal won": its job, its steps, and running it again although it finished.
    let won_href = href_of("Deal won", "");
    let won = get(agent, &won_href).await;
    assert_eq!(won.one("#entry-title"), "Deal won");
    assert!(won.all("#job dd").iter().any(|d| d == "done"), "{}", won.text);
    assert!(won.all("#job ol.steps li").iter().any(|s| s.contains("Payment verified")));
    let jobs_before = agent.json(&shop.path("/jobs")).await.as_array().unwrap().len();
    let notes_before = shop.notes(901).len();
    let action = won.attr("#job form", "action").unwrap();
    let member = shop.app.add_member(&shop.owner, "reader@agency.co.ke", "member").await;
    assert!(get(&member, &won_href).await.all("#job form").is_empty());
    assert_eq!(super::submit(&member, &action, &[]).await.status(), 403);
    let replayed = super::submit(agent, &action, &[]).await;
    assert_eq!(super::location(&replayed), format!("{won_href}?done=job-replayed"));
    shop.app.queue_settled().await;
    assert_eq!(agent.json(&shop.path("/jobs")).await.as_array().unwrap().len(), jobs_before + 1);
    assert_eq!(shop.notes(901).len(), notes_before, "a repeat posts no second note");
    assert_eq!(shop.stage(901), 142);
    let audit = get(agent, &format!("/app/agencies/{}/audit", shop.owner.agency)).await;
    assert!(
        audit.text.contains("Ran an event&#39;s job again")
            || audit.text.contains("Ran an event's job again")
    );

    // Another agency cannot open or replay it.
    let stranger = shop.app.sign_up("stranger@other.example", "Other Agency").await;
    assert_eq!(get(&stranger.agent, &won_href).await.status, 404);
    shop.app.stop().await;
}

async fn a_test_event_shows_whether_webhooks_get_in_and_moves_nothing(engine: Engine) {
    let shop = Shop::open(engine).await;
    let agent = &shop.owner.agent;
    let base = format!("/app/agencies/{}/clients/{}", shop.owner.agency, shop.client);
    let jobs_before = agent.json(&shop.path("/jobs")).await.as_array().unwrap().len();

    let overview = get(agent, &base).await;
    let action = overview.attr("#setup form", "action").unwrap();
    assert_eq!(action, format!("{base}/test-event"));
    let sent = super::submit(agent, &action, &[]).await;
    assert_eq!(sent.status(), 200);
    let page = Page::read(sent).await;
    assert_eq!(page.all(".test-results li .badge"), ["Works", "Works"], "{}", page.text);
    assert!(page.one(".test-results").contains("secret hash pipepay holds was accepted"));

    // Recognisable, and nothing acted on: no job, no link, and the checklist still waits for a
    // real Flutterwave webhook.
    shop.app.queue_settled().await;
    assert_eq!(agent.json(&shop.path("/jobs")).await.as_array().unwrap().len(), jobs_before);
    assert!(shop.flw.created(SECRET).is_empty());
    let activity = shop.activity().await;
    let details: Vec<&str> = activity.iter().filter_map(|a| a["detail"].as_str()).collect();
    assert!(details.iter().any(|d| d.contains("pipepay-test-")), "{details:?}");
    assert!(details.iter().any(|d| d.contains("pipepay_test")), "{details:?}");
    assert!(activity.iter().all(|a| a["outcome"] == "ignored"), "{activity:?}");
    assert_eq!(get(agent, &base).await.one("#setup a.next-step"), "Next: point Flutterwave's webhook here");

    // A client account with nothing set up is told what is missing.
    let (bare, _) = shop.app.add_client(agent, &shop.owner.agency, "Bare Shop").await;
    let bare_base = format!("/app/agencies/{}/clients/{bare}", shop.owner.agency);
    let page = Page::read(super::submit(agent, &format!("{bare_base}/test-event"), &[]).await).await;
    assert_eq!(page.all(".test-results li .badge"), ["Needs attention", "Needs attention"]);
    assert!(page.text.contains("Kommo is not connected yet."));

    // Members may not send one (the addresses carry the token).
    let member = shop.app.add_member(&shop.owner, "reader@agency.co.ke", "member").await;
    assert!(get(&member, &base).await.all("#setup form").is_empty());
    assert_eq!(super::submit(&member, &action, &[]).await.status(), 403);
    shop.app.stop().await;
}
