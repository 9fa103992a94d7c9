//! The deal-card widget's API (issue #17): Kommo's one-time token exchanged for a widget
//! token bound to one client account, the deal's payment, send and disable, and CORS.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{Value, json};

use crate::fakes::kommo::AccountSpec;
use crate::kommo::{ACME, CLIENT_ID, CLIENT_SECRET, SHOP, connect};
use crate::on_both_engines;
use crate::pipeline::Shop;
use crate::support::{Engine, problem};

on_both_engines!(
    the_card_reads_a_deals_payment_through_a_widget_session,
    admins_send_and_disable_from_the_card_and_others_may_not,
    a_widget_token_cannot_read_another_client_accounts_leads,
    kommo_tokens_that_are_forged_expired_or_for_elsewhere_are_refused,
    cors_answers_kommo_pages_only,
);

const ACME_ORIGIN: &str = "https://acme.kommo.com";

/// Kommo's one-time token as Kommo would sign it (HS256, the integration's client secret).
fn kommo_token(
    shop: &Shop,
    account: i64,
    host: &str,
    user: i64,
    admin: bool,
    edit: impl FnOnce(&mut Value),
) -> String {
    let now = chrono::Utc::now().timestamp();
    let mut claims = json!({
        "iss": format!("https://{host}"),
        "aud": format!("http://{}", shop.app.addr),
        "jti": uuid::Uuid::new_v4().to_string(),
        "iat": now, "nbf": now, "exp": now + 600,
        "account_id": account, "subdomain": host.split('.').next().unwrap(),
        "client_uuid": CLIENT_ID, "user_id": user, "is_admin": admin,
    });
    edit(&mut claims);
    let key = EncodingKey::from_secret(CLIENT_SECRET.as_bytes()).unwrap();
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
}

async fn session(shop: &Shop, kommo: &str, origin: &str) -> reqwest::Response {
    shop.app
        .http
        .post(shop.app.url("/api/v1/widget/session"))
        .header("x-auth-token", kommo)
        .header("origin", origin)
        .send()
        .await
        .unwrap()
}

async fn widget_token(shop: &Shop, admin: bool) -> (String, Value) {
    let response =
        session(shop, &kommo_token(shop, ACME, "acme.kommo.com", 4242, admin, |_| {}), ACME_ORIGIN).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["access-control-allow-origin"], ACME_ORIGIN);
    let body: Value = response.json().await.unwrap();
    (body["token"].as_str().unwrap().to_owned(), body)
}

async fn widget(shop: &Shop, method: Method, token: &str, origin: &str, path: &str) -> reqwest::Response {
    shop.app
        .http
        .request(method, shop.app.url(&format!("/api/v1/widget{path}")))
        .header("x-widget-token", token)
        .header("origin", origin)
        .send()
        .await
        .unwrap()
}

