//! The stories of issue #6's "done when".

use std::time::Duration;

use rust_decimal::Decimal;

use super::{HASH, NEW, SECRET, Shop, eventually};
use crate::fakes::flutterwave::{Outcome, Payment, Shape, Signature};
use crate::kommo::ACME;
use crate::on_both_engines;
use crate::support::Engine;

const WAIT: Duration = Duration::from_secs(20);

on_both_engines!(
    a_deal_in_the_invoice_stage_is_paid_and_won,
    repeated_webhooks_give_one_link_one_closing_and_one_note_each,
    forgeries_underpayments_wrong_currencies_and_strangers_close_nothing,
    a_changed_amount_replaces_the_link_and_a_lost_lead_disables_it,
    a_price_edited_in_the_trigger_stage_gets_a_link_for_the_new_amount,
    a_lead_without_an_email_gets_one_note_saying_so,
    a_currency_or_price_that_will_not_do_gets_a_note_not_a_link,
    reconciliation_closes_a_deal_whose_webhook_never_came,
    reconciliation_reaches_a_new_link_behind_many_nobody_pays,
    a_deal_is_won_in_its_own_pipeline_after_the_settings_moved_on,
    a_revoked_kommo_connection_pauses_the_pipeline_until_reconnected,
    a_link_whose_creation_timed_out_is_never_posted_again,
    a_note_whose_answer_was_lost_is_not_posted_again,
    an_identical_older_note_does_not_stand_in_for_a_new_one,
    a_price_with_tax_is_written_with_two_decimals_in_notes_and_to_flutterwave,
    a_transaction_flutterwave_never_knows_ends_in_one_entry_after_the_window,
);

async fn a_deal_in_the_invoice_stage_is_paid_and_won(engine: Engine) {
    let shop = Shop::open(engine).await;
    shop.lead(1042, "1234.56");
    shop.to_invoice(1042).await;

    eventually(WAIT, "a link note", || async { shop.notes(1042).len() == 1 }).await;
    let created = shop.flw.created(SECRET);
    assert_eq!(created.len(), 1);
    let request = &created[0].request;
    assert_eq!(request["amount"].to_string(), "1234.56", "the exact amount, as a plain number");
    assert_eq!(request["currency"], "KES", "always the currency: Flutterwave defaults to NGN");
    assert_eq!(request["customer"]["email"], "wanjiru@example.co.ke");
    assert_eq!(request["redirect_url"], "https://acme.example/thanks");
    assert_eq!(request["payment_options"], "card, mpesa");
    let note = &shop.notes(1042)[0];
    assert!(note.contains(&created[0].link) && note.contains("1234.56 KES"), "{note}");

    let paid = shop.flw.pay(&created[0].tx_ref, Payment::by(Outcome::Successful, "mpesa"));
    assert_eq!(paid.amount, "1234.56".parse::<Decimal>().unwrap());
    assert_eq!(shop.flw.deliver(&shop.flw_hook, &paid, Shape::V3, Signature::VerifHash).await, 200);

    eventually(WAIT, "the deal won", || async { shop.stage(1042) == 142 }).await;
    eventually(WAIT, "a payment note", || async { shop.notes(1042).len() == 2 }).await;
    let note = &shop.notes(1042)[1];
    assert!(note.contains("1234.56 KES") && note.contains("mpesa") && note.contains(&paid.flw_ref), "{note}");
    assert!(shop.flw.verify_calls(SECRET).iter().any(|c| c.contains(&paid.id.to_string())), "verified by id");
    let kinds: Vec<String> =
        shop.activity().await.iter().map(|a| a["kind"].as_str().unwrap().to_owned()).collect();
    for kind in ["received", "link_created", "note_posted", "payment_verified", "deal_closed"] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} in {kinds:?}");
    }
    shop.app.stop().await;
}

