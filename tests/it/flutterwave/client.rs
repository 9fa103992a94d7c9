//! The client's conversation with Flutterwave: a tenant's key is checked, a deal becomes a hosted
//! link, the customer pays, and the payment is verified; plus what 429, 5xx and timeouts mean, and
//! how the webhooks Flutterwave sends read and authenticate.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use pipepay::flutterwave::client::{
    Customer, DEFAULT_TIMEOUT, Flutterwave, FlutterwaveError, PaymentRequest,
};
use pipepay::flutterwave::webhook::{self, AuthError, ChargeStatus, EventKind, Shape, TransactionId};
use pipepay::vault::Secret;
use rust_decimal::Decimal;
use serde_json::json;

use crate::fakes::flutterwave::{self as fake, FakeFlutterwave, Fault, Outcome, Payment, Signature};

const KEY: &str = "FLWSECK_TEST-0123456789abcdef0123456789abcdef-X";
const HASH: &str = "tenant-one-webhook-hash";
const OTHER_KEY: &str = "FLWSECK_TEST-fedcba9876543210fedcba9876543210-X";
const OTHER_HASH: &str = "tenant-two-webhook-hash";

/// A fake Flutterwave with two merchants, and the client pointed at it.
async fn world() -> (FakeFlutterwave, Flutterwave) {
    world_with_timeout(DEFAULT_TIMEOUT).await
}

async fn world_with_timeout(timeout: Duration) -> (FakeFlutterwave, Flutterwave) {
    let fake = FakeFlutterwave::start().await;
    fake.add_merchant(KEY, HASH);
    fake.add_merchant(OTHER_KEY, OTHER_HASH);
    let client = Flutterwave::new(url::Url::parse(&fake.base()).unwrap(), timeout).unwrap();
    (fake, client)
}

fn key() -> Secret {
    Secret::new(KEY)
}

fn dec(text: &str) -> Decimal {
    text.parse().unwrap()
}

/// A deal's payment in Kenya shillings, with every option set.
fn payment(tx_ref: &str) -> PaymentRequest {
    PaymentRequest {
        tx_ref: tx_ref.into(),
        amount: dec("1234.56"),
        currency: "KES".into(),
        redirect_url: Some("https://crm.example.com/pay/done?deal=42".into()),
        customer: Customer {
            email: "ada@example.com".into(),
            phone: Some("0712345678".into()),
            name: Some("Ada Obi".into()),
        },
        title: Some("Deal #42".into()),
        logo: None,
        description: Some("Consulting retainer".into()),
        meta: json!({"tenant": "t1", "deal_id": 42}),
        payment_options: vec!["card".into(), "mpesa".into()],
        session_duration_minutes: Some(60),
        max_retry_attempt: Some(3),
    }
}

#[tokio::test]
async fn a_key_is_checked_before_it_is_saved() {
    let (_fake, client) = world().await;
    client.check_key(&key()).await.expect("a known key passes");
    let wrong = Secret::new("FLWSECK_TEST-00000000000000000000000000000000-X");
    let error = client.check_key(&wrong).await.unwrap_err();
    assert!(matches!(error, FlutterwaveError::Unauthorized), "{error:?}");
    assert!(!error.is_transient());
    assert!(!format!("{error} {error:?}").contains("FLWSECK"), "no key in errors");
}

