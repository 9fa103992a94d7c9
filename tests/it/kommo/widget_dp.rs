//! Kommo's Digital Pipeline action through the ingress (issue #17): both body formats, the
//! pipepay key and the account check, and the action's own settings used for the link.

use serde_json::{Value, json};

use crate::kommo::{ACME, SHOP};
use crate::on_both_engines;
use crate::pipeline::{NEW, SALES, Shop};
use crate::support::{Engine, problem};

on_both_engines!(
    a_json_call_makes_a_link_on_the_actions_settings_outside_the_trigger_stages,
    a_form_encoded_call_is_read_the_same_and_a_repeat_is_one_event,
    a_wrong_key_or_another_kommo_account_is_refused_and_nothing_is_queued,
    digital_pipeline_calls_share_the_client_accounts_rate_limit,
    an_action_with_unusable_settings_is_kept_and_explained_but_makes_no_link,
);

/// The client account's ingress token: the key a user puts into the action's settings.
fn key(shop: &Shop) -> String {
    shop.kommo_hook.rsplit('/').nth(1).unwrap().to_owned()
}

fn json_call(key: &str, account: i64, lead: i64, settings: Value) -> Value {
    let mut widget_settings = json!({ "pipepay_key": key });
    widget_settings.as_object_mut().unwrap().extend(settings.as_object().unwrap().clone());
    json!({
        "event": {"type": 14, "type_code": "lead_appeared_in_status",
                  "data": {"id": lead.to_string(), "element_type": 2, "status_id": NEW, "pipeline_id": SALES},
                  "time": 1_764_720_000},
        "action": {"settings": {"widget": {"settings": widget_settings}}},
        "subdomain": "acme",
        "account_id": account.to_string(),
    })
}

async fn post_json(shop: &Shop, body: &Value) -> reqwest::Response {
    shop.app.http.post(shop.app.url("/hooks/kommo/dp")).json(body).send().await.unwrap()
}

async fn a_json_call_makes_a_link_on_the_actions_settings_outside_the_trigger_stages(engine: Engine) {
    let shop = Shop::open(engine).await;
    shop.lead(501, "1500");
    let call = json_call(
        &key(&shop),
        ACME,
        501,
        json!({"amount": "price", "currency": "usd", "note": "Pay here: {link} ({amount} {currency})"}),
    );
    let response = post_json(&shop, &call).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["stored"], 1, "{answer}");
    shop.app.queue_settled().await;

    let activity = shop.activity().await;
    let created = activity
        .iter()
        .find(|a| a["kind"] == "link_created" && a["lead_id"] == 501)
        .unwrap_or_else(|| panic!("no link for the lead in stage NEW: {activity:?}"));
    assert_eq!(created["detail"], "1500.00 USD", "the action's currency wins over the account's KES");
    let notes = shop.notes(501);
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].starts_with("Pay here: http") && notes[0].ends_with(" USD)"),
        "the action's note: {notes:?}"
    );
    // The key is never stored with the event.
    let stored: Vec<(String,)> = match &shop.app.db {
        pipepay::store::Db::Sqlite(pool) => {
            sqlx::query_as("SELECT payload FROM inbound_events").fetch_all(&**pool).await.unwrap()
        }
        pipepay::store::Db::Postgres(pool) => {
            sqlx::query_as("SELECT payload FROM inbound_events").fetch_all(pool).await.unwrap()
        }
    };
    assert!(!stored.is_empty());
    assert!(stored.iter().all(|(payload,)| !payload.contains(&key(&shop))), "{stored:?}");
    // The overview now says the action drives this client account too.
    let page = crate::web::get(
        &shop.owner.agent,
        &format!("/app/agencies/{}/clients/{}", shop.owner.agency, shop.client),
    )
    .await;
    let now = page.one("#drivers-now");
    assert!(now.contains("both: trigger stages are set"), "{now}");
    assert!(now.contains("Digital Pipeline action last asked for a link at 20"), "{now}");
    shop.app.stop().await;
}