async fn payment(shop: &Shop, token: &str, lead: i64) -> Value {
    let response = widget(shop, Method::GET, token, ACME_ORIGIN, &format!("/leads/{lead}")).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn the_card_reads_a_deals_payment_through_a_widget_session(engine: Engine) {
    let shop = Shop::open(engine).await;
    let (token, session) = widget_token(&shop, false).await;
    assert_eq!(session["can_act"], false);
    shop.lead(601, "1500");
    assert_eq!(payment(&shop, &token, 601).await["state"], "none");

    shop.to_invoice(601).await;
    shop.app.queue_settled().await;
    let sent = payment(&shop, &token, 601).await;
    assert_eq!(sent["state"], "sent", "{sent}");
    assert_eq!((sent["amount"].as_str(), sent["currency"].as_str()), (Some("1500.00"), Some("KES")));
    assert!(sent["link"].as_str().unwrap().starts_with("http"), "{sent}");
    assert!(sent["sent_at"].as_i64().unwrap() > 0);

    // No email on the contact: no link, and the card says why.
    shop.kommo.add_contact(ACME, 6020, "No Email", None, None);
    shop.kommo.add_lead(ACME, crate::pipeline::sale(602, "Order 602", 700, 6020));
    shop.to_invoice(602).await;
    shop.app.queue_settled().await;
    let refused = payment(&shop, &token, 602).await;
    assert_eq!(refused["state"], "not_accepted", "{refused}");
    assert!(refused["reason"].as_str().unwrap().contains("email"), "{refused}");
    shop.app.stop().await;
}

async fn admins_send_and_disable_from_the_card_and_others_may_not(engine: Engine) {
    let shop = Shop::open(engine).await;
    shop.lead(611, "800");
    let (user, _) = widget_token(&shop, false).await;
    problem(widget(&shop, Method::POST, &user, ACME_ORIGIN, "/leads/611/send").await, 403).await;

    let (admin, _) = widget_token(&shop, true).await;
    let queued = widget(&shop, Method::POST, &admin, ACME_ORIGIN, "/leads/611/send").await;
    assert_eq!(queued.status(), 202);
    shop.app.queue_settled().await;
    let sent = payment(&shop, &admin, 611).await;
    assert_eq!(sent["state"], "sent", "a link outside the trigger stages, on request: {sent}");
    assert_eq!(sent["can_act"], true);
    assert_eq!(shop.notes(611).len(), 1, "{:?}", shop.notes(611));
    // Sending again re-uses the open link and posts its note once more.
    let again = widget(&shop, Method::POST, &admin, ACME_ORIGIN, "/leads/611/send").await;
    assert_eq!(again.status(), 202);
    shop.app.queue_settled().await;
    let notes = shop.notes(611);
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert_eq!(notes[0], notes[1], "the same link, sent again: {notes:?}");
    assert_eq!(payment(&shop, &admin, 611).await["link"], sent["link"]);

    let disabled = widget(&shop, Method::POST, &admin, ACME_ORIGIN, "/leads/611/disable").await;
    assert_eq!(disabled.status(), 202);
    shop.app.queue_settled().await;
    assert_eq!(payment(&shop, &admin, 611).await["state"], "none");
    let activity = shop.activity().await;
    assert!(
        activity.iter().any(|a| a["kind"] == "link_disabled"
            && a["detail"].as_str().unwrap().contains("deal card by Kommo user 4242")),
        "{activity:?}"
    );
    shop.app.stop().await;
}

async fn a_widget_token_cannot_read_another_client_accounts_leads(engine: Engine) {
    let shop = Shop::open(engine).await;
    shop.lead(621, "1200");
    shop.to_invoice(621).await;
    shop.app.queue_settled().await;

    // A second client account, connected to another Kommo account on another host.
    shop.kommo.add_account(AccountSpec {
        id: SHOP,
        subdomain: "shop".into(),
        host: "shop.amocrm.ru".into(),
        currency: "NGN".into(),
    });
    let (other, _) = shop.app.add_client(&shop.owner.agent, &shop.owner.agency, "Shop Nigeria").await;
    let (status, page) = connect(&shop.owner.agent, &shop.owner.agency, &other, &shop.kommo, SHOP).await;
    assert_eq!(status, 200, "{page}");

    let shop_origin = "https://shop.amocrm.ru";
    let response =
        session(&shop, &kommo_token(&shop, SHOP, "shop.amocrm.ru", 9, true, |_| {}), shop_origin).await;
    assert_eq!(response.status(), 200);
    let token = response.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
    let read = widget(&shop, Method::GET, &token, shop_origin, "/leads/621").await;
    let read: Value = read.json().await.unwrap();
    assert_eq!(read["state"], "none", "ACME's lead 621 is not SHOP's: {read}");
    assert!(read.get("link").is_none());
    // Nor from ACME's page, nor with an ACME token claiming SHOP's account from ACME's host.
    problem(widget(&shop, Method::GET, &token, ACME_ORIGIN, "/leads/621").await, 403).await;
    let mixed = kommo_token(&shop, SHOP, "acme.kommo.com", 9, true, |_| {});
    problem(session(&shop, &mixed, ACME_ORIGIN).await, 403).await;
    // Disabling someone else's link through one's own token only queues a job for one's own
    // client account, which has no such link: ACME's link stays open.
    let queued = widget(&shop, Method::POST, &token, shop_origin, "/leads/621/disable").await;
    assert_eq!(queued.status(), 202);
    shop.app.queue_settled().await;
    let (acme, _) = widget_token(&shop, false).await;
    assert_eq!(payment(&shop, &acme, 621).await["state"], "sent");
    shop.app.stop().await;
}

async fn kommo_tokens_that_are_forged_expired_or_for_elsewhere_are_refused(engine: Engine) {
    let shop = Shop::open(engine).await;
    let host = "acme.kommo.com";
    let forged = {
        let claims = json!({"iss": ACME_ORIGIN, "aud": format!("http://{}", shop.app.addr), "exp": 4_000_000_000_i64,
                            "account_id": ACME, "user_id": 1, "is_admin": true});
        let key = EncodingKey::from_secret(b"not-the-client-secret").unwrap();
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
    };
    let expired = kommo_token(&shop, ACME, host, 1, true, |c| c["exp"] = json!(1_000_000_000));
    let elsewhere = kommo_token(&shop, ACME, host, 1, true, |c| c["aud"] = json!("https://other.example"));
    let other_integration =
        kommo_token(&shop, ACME, host, 1, true, |c| c["client_uuid"] = json!("someone-else"));
    for token in [forged, expired, elsewhere, other_integration, "garbage".to_owned()] {
        problem(session(&shop, &token, ACME_ORIGIN).await, 401).await;
    }
    let response = shop.app.http.post(shop.app.url("/api/v1/widget/session")).send().await.unwrap();
    problem(response, 401).await;
    // An unconnected Kommo account.
    let stranger = kommo_token(&shop, 55_555, "stranger.kommo.com", 1, true, |_| {});
    problem(session(&shop, &stranger, "https://stranger.kommo.com").await, 404).await;
    // A widget token from another page of the same host is fine; without one, nothing.
    problem(widget(&shop, Method::GET, "nope", ACME_ORIGIN, "/leads/1").await, 401).await;
    shop.app.stop().await;
}

async fn cors_answers_kommo_pages_only(engine: Engine) {
    let shop = Shop::open(engine).await;
    let preflight = |origin: &'static str| {
        shop.app
            .http
            .request(Method::OPTIONS, shop.app.url("/api/v1/widget/session"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "x-auth-token")
            .send()
    };
    let kommo = preflight(ACME_ORIGIN).await.unwrap();
    assert_eq!(kommo.status(), 204);
    assert_eq!(kommo.headers()["access-control-allow-origin"], ACME_ORIGIN);
    assert!(kommo.headers()["access-control-allow-headers"].to_str().unwrap().contains("x-auth-token"));
    let evil = preflight("https://evil.example").await.unwrap();
    assert!(evil.headers().get("access-control-allow-origin").is_none());
    let plain = preflight("http://acme.kommo.com").await.unwrap();
    // pipepay runs over http in tests, so an http Kommo origin is accepted here; in
    // production (https) only https origins are.
    assert_eq!(plain.headers()["access-control-allow-origin"], "http://acme.kommo.com");
    shop.app.stop().await;
}