#[tokio::test]
async fn a_deal_becomes_a_hosted_link_with_its_currency_spelled_out() {
    let (fake, client) = world().await;
    let link = client.create_payment(&key(), &payment("t1-42-a")).await.unwrap();
    assert!(link.starts_with(&format!("{}/v3/hosted/pay/flwlnk-", fake.base())), "{link}");

    let created = fake.created(KEY);
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].link, link);
    let sent = &created[0].request;
    assert_eq!(sent["tx_ref"], "t1-42-a");
    assert_eq!(sent["currency"], "KES", "never left to default to NGN");
    assert!(sent["amount"].is_number(), "a plain JSON number in major units");
    assert_eq!(sent["amount"].to_string(), "1234.56", "exact, with the currency's decimals");
    assert_eq!(
        sent["customer"],
        json!({"email": "ada@example.com", "phonenumber": "0712345678", "name": "Ada Obi"})
    );
    assert_eq!(sent["customizations"], json!({"title": "Deal #42", "description": "Consulting retainer"}));
    assert_eq!(sent["meta"], json!({"tenant": "t1", "deal_id": 42}));
    assert_eq!(sent["payment_options"], "card, mpesa");
    assert_eq!(sent["configurations"], json!({"session_duration": 60, "max_retry_attempt": 3}));
    assert_eq!(sent["redirect_url"], "https://crm.example.com/pay/done?deal=42");
    assert!(sent.get("session_duration").is_none(), "only the nested form");

    // A bare request omits what it lacks instead of sending nulls.
    let mut bare = payment("t1-42-b");
    (bare.redirect_url, bare.title, bare.description, bare.meta) = (None, None, None, json!(null));
    (bare.customer.phone, bare.customer.name) = (None, None);
    (bare.payment_options, bare.session_duration_minutes, bare.max_retry_attempt) = (vec![], None, None);
    client.create_payment(&key(), &bare).await.unwrap();
    let mut sent = fake.created(KEY)[1].request.clone();
    assert_eq!(sent["amount"].to_string(), "1234.56");
    sent["amount"] = json!("checked above");
    assert_eq!(
        sent,
        json!({"tx_ref": "t1-42-b", "amount": "checked above", "currency": "KES",
               "customer": {"email": "ada@example.com"}})
    );
}

