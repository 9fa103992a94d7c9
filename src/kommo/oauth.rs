//! Kommo's OAuth endpoints through the `oauth2` crate. Kommo departs from RFC 6749 in two ways
//! the adapter below absorbs: the token endpoint wants a JSON body (not a form), and it answers
//! errors as problem+json (not `{"error": ...}`), so failures are classified by HTTP status.

use std::time::{Duration, Instant};

use oauth2::basic::BasicClient;
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, HttpRequest, HttpResponse,
    RedirectUrl, RefreshToken, RequestTokenError, TokenResponse, TokenUrl,
};
use url::Url;

use super::KommoError;
use crate::telemetry::calls;
use crate::vault::Secret;

/// A token pair and when the access token stops working.
pub struct TokenPair {
    pub access: Secret,
    pub refresh: Secret,
    pub expires_in: Duration,
}

impl std::fmt::Debug for TokenPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenPair(expires_in={:?}, tokens redacted)", self.expires_in)
    }
}

/// The consent page URL for `state`: client_id, state and mode, as Kommo documents it.
pub fn consent_url(auth_url: &Url, client_id: &str, state: &str) -> Result<Url, KommoError> {
    let client = BasicClient::new(ClientId::new(client_id.to_owned()))
        .set_auth_uri(AuthUrl::from_url(auth_url.clone()));
    let (mut url, _) = client.authorize_url(|| CsrfToken::new(state.to_owned())).url();
    // Kommo returns to the redirect URI stored with the integration; it takes no redirect_uri
    // or response_type on the consent URL, so only its three documented parameters remain.
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k == "client_id" || k == "state")
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    url.query_pairs_mut().clear().extend_pairs(kept).append_pair("mode", "popup");
    Ok(url)
}

/// A client that can only call the token endpoint.
type TokenClient = BasicClient<
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointSet,
>;

/// A boxed, owned token request future, as oauth2's async client wants.
type TokenFuture = std::pin::Pin<Box<dyn Future<Output = Result<HttpResponse, KommoError>> + Send>>;

fn client(
    token_url: &str,
    client_id: &str,
    secret: &Secret,
    redirect: &Url,
) -> Result<TokenClient, KommoError> {
    let token_url = TokenUrl::new(token_url.to_owned()).map_err(|e| KommoError::Config(e.to_string()))?;
    Ok(BasicClient::new(ClientId::new(client_id.to_owned()))
        .set_client_secret(ClientSecret::new(secret.expose().to_owned()))
        .set_token_uri(token_url)
        .set_redirect_uri(RedirectUrl::from_url(redirect.clone()))
        .set_auth_type(AuthType::RequestBody))
}

/// Exchanges an authorization code at the account's own host.
pub async fn exchange_code(
    http: &reqwest::Client,
    api_base: &str,
    client_id: &str,
    secret: &Secret,
    redirect: &Url,
    code: &str,
) -> Result<TokenPair, KommoError> {
    let client = client(&format!("{api_base}/oauth2/access_token"), client_id, secret, redirect)?;
    let response = client
        .exchange_code(AuthorizationCode::new(code.to_owned()))
        .request_async(&json_client(http, redirect))
        .await;
    pair(response)
}

/// Trades a refresh token for a new pair. Kommo rotates refresh tokens on every use.
pub async fn refresh(
    http: &reqwest::Client,
    api_base: &str,
    client_id: &str,
    secret: &Secret,
    redirect: &Url,
    refresh_token: &Secret,
) -> Result<TokenPair, KommoError> {
    let client = client(&format!("{api_base}/oauth2/access_token"), client_id, secret, redirect)?;
    let token = RefreshToken::new(refresh_token.expose().to_owned());
    let response = client.exchange_refresh_token(&token).request_async(&json_client(http, redirect)).await;
    pair(response)
}

fn pair(
    response: Result<
        oauth2::basic::BasicTokenResponse,
        RequestTokenError<KommoError, oauth2::basic::BasicErrorResponse>,
    >,
) -> Result<TokenPair, KommoError> {
    let token = response.map_err(|e| match e {
        RequestTokenError::Request(e) => e,
        RequestTokenError::ServerResponse(e) => KommoError::Grant(e.to_string()),
        RequestTokenError::Parse(_, _) => KommoError::Protocol("the token response did not parse".into()),
        RequestTokenError::Other(e) => KommoError::Protocol(e),
    })?;
    let refresh = token
        .refresh_token()
        .ok_or_else(|| KommoError::Protocol("the token response has no refresh token".into()))?;
    Ok(TokenPair {
        access: Secret::new(token.access_token().secret().clone()),
        refresh: Secret::new(refresh.secret().clone()),
        expires_in: token.expires_in().unwrap_or(Duration::from_secs(86_400)),
    })
}

