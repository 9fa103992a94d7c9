//! Flutterwave webhooks: is a delivery authentic, and what does it say. Both run in the ingress
//! before anything is stored, over the raw body exactly as received.
//!
//! Neither makes a webhook trustworthy as to money: the body is a hint, and a deal closes only on
//! what the verify API says with the tenant's key (reference §2, §3).

use axum::http::HeaderMap;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use rust_decimal::Decimal;
use serde_json::{Map, Value};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::model::{decimal, non_empty, transaction_id};
use crate::vault::Secret;

const VERIF_HASH: &str = "verif-hash";
const SIGNATURE: &str = "flutterwave-signature";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("no verif-hash or flutterwave-signature header")]
    Missing,
    #[error("the webhook signature does not match")]
    Mismatch,
}

/// Accept `verif-hash` equal to the tenant's hash, or `flutterwave-signature` equal to
/// base64(HMAC-SHA256(key = hash, message = raw body)) or to the hash itself; every comparison in
/// constant time over raw bytes.
///
/// Which header and encoding an account sends is UNVERIFIED (reference §2, §7.4: v3 sends the
/// hash verbatim in `verif-hash`, the v4 docs copy the hash verbatim in `flutterwave-signature`,
/// the 2026 docs a base64 HMAC there), so a tenant's one hash is accepted in every form.
pub fn verify(headers: &HeaderMap, body: &[u8], hash: &Secret) -> Result<(), AuthError> {
    let verif_hash: Vec<&[u8]> = headers.get_all(VERIF_HASH).iter().map(|v| v.as_bytes()).collect();
    let signatures: Vec<&[u8]> = headers.get_all(SIGNATURE).iter().map(|v| v.as_bytes()).collect();
    if verif_hash.is_empty() && signatures.is_empty() {
        return Err(AuthError::Missing);
    }
    let hash = hash.expose().as_bytes();
    // An empty hash would match an empty header: a tenant without a hash accepts nothing.
    if hash.is_empty() {
        return Err(AuthError::Mismatch);
    }
    let hmac = hmac_base64(hash, body);
    let matched = if verif_hash.iter().any(|v| same(v, hash)) {
        Some("verif-hash")
    } else if signatures.iter().any(|v| same(v, hmac.as_bytes())) {
        Some("flutterwave-signature HMAC")
    } else if signatures.iter().any(|v| same(v, hash)) {
        Some("flutterwave-signature plain hash")
    } else {
        None
    };
    match matched {
        Some(path) => {
            tracing::debug!(path, "webhook signature matched");
            Ok(())
        }
        None => Err(AuthError::Mismatch),
    }
}

/// Constant time in the content; `subtle` answers a length mismatch at once, which reveals at
/// most the length of the hash, never its bytes.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

