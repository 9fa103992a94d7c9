//! The JSON API over issue #15's pages: payments and their totals, a timeline entry in full and
//! running it again, test events through the real ingress, and the alert settings. Each with
//! the roles of its page, a stranger's 404 and bad input named by field.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use super::{SECRET, Shop, eventually};
use crate::fakes::flutterwave::{Outcome, Payment, Shape, Signature};
use crate::on_both_engines;
use crate::support::{Engine, TestApp, problem};

on_both_engines!(
    payments_page_through_with_a_search_and_totals_per_client_account,
    an_entry_reads_in_full_and_runs_again_for_admins,
    test_events_go_through_the_real_ingress_for_admins,
    alert_settings_are_read_by_members_and_changed_by_owners,
);

const WAIT: Duration = Duration::from_secs(20);

fn rfc3339(value: &Value) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(value.as_str().unwrap_or_else(|| panic!("not a time: {value}")))
        .unwrap_or_else(|e| panic!("{value}: {e}"))
}

/// A lead at `price` moved to the invoice stage; waits for its link and returns its tx_ref.
async fn linked(shop: &Shop, lead: i64, price: &str) -> String {
    shop.lead(lead, price);
    shop.to_invoice(lead).await;
    eventually(WAIT, "a link", || async { shop.notes(lead).len() == 1 }).await;
    shop.flw.created(SECRET).into_iter().find(|c| shop.notes(lead)[0].contains(&c.link)).unwrap().tx_ref
}

/// Another agency's owner, who must learn nothing of `shop`'s.
async fn stranger(app: &TestApp) -> crate::support::Agent {
    app.sign_up("stranger@elsewhere.example", "Elsewhere").await.agent
}

async fn payments_page_through_with_a_search_and_totals_per_client_account(engine: Engine) {
    let shop = Shop::open(engine).await;
    let paid_ref = linked(&shop, 501, "1500.50").await;
    let tx = shop.flw.pay(&paid_ref, Payment::card(Outcome::Successful));
    assert_eq!(shop.flw.deliver(&shop.flw_hook, &tx, Shape::V3, Signature::VerifHash).await, 200);
    eventually(WAIT, "the deal won", || async { shop.stage(501) == 142 }).await;
    let open_ref = linked(&shop, 502, "99").await;
    let owner = &shop.owner.agent;

    let page = owner.json(&shop.path("/payments")).await;
    assert_eq!((page["page"].as_i64(), page["more"].as_bool()), (Some(1), Some(false)), "{page}");
    let payments = page["payments"].as_array().unwrap();
    assert_eq!(payments.len(), 2, "{page}");
    assert_eq!(payments[0]["tx_ref"], open_ref.as_str(), "newest first");
    let paid = &payments[1];
    assert_eq!(paid["tx_ref"], paid_ref.as_str());
    assert_eq!(paid["lead_id"], 501);
    assert_eq!(paid["state"], "paid");
    assert_eq!((paid["amount"].as_str(), paid["currency"].as_str()), (Some("1500.50"), Some("KES")));
    assert!(paid["deal_url"].as_str().unwrap().ends_with("acme.kommo.com/leads/detail/501"), "{paid}");
    assert!(paid["customer"].is_string(), "the customer from Flutterwave's webhook: {paid}");
    assert!(rfc3339(&paid["paid_at"]) >= rfc3339(&paid["created_at"]));
    let open = &payments[0];
    assert_eq!((open["state"].as_str(), open["amount"].as_str()), (Some("open"), Some("99.00")));
    assert!(open["paid_at"].is_null() && open["checkout"].as_str().unwrap().starts_with("http"), "{open}");

    let found = owner.json(&shop.path("/payments?q=501")).await;
    let refs: Vec<&str> =
        found["payments"].as_array().unwrap().iter().map(|p| p["tx_ref"].as_str().unwrap()).collect();
    assert_eq!(refs, [paid_ref.as_str()]);
    let beyond = owner.json(&shop.path("/payments?page=2")).await;
    assert_eq!(beyond["payments"], json!([]));
    for bad in ["page=two", "page=0"] {
        let refused = problem(owner.get(&shop.path(&format!("/payments?{bad}"))).await, 422).await;
        assert_eq!(refused["errors"][0]["field"], "page", "{bad}: {refused}");
    }

    let totals = owner.json(&format!("/api/v1/agencies/{}/payments/totals", shop.owner.agency)).await;
    assert_eq!(
        totals,
        json!([{
            "client_id": shop.client,
            "links": {"open": 1, "paid": 1},
            "paid": [{"currency": "KES", "amount": "1500.50", "payments": 1}],
        }])
    );

    // Members read both; a stranger hears of neither.
    let member = shop.app.add_member(&shop.owner, "reader@agency.co.ke", "member").await;
    assert_eq!(member.json(&shop.path("/payments")).await["payments"].as_array().unwrap().len(), 2);
    member.json(&format!("/api/v1/agencies/{}/payments/totals", shop.owner.agency)).await;
    let stranger = stranger(&shop.app).await;
    problem(stranger.get(&shop.path("/payments")).await, 404).await;
    problem(stranger.get(&shop.path("/payments?page=two")).await, 404).await;
    problem(stranger.get(&format!("/api/v1/agencies/{}/payments/totals", shop.owner.agency)).await, 404)
        .await;
    shop.app.stop().await;
}