async fn repeated_webhooks_give_one_link_one_closing_and_one_note_each(engine: Engine) {
    let shop = Shop::open(engine).await;
    shop.lead(7, "500");
    shop.to_invoice(7).await;
    for _ in 0..4 {
        // Kommo delivering the same change again.
        assert_eq!(shop.kommo.send_status_webhook(&shop.kommo_hook, ACME, &[7]).await, 200);
    }
    eventually(WAIT, "a link note", || async { shop.notes(7).len() == 1 }).await;
    let tx_ref = shop.flw.created(SECRET)[0].tx_ref.clone();
    let failed = shop.flw.pay(&tx_ref, Payment::card(Outcome::Failed));
    let paid = shop.flw.pay(&tx_ref, Payment::card(Outcome::Successful));
    for _ in 0..3 {
        assert_eq!(shop.flw.deliver(&shop.flw_hook, &paid, Shape::V3, Signature::VerifHash).await, 200);
    }
    eventually(WAIT, "the payment note", || async { shop.notes(7).len() == 2 }).await;
    // Once the queue is idle, nothing more arrives.
    shop.app.queue_settled().await;
    assert_eq!(shop.flw.created(SECRET).len(), 1, "one link");
    assert_eq!(shop.notes(7).len(), 2, "one link note, one payment note");
    let closings = shop.activity().await.iter().filter(|a| a["kind"] == "deal_closed").count();
    assert_eq!(closings, 1, "one closing");
    // The earlier failed attempt's webhook, arriving after the win, changes nothing and says nothing.
    assert_eq!(shop.flw.deliver(&shop.flw_hook, &failed, Shape::V3, Signature::VerifHash).await, 200);
    shop.app.queue_settled().await;
    assert_eq!(shop.stage(7), 142);
    assert_eq!(shop.notes(7).len(), 2);
    shop.app.stop().await;
}

async fn forgeries_underpayments_wrong_currencies_and_strangers_close_nothing(engine: Engine) {
    let shop = Shop::open(engine).await;
    for lead in [11, 12, 13] {
        shop.lead(lead, "1000");
        shop.to_invoice(lead).await;
    }
    eventually(WAIT, "three links", || async { shop.flw.created(SECRET).len() == 3 }).await;
    let link = |lead: i64| {
        let created = shop.flw.created(SECRET);
        created.iter().find(|c| c.request["meta"]["lead_id"] == lead).unwrap().tx_ref.clone()
    };

    // Forged: a real successful payment, announced without the right hash.
    let paid = shop.flw.pay(&link(11), Payment::card(Outcome::Successful));
    for signature in [Signature::Wrong, Signature::Missing] {
        assert_eq!(shop.flw.deliver(&shop.flw_hook, &paid, Shape::V3, signature).await, 401);
    }
    let stored: i64 = pipepay::on_db!(&shop.app.db, pool => sqlx::query_scalar(
        "SELECT COUNT(*) FROM inbound_events WHERE source = 'flutterwave'").fetch_one(pool).await)
    .unwrap();
    assert_eq!(stored, 0, "a forged webhook never reaches storage");

    // Underpaid and wrong currency: verified, refused, explained once.
    let mut under = Payment::card(Outcome::Successful);
    under.amount = Some("999.99".parse().unwrap());
    let underpaid = shop.flw.pay(&link(12), under);
    let mut other = Payment::card(Outcome::Successful);
    other.currency = Some("USD".into());
    let dollars = shop.flw.pay(&link(13), other);
    for tx in [&underpaid, &dollars] {
        for _ in 0..2 {
            assert_eq!(shop.flw.deliver(&shop.flw_hook, tx, Shape::V3, Signature::HmacBase64).await, 200);
        }
    }
    eventually(WAIT, "two problem notes", || async {
        shop.notes(12).len() == 2 && shop.notes(13).len() == 2
    })
    .await;
    assert!(shop.notes(12)[1].contains("999.99"), "{:?}", shop.notes(12));
    assert!(shop.notes(13)[1].contains("USD"), "{:?}", shop.notes(13));

    // Another agency's client account and its own Flutterwave account: its payment, sent to
    // this client account's hook with this one's hash, is not ours to act on.
    let stranger_secret = "FLWSECK_TEST-ffffffffffffffffffffffffffffffff-X";
    shop.flw.add_merchant(stranger_secret, "stranger-hash-0123456789");
    let foreign =
        shop.flw.create_foreign_link(stranger_secret, "pp-someone-else", "1000".parse().unwrap(), "KES");
    let _ = foreign;
    let theirs = shop.flw.pay("pp-someone-else", Payment::card(Outcome::Successful));
    // Signed with the stranger's hash it is refused outright; re-signed with ours (someone who
    // knows our hash replaying another account's event) it is recorded and ignored.
    assert_eq!(shop.flw.deliver(&shop.flw_hook, &theirs, Shape::V3, Signature::VerifHash).await, 401);
    let replayed = shop
        .app
        .http
        .post(&shop.flw_hook)
        .header("content-type", "application/json")
        .header("verif-hash", HASH)
        .body(shop.flw.webhook_body(&theirs, Shape::V3))
        .send()
        .await
        .unwrap();
    assert_eq!(replayed.status(), 200);

    shop.app.queue_settled().await;
    for lead in [11, 12, 13] {
        assert_eq!(shop.stage(lead), super::INVOICE, "lead {lead} stays open");
    }
    let activity = shop.activity().await;
    assert_eq!(activity.iter().filter(|a| a["kind"] == "payment_rejected").count(), 2);
    assert!(
        activity.iter().any(|a| a["detail"].as_str().unwrap().contains("not a payment link pipepay issued"))
    );
    assert!(!activity.iter().any(|a| a["kind"] == "deal_closed"));
    shop.app.stop().await;
}

