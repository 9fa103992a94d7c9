//! The shared ingress: tokens, limits, accounts, authenticity, payload shapes.

use reqwest::Method;

use super::{HASH, INVOICE, NEW, SALES, SECRET, Shop, eventually};
use crate::fakes::flutterwave::{Outcome, Payment, Shape, Signature};
use crate::kommo::{ACME, SHOP};
use crate::on_both_engines;
use crate::support::{Engine, problem};

on_both_engines!(
    unknown_and_rotated_tokens_are_not_found_like_any_unknown_path,
    another_kommo_accounts_webhook_is_recorded_and_ignored,
    every_flutterwave_shape_and_header_is_accepted_once,
    a_client_account_over_its_webhook_rate_is_asked_to_wait,
    malformed_bodies_are_refused_and_storage_trouble_is_a_503,
    a_lead_back_in_the_trigger_stage_within_the_same_second_gets_a_new_link,
    tokens_that_are_no_tokens_never_reach_the_rate_limiter_or_the_database,
    kommo_is_told_what_was_stored_and_what_was_ignored_and_why,
    ignored_bodies_keep_a_bounded_prefix_and_go_after_the_retention_period,
    a_webhook_over_the_lead_cap_or_a_backlog_over_the_job_cap_is_refused_whole,
);

const WAIT: std::time::Duration = std::time::Duration::from_secs(20);

async fn unknown_and_rotated_tokens_are_not_found_like_any_unknown_path(engine: Engine) {
    let shop = Shop::open(engine).await;
    let http = &shop.app.http;
    let unknown =
        http.post(shop.app.url("/hooks/pph_not-a-token/kommo")).body("account[id]=1").send().await.unwrap();
    let elsewhere = http.post(shop.app.url("/nowhere/at/all")).body("account[id]=1").send().await.unwrap();
    let (a, b) = (problem(unknown, 404).await, problem(elsewhere, 404).await);
    assert_eq!(a["detail"], b["detail"]);

    let old = shop.kommo_hook.clone();
    shop.owner.agent.expect(Method::POST, &shop.path("/ingress-token"), None, 200).await;
    let form = format!("account[id]={ACME}&leads[status][0][id]=1&leads[status][0][status_id]=1");
    let response = http
        .post(&old)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    problem(response, 404).await;
    // Kommo's subscription moved to the new URL with the token.
    let urls = shop.owner.agent.json(&shop.path("/webhook-urls")).await;
    assert_eq!(shop.kommo.webhooks(ACME)[0]["destination"], urls["kommo"]);
    shop.app.stop().await;
}

async fn another_kommo_accounts_webhook_is_recorded_and_ignored(engine: Engine) {
    let shop = Shop::open(engine).await;
    shop.kommo.add_account(crate::fakes::kommo::AccountSpec {
        id: SHOP,
        subdomain: "shop".into(),
        host: "shop.amocrm.ru".into(),
        currency: "NGN".into(),
    });
    shop.kommo.add_pipeline(SHOP, 9001, "Other", &[9002]);
    shop.kommo.add_contact(SHOP, 901, "Someone", Some("someone@example.ng"), None);
    shop.kommo.add_lead(
        SHOP,
        crate::fakes::kommo::LeadSpec {
            id: 90,
            name: "Not ours".into(),
            price: 10,
            price_with_minor_units: None,
            pipeline_id: 9001,
            status_id: 9002,
            contact_ids: vec![901],
            custom_fields_values: None,
        },
    );
    assert_eq!(shop.kommo.send_status_webhook(&shop.kommo_hook, SHOP, &[90]).await, 200);
    let activity = shop.activity().await;
    assert!(
        activity.iter().any(|a| a["kind"] == "ignored"
            && a["detail"].as_str().unwrap().contains("not the connected Kommo account")),
        "{activity:?}"
    );
    let jobs: i64 = pipepay::on_db!(&shop.app.db, pool => sqlx::query_scalar("SELECT COUNT(*) FROM jobs")
        .fetch_one(pool).await)
    .unwrap();
    assert_eq!(jobs, 0);
    shop.app.stop().await;
}