/// An HTTP client for oauth2 whose futures own what they use, so they are `Send` for any
/// lifetime (a borrowing closure makes the whole handler future lose `Send`).
fn json_client(http: &reqwest::Client, redirect: &Url) -> impl Fn(HttpRequest) -> TokenFuture {
    let http = http.clone();
    let redirect = redirect.to_string();
    move |request| {
        let (http, redirect) = (http.clone(), redirect.clone());
        Box::pin(async move { send_as_json(http, request, redirect).await })
    }
}

/// Sends oauth2's form-encoded token request as the JSON object Kommo expects. Kommo also wants
/// the redirect URI on refresh grants, which RFC 6749 (and so oauth2) leaves out.
async fn send_as_json(
    http: reqwest::Client,
    request: HttpRequest,
    redirect: String,
) -> Result<HttpResponse, KommoError> {
    let mut fields: serde_json::Map<String, serde_json::Value> = url::form_urlencoded::parse(request.body())
        .map(|(k, v)| (k.into_owned(), serde_json::Value::String(v.into_owned())))
        .collect();
    fields.entry("redirect_uri").or_insert(serde_json::Value::String(redirect));
    let url = request.uri().to_string();
    let started = Instant::now();
    // A refresh made during a job attempt belongs in its call log like any other Kommo call;
    // the code, refresh token and client secret it carried are scrubbed from what is kept.
    let sent: Vec<&str> = fields
        .iter()
        .filter(|(name, _)| matches!(name.as_str(), "code" | "refresh_token" | "client_secret"))
        .filter_map(|(_, value)| value.as_str())
        .collect();
    let keep = |status: Result<u16, &str>, body: &[u8]| {
        calls::record(calls::Exchange {
            vendor: "kommo",
            method: "POST",
            url: &url,
            started,
            status,
            body,
            secrets: &sent,
        });
    };
    let response = match http
        .post(url.as_str())
        .header(reqwest::header::ACCEPT, "application/json")
        .json(&fields)
        .send()
        .await
    {
        Ok(response) => response,
        Err(error) => {
            keep(Err(if error.is_timeout() { "timed out" } else { "no answer" }), b"");
            return Err(KommoError::from_transport(error));
        }
    };
    let status = response.status();
    let body = match response.bytes().await {
        Ok(body) => body,
        Err(error) => {
            keep(Err("the answer broke off"), b"");
            return Err(KommoError::from_transport(error));
        }
    };
    keep(Ok(status.as_u16()), &body);
    match status.as_u16() {
        200..=299 => {
            let mut built = HttpResponse::new(body.to_vec());
            *built.status_mut() = status;
            built.headers_mut().insert(
                oauth2::http::header::CONTENT_TYPE,
                oauth2::http::HeaderValue::from_static("application/json"),
            );
            Ok(built)
        }
        // A bad, used, expired or revoked code or refresh token: only a new consent helps.
        400 | 401 | 403 => Err(KommoError::Grant(problem_detail(&body))),
        429 => Err(KommoError::RateLimited { retry_after: Duration::from_secs(retry_after(&body)) }),
        _ => Err(KommoError::Unavailable(format!("token endpoint answered {status}"))),
    }
}

fn problem_detail(body: &[u8]) -> String {
    let parsed: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    ["hint", "detail", "title"]
        .iter()
        .find_map(|k| parsed[*k].as_str())
        .unwrap_or("the grant was refused")
        .chars()
        .take(200)
        .collect()
}

fn retry_after(body: &[u8]) -> u64 {
    let parsed: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    parsed["retry_after"].as_u64().unwrap_or(1).clamp(1, 3600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_consent_url_carries_only_what_kommo_documents() {
        let url = consent_url(&Url::parse("https://www.kommo.com/oauth").unwrap(), "cid", "st4te").unwrap();
        let pairs: Vec<(String, String)> = url.query_pairs().map(|(k, v)| (k.into(), v.into())).collect();
        assert_eq!(
            pairs,
            [
                ("client_id".into(), "cid".into()),
                ("state".into(), "st4te".into()),
                ("mode".into(), "popup".into())
            ]
        );
    }
}