async fn a_changed_amount_replaces_the_link_and_a_lost_lead_disables_it(engine: Engine) {
    let shop = Shop::open(engine).await;
    shop.lead(21, "800");
    shop.to_invoice(21).await;
    eventually(WAIT, "the first link", || async { shop.notes(21).len() == 1 }).await;
    let first = shop.flw.created(SECRET)[0].clone();
    // The customer pays the first link; its webhook is late.
    let late = shop.flw.pay(&first.tx_ref, Payment::card(Outcome::Successful));

    // The price changes; the deal goes back a stage and forward again.
    shop.lead(21, "950.50");
    shop.kommo.move_lead(ACME, 21, NEW).await;
    shop.to_invoice(21).await;
    eventually(WAIT, "a replacement note", || async { shop.notes(21).len() == 2 }).await;
    let created = shop.flw.created(SECRET);
    assert_eq!(created.len(), 2);
    assert!(created[0].disabled, "the old link no longer works");
    assert_eq!(created[1].request["amount"].to_string(), "950.50");
    let note = &shop.notes(21)[1];
    assert!(note.contains("800") && note.contains("950.50") && note.contains(&created[1].link), "{note}");

    // The payment for the superseded link still closes the deal, and says so.
    assert_eq!(shop.flw.deliver(&shop.flw_hook, &late, Shape::LegacyFlat, Signature::PlainHash).await, 200);
    eventually(WAIT, "the deal won", || async { shop.stage(21) == 142 && shop.notes(21).len() == 3 }).await;
    assert!(shop.notes(21)[2].contains("earlier payment link"), "{:?}", shop.notes(21));

    // Lost: the open link is disabled.
    shop.lead(22, "120");
    shop.to_invoice(22).await;
    eventually(WAIT, "the second lead's link", || async { shop.notes(22).len() == 1 }).await;
    shop.kommo.move_lead(ACME, 22, 143).await;
    eventually(WAIT, "the link disabled", || async {
        shop.flw.created(SECRET).iter().any(|c| c.request["meta"]["lead_id"] == 22 && c.disabled)
    })
    .await;
    shop.app.stop().await;
}