async fn every_flutterwave_shape_and_header_is_accepted_once(engine: Engine) {
    let shop = Shop::open(engine).await;
    shop.lead(61, "75.25");
    shop.to_invoice(61).await;
    eventually(std::time::Duration::from_secs(20), "the link", || async { shop.notes(61).len() == 1 }).await;
    let tx_ref = shop.flw.created(SECRET)[0].tx_ref.clone();
    let failed = shop.flw.pay(&tx_ref, Payment::card(Outcome::Failed));
    let paid = shop.flw.pay(&tx_ref, Payment::card(Outcome::Successful));
    for shape in [Shape::V3, Shape::LegacyFlat, Shape::V4] {
        for signature in [Signature::VerifHash, Signature::HmacBase64, Signature::PlainHash] {
            assert_eq!(
                shop.flw.deliver(&shop.flw_hook, &failed, shape, signature).await,
                200,
                "{shape:?} {signature:?}"
            );
            assert_eq!(
                shop.flw.deliver(&shop.flw_hook, &paid, shape, signature).await,
                200,
                "{shape:?} {signature:?}"
            );
        }
    }
    eventually(std::time::Duration::from_secs(20), "the deal won", || async { shop.stage(61) == 142 }).await;
    eventually(std::time::Duration::from_secs(20), "all notes", || async { shop.notes(61).len() >= 3 }).await;
    shop.app.queue_settled().await;
    let notes = shop.notes(61);
    assert_eq!(notes.len(), 3, "link note, one failed-attempt note, one payment note: {notes:?}");
    let _ = HASH;
    shop.app.stop().await;
}

