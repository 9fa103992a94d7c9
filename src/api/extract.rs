//! The JSON API's body extractor: JSON whose errors name the field.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_TYPE;
use serde::de::DeserializeOwned;

use crate::error::Error;

/// A JSON body. Broken JSON is a 400, a wrong type, a missing or an unknown field is a 422
/// naming the field's path, another content type a 415, an oversized body a 413.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = Error;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                let v = v.trim();
                v.eq_ignore_ascii_case("application/json")
                    || (v.starts_with("application/") && v.ends_with("+json"))
            });
        if !is_json {
            return Err(Error::UnsupportedMediaType("application/json"));
        }
        let bytes = Bytes::from_request(request, state).await.map_err(|_| Error::TooLarge)?;
        parse(&bytes).map(ApiJson)
    }
}

pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let message = without_position(&inner);
                // serde reports a missing field at its parent; name the field itself.
                let missing = message.strip_prefix("missing field `").and_then(|r| r.split('`').next());
                let field = match (missing, path.as_str()) {
                    (Some(name), ".") => name.to_owned(),
                    (Some(name), parent) => format!("{parent}.{name}"),
                    (None, ".") => "body".to_owned(),
                    (None, _) => path,
                };
                Error::invalid(field, message)
            }
            _ => Error::Malformed(format!("the body is not valid JSON: {inner}")),
        }
    })?;
    deserializer.end().map_err(|e| Error::Malformed(format!("the body is not valid JSON: {e}")))?;
    Ok(value)
}

/// serde_json appends "at line 1 column 42"; the field path already says where.
fn without_position(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        inner: Inner,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        count: u32,
    }

    fn field_of(json: &str) -> String {
        match parse::<Body>(json.as_bytes()) {
            Err(Error::Invalid(errors)) => errors[0].field.clone(),
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_their_field() {
        assert_eq!(field_of(r#"{"name": 5, "inner": {"count": 1}}"#), "name");
        assert_eq!(field_of(r#"{"name": "a", "inner": {"count": "x"}}"#), "inner.count");
        assert_eq!(field_of(r#"{"name": "a", "inner": {"count": 1, "extra": 1}}"#), "inner.extra");
        assert_eq!(field_of(r#"{"inner": {"count": 1}}"#), "name");
        assert_eq!(field_of(r#"{"name": "a", "inner": {}}"#), "inner.count");
        assert_eq!(field_of(r#""just a string""#), "body");
        assert!(matches!(parse::<Body>(b"{nope"), Err(Error::Malformed(_))));
        assert!(matches!(
            parse::<Body>(br#"{"name":"a","inner":{"count":1}} trailing"#),
            Err(Error::Malformed(_))
        ));
    }
}