/// The deal stays in the trigger stage while its price is set or changed: Kommo sends only an
/// edit hook. A price set after a "no price" note gets its link; a changed price replaces the
/// open link (the old one stops working). Edits elsewhere make no job.
async fn a_price_edited_in_the_trigger_stage_gets_a_link_for_the_new_amount(engine: Engine) {
    let shop = Shop::open(engine).await;
    assert!(
        shop.kommo.webhooks(ACME)[0]["settings"].as_array().unwrap().iter().any(|e| e == "update_lead"),
        "pipepay asks Kommo for edits: {:?}",
        shop.kommo.webhooks(ACME)
    );
    shop.lead(24, "0");
    shop.to_invoice(24).await;
    eventually(WAIT, "the no-price note", || async { shop.notes(24).len() == 1 }).await;
    assert!(shop.notes(24)[0].contains("no price"), "{:?}", shop.notes(24));

    assert_eq!(shop.kommo.edit_price(ACME, 24, "1200").await, [200]);
    eventually(WAIT, "the link once priced", || async { shop.notes(24).len() == 2 }).await;
    assert_eq!(shop.flw.created(SECRET)[0].request["amount"].to_string(), "1200.00");

    assert_eq!(shop.kommo.edit_price(ACME, 24, "1350.50").await, [200]);
    eventually(WAIT, "the replacement", || async { shop.notes(24).len() == 3 }).await;
    let created = shop.flw.created(SECRET);
    assert_eq!(created.len(), 2);
    assert!(created[0].disabled, "the 1200 link no longer works");
    assert_eq!(created[1].request["amount"].to_string(), "1350.50");

    // Outside the trigger stages an edit is recorded and nothing more.
    shop.lead(25, "500");
    let jobs_before = shop.owner.agent.json(&shop.path("/jobs")).await.as_array().unwrap().len();
    assert_eq!(shop.kommo.edit_price(ACME, 25, "650").await, [200]);
    shop.app.queue_settled().await;
    let jobs_after = shop.owner.agent.json(&shop.path("/jobs")).await.as_array().unwrap().len();
    assert_eq!(jobs_after, jobs_before, "no job for an edit outside the trigger stages");
    let activity = shop.activity().await;
    assert!(
        activity.iter().any(|a| a["lead_id"] == 25 && a["outcome"] == "ignored"),
        "the edit is on the record: {activity:?}"
    );
    assert!(shop.notes(25).is_empty());

    // The stage becomes a trigger stage: the very next edit there counts.
    let settings = serde_json::json!({
        "display_name": "Acme Kenya",
        "trigger": {"pipeline_id": super::SALES, "stage_ids": [super::INVOICE, NEW]},
    });
    shop.owner.agent.expect(reqwest::Method::PUT, &shop.path("/settings"), Some(settings), 200).await;
    assert_eq!(shop.kommo.edit_price(ACME, 25, "700").await, [200]);
    eventually(WAIT, "a link for the edited lead", || async { shop.notes(25).len() == 1 }).await;
    shop.app.stop().await;
}

async fn a_lead_without_an_email_gets_one_note_saying_so(engine: Engine) {
    let shop = Shop::open(engine).await;
    shop.kommo.add_contact(ACME, 3100, "No Email", None, Some("+254700000002"));
    shop.kommo.add_lead(
        ACME,
        crate::fakes::kommo::LeadSpec {
            id: 31,
            name: "Order 31".into(),
            price: 100,
            price_with_minor_units: None,
            pipeline_id: super::SALES,
            status_id: NEW,
            contact_ids: vec![3100],
            custom_fields_values: None,
        },
    );
    shop.to_invoice(31).await;
    eventually(WAIT, "a note about the email", || async { shop.notes(31).len() == 1 }).await;
    assert!(shop.notes(31)[0].contains("no email"), "{:?}", shop.notes(31));
    // Again: back and forth, a new webhook, the same problem: no second note.
    shop.kommo.move_lead(ACME, 31, NEW).await;
    shop.to_invoice(31).await;
    shop.app.queue_settled().await;
    assert_eq!(shop.notes(31).len(), 1);
    assert!(shop.flw.created(SECRET).is_empty());
    shop.app.stop().await;
}

/// The lead's currency field names something that is no currency, or its price rounds to
/// nothing: no link in another currency or for 0, a note saying what to fix instead.
async fn a_currency_or_price_that_will_not_do_gets_a_note_not_a_link(engine: Engine) {
    let shop = Shop::open(engine).await;
    let settings = serde_json::json!({
        "display_name": "Acme Kenya",
        "trigger": {"pipeline_id": super::SALES, "stage_ids": [super::INVOICE]},
        "currency": "KES",
        "currency_field_id": 555,
    });
    shop.owner.agent.expect(reqwest::Method::PUT, &shop.path("/settings"), Some(settings), 200).await;
    let currency = |code: &str| Some(serde_json::json!([{"field_id": 555, "values": [{"value": code}]}]));
    for (id, code, price) in [(51, "Ksh", "1500"), (52, " ugx ", "1500"), (53, "USD", "0.004")] {
        shop.kommo.add_contact(ACME, id * 10, "Achieng Odhiambo", Some("achieng@example.co.ke"), None);
        let mut lead = crate::pipeline::sale(id, "Order", 0, id * 10);
        lead.price_with_minor_units = Some(price.to_owned());
        lead.custom_fields_values = currency(code);
        shop.kommo.add_lead(ACME, lead);
        shop.to_invoice(id).await;
    }
    eventually(WAIT, "three notes", || async { (51..=53).all(|id| shop.notes(id).len() == 1) }).await;
    assert!(shop.notes(51)[0].contains("\"KSH\", which is not a currency code"), "{:?}", shop.notes(51));
    assert!(shop.notes(53)[0].contains("no price"), "{:?}", shop.notes(53));
    let created = shop.flw.created(SECRET);
    assert_eq!(created.len(), 1, "only the lead in UGX gets a link");
    assert_eq!(created[0].request["currency"], "UGX");
    assert_eq!(created[0].request["amount"].to_string(), "1500", "UGX has no decimals");
    shop.app.stop().await;
}

