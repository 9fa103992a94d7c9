//! The Kommo and Flutterwave calls one job attempt makes, kept for the timeline entry's detail.
//!
//! The queue worker opens a [`CallLog`] around each attempt (a task-local, like
//! `store::counting`), and each vendor client's one send function hands every exchange to
//! [`record`]. Outside an attempt (connecting Kommo, checking a key) nothing is kept. What is kept
//! is meant for people at the agency, so it is masked here, before it is stored: an answer's
//! secrets (tokens, keys, hashes) and a person's data (names, emails, phones, card digits) never
//! reach the database, and the secret the request was sent with is scrubbed from the text too.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Shown instead of a secret or a person's data.
pub const HIDDEN: &str = "[hidden]";
/// Calls kept per attempt: a runaway attempt still leaves a bounded row; the rest are counted.
pub const MAX_CALLS: usize = 40;
/// Bytes of each (masked) answer kept: enough to read what came back, not a whole lead list.
pub const MAX_ANSWER: usize = 2048;

/// One HTTP exchange with a vendor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    /// `kommo` or `flutterwave`.
    pub vendor: String,
    pub method: String,
    /// The path with its ids and without the query (no filters, no references in the log).
    pub path: String,
    /// `None` when no answer came (a timeout or a broken connection).
    pub status: Option<u16>,
    /// Why no answer came, when none did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    pub duration_ms: u64,
    /// The answer's body, masked, then cut to [`MAX_ANSWER`] bytes.
    pub answer: String,
}

#[derive(Debug, Default)]
struct Kept {
    calls: Vec<Call>,
    dropped: usize,
}

/// The calls of one attempt, shared between the worker and the attempt's task.
#[derive(Debug, Clone, Default)]
pub struct CallLog {
    kept: Arc<Mutex<Kept>>,
}

tokio::task_local! {
    static LOG: CallLog;
}

impl CallLog {
    /// Runs `work` with this log as the one its vendor calls are recorded in. The log stays
    /// readable if `work` is dropped half-way (a lost lease, a shutdown).
    pub fn scope<F: Future>(&self, work: F) -> impl Future<Output = F::Output> {
        LOG.scope(self.clone(), work)
    }

    /// The calls recorded so far, oldest first, and how many more there were past the cap.
    pub fn take(&self) -> (Vec<Call>, usize) {
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        (std::mem::take(&mut kept.calls), std::mem::take(&mut kept.dropped))
    }

    fn push(&self, call: Call) {
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        if kept.calls.len() < MAX_CALLS {
            kept.calls.push(call);
        } else {
            kept.dropped += 1;
        }
    }
}

/// What a vendor client knows of one finished exchange.
pub struct Exchange<'a> {
    pub vendor: &'static str,
    pub method: &'a str,
    pub url: &'a str,
    pub started: Instant,
    /// The status, or why there was none.
    pub status: Result<u16, &'a str>,
    pub body: &'a [u8],
    /// What the request was sent with (the bearer token, the secret key): never kept, even
    /// where an answer echoes it under an innocent name.
    pub secrets: &'a [&'a str],
}

/// Records the exchange in the current attempt's log; nothing outside an attempt.
pub fn record(exchange: Exchange<'_>) {
    let _ = LOG.try_with(|log| log.push(call_of(&exchange)));
}