async fn an_entry_reads_in_full_and_runs_again_for_admins(engine: Engine) {
    let shop = Shop::open(engine).await;
    linked(&shop, 501, "250").await;
    shop.app.queue_settled().await;
    let owner = &shop.owner.agent;
    let activity = shop.activity().await;
    let made =
        activity.iter().find(|e| e["kind"] == "link_created").unwrap_or_else(|| panic!("{activity:?}"));
    let entry = format!("/activity/{}", made["id"].as_str().unwrap());

    let detail = owner.json(&shop.path(&entry)).await;
    assert_eq!(detail["entry"]["id"], made["id"]);
    rfc3339(&detail["entry"]["at"]);
    assert_eq!(
        (detail["job"]["kind"].as_str(), detail["job"]["state"].as_str()),
        (Some("lead"), Some("done"))
    );
    assert_eq!(detail["event"]["source"], "kommo", "{detail}");
    assert!(detail["event"]["body"].as_str().unwrap().contains("501"), "{detail}");
    let steps: Vec<&str> =
        detail["steps"].as_array().unwrap().iter().map(|s| s["kind"].as_str().unwrap()).collect();
    assert!(steps.contains(&"link_created"), "{steps:?}");

    let replay = shop.path(&format!("{entry}/replay"));
    let member = shop.app.add_member(&shop.owner, "reader@agency.co.ke", "member").await;
    member.json(&shop.path(&entry)).await;
    problem(member.send(Method::POST, &replay, None).await, 403).await;
    let stranger = stranger(&shop.app).await;
    problem(stranger.get(&shop.path(&entry)).await, 404).await;
    problem(stranger.send(Method::POST, &replay, None).await, 404).await;
    let unknown = shop.path(&format!("/activity/{}", uuid::Uuid::now_v7()));
    problem(owner.get(&unknown).await, 404).await;
    let malformed = owner.get(&shop.path("/activity/not-an-entry")).await;
    assert!(malformed.status().is_client_error(), "{}", malformed.status());

    // The finished job runs again as a new job, audited; the link is not made twice.
    assert_eq!(owner.send(Method::POST, &replay, None).await.status(), 202);
    eventually(WAIT, "the job run again", || async {
        let jobs = owner.json(&shop.path("/jobs")).await;
        let leads: Vec<&Value> = jobs.as_array().unwrap().iter().filter(|j| j["kind"] == "lead").collect();
        leads.len() == 2 && leads.iter().all(|j| j["state"] == "done")
    })
    .await;
    assert_eq!(shop.notes(501).len(), 1, "the link's note is not posted twice");
    let audit = owner.json(&format!("/api/v1/agencies/{}/audit", shop.owner.agency)).await;
    assert!(audit.to_string().contains("event.replayed"), "{audit}");
    shop.app.stop().await;
}