async fn a_form_encoded_call_is_read_the_same_and_a_repeat_is_one_event(engine: Engine) {
    let shop = Shop::open(engine).await;
    shop.lead(502, "2000");
    let form = format!(
        "event[type]=14&event[data][id]=502&event[data][element_type]=2&event[data][status_id]={NEW}&\
         event[data][pipeline_id]={SALES}&event[time]=1764720001&\
         action[settings][widget][settings][pipepay_key]={}&action[settings][widget][settings][amount]=price&\
         subdomain=acme&account_id={ACME}",
        key(&shop)
    );
    let send = || {
        shop.app
            .http
            .post(shop.app.url("/hooks/kommo/dp"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.clone())
            .send()
    };
    let first: Value = send().await.unwrap().json().await.unwrap();
    assert_eq!(first["stored"], 1, "{first}");
    let again: Value = send().await.unwrap().json().await.unwrap();
    assert_eq!((again["stored"].clone(), again["duplicates"].clone()), (json!(0), json!(1)), "{again}");
    shop.app.queue_settled().await;
    let activity = shop.activity().await;
    let links: Vec<&Value> =
        activity.iter().filter(|a| a["kind"] == "link_created" && a["lead_id"] == 502).collect();
    assert_eq!(links.len(), 1, "{activity:?}");
    assert_eq!(links[0]["detail"], "2000.00 KES", "no currency setting: the account's");
    shop.app.stop().await;
}

async fn a_wrong_key_or_another_kommo_account_is_refused_and_nothing_is_queued(engine: Engine) {
    let shop = Shop::open(engine).await;
    shop.lead(503, "900");
    let wrong = "pph_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG";
    problem(post_json(&shop, &json_call(wrong, ACME, 503, json!({}))).await, 401).await;
    problem(post_json(&shop, &json_call("not-a-key", ACME, 503, json!({}))).await, 401).await;
    let foreign = problem(post_json(&shop, &json_call(&key(&shop), SHOP, 503, json!({}))).await, 403).await;
    assert!(foreign["detail"].as_str().unwrap().contains(&SHOP.to_string()), "{foreign}");
    let malformed =
        shop.app.http.post(shop.app.url("/hooks/kommo/dp")).body("account_id=1").send().await.unwrap();
    problem(malformed, 400).await;
    shop.app.queue_settled().await;
    let activity = shop.activity().await;
    assert!(
        activity.iter().any(|a| a["outcome"] == "refused" && a["lead_id"] == 503),
        "the refusal is on the timeline: {activity:?}"
    );
    assert!(!activity.iter().any(|a| a["kind"] == "link_created"), "{activity:?}");
    assert!(shop.notes(503).is_empty());
    shop.app.stop().await;
}

async fn digital_pipeline_calls_share_the_client_accounts_rate_limit(engine: Engine) {
    let shop = Shop::open_with(engine, &["--ingress-rate", "1", "--ingress-burst", "3"]).await;
    let mut statuses = Vec::new();
    for lead in 0..6 {
        shop.lead(600 + lead, "100");
        let call = json_call(&key(&shop), ACME, 600 + lead, json!({"amount": "price"}));
        let response = post_json(&shop, &call).await;
        let status = response.status().as_u16();
        if status == 429 {
            assert!(response.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
            problem(response, 429).await;
        }
        statuses.push(status);
    }
    assert_eq!(&statuses[..3], [200, 200, 200]);
    assert!(statuses[3..].contains(&429), "{statuses:?}");
    // The budget is the client account's: its webhook URL is now limited too.
    let webhook = shop
        .app
        .http
        .post(&shop.kommo_hook)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("account[id]={ACME}&leads[status][0][id]=9&leads[status][0][status_id]=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(webhook.status(), 429);
    shop.app.stop().await;
}

async fn an_action_with_unusable_settings_is_kept_and_explained_but_makes_no_link(engine: Engine) {
    let shop = Shop::open(engine).await;
    shop.lead(701, "1500");
    let call = json_call(&key(&shop), ACME, 701, json!({"amount": "price", "currency": "BTC"}));
    let response = post_json(&shop, &call).await;
    // 200: Kommo would only send the same settings again.
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["stored"], 0, "{answer}");
    let why = answer["ignored"].as_str().unwrap_or_default();
    assert!(why.contains("BTC") && why.contains("not a currency"), "{answer}");
    shop.app.queue_settled().await;
    let activity = shop.activity().await;
    assert!(activity.iter().all(|a| a["kind"] != "link_created"), "{activity:?}");
    assert!(shop.notes(701).is_empty());
    shop.app.stop().await;
}
