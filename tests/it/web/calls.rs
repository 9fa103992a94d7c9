//! Issue 15: an activity entry's detail lists each attempt of its job with the Kommo and
//! Flutterwave calls it made, and no token, key or person's data is kept or shown.

use std::time::Duration;

use serde_json::json;

use super::get;
use crate::fakes::flutterwave::{Outcome, Payment, Shape, Signature};
use crate::kommo::ACME;
use crate::on_both_engines;
use crate::pipeline::{HASH, SECRET, Shop, eventually, sale};
use crate::support::Engine;

on_both_engines!(an_entry_shows_the_calls_of_each_attempt_with_secrets_and_people_hidden);

const WAIT: Duration = Duration::from_secs(20);
const EMAIL: &str = "amani.otieno@example.co.ke";
const PHONE: &str = "+254711222333";

/// Every call log stored, as text.
async fn stored_logs(shop: &Shop) -> String {
    let rows: Vec<String> = pipepay::on_db!(&shop.app.db, pool => sqlx::query_scalar(
        "SELECT calls FROM job_attempts ORDER BY started_at",
    )
    .fetch_all(pool)
    .await)
    .unwrap();
    rows.join("\n")
}

async fn an_entry_shows_the_calls_of_each_attempt_with_secrets_and_people_hidden(engine: Engine) {
    let shop = Shop::open(engine).await;
    let agent = &shop.owner.agent;
    // A contact whose answer carries a person and, under their own names, secrets of the kind
    // an answer must never leave in the log.
    let tokens = shop.kommo.issued_tokens(ACME);
    assert!(!tokens.is_empty());
    let mut contact = json!({
        "id": 9050, "name": "Amani Otieno", "first_name": "Amani", "last_name": "Otieno",
        "custom_fields_values": [
            {"field_id": 264_911, "field_name": "Phone", "field_code": "PHONE", "field_type": "multitext",
             "values": [{"value": PHONE, "enum_code": "WORK"}]},
            {"field_id": 264_913, "field_name": "Email", "field_code": "EMAIL", "field_type": "multitext",
             "values": [{"value": EMAIL, "enum_code": "WORK"}]},
        ],
        "secret_key": SECRET,
        "webhook_hash": HASH,
    });
    for (i, token) in tokens.iter().enumerate() {
        contact[format!("access_token_{i}")] = json!(token);
    }
    shop.kommo.add_contact_json(ACME, contact);
    shop.kommo.add_lead(ACME, sale(905, "Order 905", 75, 9050));
    // The first link request is refused for a moment: the job's first attempt fails, the second
    // makes the link; both keep their calls.
    shop.flw.fail_next(SECRET, vec![crate::fakes::flutterwave::Fault::ServerError]);
    shop.to_invoice(905).await;
    eventually(WAIT, "a link for 905", || async { shop.notes(905).len() == 1 }).await;
    let link = shop.flw.created(SECRET).remove(0);
    let tx = shop.flw.pay(&link.tx_ref, Payment::card(Outcome::Successful));
    assert_eq!(shop.flw.deliver(&shop.flw_hook, &tx, Shape::V3, Signature::VerifHash).await, 200);
    eventually(WAIT, "the deal won", || async { shop.stage(905) == 142 }).await;
    shop.app.queue_settled().await;

    let activity = shop.activity().await;
    let entry = |kind: &str| {
        let found = activity.iter().find(|a| a["kind"] == kind && a["lead_id"] == 905).or_else(|| {
            activity.iter().find(|a| a["kind"] == kind && a["tx_ref"].as_str() == Some(link.tx_ref.as_str()))
        });
        let id = found.unwrap_or_else(|| panic!("no {kind} entry in {activity:?}"))["id"].as_str().unwrap();
        format!("/app/agencies/{}/clients/{}/activity/{id}", shop.owner.agency, shop.client)
    };

    // The lead job's entry: two attempts, the first ended on Flutterwave's 500, the second made
    // the link and the note; each call in words, its answer one click away.
    let sent = get(agent, &entry("link_created")).await;
    assert_eq!(sent.status, 200);
    assert!(!sent.text.contains("not recorded"), "the old sentence is gone");
    let attempts = sent.all("#job li.attempt > p");
    let calls = sent.all("#job li.call summary, #job li.call > span");
    assert_eq!(attempts.len(), 2, "{attempts:?} {calls:?}");
    assert!(attempts[0].starts_with("Attempt 1") && attempts[0].contains("tried again"), "{attempts:?}");
    assert!(attempts[1].starts_with("Attempt 2") && attempts[1].contains("finished"), "{attempts:?}");
    let calls = sent.all("#job li.call summary, #job li.call > span");
    let line = |prefix: &str| {
        calls
            .iter()
            .find(|c| c.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in {calls:?}"))
            .clone()
    };
    assert!(line("Kommo: GET /api/v4/leads/905 → 200 in ").ends_with(" ms"));
    line("Kommo: GET /api/v4/contacts/9050 → 200 in ");
    line("Flutterwave: POST /v3/payments → 500 in ");
    line("Flutterwave: POST /v3/payments → 200 in ");
    line("Kommo: POST /api/v4/leads/notes → 200 in ");
    assert!(calls.iter().all(|c| !c.contains('?')), "no query strings: {calls:?}");
    let answers = sent.all("#job li.call pre.payload").join("\n");
    assert!(answers.contains(&link.link), "the link Flutterwave answered is shown");
    assert!(answers.contains("[hidden]"), "{answers}");

    // The payment job's entry: Flutterwave's verification (with the customer hidden) and the move.
    let won = get(agent, &entry("deal_closed")).await;
    let won_calls = won.all("#job li.call summary, #job li.call > span");
    assert!(won_calls.iter().any(|c| c.starts_with("Flutterwave: GET /v3/transactions/")), "{won_calls:?}");
    assert!(won_calls.iter().any(|c| c.starts_with("Kommo: PATCH /api/v4/leads/905 → 200")), "{won_calls:?}");

    // Nothing secret or personal in what is stored or shown.
    let stored = stored_logs(&shop).await;
    assert!(stored.contains("/api/v4/contacts/9050"), "the contact call is stored");
    let mut never: Vec<String> = tokens.clone();
    never.extend(shop.kommo.issued_tokens(ACME));
    never.extend([SECRET, HASH, EMAIL, PHONE, "Amani", "Otieno"].map(str::to_owned));
    never.push(tx.customer_email.clone());
    for secret in &never {
        assert!(!stored.contains(secret.as_str()), "{secret} stored: {stored}");
        for page in [&sent, &won] {
            assert!(!page.text.contains(secret.as_str()), "{secret} shown on {}", page.text);
        }
    }

    // Another agency cannot read them.
    let stranger = shop.app.sign_up("stranger@other.example", "Other Agency").await;
    assert_eq!(get(&stranger.agent, &entry("link_created")).await.status, 404);
    shop.app.stop().await;
}