async fn test_events_go_through_the_real_ingress_for_admins(engine: Engine) {
    let shop = Shop::open(engine).await;
    let owner = &shop.owner.agent;
    let path = shop.path("/test-events");
    let before = shop.activity().await.len();

    let flutterwave = owner.expect(Method::POST, &path, Some(json!({"service": "flutterwave"})), 200).await;
    assert_eq!(
        (flutterwave["service"].as_str(), flutterwave["ok"].as_bool()),
        (Some("flutterwave"), Some(true))
    );
    assert!(flutterwave["words"].as_str().unwrap().contains("secret hash"), "{flutterwave}");
    let kommo = owner.expect(Method::POST, &path, Some(json!({"service": "kommo"})), 200).await;
    assert_eq!((kommo["service"].as_str(), kommo["ok"].as_bool()), (Some("kommo"), Some(true)), "{kommo}");
    eventually(WAIT, "both tests on the timeline", || async { shop.activity().await.len() >= before + 2 })
        .await;
    assert!(shop.flw.created(SECRET).is_empty(), "nothing acted on a test");

    for (body, field) in [
        (json!({"service": "paypal"}), "service"),
        (json!({}), "service"),
        (json!({"service": "kommo", "x": 1}), "x"),
    ] {
        let refused = problem(owner.post(&path, body.clone()).await, 422).await;
        assert_eq!(refused["errors"][0]["field"], field, "{body}: {refused}");
    }
    let member = shop.app.add_member(&shop.owner, "reader@agency.co.ke", "member").await;
    problem(member.post(&path, json!({"service": "kommo"})).await, 403).await;
    let stranger = stranger(&shop.app).await;
    problem(stranger.post(&path, json!({"service": "kommo"})).await, 404).await;
    problem(stranger.post(&path, json!({"service": 5})).await, 404).await;
    shop.app.stop().await;
}

async fn alert_settings_are_read_by_members_and_changed_by_owners(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let owner = app.sign_up("alerts@agency.example", "Alerting Agency").await;
    let path = format!("/api/v1/agencies/{}/alerts", owner.agency);
    let agent = &owner.agent;

    assert_eq!(agent.json(&path).await, json!({"email_owners": true, "webhook_url": null}));
    let hook = "https://hooks.agency.example/pipepay";
    let saved = agent
        .expect(Method::PUT, &path, Some(json!({"email_owners": false, "webhook_url": hook})), 200)
        .await;
    assert_eq!((saved["email_owners"].as_bool(), saved["webhook_url"].as_str()), (Some(false), Some(hook)));
    let secret = saved["webhook_secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("ppw_"), "{saved}");
    let read = agent.json(&path).await;
    assert_eq!(read, json!({"email_owners": false, "webhook_url": hook}), "the secret is shown once");
    let again =
        agent.expect(Method::PUT, &path, Some(json!({"email_owners": true, "webhook_url": hook})), 200).await;
    assert!(again.get("webhook_secret").is_none(), "same URL, same secret: {again}");
    let rotated = agent
        .expect(
            Method::PUT,
            &path,
            Some(json!({"email_owners": true, "webhook_url": hook, "new_secret": true})),
            200,
        )
        .await;
    assert_ne!(rotated["webhook_secret"].as_str().unwrap(), secret);
    let audit = agent.json(&format!("/api/v1/agencies/{}/audit", owner.agency)).await;
    assert!(audit.to_string().contains("alerts.updated"), "{audit}");

    for (body, field) in [
        (json!({"email_owners": true, "webhook_url": "ftp://hooks.agency.example"}), "webhook_url"),
        (json!({"email_owners": true, "webhook_url": "https://10.0.0.7/hook"}), "webhook_url"),
        (json!({"email_owners": "yes"}), "email_owners"),
        (json!({"webhook_url": hook}), "email_owners"),
    ] {
        let refused = problem(agent.put(&path, body.clone()).await, 422).await;
        assert_eq!(refused["errors"][0]["field"], field, "{body}: {refused}");
    }
    let cleared =
        agent.expect(Method::PUT, &path, Some(json!({"email_owners": true, "webhook_url": null})), 200).await;
    assert!(cleared["webhook_url"].is_null());

    let admin = app.add_member(&owner, "admin@agency.example", "admin").await;
    assert_eq!(admin.json(&path).await["email_owners"], true);
    problem(admin.put(&path, json!({"email_owners": false, "webhook_url": null})).await, 403).await;
    let stranger = app.sign_up("stranger@elsewhere.example", "Elsewhere").await.agent;
    problem(stranger.get(&path).await, 404).await;
    problem(stranger.put(&path, json!({"email_owners": "yes"})).await, 404).await;
    app.stop().await;
}