async fn a_client_account_over_its_webhook_rate_is_asked_to_wait(engine: Engine) {
    let shop = Shop::open_with(engine, &["--ingress-rate", "1", "--ingress-burst", "3"]).await;
    let http = &shop.app.http;
    let form = format!(
        "account[id]={ACME}&leads[status][0][id]=999&leads[status][0][status_id]=1&leads[status][0][last_modified]="
    );
    let mut statuses = Vec::new();
    for i in 0..6 {
        let body = format!("{form}{i}");
        let response = http
            .post(&shop.kommo_hook)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        if response.status() == 429 {
            assert!(response.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
            problem(response, 429).await;
            statuses.push(429);
        } else {
            statuses.push(response.status().as_u16());
        }
    }
    assert_eq!(&statuses[..3], [200, 200, 200]);
    assert!(statuses[3..].contains(&429), "{statuses:?}");
    shop.app.stop().await;
}

async fn malformed_bodies_are_refused_and_storage_trouble_is_a_503(engine: Engine) {
    let shop = Shop::open(engine).await;
    let http = &shop.app.http;
    let response = http.post(&shop.kommo_hook).body("this is not a form").send().await.unwrap();
    problem(response, 400).await;
    let signed = |body: &str| {
        use base64::Engine as _;
        use hmac::{KeyInit, Mac};
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(HASH.as_bytes()).unwrap();
        mac.update(body.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    };
    let not_json = "definitely { not json";
    let response = http
        .post(&shop.flw_hook)
        .header("flutterwave-signature", signed(not_json))
        .body(not_json)
        .send()
        .await
        .unwrap();
    problem(response, 400).await;

    // The database goes away: the sender is told to come back, never that its webhook is bad.
    drop_tables_or_close(&shop).await;
    let form = format!("account[id]={ACME}&leads[status][0][id]=5&leads[status][0][status_id]=1");
    let response = http
        .post(&shop.kommo_hook)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_server_error(), "{}", response.status());
    assert_eq!(response.status(), 503);
    shop.app.stop().await;
}

/// Breaks storage under the running server: the events table disappears.
async fn drop_tables_or_close(shop: &Shop) {
    let url: pipepay::store::DatabaseUrl = shop.app.test_db.url.parse().unwrap();
    let db = pipepay::store::Db::connect(&url, 1).await.unwrap();
    pipepay::on_db!(&db, pool => sqlx::query("DROP TABLE inbound_events").execute(pool).await.map(|_| ()))
        .unwrap();
    db.close().await;
}

/// Kommo stamps changes in whole seconds: trigger, lost and trigger again within one second
/// are three changes with one `last_modified`. The third must not pass for a repeat of the
/// first (the lead would sit in the trigger stage with its link disabled), while Kommo
/// delivering that same change again still collapses into it.
async fn a_lead_back_in_the_trigger_stage_within_the_same_second_gets_a_new_link(engine: Engine) {
    let shop = Shop::open(engine).await;
    shop.lead(31, "500");
    shop.kommo.hold_the_second(true);
    shop.to_invoice(31).await;
    eventually(WAIT, "the first link", || async { shop.notes(31).len() == 1 }).await;
    assert_eq!(shop.kommo.move_lead(ACME, 31, 143).await, [200]);
    eventually(WAIT, "the link disabled", || async { shop.flw.created(SECRET)[0].disabled }).await;
    shop.to_invoice(31).await;
    eventually(WAIT, "a second link", || async { shop.flw.created(SECRET).len() == 2 }).await;
    let created = shop.flw.created(SECRET);
    assert!(!created[1].disabled);
    eventually(WAIT, "its note", || async { shop.notes(31).iter().any(|n| n.contains(&created[1].link)) })
        .await;
    assert_eq!(shop.stage(31), INVOICE);

    let (status, answer) = shop.kommo.send_status_webhook_answer(&shop.kommo_hook, ACME, &[31]).await;
    assert_eq!(status, 200, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["duplicates"], 1, "{answer}");
    assert_eq!(answer["stored"], 0, "{answer}");
    shop.app.stop().await;
}

/// Made-up tokens cost nothing: one that is not even shaped like a token is a 404 before the
/// rate limiter (which would keep a key for it) and the database; one shaped right but
/// belonging to nobody is read once, then remembered for a moment. A new token works at once.
async fn tokens_that_are_no_tokens_never_reach_the_rate_limiter_or_the_database(engine: Engine) {
    let shop = Shop::open_with(engine, &["--ingress-rate", "1", "--ingress-burst", "2"]).await;
    let http = &shop.app.http;
    let post = |path: String| http.post(shop.app.url(&path)).body(format!("account[id]={ACME}")).send();
    let nowhere = problem(post("/nowhere/at/all".into()).await.unwrap(), 404).await;
    let long = format!("/hooks/pph_{}/kommo", "x".repeat(4_000));
    for _ in 0..5 {
        // Never 429: the limiter would have counted the same key five times over its burst.
        let answer = problem(post(long.clone()).await.unwrap(), 404).await;
        assert_eq!(answer["detail"], nowhere["detail"]);
    }
    let unknown = format!("/hooks/pph_{}/kommo", "A".repeat(43));
    problem(post(unknown.clone()).await.unwrap(), 404).await;

    // Storage goes away: what is surely unknown is still answered without it.
    rename_clients(&shop, "clients", "clients_away").await;
    for _ in 0..5 {
        problem(post(long.clone()).await.unwrap(), 404).await;
        problem(post(unknown.clone()).await.unwrap(), 404).await;
    }
    let another = format!("/hooks/pph_{}/flutterwave", "B".repeat(43));
    assert_eq!(post(another).await.unwrap().status(), 503, "a token never seen is looked up");
    rename_clients(&shop, "clients_away", "clients").await;

    // A rotated token works on the next webhook.
    shop.owner.agent.expect(Method::POST, &shop.path("/ingress-token"), None, 200).await;
    let urls = shop.owner.agent.json(&shop.path("/webhook-urls")).await;
    let form = format!("account[id]={ACME}&leads[status][0][id]=5&leads[status][0][status_id]=1");
    let response = http
        .post(urls["kommo"].as_str().unwrap())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    shop.app.stop().await;
}

async fn rename_clients(shop: &Shop, from: &str, to: &str) {
    let url: pipepay::store::DatabaseUrl = shop.app.test_db.url.parse().unwrap();
    let db = pipepay::store::Db::connect(&url, 1).await.unwrap();
    let sql = format!("ALTER TABLE {from} RENAME TO {to}");
    pipepay::on_db!(&db, pool => sqlx::query(sqlx::AssertSqlSafe(sql.clone())).execute(pool).await.map(|_| ()))
        .unwrap();
    db.close().await;
}

/// Posts a Kommo form to the client account's hook; its status and JSON answer.
async fn hook(shop: &Shop, form: &str) -> (u16, serde_json::Value) {
    let response = shop
        .app
        .http
        .post(&shop.kommo_hook)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.to_owned())
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// The answer names what will be acted on and, lead by lead, what will not and why; the
/// timeline says the same.
async fn kommo_is_told_what_was_stored_and_what_was_ignored_and_why(engine: Engine) {
    let shop = Shop::open(engine).await;
    let form = format!(
        "account[id]={ACME}\
         &leads[status][0][id]=41&leads[status][0][status_id]={INVOICE}&leads[status][0][pipeline_id]={SALES}\
         &leads[status][1][id]=42&leads[status][1][status_id]={NEW}&leads[status][1][pipeline_id]={SALES}\
         &leads[status][2][id]=43&leads[status][2][status_id]=143&leads[status][2][pipeline_id]={SALES}\
         &leads[status][3][name]=no+id\
         &leads[update][0][id]=44&leads[update][0][status_id]={NEW}&leads[update][0][pipeline_id]={SALES}\
         &leads[delete][0][id]=45"
    );
    let (status, answer) = hook(&shop, &form).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["stored"], 2, "the trigger stage and lost: {answer}");
    assert_eq!(answer["duplicates"], 0);
    let reasons: Vec<(serde_json::Value, &str)> = answer["ignored"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["lead_id"].clone(), i["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        reasons,
        [
            (42.into(), "not_trigger_stage"),
            (44.into(), "edit_outside_trigger"),
            (45.into(), "not_acted_on"),
            (serde_json::Value::Null, "unreadable"),
        ],
        "{answer}"
    );
    assert!(answer["ignored"][0]["detail"].as_str().unwrap().contains(&NEW.to_string()));

    // Delivered again: all of it is known.
    let (_, again) = hook(&shop, &form).await;
    assert_eq!((again["stored"].clone(), again["duplicates"].clone()), (0.into(), 5.into()), "{again}");

    let (_, contacts) = hook(&shop, &format!("account[id]={ACME}&contacts[add][0][id]=5")).await;
    assert_eq!(contacts["ignored"][0]["reason"], "no_leads", "{contacts}");
    let (status, foreign) = hook(&shop, "account[id]=777&leads[status][0][id]=46").await;
    assert_eq!(status, 200);
    assert_eq!(foreign["stored"], 0);
    assert_eq!(foreign["ignored"][0]["reason"], "foreign_account", "{foreign}");
    let (_, nobody) = hook(&shop, "leads[status][0][id]=46").await;
    assert_eq!(nobody["ignored"][0]["reason"], "no_account", "{nobody}");

    let activity = shop.activity().await;
    assert!(
        activity.iter().any(|a| a["lead_id"] == 42
            && a["outcome"] == "ignored"
            && a["detail"].as_str().unwrap().contains("not a trigger stage")),
        "{activity:?}"
    );
    shop.app.stop().await;
}

/// An unsigned body for another Kommo account costs at most a prefix in the database, and
/// ignored events go after the retention period; events a job refers to stay.
async fn ignored_bodies_keep_a_bounded_prefix_and_go_after_the_retention_period(engine: Engine) {
    use sha2::Digest;
    let shop = Shop::open(engine).await;
    let big = format!("account[id]=777&leads[status][0][id]=5&padding={}", "x".repeat(500_000));
    let (status, answer) = hook(&shop, &big).await;
    assert_eq!((status, answer["ignored"][0]["reason"].as_str()), (200, Some("foreign_account")));
    let db = &shop.app.db;
    let (kept, bytes, sha): (i64, Option<i64>, Option<String>) = pipepay::on_db!(db, pool => sqlx::query_as(
        "SELECT CAST(LENGTH(payload) AS BIGINT), payload_bytes, payload_sha256 FROM inbound_events \
         WHERE outcome = 'ignored'",
    )
    .fetch_one(pool)
    .await)
    .unwrap();
    assert!(kept <= 2048, "{kept} bytes kept");
    assert_eq!(bytes, Some(i64::try_from(big.len()).unwrap()));
    assert_eq!(sha, Some(hex::encode(sha2::Sha256::digest(big.as_bytes()))));

    // A lead that made a job, and a recent ignored body.
    shop.lead(51, "300");
    shop.to_invoice(51).await;
    let (_, recent) = hook(&shop, "account[id]=778&leads[status][0][id]=6").await;
    assert_eq!(recent["ignored"][0]["reason"], "foreign_account");
    // Time passes for the big body and the lead's event (made to look ignored, as an event
    // whose job is still around might be): only the big body may go.
    pipepay::on_db!(db, pool => sqlx::query(
        "UPDATE inbound_events SET received_at = 1000, outcome = 'ignored' \
         WHERE outcome = 'queued' OR LENGTH(payload) > 1000",
    )
    .execute(pool)
    .await
    .map(|_| ()))
    .unwrap();
    let month = std::time::Duration::from_secs(30 * 86_400);
    assert_eq!(pipepay::ingress::retention::sweep(db, month).await.unwrap(), 1);
    let left: Vec<String> = pipepay::on_db!(db, pool => sqlx::query_scalar(
        "SELECT dedup_key FROM inbound_events ORDER BY received_at",
    )
    .fetch_all(pool)
    .await)
    .unwrap();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left[0].starts_with("kommo:status:51:"), "the job's event stays: {left:?}");
    assert!(left[1].starts_with("kommo:foreign:"), "the recent one stays: {left:?}");
    assert_eq!(pipepay::ingress::retention::sweep(db, month).await.unwrap(), 0);
    shop.app.stop().await;
}