fn call_of(exchange: &Exchange<'_>) -> Call {
    let (status, failure) = match exchange.status {
        Ok(status) => (Some(status), None),
        Err(why) => (None, Some(why.to_owned())),
    };
    Call {
        vendor: exchange.vendor.to_owned(),
        method: exchange.method.to_owned(),
        path: path_of(exchange.url),
        status,
        failure,
        duration_ms: u64::try_from(exchange.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        answer: masked_answer(exchange.body, exchange.secrets),
    }
}

/// The URL's path from `/api/` on when it has one (Kommo's test fake puts the account in the
/// first segment), with no query string.
fn path_of(url: &str) -> String {
    let path = url::Url::parse(url).map(|u| u.path().to_owned()).unwrap_or_default();
    match path.find("/api/") {
        Some(at) => path[at..].to_owned(),
        None => path,
    }
}

/// Key words whose values are hidden: secrets, and what names or reaches a person.
const SENSITIVE: &[&str] = &[
    "secret",
    "hash",
    "token",
    "key",
    "signature",
    "password",
    "authorization",
    "email",
    "phone",
    "name",
    "fullname",
    "ip",
    "card",
    "6digits",
    "4digits",
    "cvv",
    "expiry",
    "fingerprint",
    "address",
    "bvn",
];

/// Whether a field name (`customer.email`, `first_6digits`, `leads[status][0][name]`,
/// `fullName`, `access_token`) names something to hide: any of its words is sensitive, or it is
/// an account number.
pub fn sensitive(field: &str) -> bool {
    let lower = field.to_ascii_lowercase();
    lower.contains("account_number")
        || lower.split(|c: char| !c.is_ascii_alphanumeric()).any(|word| SENSITIVE.contains(&word))
}

/// Hides sensitive fields, and values that are a person's whatever their field is called:
/// Kommo keeps a contact's email and phone under `values[].value` of a field coded `EMAIL` or
/// `PHONE`, so those fields' values go, and so does any text that looks like an address or an
/// international phone number.
pub fn mask_json(value: &mut Value) {
    match value {
        Value::Object(fields) => {
            let personal_field = fields
                .get("field_code")
                .and_then(Value::as_str)
                .is_some_and(|code| matches!(code.to_ascii_uppercase().as_str(), "EMAIL" | "PHONE" | "IM"));
            for (name, inner) in fields.iter_mut() {
                if (sensitive(name) || (personal_field && name == "values")) && !inner.is_null() {
                    *inner = Value::from(HIDDEN);
                } else {
                    mask_json(inner);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask_json),
        Value::String(text) if looks_personal(text) => *value = Value::from(HIDDEN),
        Value::String(text) => {
            if let Some(masked) = mask_words(text) {
                *text = masked;
            }
        }
        _ => {}
    }
}

/// Free text (a note, a lead's name) with each word that is an address or an international
/// phone number hidden; `None` when it has none.
fn mask_words(text: &str) -> Option<String> {
    let trimmed = |word: &str| word.trim_matches(|c: char| ",.;:()<>\"'".contains(c)).to_owned();
    if !text.split_whitespace().any(|word| looks_personal(&trimmed(word))) {
        return None;
    }
    let words: Vec<&str> = text.split(' ').collect();
    Some(
        words
            .iter()
            .map(|word| if looks_personal(&trimmed(word)) { HIDDEN } else { word })
            .collect::<Vec<_>>()
            .join(" "),
    )
}

fn looks_personal(text: &str) -> bool {
    let text = text.trim();
    let email = text.split_once('@').is_some_and(|(user, domain)| {
        !user.is_empty() && domain.contains('.') && !text.contains(char::is_whitespace)
    });
    let phone = text.strip_prefix('+').is_some_and(|rest| {
        rest.chars().all(|c| c.is_ascii_digit() || " -()".contains(c))
            && rest.chars().filter(char::is_ascii_digit).count() >= 7
    });
    email || phone
}

/// An answer as it may be kept: JSON masked and cut to [`MAX_ANSWER`] bytes; anything else is
/// not kept at all (there is no telling what in it is secret), only its size.
pub fn masked_answer(body: &[u8], secrets: &[&str]) -> String {
    if body.is_empty() {
        return String::new();
    }
    let Ok(mut json) = serde_json::from_slice::<Value>(body) else {
        return format!("({} bytes, not JSON: not kept)", body.len());
    };
    mask_json(&mut json);
    let mut text = serde_json::to_string_pretty(&json).unwrap_or_default();
    for secret in secrets.iter().filter(|s| s.len() >= 8) {
        if text.contains(secret) {
            text = text.replace(secret, HIDDEN);
        }
    }
    cut(text, MAX_ANSWER)
}

/// `text` cut to at most `max` bytes on a character boundary, saying so when it was.
fn cut(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let total = text.len();
    text.truncate(end);
    text.push_str(&format!("\n… ({total} bytes in all)"));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange<'a>(url: &'a str, body: &'a [u8], secrets: &'a [&'a str]) -> Exchange<'a> {
        Exchange {
            vendor: "kommo",
            method: "GET",
            url,
            started: Instant::now(),
            status: Ok(200),
            body,
            secrets,
        }
    }

    #[test]
    fn addresses_and_phone_numbers_inside_free_text_are_hidden() {
        let body =
            br#"{"note":"Sent to amani@example.co.ke, call +254711222333 (Nairobi)","plain":"Order 905"}"#;
        let kept = masked_answer(body, &[]);
        assert!(!kept.contains("amani@example.co.ke") && !kept.contains("+254711222333"), "{kept}");
        assert!(
            kept.contains("Sent to") && kept.contains("(Nairobi)") && kept.contains("Order 905"),
            "{kept}"
        );
    }

    #[test]
    fn tokens_keys_and_a_persons_data_are_never_kept() {
        let body = br#"{"access_token":"at-123456789","refresh_token":"rt-123456789","id":42,
            "data":{"link":"https://checkout.example/pay/abc","customer":{"email":"y@x.com","phone_number":"0700"},
            "card":{"first_6digits":"553188"},"echo":"Bearer sk-live-000111222333"},
            "custom_fields_values":[{"field_code":"PHONE","values":[{"value":"0700 111 222"}]},
                                    {"field_code":"EMAIL","values":[{"value":"wanjiru@example.co.ke"}]},
                                    {"field_code":"CITY","values":[{"value":"Nairobi"}]}]}"#;
        let kept = masked_answer(body, &["sk-live-000111222333"]);
        for gone in [
            "at-123456789",
            "rt-123456789",
            "y@x.com",
            "0700",
            "553188",
            "sk-live-000111222333",
            "wanjiru@example.co.ke",
        ] {
            assert!(!kept.contains(gone), "{gone} kept in {kept}");
        }
        for stays in ["42", "https://checkout.example/pay/abc", "Nairobi", "Bearer"] {
            assert!(kept.contains(stays), "{stays} missing from {kept}");
        }
        assert_eq!(masked_answer(b"<html>secret</html>", &[]), "(19 bytes, not JSON: not kept)");
        assert_eq!(masked_answer(b"", &[]), "");
    }

    #[test]
    fn long_answers_are_cut_on_a_character_boundary() {
        let long = format!("{{\"text\":\"{}\"}}", "é".repeat(3000));
        let kept = masked_answer(long.as_bytes(), &[]);
        assert!(kept.len() < MAX_ANSWER + 40, "{}", kept.len());
        assert!(kept.ends_with("bytes in all)"), "{kept}");
    }

    #[test]
    fn paths_keep_ids_and_lose_queries_and_the_fakes_prefix() {
        assert_eq!(path_of("https://acme.kommo.com/api/v4/leads/12?with=contacts"), "/api/v4/leads/12");
        assert_eq!(path_of("http://127.0.0.1:9/acme/api/v4/leads/notes"), "/api/v4/leads/notes");
        assert_eq!(
            path_of("https://api.flutterwave.com/v3/transactions/verify_by_reference?tx_ref=pp-1"),
            "/v3/transactions/verify_by_reference"
        );
    }

    #[tokio::test]
    async fn only_calls_inside_an_attempt_are_kept_and_only_so_many() {
        record(exchange("https://a.kommo.com/api/v4/account", b"{}", &[]));
        let log = CallLog::default();
        log.scope(async {
            for _ in 0..MAX_CALLS + 3 {
                record(exchange("https://a.kommo.com/api/v4/leads/7", br#"{"id":7}"#, &[]));
            }
        })
        .await;
        let (calls, dropped) = log.take();
        assert_eq!((calls.len(), dropped), (MAX_CALLS, 3));
        assert_eq!(calls[0].path, "/api/v4/leads/7");
        assert_eq!(calls[0].status, Some(200));
    }
}
