//! Flutterwave's transaction shape as the v3 verify endpoints report it, read leniently but
//! exactly: amounts arrive as JSON numbers or as strings, and never pass through f64.

use rust_decimal::Decimal;
use serde_json::Value;

use crate::money::Money;

/// A transaction as verify reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    pub id: i64,
    pub tx_ref: String,
    pub flw_ref: String,
    /// The price requested, in major units. This is what a deal is checked against.
    pub amount: Decimal,
    /// What the customer paid, which is larger when the customer bears the fee.
    pub charged_amount: Decimal,
    pub currency: String,
    /// Lower case: `successful`, `failed`, `pending`, `cancelled`, ...
    pub status: String,
    pub payment_type: String,
    pub customer_email: Option<String>,
}

impl Transaction {
    /// The price requested, in its currency.
    pub fn money(&self) -> Money {
        Money::new(self.amount, self.currency.clone())
    }

    /// Reads the `data` object of a verify answer (the whole `{status, message, data}` envelope
    /// works too). `None` when an essential field (id, tx_ref, amount, currency, status) is
    /// missing or malformed: a half-read transaction must never close a deal.
    pub fn from_verify(data: &Value) -> Option<Transaction> {
        let data = match data.get("data") {
            Some(inner) if inner.is_object() && data.get("tx_ref").is_none() => inner,
            _ => data,
        };
        let id = transaction_id(data.get("id")?)?;
        let tx_ref = non_empty(data.get("tx_ref")?)?;
        let amount = decimal(data.get("amount")?)?;
        // Absent only in trimmed samples; without a fee the customer paid the amount.
        let charged_amount = match data.get("charged_amount") {
            None | Some(Value::Null) => amount,
            Some(value) => decimal(value)?,
        };
        // Codes are compared with our links' upper-case ones; "kes" is still KES.
        let currency = non_empty(data.get("currency")?)?.trim().to_ascii_uppercase();
        let status = non_empty(data.get("status")?)?.to_ascii_lowercase();
        let text = |key: &str| data.get(key).and_then(non_empty).unwrap_or_default();
        let customer_email = data.get("customer").and_then(|c| c.get("email")).and_then(non_empty);
        Some(Transaction {
            id,
            tx_ref,
            flw_ref: text("flw_ref"),
            amount,
            charged_amount,
            currency,
            status,
            payment_type: text("payment_type"),
            customer_email,
        })
    }

    /// Only `successful` means paid (`succeeded` is the v4 spelling of the same). `pending`,
    /// `failed`, `cancelled` and anything unknown do not.
    pub fn is_successful(&self) -> bool {
        matches!(self.status.as_str(), "successful" | "succeeded")
    }
}

/// An exact decimal from a JSON number or a numeric string. With serde_json's
/// `arbitrary_precision` a number keeps its source text, so `1234.56` stays `1234.56`; anything
/// that cannot be held exactly (more than 28 significant digits) is refused rather than rounded.
pub(crate) fn decimal(value: &Value) -> Option<Decimal> {
    let text = match value {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_owned(),
        _ => return None,
    };
    Decimal::from_str_exact(&text).ok().or_else(|| {
        // `1.5e3` is valid JSON; from_scientific is exact for what it accepts.
        text.contains(['e', 'E']).then(|| Decimal::from_scientific(&text).ok()).flatten()
    })
}