/// Leads in the trigger stage, as one Kommo status webhook.
fn to_trigger(leads: &[i64]) -> String {
    let mut form = format!("account[id]={ACME}");
    for (i, lead) in leads.iter().enumerate() {
        form += &format!(
            "&leads[status][{i}][id]={lead}&leads[status][{i}][status_id]={INVOICE}\
             &leads[status][{i}][pipeline_id]={SALES}&leads[status][{i}][old_status_id]={NEW}"
        );
    }
    form
}

/// One webhook may name only so many leads, and one client account may have only so many jobs
/// waiting: beyond either, the webhook is refused whole (nothing stored) with a status Kommo
/// retries, and the refusal of a body too big shows on the timeline.
async fn a_webhook_over_the_lead_cap_or_a_backlog_over_the_job_cap_is_refused_whole(engine: Engine) {
    use crate::fakes::kommo::Fault;
    let shop = Shop::open_with(engine, &["--ingress-max-leads", "3", "--ingress-max-ready-jobs", "2"]).await;
    let (status, answer) = hook(&shop, &to_trigger(&[71, 72, 73, 74])).await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["type"].as_str().map(|t| t.ends_with("too-many-leads")), Some(true), "{answer}");
    let activity = shop.activity().await;
    assert!(
        activity
            .iter()
            .any(|a| a["outcome"] == "refused" && a["detail"].as_str().unwrap().contains("4 lead events")),
        "{activity:?}"
    );
    let db = shop.app.db.clone();
    let count = |sql: &'static str| {
        let db = db.clone();
        async move {
            let n: i64 = pipepay::on_db!(&db, pool => sqlx::query_scalar(sql).fetch_one(pool).await).unwrap();
            n
        }
    };
    assert_eq!(count("SELECT COUNT(*) FROM jobs").await, 0, "nothing of it stored");

    // Kommo answers every read with 429 for ten minutes: the jobs wait, ready.
    shop.kommo.fail_next(ACME, vec![Fault::TooManyRequests { retry_after: 600 }; 20]);
    let (status, answer) = hook(&shop, &to_trigger(&[71, 72, 73])).await;
    assert_eq!((status, answer["stored"].as_i64()), (200, Some(3)), "{answer}");
    // One of them may be in a worker's hands, meeting the 429; the cap counts those waiting.
    eventually(WAIT, "the backlog at its cap", || async {
        count("SELECT COUNT(*) FROM jobs WHERE state = 'ready'").await >= 2
    })
    .await;
    let response = shop
        .app
        .http
        .post(&shop.kommo_hook)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(to_trigger(&[75]))
        .send()
        .await
        .unwrap();
    assert!(response.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    problem(response, 429).await;
    assert_eq!(count("SELECT COUNT(*) FROM inbound_events").await, 3, "nothing of it stored");
    // What makes no job is still taken.
    let (status, answer) = hook(&shop, &format!("account[id]={ACME}&leads[delete][0][id]=75")).await;
    assert_eq!((status, answer["ignored"][0]["reason"].as_str()), (200, Some("not_acted_on")));
    shop.app.stop().await;
}