#[tokio::test]
async fn a_tx_ref_cannot_be_used_twice() {
    let (fake, client) = world().await;
    client.create_payment(&key(), &payment("t1-43-a")).await.unwrap();
    let error = client.create_payment(&key(), &payment("t1-43-a")).await.unwrap_err();
    match &error {
        FlutterwaveError::Rejected { status: 400, message } => {
            assert!(message.contains("Duplicate"), "{message}")
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert!(!error.is_transient());
    assert_eq!(fake.created(KEY).len(), 1);
}

#[tokio::test]
async fn a_link_is_disabled_once_and_disabling_it_again_is_fine() {
    let (fake, client) = world().await;
    let link = client.create_payment(&key(), &payment("t1-44-a")).await.unwrap();
    client.disable_link(&key(), &link).await.expect("disabled");
    assert!(fake.created(KEY)[0].disabled);
    client.disable_link(&key(), &link).await.expect("already inactive counts as done");
    // Another merchant's key cannot see the link, which reads as inactive too.
    client.disable_link(&Secret::new(OTHER_KEY), &link).await.expect("unknown counts as done");
}

#[tokio::test]
async fn a_paid_transaction_verifies_with_its_exact_amount() {
    let (fake, client) = world().await;
    client.create_payment(&key(), &payment("t1-45-a")).await.unwrap();
    let paid = fake.pay("t1-45-a", Payment::card(Outcome::Successful));

    let tx = client.verify(&key(), paid.id).await.unwrap().expect("found");
    assert_eq!(tx.id, paid.id);
    assert_eq!(tx.tx_ref, "t1-45-a");
    assert_eq!(tx.flw_ref, paid.flw_ref);
    assert_eq!(tx.amount, dec("1234.56"));
    assert_eq!(tx.amount.to_string(), "1234.56");
    assert_eq!(tx.charged_amount, dec("1234.56"));
    assert_eq!(tx.currency, "KES");
    assert_eq!(tx.status, "successful");
    assert!(tx.is_successful());
    assert_eq!(tx.payment_type, "card");
    assert_eq!(tx.customer_email.as_deref(), Some("ada@example.com"));
    assert_eq!(fake.verify_calls(KEY), vec![format!("/v3/transactions/{}/verify", paid.id)]);

    // Another tenant's key does not see it; nor does anyone see a transaction that never was.
    assert_eq!(client.verify(&Secret::new(OTHER_KEY), paid.id).await.unwrap(), None);
    assert_eq!(client.verify(&key(), paid.id + 1_000_000_000).await.unwrap(), None);
}

#[tokio::test]
async fn verify_by_reference_finds_the_latest_attempt() {
    let (fake, client) = world().await;
    client.create_payment(&key(), &payment("t1-46 a&b")).await.unwrap();
    assert_eq!(client.verify_by_reference(&key(), "t1-46 a&b").await.unwrap(), None, "nobody paid yet");

    let failed = fake.pay("t1-46 a&b", Payment::card(Outcome::Failed));
    let pending = fake.pay("t1-46 a&b", Payment::by(Outcome::Pending, "mpesa"));
    let tx = client.verify_by_reference(&key(), "t1-46 a&b").await.unwrap().expect("found");
    assert_eq!((tx.id, tx.status.as_str(), tx.payment_type.as_str()), (pending.id, "pending", "mpesa"));
    assert!(!tx.is_successful());
    assert_ne!(tx.id, failed.id);

    fake.set_status(pending.id, "successful");
    let tx = client.verify_by_reference(&key(), "t1-46 a&b").await.unwrap().unwrap();
    assert!(tx.is_successful());
    // The reference travels encoded, so `&` cannot start another parameter.
    assert!(fake.verify_calls(KEY)[0].ends_with("?tx_ref=t1-46+a%26b"), "{:?}", fake.verify_calls(KEY));
    assert_eq!(client.verify_by_reference(&Secret::new(OTHER_KEY), "t1-46 a&b").await.unwrap(), None);
}

#[tokio::test]
async fn a_slow_503_is_unavailable_and_never_retried() {
    let (fake, client) = world().await;
    fake.fail_next(KEY, vec![Fault::SlowThen503(Duration::from_millis(100))]);
    let error = client.create_payment(&key(), &payment("t1-47-a")).await.unwrap_err();
    match &error {
        FlutterwaveError::Unavailable(message) => {
            assert!(message.contains("still be processing"), "{message}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(error.is_transient());
    // Flutterwave processed it; the client did not post it again.
    assert_eq!(fake.created(KEY).len(), 1);
    assert_eq!(fake.created(KEY)[0].tx_ref, "t1-47-a");
}

#[tokio::test]
async fn rate_limits_server_errors_and_revoked_keys_mean_what_they_say() {
    let (fake, client) = world().await;
    fake.fail_next(KEY, vec![Fault::TooManyRequests, Fault::ServerError, Fault::Unauthorized]);
    let limited = client.verify(&key(), 1).await.unwrap_err();
    assert!(
        matches!(limited, FlutterwaveError::RateLimited { retry_after } if retry_after == Duration::from_secs(1)),
        "{limited:?}"
    );
    assert!(limited.is_transient());
    let broken = client.create_payment(&key(), &payment("t1-48-a")).await.unwrap_err();
    assert!(matches!(broken, FlutterwaveError::Unavailable(ref m) if m.starts_with("500")), "{broken:?}");
    assert!(broken.is_transient());
    let revoked = client.disable_link(&key(), "https://checkout.example/x").await.unwrap_err();
    assert!(matches!(revoked, FlutterwaveError::Unauthorized), "{revoked:?}");
    assert!(fake.created(KEY).is_empty(), "a 500 creates nothing");
}

#[tokio::test]
async fn a_request_that_outlives_the_timeout_is_a_timeout() {
    let (fake, client) = world_with_timeout(Duration::from_millis(300)).await;
    assert_eq!(client.timeout(), Duration::from_millis(300));
    fake.fail_next(KEY, vec![Fault::Timeout]);
    let started = Instant::now();
    let error = client.verify(&key(), 1).await.unwrap_err();
    assert!(matches!(error, FlutterwaveError::Timeout), "{error:?}");
    assert!(error.is_transient());
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());

    // In production the client waits out Flutterwave's own ~28 s timeout answer.
    let (_, default) = world().await;
    assert!(default.timeout() > Duration::from_secs(28), "{:?}", default.timeout());
}

#[tokio::test]
async fn every_webhook_shape_reads_the_same_payment() {
    let (fake, client) = world().await;
    client.create_payment(&key(), &payment("t1-49-a")).await.unwrap();
    let paid = fake.pay("t1-49-a", Payment::card(Outcome::Successful));
    client.create_payment(&key(), &payment("t1-49-b")).await.unwrap();
    let failed = fake.pay("t1-49-b", Payment::by(Outcome::Failed, "bank_transfer"));

    for (shape, expected_shape) in [
        (fake::Shape::V3, Shape::V3),
        (fake::Shape::LegacyFlat, Shape::LegacyFlat),
        (fake::Shape::V4, Shape::V4),
    ] {
        let event = webhook::normalise(fake.webhook_body(&paid, shape).as_bytes()).unwrap();
        assert_eq!(event.shape, expected_shape);
        assert_eq!(event.kind, EventKind::ChargeCompleted, "{shape:?}");
        assert_eq!(event.tx_ref.as_deref(), Some("t1-49-a"), "{shape:?}");
        assert_eq!(event.status, ChargeStatus::Successful, "{shape:?}");
        assert_eq!(event.amount, Some(dec("1234.56")), "{shape:?}");
        assert_eq!(event.currency.as_deref(), Some("KES"), "{shape:?}");
        let id = match shape {
            fake::Shape::V4 => TransactionId::Charge(fake.charge_id(paid.id)),
            _ => TransactionId::Numeric(paid.id),
        };
        assert_eq!(event.transaction, Some(id), "{shape:?}");

        let failure = webhook::normalise(fake.webhook_body(&failed, shape).as_bytes()).unwrap();
        assert_eq!(failure.kind, EventKind::ChargeCompleted, "a failure is charge.completed too ({shape:?})");
        assert_eq!(failure.status, ChargeStatus::Failed, "{shape:?}");
        assert_eq!(failure.tx_ref.as_deref(), Some("t1-49-b"), "{shape:?}");
        assert_ne!(failure.dedup_key(), event.dedup_key());
    }
    let v3 = webhook::normalise(fake.webhook_body(&paid, fake::Shape::V3).as_bytes()).unwrap();
    assert_eq!(v3.dedup_key(), Some(format!("flw:{}:successful", paid.id)));
    assert_eq!(v3.payment_type.as_deref(), Some("card"));
    let v4 = webhook::normalise(fake.webhook_body(&failed, fake::Shape::V4).as_bytes()).unwrap();
    assert_eq!(v4.dedup_key(), Some(format!("flw:{}:failed", fake.charge_id(failed.id))));
}

/// A webhook receiver that records each request's headers and raw body, answering 200.
async fn receiver() -> (String, Arc<Mutex<Vec<(HeaderMap, Bytes)>>>) {
    let seen: Arc<Mutex<Vec<(HeaderMap, Bytes)>>> = Arc::default();
    let log = seen.clone();
    let app = Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let log = log.clone();
            async move {
                log.lock().unwrap().push((headers, body));
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

#[tokio::test]
async fn delivered_webhooks_authenticate_only_with_the_tenants_hash() {
    let (fake, client) = world().await;
    client.create_payment(&key(), &payment("t1-50-a")).await.unwrap();
    let paid = fake.pay("t1-50-a", Payment::card(Outcome::Successful));
    let (url, seen) = receiver().await;

    let cases = [
        (fake::Shape::V3, Signature::VerifHash, Ok(())),
        (fake::Shape::V4, Signature::HmacBase64, Ok(())),
        (fake::Shape::LegacyFlat, Signature::HmacBase64, Ok(())),
        (fake::Shape::V4, Signature::PlainHash, Ok(())),
        (fake::Shape::V3, Signature::Missing, Err(AuthError::Missing)),
        (fake::Shape::V3, Signature::Wrong, Err(AuthError::Mismatch)),
    ];
    for (shape, signature, _) in &cases {
        assert_eq!(fake.deliver(&url, &paid, *shape, *signature).await, 200);
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), cases.len());
    let ours = Secret::new(HASH);
    let theirs = Secret::new(OTHER_HASH);
    for ((shape, signature, expected), (headers, body)) in cases.iter().zip(&seen) {
        assert_eq!(&webhook::verify(headers, body, &ours), expected, "{shape:?} {signature:?}");
        if expected.is_ok() {
            assert_eq!(
                webhook::verify(headers, body, &theirs),
                Err(AuthError::Mismatch),
                "another tenant's hash ({shape:?} {signature:?})"
            );
            let event = webhook::normalise(body).unwrap();
            assert_eq!(event.tx_ref.as_deref(), Some("t1-50-a"));
        }
    }
    // The HMAC covers the bytes: the same signature on an edited body fails.
    let (headers, body) = &seen[1];
    let forged = String::from_utf8(body.to_vec()).unwrap().replace("1234.56", "1.56");
    assert_ne!(forged.as_bytes(), body.as_ref());
    assert_eq!(webhook::verify(headers, forged.as_bytes(), &ours), Err(AuthError::Mismatch));
}