/// A v3 transaction id: a positive integer, sometimes sent as a string.
pub(crate) fn transaction_id(value: &Value) -> Option<i64> {
    let id = match value {
        Value::Number(n) => n.as_i64()?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    (id > 0).then_some(id)
}

/// A string with something in it.
pub(crate) fn non_empty(value: &Value) -> Option<String> {
    value.as_str().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dec(text: &str) -> Decimal {
        text.parse().unwrap()
    }

    /// The shape of the reference's verify fixture, with a fractional KES amount.
    fn verify_body() -> String {
        r#"{"status":"success","message":"Transaction fetched successfully","data":{
            "id":288200108,"tx_ref":"t1-42-01hz","flw_ref":"YemiDesola/FLW275407301",
            "device_fingerprint":"N/A","amount":1234.56,"currency":"KES","charged_amount":1251.84,
            "app_fee":17.28,"merchant_fee":0,"processor_response":"Approved by Financial Institution",
            "auth_model":"PIN","ip":"::ffff:10.5.179.3","narration":"CARD Transaction ",
            "status":"successful","payment_type":"card","created_at":"2020-07-15T14:31:16.000Z",
            "account_id":17321,"meta":null,"amount_settled":1234.56,
            "customer":{"id":216519823,"name":"Yemi Desola","phone_number":"N/A",
            "email":"user@gmail.com","created_at":"2020-07-15T14:31:15.000Z"}}}"#
            .to_owned()
    }

    #[test]
    fn reads_a_verify_answer_exactly() {
        let body: Value = serde_json::from_str(&verify_body()).unwrap();
        let tx = Transaction::from_verify(&body["data"]).expect("the fixture parses");
        assert_eq!(tx.id, 288200108);
        assert_eq!(tx.tx_ref, "t1-42-01hz");
        assert_eq!(tx.flw_ref, "YemiDesola/FLW275407301");
        assert_eq!(tx.amount, dec("1234.56"));
        assert_eq!(tx.amount.to_string(), "1234.56");
        assert_eq!(tx.charged_amount, dec("1251.84"));
        assert_eq!(tx.currency, "KES");
        assert_eq!(tx.status, "successful");
        assert_eq!(tx.payment_type, "card");
        assert_eq!(tx.customer_email.as_deref(), Some("user@gmail.com"));
        assert!(tx.is_successful());
        // The whole envelope reads the same.
        assert_eq!(Transaction::from_verify(&body), Some(tx));
    }

    #[test]
    fn amounts_may_be_strings_and_stay_exact() {
        let data = json!({"id": "8415006", "tx_ref": "r", "amount": "100.10", "charged_amount": "101.5",
            "currency": "NGN", "status": "SUCCESSFUL"});
        let tx = Transaction::from_verify(&data).unwrap();
        assert_eq!((tx.id, tx.amount, tx.charged_amount), (8415006, dec("100.10"), dec("101.5")));
        assert_eq!(tx.status, "successful", "status is lower-cased");
        let lower = json!({"id": 1, "tx_ref": "r", "amount": 1, "currency": " kes ", "status": "successful"});
        assert_eq!(Transaction::from_verify(&lower).unwrap().currency, "KES", "currency is upper-cased");
        assert_eq!((tx.flw_ref.as_str(), tx.payment_type.as_str(), tx.customer_email), ("", "", None));

        // 0.1 + 0.2 is where f64 shows itself; an exact decimal does not.
        let a: Value = serde_json::from_str("0.1").unwrap();
        let b: Value = serde_json::from_str("0.2").unwrap();
        assert_eq!(decimal(&a).unwrap() + decimal(&b).unwrap(), dec("0.3"));
        let many: Value = serde_json::from_str("12345678901234567.89").unwrap();
        assert_eq!(decimal(&many), Some(dec("12345678901234567.89")));
        let scientific: Value = serde_json::from_str("1.5e3").unwrap();
        assert_eq!(decimal(&scientific), Some(dec("1500")));
        let too_precise: Value = serde_json::from_str("0.12345678901234567890123456789012").unwrap();
        assert_eq!(decimal(&too_precise), None, "refused, not rounded");
        for bad in [json!("abc"), json!(""), json!(null), json!(true), json!([1])] {
            assert_eq!(decimal(&bad), None, "{bad}");
        }
    }

    #[test]
    fn a_missing_charged_amount_is_the_amount() {
        let data = json!({"id": 1, "tx_ref": "r", "amount": 2500, "currency": "NGN", "status": "pending"});
        let tx = Transaction::from_verify(&data).unwrap();
        assert_eq!(tx.charged_amount, dec("2500"));
        assert!(!tx.is_successful());
    }

    #[test]
    fn essential_fields_are_required() {
        let full = json!({"id": 1, "tx_ref": "r", "amount": 1, "currency": "NGN", "status": "successful"});
        assert!(Transaction::from_verify(&full).is_some());
        for key in ["id", "tx_ref", "amount", "currency", "status"] {
            let mut partial = full.clone();
            partial.as_object_mut().unwrap().remove(key);
            assert_eq!(Transaction::from_verify(&partial), None, "without {key}");
        }
        for (key, bad) in [
            ("id", json!("abc")),
            ("id", json!(0)),
            ("id", json!(1.5)),
            ("amount", json!("1,000")),
            ("charged_amount", json!("x")),
            ("tx_ref", json!("")),
            ("status", json!(null)),
        ] {
            let mut broken = full.clone();
            broken[key] = bad.clone();
            assert_eq!(Transaction::from_verify(&broken), None, "{key} = {bad}");
        }
        assert_eq!(Transaction::from_verify(&json!(null)), None);
        assert_eq!(Transaction::from_verify(&json!({"status": "success", "data": null})), None);
    }

    #[test]
    fn only_successful_is_paid() {
        let mut tx = Transaction::from_verify(
            &json!({"id": 1, "tx_ref": "r", "amount": 1, "currency": "NGN", "status": "successful"}),
        )
        .unwrap();
        for (status, paid) in [
            ("successful", true),
            ("succeeded", true),
            ("failed", false),
            ("pending", false),
            ("cancelled", false),
            ("", false),
        ] {
            tx.status = status.into();
            assert_eq!(tx.is_successful(), paid, "{status}");
        }
    }
}