async fn reconciliation_closes_a_deal_whose_webhook_never_came(engine: Engine) {
    let shop = Shop::open_with(engine, &["--reconcile-every", "5"]).await;
    shop.lead(41, "300");
    shop.to_invoice(41).await;
    eventually(WAIT, "the link", || async { shop.notes(41).len() == 1 }).await;
    let tx_ref = shop.flw.created(SECRET)[0].tx_ref.clone();
    shop.flw.pay(&tx_ref, Payment::card(Outcome::Successful));
    // No webhook is delivered.
    eventually(Duration::from_secs(30), "the deal won by reconciliation", || async { shop.stage(41) == 142 })
        .await;
    assert!(shop.flw.verify_calls(SECRET).iter().any(|c| c.contains("verify_by_reference")));
    shop.app.stop().await;
}

/// Links nobody pays stay open for good; however many there are (more than one run checks),
/// a newer link whose payment's webhook was lost still gets its turn.
async fn reconciliation_reaches_a_new_link_behind_many_nobody_pays(engine: Engine) {
    let shop = Shop::open_with(engine, &["--reconcile-every", "5"]).await;
    let client = pipepay::ids::ClientId(shop.client.parse().unwrap());
    let long_ago = pipepay::clock::now_ms() - 86_400_000;
    let mut tx = shop.app.db.write().await.unwrap();
    for n in 0..40 {
        let id = uuid::Uuid::now_v7();
        let tx_ref = pipepay::ids::TxRef(format!("pp-abandoned-{n}"));
        let price = pipepay::money::Money::new(rust_decimal::Decimal::TEN, "KES");
        pipepay::store::links::insert_creating(
            &mut tx,
            id,
            client,
            pipepay::ids::LeadId(7000 + n),
            super::SALES,
            &tx_ref,
            &price,
            long_ago + n,
        )
        .await
        .unwrap();
        pipepay::store::links::set_state(&mut tx, id, pipepay::store::links::LinkState::Open, long_ago + n)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();

    shop.lead(42, "300");
    shop.to_invoice(42).await;
    eventually(WAIT, "the link", || async { shop.notes(42).len() == 1 }).await;
    let tx_ref = shop.flw.created(SECRET)[0].tx_ref.clone();
    shop.flw.pay(&tx_ref, Payment::card(Outcome::Successful));
    // No webhook is delivered.
    eventually(Duration::from_secs(40), "the deal won by reconciliation", || async { shop.stage(42) == 142 })
        .await;
    shop.app.stop().await;
}

/// The trigger moves to another pipeline (with its own won stage) while a link from the first
/// one is still open: its payment wins the deal where the deal is, not in the new pipeline.
async fn a_deal_is_won_in_its_own_pipeline_after_the_settings_moved_on(engine: Engine) {
    let shop = Shop::open(engine).await;
    shop.lead(43, "700");
    shop.to_invoice(43).await;
    eventually(WAIT, "the link", || async { shop.notes(43).len() == 1 }).await;
    shop.kommo.add_pipeline(ACME, 8001, "Wholesale", &[8002, 8003, 8004]);
    let settings = serde_json::json!({
        "display_name": "Acme Kenya",
        "trigger": {"pipeline_id": 8001, "stage_ids": [8003]},
        "won_stage_id": 8004,
    });
    shop.owner.agent.expect(reqwest::Method::PUT, &shop.path("/settings"), Some(settings), 200).await;
    let tx_ref = shop.flw.created(SECRET)[0].tx_ref.clone();
    let paid = shop.flw.pay(&tx_ref, Payment::card(Outcome::Successful));
    assert_eq!(shop.flw.deliver(&shop.flw_hook, &paid, Shape::V3, Signature::VerifHash).await, 200);
    eventually(WAIT, "the deal won", || async { shop.stage(43) == 142 }).await;
    assert_eq!(shop.kommo.lead(ACME, 43).unwrap()["pipeline_id"], super::SALES);
    shop.app.stop().await;
}

async fn a_revoked_kommo_connection_pauses_the_pipeline_until_reconnected(engine: Engine) {
    let shop = Shop::open(engine).await;
    shop.lead(51, "250");
    shop.kommo.revoke_all(ACME);
    shop.to_invoice(51).await;
    eventually(WAIT, "a visible pause", || async {
        shop.owner.agent.json(&shop.path("/pipeline")).await["paused"].is_object()
    })
    .await;
    let status = shop.owner.agent.json(&shop.path("/pipeline")).await;
    assert!(status["paused"]["reason"].as_str().unwrap().contains("Kommo"), "{status}");
    assert!(shop.flw.created(SECRET).is_empty());

    let (code, _) =
        crate::kommo::connect(&shop.owner.agent, &shop.owner.agency, &shop.client, &shop.kommo, ACME).await;
    assert_eq!(code, 200);
    eventually(WAIT, "the paused job completing", || async { shop.notes(51).len() == 1 }).await;
    assert!(shop.owner.agent.json(&shop.path("/pipeline")).await["paused"].is_null());
    shop.app.stop().await;
}

async fn a_link_whose_creation_timed_out_is_never_posted_again(engine: Engine) {
    let shop = Shop::open(engine).await;
    shop.lead(71, "640");
    // Flutterwave answers 503 after a while, having created the payment anyway.
    shop.flw
        .fail_next(SECRET, vec![crate::fakes::flutterwave::Fault::SlowThen503(Duration::from_millis(200))]);
    shop.to_invoice(71).await;
    eventually(WAIT, "the link note", || async { shop.notes(71).len() == 1 }).await;
    let created = shop.flw.created(SECRET);
    assert_eq!(created.len(), 2, "the retry asked for a new link");
    assert_ne!(created[0].tx_ref, created[1].tx_ref, "a reference is never posted twice");
    assert!(shop.notes(71)[0].contains(&created[1].link));
    // If the customer somehow pays the first one, the deal still closes: it is ours.
    let paid = shop.flw.pay(&created[0].tx_ref, Payment::card(Outcome::Successful));
    assert_eq!(shop.flw.deliver(&shop.flw_hook, &paid, Shape::V3, Signature::VerifHash).await, 200);
    eventually(WAIT, "the deal won", || async { shop.stage(71) == 142 }).await;
    shop.app.stop().await;
}

/// Kommo takes a note and its answer is lost (a gateway 504): the job retries, finds the note
/// on the lead and does not send it again. For the link note, the payment note and a note
/// about missing details; a note that truly failed is still sent on the retry.
async fn a_note_whose_answer_was_lost_is_not_posted_again(engine: Engine) {
    use crate::fakes::kommo::Fault;
    let shop = Shop::open(engine).await;
    let notes_sent = || {
        shop.kommo
            .requests(ACME)
            .iter()
            .filter(|r| r.method == "POST" && r.path == "/api/v4/leads/notes")
            .count()
    };
    let notes_read = |lead: i64| {
        let path = format!("/api/v4/leads/{lead}/notes");
        shop.kommo.requests(ACME).iter().filter(|r| r.method == "GET" && r.path == path).count()
    };

    shop.lead(61, "450");
    shop.kommo.fail_next_on(ACME, "POST", "/api/v4/leads/notes", Fault::AnswerLost);
    shop.to_invoice(61).await;
    eventually(WAIT, "the link note, once", || async { notes_read(61) == 1 && !shop.notes(61).is_empty() })
        .await;
    let created = shop.flw.created(SECRET);
    let paid = shop.flw.pay(&created[0].tx_ref, Payment::card(Outcome::Successful));
    shop.kommo.fail_next_on(ACME, "POST", "/api/v4/leads/notes", Fault::AnswerLost);
    assert_eq!(shop.flw.deliver(&shop.flw_hook, &paid, Shape::V3, Signature::VerifHash).await, 200);
    eventually(WAIT, "the payment note looked for", || async {
        shop.stage(61) == 142 && notes_read(61) == 2
    })
    .await;

    // Missing details: the first sending fails for real (500, nothing taken), the retry sends.
    shop.kommo.add_contact(ACME, 620, "No Email", None, Some("+254700000062"));
    shop.kommo.add_lead(ACME, crate::pipeline::sale(62, "Order 62", 300, 620));
    shop.kommo.fail_next_on(ACME, "POST", "/api/v4/leads/notes", Fault::ServerError);
    shop.to_invoice(62).await;
    eventually(WAIT, "the missing-details note", || async { shop.notes(62).len() == 1 }).await;
    assert_eq!(notes_read(62), 1, "the retry looked before sending");

    // A payment on a replaced link: its note says so; the retry after the lost answer looks
    // for those words (not the plain payment note a paid link would get now).
    shop.lead(63, "800");
    shop.to_invoice(63).await;
    eventually(WAIT, "the first link", || async { shop.notes(63).len() == 1 }).await;
    let first = shop.flw.created(SECRET).into_iter().find(|c| c.request["meta"]["lead_id"] == 63).unwrap();
    let late = shop.flw.pay(&first.tx_ref, Payment::card(Outcome::Successful));
    shop.kommo.edit_price(ACME, 63, "950").await;
    eventually(WAIT, "the replacement note", || async { shop.notes(63).len() == 2 }).await;
    shop.kommo.fail_next_on(ACME, "POST", "/api/v4/leads/notes", Fault::AnswerLost);
    assert_eq!(shop.flw.deliver(&shop.flw_hook, &late, Shape::V3, Signature::VerifHash).await, 200);
    eventually(WAIT, "the payment note looked for", || async {
        shop.stage(63) == 142 && notes_read(63) == 1
    })
    .await;

    shop.app.queue_settled().await;
    assert_eq!(shop.notes(61).len(), 2, "one link note and one payment note: {:?}", shop.notes(61));
    assert_eq!(shop.notes(62).len(), 1, "{:?}", shop.notes(62));
    assert_eq!(shop.notes(63).len(), 3, "{:?}", shop.notes(63));
    assert!(shop.notes(63)[2].contains("earlier payment link"), "{:?}", shop.notes(63));
    assert_eq!(notes_sent(), 7, "each note sent once, the one that failed for real twice");
    shop.app.stop().await;
}

/// A plain payment template reads the same for every payment. The lead already has such a note
/// from an hour ago; this payment's note fails to send (nothing taken) and the retry looks for
/// it: the old one does not count, and the new one is sent.
async fn an_identical_older_note_does_not_stand_in_for_a_new_one(engine: Engine) {
    use crate::fakes::kommo::Fault;
    let shop = Shop::open(engine).await;
    let settings = serde_json::json!({
        "display_name": "Acme Kenya",
        "trigger": {"pipeline_id": super::SALES, "stage_ids": [super::INVOICE]},
        "notes": {"payment_received": "Paid, thanks!"},
    });
    shop.owner.agent.expect(reqwest::Method::PUT, &shop.path("/settings"), Some(settings), 200).await;
    shop.lead(64, "300");
    shop.kommo.add_note_made_earlier(ACME, 64, "Paid, thanks!", 3600);
    shop.to_invoice(64).await;
    eventually(WAIT, "the link note", || async { shop.notes(64).len() == 2 }).await;
    let created = shop.flw.created(SECRET);
    let paid = shop.flw.pay(&created[0].tx_ref, Payment::card(Outcome::Successful));
    shop.kommo.fail_next_on(ACME, "POST", "/api/v4/leads/notes", Fault::ServerError);
    assert_eq!(shop.flw.deliver(&shop.flw_hook, &paid, Shape::V3, Signature::VerifHash).await, 200);
    eventually(WAIT, "this payment's note", || async { shop.notes(64).len() == 3 }).await;
    assert_eq!(shop.notes(64)[2], "Paid, thanks!");
    assert_eq!(shop.stage(64), 142);
    shop.app.stop().await;
}

/// Issue #12: 1000 plus 7.5% tax was written "1075.0". The note, Flutterwave's body and the
/// payment note all say 1075.00, the currency's two decimals; Flutterwave gets a plain number.
async fn a_price_with_tax_is_written_with_two_decimals_in_notes_and_to_flutterwave(engine: Engine) {
    let shop = Shop::open(engine).await;
    let settings = serde_json::json!({
        "display_name": "Acme Kenya",
        "trigger": {"pipeline_id": super::SALES, "stage_ids": [super::INVOICE]},
        "tax": {"rate_percent": "7.5"},
    });
    shop.owner.agent.expect(reqwest::Method::PUT, &shop.path("/settings"), Some(settings), 200).await;
    shop.lead(61, "1000");
    shop.to_invoice(61).await;
    eventually(WAIT, "the link note", || async { shop.notes(61).len() == 1 }).await;

    let created = shop.flw.created(SECRET);
    let amount = &created[0].request["amount"];
    assert!(amount.is_number(), "a plain JSON number: {amount}");
    assert_eq!(amount.to_string(), "1075.00", "exactly what Flutterwave received");
    let note = &shop.notes(61)[0];
    assert!(note.contains("1075.00 KES"), "{note}");

    let paid = shop.flw.pay(&created[0].tx_ref, Payment::card(Outcome::Successful));
    assert_eq!(shop.flw.deliver(&shop.flw_hook, &paid, Shape::V3, Signature::VerifHash).await, 200);
    eventually(WAIT, "the payment note", || async { shop.notes(61).len() == 2 }).await;
    // Flutterwave reports the paid amount as 1075; the note still shows the currency's cents.
    let note = &shop.notes(61)[1];
    assert!(note.contains("Payment received: 1075.00 KES"), "{note}");
    let timeline = shop.activity().await;
    let created_entry = timeline.iter().find(|a| a["kind"] == "link_created").unwrap();
    assert_eq!(created_entry["detail"], "1075.00 KES");
    shop.app.stop().await;
}

/// Issue #12: a signed webhook names a transaction Flutterwave never knows (a mistaken or
/// replayed id). pipepay looks again for a while, quietly, then ends the job with one clear
/// entry: nothing closed, no dead job, no entry per retry.
async fn a_transaction_flutterwave_never_knows_ends_in_one_entry_after_the_window(engine: Engine) {
    let shop = Shop::open_with(engine, &["--unknown-transaction-window", "3"]).await;
    shop.lead(71, "400");
    shop.to_invoice(71).await;
    eventually(WAIT, "the link note", || async { shop.notes(71).len() == 1 }).await;
    let tx_ref = shop.flw.created(SECRET)[0].tx_ref.clone();
    let unknown = crate::fakes::flutterwave::Transaction {
        id: 9_876_543_210,
        tx_ref: tx_ref.clone(),
        flw_ref: "FLW-MOCK-UNKNOWN".into(),
        amount: "400".parse().unwrap(),
        charged_amount: "400".parse().unwrap(),
        currency: "KES".into(),
        status: "successful".into(),
        payment_type: "card".into(),
        customer_email: "wanjiru@example.co.ke".into(),
    };
    assert_eq!(shop.flw.deliver(&shop.flw_hook, &unknown, Shape::V3, Signature::VerifHash).await, 200);

    let payment_jobs = || async {
        let jobs = shop.owner.agent.json(&shop.path("/jobs")).await;
        jobs.as_array().unwrap().iter().filter(|j| j["kind"] == "payment").cloned().collect::<Vec<_>>()
    };
    eventually(WAIT, "the payment job to end", || async {
        payment_jobs().await.iter().any(|j| j["state"] == "done")
    })
    .await;
    let jobs = payment_jobs().await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert!(jobs[0]["attempts"].as_i64().unwrap() >= 2, "looked again before giving up: {jobs:?}");
    let looks = shop.flw.verify_calls(SECRET).iter().filter(|c| c.contains("9876543210")).count();
    assert!(looks >= 2, "verified by id more than once: {looks}");

    let activity = shop.activity().await;
    let about: Vec<&serde_json::Value> =
        activity.iter().filter(|a| a["tx_ref"] == tx_ref.as_str() && a["kind"] != "link_created").collect();
    let unknowns: Vec<&&serde_json::Value> =
        about.iter().filter(|a| a["kind"] == "payment_unknown").collect();
    assert_eq!(unknowns.len(), 1, "one entry: {about:?}");
    assert!(
        unknowns[0]["detail"]
            .as_str()
            .unwrap()
            .starts_with("Flutterwave does not know transaction 9876543210: not closed"),
        "{:?}",
        unknowns[0]
    );
    let noise: Vec<&serde_json::Value> =
        activity.iter().filter(|a| matches!(a["kind"].as_str(), Some("failure" | "dead"))).collect();
    assert!(noise.is_empty(), "no entry per retry and no dead job: {noise:?}");
    assert!(!activity.iter().any(|a| a["kind"] == "deal_closed"));
    assert_eq!(shop.stage(71), super::INVOICE, "the deal stays open");
    assert_eq!(shop.notes(71).len(), 1, "no note beyond the link's");
    shop.app.stop().await;
}