fn hmac_base64(key: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length; the error branch cannot happen, and would only mean
    // no HMAC can match.
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(key) else { return String::new() };
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The payload shapes that reach merchants (reference §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `{"event", "data": {...}, "meta_data", "event.type"}`.
    V3,
    /// The flat camelCase v2/"Rave" shape: `{"id", "txRef", "flwRef", "status", "event.type", ...}`.
    LegacyFlat,
    /// `{"id": "wbk_...", "type", "timestamp", "data": {"id": "chg_...", "reference", ...}}`.
    V4,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransactionId {
    /// A v3 transaction id, verifiable with `/v3/transactions/{id}/verify`.
    Numeric(i64),
    /// A v4 charge id (`chg_…`). The v3 verify endpoint does not know it: verify by reference.
    Charge(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeStatus {
    /// `successful` (v3) or `succeeded` (v4).
    Successful,
    Failed,
    /// `pending`, and Odoo's `pending auth`.
    Pending,
    /// Lower-cased as sent (`cancelled`, ...); empty when the payload had none.
    Other(String),
}

impl ChargeStatus {
    fn parse(status: Option<String>) -> ChargeStatus {
        let status = status.unwrap_or_default().to_ascii_lowercase();
        match status.as_str() {
            "successful" | "succeeded" => ChargeStatus::Successful,
            "failed" => ChargeStatus::Failed,
            s if s.starts_with("pending") => ChargeStatus::Pending,
            _ => ChargeStatus::Other(status),
        }
    }

    /// The status in words, for keys and logs.
    pub fn as_str(&self) -> &str {
        match self {
            ChargeStatus::Successful => "successful",
            ChargeStatus::Failed => "failed",
            ChargeStatus::Pending => "pending",
            ChargeStatus::Other(s) if s.is_empty() => "unknown",
            ChargeStatus::Other(s) => s,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// A payment attempt ended, successfully or not: the status says which.
    ChargeCompleted,
    /// Anything else (`transfer.completed`, `subscription.cancelled`, ...), as named; recorded
    /// and answered 200 so Flutterwave does not retry it.
    Other(String),
}

/// One webhook, whatever its shape. Every field is as the body claims: unverified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub shape: Shape,
    pub transaction: Option<TransactionId>,
    pub tx_ref: Option<String>,
    pub status: ChargeStatus,
    pub amount: Option<Decimal>,
    pub currency: Option<String>,
    pub payment_type: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("the webhook body is not JSON")]
    NotJson(#[source] serde_json::Error),
    #[error("the webhook body is JSON but not an object")]
    NotObject,
}

/// One event type from the three payload shapes. Reference §7.3: the kind is
/// `event | type | "event.type"`, the transaction `data.id | id`, the reference
/// `data.tx_ref | txRef | data.reference`, the status `data.status | status`. Unknown events
/// still parse (`EventKind::Other`) so they can be recorded and answered 200.
pub fn normalise(body: &[u8]) -> Result<Event, ParseError> {
    let value: Value = serde_json::from_slice(body).map_err(ParseError::NotJson)?;
    let Value::Object(top) = value else { return Err(ParseError::NotObject) };
    let data = top.get("data").and_then(Value::as_object);
    let shape = match data {
        // v4 names its event `type`; v3 `event`. A `data` object with neither is v3 with the
        // name missing, the closer of the two.
        Some(_) if top.get("event").is_none() && top.contains_key("type") => Shape::V4,
        Some(_) => Shape::V3,
        None => Shape::LegacyFlat,
    };
    let event_type = text(&top, "event.type");
    // The fields live in `data` except in the flat shape, where they are at the top.
    let fields = data.unwrap_or(&top);
    let kind = match shape {
        Shape::V3 => match text(&top, "event") {
            Some(name) => kind_from_name(name),
            None => legacy_kind(event_type.as_deref(), fields),
        },
        Shape::V4 => kind_from_name(text(&top, "type").unwrap_or_default()),
        Shape::LegacyFlat => legacy_kind(event_type.as_deref(), fields),
    };
    // Only the payload's own transaction: in v4 the top-level `id` is the webhook's `wbk_…`.
    let transaction = fields.get("id").and_then(parse_transaction);
    let tx_ref = match shape {
        Shape::V3 => text(fields, "tx_ref").or_else(|| text(fields, "txRef")),
        Shape::LegacyFlat => text(fields, "txRef").or_else(|| text(fields, "tx_ref")),
        Shape::V4 => text(fields, "reference").or_else(|| text(fields, "tx_ref")),
    };
    let payment_type = match shape {
        Shape::V4 => fields.get("payment_method").and_then(|m| m.get("type")).and_then(non_empty),
        Shape::V3 | Shape::LegacyFlat => text(fields, "payment_type")
            .or_else(|| text(fields, "paymentType"))
            .or_else(|| event_type.as_deref().and_then(payment_type_from_event_type)),
    };
    Ok(Event {
        kind,
        shape,
        transaction,
        tx_ref,
        status: ChargeStatus::parse(text(fields, "status")),
        amount: fields.get("amount").and_then(decimal),
        currency: text(fields, "currency"),
        payment_type,
    })
}

impl Event {
    /// The per-tenant deduplication key: transaction id and status, e.g. "flw:123456:successful" /
    /// "flw:chg_abc:failed"; None when the event names no transaction. A new status of the same
    /// transaction is a new event (pending, then successful); a redelivery is not.
    pub fn dedup_key(&self) -> Option<String> {
        let id = match self.transaction.as_ref()? {
            TransactionId::Numeric(id) => id.to_string(),
            TransactionId::Charge(id) => id.clone(),
        };
        Some(format!("flw:{id}:{}", self.status.as_str()))
    }
}

fn text(object: &Map<String, Value>, key: &str) -> Option<String> {
    object.get(key).and_then(non_empty)
}

fn kind_from_name(name: String) -> EventKind {
    if name.eq_ignore_ascii_case("charge.completed") {
        EventKind::ChargeCompleted
    } else {
        EventKind::Other(name)
    }
}

/// The flat shape has no event name, only `"event.type"`, which names the payment method of a
/// charge (`CARD_TRANSACTION`, `BANK_TRANSFER_TRANSACTION`, `MPESA_TRANSACTION`, ...). Every
/// sample of it (reference §2, NODE-ISSUE-175) is a completed charge, so a `*_TRANSACTION` type,
/// or no type at all on a body that carries a `txRef`, is read as `charge.completed`. Anything
/// else (a v2 `Transfer`, a PascalCase refund) stays `Other`. Erring towards a charge costs one
/// verify call; erring away would lose a payment.
fn legacy_kind(event_type: Option<&str>, fields: &Map<String, Value>) -> EventKind {
    match event_type {
        Some(t) if t.to_ascii_uppercase().ends_with("_TRANSACTION") => EventKind::ChargeCompleted,
        Some(t) => EventKind::Other(t.to_owned()),
        None if fields.contains_key("txRef") || fields.contains_key("tx_ref") => EventKind::ChargeCompleted,
        None => EventKind::Other(String::new()),
    }
}

/// `BANK_TRANSFER_TRANSACTION` → `bank_transfer`: informational only, for payloads that do not
/// name the payment type (the flat shape). Not every method maps back to v3's spelling.
fn payment_type_from_event_type(event_type: &str) -> Option<String> {
    let upper = event_type.to_ascii_uppercase();
    let method = upper.strip_suffix("_TRANSACTION")?;
    (!method.is_empty()).then(|| method.to_ascii_lowercase())
}

/// A numeric v3 id, or an opaque v4 id. Opaque ids are limited to `[A-Za-z0-9_-]`, so nothing
/// odd reaches a dedup key or a log line.
fn parse_transaction(value: &Value) -> Option<TransactionId> {
    if let Some(id) = transaction_id(value) {
        return Some(TransactionId::Numeric(id));
    }
    let id = value.as_str()?.trim();
    let plausible = (1..=64).contains(&id.len())
        && id.bytes().any(|b| b.is_ascii_alphabetic())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    plausible.then(|| TransactionId::Charge(id.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const HASH: &str = "tenant-webhook-hash-0123";

    fn dec(text: &str) -> Decimal {
        text.parse().unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn hmac_of(body: &[u8]) -> String {
        hmac_base64(HASH.as_bytes(), body)
    }

    /// v3 envelope as delivered (reference §2): the merchant meta as `meta_data`, `event.type`
    /// last, spaced and ordered as Flutterwave writes it rather than as serde_json would.
    const V3: &str = r#"{
  "event": "charge.completed",
  "data": {
    "id": 285959875,
    "tx_ref": "t1-42-01hz",
    "flw_ref": "PeterEkene/FLW270177170",
    "amount": 1234.56,
    "currency": "KES",
    "charged_amount": 1234.56,
    "app_fee": 17.28,
    "status": "successful",
    "payment_type": "card",
    "customer": {"id": 215604089, "name": "Yemi Desola", "phone_number": null, "email": "user@gmail.com"},
    "card": {"first_6digits": "123456", "last_4digits": "7889", "type": "VERVE"}
  },
  "meta_data": {"deal_id": "42"},
  "event.type": "CARD_TRANSACTION"
}"#;

    /// The reference's failed-card sample (no `meta_data`).
    const V3_FAILED: &str = r#"{"event":"charge.completed","data":{"id":408136545,"tx_ref":"WOOC_1_TEST",
        "flw_ref":"NETFLIX/SM31570678271","amount":100000,"currency":"NGN","charged_amount":100000,
        "processor_response":"invalid token supplied","status":"failed","payment_type":"card"},
        "event.type":"CARD_TRANSACTION"}"#;

    /// The flat camelCase v2/"Rave" shape: no `event`, no `data`.
    const LEGACY: &str = r#"{"id":408136546,"txRef":"t1-43-01hz","flwRef":"FLW-MOCK-3b10a512c4dae649",
        "orderRef":"URF_1613406439309_370935","paymentPlan":null,"paymentPage":null,
        "createdAt":"2025-02-15T16:27:19.000Z","amount":"1500.75","charged_amount":1500.75,
        "status":"successful","IP":"197.210.64.96","currency":"NGN","appfee":21.01,"merchantfee":0,
        "merchantbearsfee":1,"customer":{"id":1,"phone":null,"fullName":"Anonymous customer",
        "email":"a@b.com"},"entity":{"card6":"553188","card_last4":"2950"},
        "event.type":"BANK_TRANSFER_TRANSACTION"}"#;

    /// v4: the top-level `id` is the webhook's, the charge's is `data.id`.
    const V4: &str = r#"{"data":{"amount":7500.5,"currency":"GHS","customer":{"email":"a@b.com"},
        "id":"chg_3kRb2ZqYxA","meta":{},"payment_method":{"id":"pmd_x","type":"mobile_money"},
        "processor_response":{"code":"00","type":"approved"},"reference":"t1-44-01hz",
        "status":"succeeded"},"id":"wbk_Ab12Cd34Ef56Gh78Ij90","timestamp":1735116842116,
        "type":"charge.completed"}"#;

    #[test]
    fn v3_envelope() {
        let event = normalise(V3.as_bytes()).unwrap();
        assert_eq!(
            event,
            Event {
                kind: EventKind::ChargeCompleted,
                shape: Shape::V3,
                transaction: Some(TransactionId::Numeric(285959875)),
                tx_ref: Some("t1-42-01hz".into()),
                status: ChargeStatus::Successful,
                amount: Some(dec("1234.56")),
                currency: Some("KES".into()),
                payment_type: Some("card".into()),
            }
        );
        assert_eq!(event.amount.unwrap().to_string(), "1234.56");
        assert_eq!(event.dedup_key().as_deref(), Some("flw:285959875:successful"));
    }

    #[test]
    fn v3_failure_is_still_charge_completed() {
        let event = normalise(V3_FAILED.as_bytes()).unwrap();
        assert_eq!(event.kind, EventKind::ChargeCompleted);
        assert_eq!(event.status, ChargeStatus::Failed);
        assert_eq!(event.tx_ref.as_deref(), Some("WOOC_1_TEST"));
        assert_eq!(event.amount, Some(dec("100000")));
        assert_eq!(event.dedup_key().as_deref(), Some("flw:408136545:failed"));
    }

    #[test]
    fn legacy_flat() {
        let event = normalise(LEGACY.as_bytes()).unwrap();
        assert_eq!(
            event,
            Event {
                kind: EventKind::ChargeCompleted,
                shape: Shape::LegacyFlat,
                transaction: Some(TransactionId::Numeric(408136546)),
                tx_ref: Some("t1-43-01hz".into()),
                status: ChargeStatus::Successful,
                amount: Some(dec("1500.75")),
                currency: Some("NGN".into()),
                payment_type: Some("bank_transfer".into()),
            }
        );
        assert_eq!(event.dedup_key().as_deref(), Some("flw:408136546:successful"));
    }

    #[test]
    fn legacy_kinds() {
        let kind = |body: &str| normalise(body.as_bytes()).unwrap().kind;
        assert_eq!(
            kind(r#"{"id":1,"txRef":"r","status":"failed","event.type":"CARD_TRANSACTION"}"#),
            EventKind::ChargeCompleted
        );
        assert_eq!(kind(r#"{"id":1,"txRef":"r","status":"successful"}"#), EventKind::ChargeCompleted);
        assert_eq!(
            kind(r#"{"id":1,"status":"SUCCESSFUL","event.type":"Transfer"}"#),
            EventKind::Other("Transfer".into())
        );
        assert_eq!(kind(r#"{"TransactionId":1,"AmountRefunded":5}"#), EventKind::Other(String::new()));
    }

    #[test]
    fn v4() {
        let event = normalise(V4.as_bytes()).unwrap();
        assert_eq!(
            event,
            Event {
                kind: EventKind::ChargeCompleted,
                shape: Shape::V4,
                transaction: Some(TransactionId::Charge("chg_3kRb2ZqYxA".into())),
                tx_ref: Some("t1-44-01hz".into()),
                status: ChargeStatus::Successful,
                amount: Some(dec("7500.5")),
                currency: Some("GHS".into()),
                payment_type: Some("mobile_money".into()),
            }
        );
        assert_eq!(event.dedup_key().as_deref(), Some("flw:chg_3kRb2ZqYxA:successful"));
        let failed = V4.replace("succeeded", "failed");
        assert_eq!(
            normalise(failed.as_bytes()).unwrap().dedup_key().as_deref(),
            Some("flw:chg_3kRb2ZqYxA:failed")
        );
        // Without a charge id the webhook's own `wbk_` id must not stand in for it.
        let anonymous = V4.replace(r#""id":"chg_3kRb2ZqYxA","#, "");
        let event = normalise(anonymous.as_bytes()).unwrap();
        assert_eq!((event.transaction.clone(), event.dedup_key()), (None, None));
    }

    #[test]
    fn statuses() {
        let status = |s: &str| {
            normalise(format!(r#"{{"event":"charge.completed","data":{{"id":1,"status":{s}}}}}"#).as_bytes())
                .unwrap()
                .status
        };
        assert_eq!(status(r#""successful""#), ChargeStatus::Successful);
        assert_eq!(status(r#""Succeeded""#), ChargeStatus::Successful);
        assert_eq!(status(r#""failed""#), ChargeStatus::Failed);
        assert_eq!(status(r#""pending""#), ChargeStatus::Pending);
        assert_eq!(status(r#""pending auth""#), ChargeStatus::Pending);
        assert_eq!(status(r#""Cancelled""#), ChargeStatus::Other("cancelled".into()));
        assert_eq!(status("null"), ChargeStatus::Other(String::new()));
        assert_eq!(ChargeStatus::Other(String::new()).as_str(), "unknown");
    }

    #[test]
    fn unknown_events_still_parse() {
        let transfer = r#"{"event":"transfer.completed","data":{"id":33286,"status":"SUCCESSFUL",
            "amount":"500","currency":"NGN","reference":"tr-1"},"event.type":"Transfer"}"#;
        let event = normalise(transfer.as_bytes()).unwrap();
        assert_eq!(event.kind, EventKind::Other("transfer.completed".into()));
        assert_eq!(event.shape, Shape::V3);
        assert_eq!(event.transaction, Some(TransactionId::Numeric(33286)));
        assert_eq!(event.tx_ref, None, "a v3 body's `reference` is not a payment's tx_ref");
        let sub = r#"{"event":"subscription.cancelled","data":{"id":"x:y","status":"deactivated"}}"#;
        let event = normalise(sub.as_bytes()).unwrap();
        assert_eq!(event.kind, EventKind::Other("subscription.cancelled".into()));
        assert_eq!((event.transaction.clone(), event.dedup_key()), (None, None), "odd ids are not ids");
        let v4_other =
            r#"{"id":"wbk_1","type":"refund.completed","data":{"id":"rfd_1","status":"succeeded"}}"#;
        assert_eq!(normalise(v4_other.as_bytes()).unwrap().kind, EventKind::Other("refund.completed".into()));
        let empty = normalise(b"{}").unwrap();
        assert_eq!(
            (empty.shape, empty.kind, empty.transaction),
            (Shape::LegacyFlat, EventKind::Other(String::new()), None)
        );
    }

    #[test]
    fn non_json_bodies_do_not_parse() {
        for body in [&b""[..], b"not json", b"{\"event\":", b"\xff\xfe", b"event=charge.completed"] {
            assert!(matches!(normalise(body), Err(ParseError::NotJson(_))), "{body:?}");
        }
        for body in [&b"[]"[..], b"\"charge.completed\"", b"42", b"null"] {
            assert!(matches!(normalise(body), Err(ParseError::NotObject)), "{body:?}");
        }
    }

    #[test]
    fn every_header_form_of_the_right_hash_is_accepted() {
        let body = V3.as_bytes();
        let hash = Secret::new(HASH);
        assert_eq!(verify(&headers(&[("verif-hash", HASH)]), body, &hash), Ok(()));
        assert_eq!(verify(&headers(&[("flutterwave-signature", &hmac_of(body))]), body, &hash), Ok(()));
        assert_eq!(verify(&headers(&[("flutterwave-signature", HASH)]), body, &hash), Ok(()));
        // One good header is enough, whatever else came along.
        let both = headers(&[("verif-hash", "stale"), ("flutterwave-signature", &hmac_of(body))]);
        assert_eq!(verify(&both, body, &hash), Ok(()));
        let twice = headers(&[("verif-hash", "stale"), ("verif-hash", HASH)]);
        assert_eq!(verify(&twice, body, &hash), Ok(()));
    }

    #[test]
    fn a_wrong_or_missing_signature_is_refused() {
        let body = V3.as_bytes();
        let hash = Secret::new(HASH);
        assert_eq!(verify(&HeaderMap::new(), body, &hash), Err(AuthError::Missing));
        assert_eq!(verify(&headers(&[("x-other", HASH)]), body, &hash), Err(AuthError::Missing));
        for (name, value) in [
            ("verif-hash", "not-the-hash"),
            ("verif-hash", ""),
            ("verif-hash", &HASH[..HASH.len() - 1]),
            ("verif-hash", &format!("{HASH} ")[..]),
            ("verif-hash", &hmac_of(body)[..]),
            ("flutterwave-signature", "not-the-hash"),
            ("flutterwave-signature", &hmac_of(b"another body")[..]),
        ] {
            assert_eq!(
                verify(&headers(&[(name, value)]), body, &hash),
                Err(AuthError::Mismatch),
                "{name}: {value}"
            );
        }
        // Another tenant's hash.
        assert_eq!(
            verify(&headers(&[("verif-hash", HASH)]), body, &Secret::new("other-hash")),
            Err(AuthError::Mismatch)
        );
        // A tenant without a hash accepts nothing, not even an empty header.
        assert_eq!(verify(&headers(&[("verif-hash", "")]), body, &Secret::new("")), Err(AuthError::Mismatch));
    }

    #[test]
    fn the_hmac_binds_the_raw_body() {
        let hash = Secret::new(HASH);
        let signed = headers(&[("flutterwave-signature", &hmac_of(V3.as_bytes()))]);
        let tampered = V3.replace("1234.56", "9234.56");
        assert_eq!(verify(&signed, tampered.as_bytes(), &hash), Err(AuthError::Mismatch));
        // Equal as JSON is not equal as bytes: an HMAC over a re-serialisation does not match
        // what Flutterwave signed, so the check must run before any parsing.
        let reserialised = serde_json::to_vec(&serde_json::from_str::<Value>(V3).unwrap()).unwrap();
        assert_ne!(reserialised, V3.as_bytes());
        let over_reserialised = headers(&[("flutterwave-signature", &hmac_of(&reserialised))]);
        assert_eq!(verify(&over_reserialised, V3.as_bytes(), &hash), Err(AuthError::Mismatch));
    }

    #[test]
    fn the_hmac_is_standard_base64_of_hmac_sha256() {
        // RFC 4231 test case 2: key "Jefe", "what do ya want for nothing?".
        let mac = hmac_base64(b"Jefe", b"what do ya want for nothing?");
        let hex = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        let bytes: Vec<u8> =
            (0..32).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()).collect();
        assert_eq!(mac, base64::engine::general_purpose::STANDARD.encode(bytes));
    }
}
