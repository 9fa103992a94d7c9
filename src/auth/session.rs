//! Session tokens: short-lived HS256 JWTs naming a revocable session row.

use std::time::Duration;

use hkdf::Hkdf;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::ids::{SessionId, UserId};
use crate::vault::MasterKeys;

pub const ISSUER: &str = "pipepay";
pub const AUDIENCE: &str = "pipepay-session";
pub const COOKIE: &str = "pipepay_session";
/// Readable by the page's script (not HttpOnly) so it can echo it in `x-csrf-token`.
pub const CSRF_COOKIE: &str = "pipepay_csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// What a session JWT says. `csrf` is the token unsafe requests must echo; it is random per
/// session and only this signed cookie vouches for it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: UserId,
    pub sid: SessionId,
    pub csrf: String,
    pub iat: i64,
    pub exp: i64,
}

/// Signing keys derived from the master keys: the active one signs (its id in `kid`), all of
/// them verify, so rotating the master key logs nobody out.
#[derive(Clone)]
pub struct SessionKeys {
    keys: std::sync::Arc<Vec<(String, EncodingKey, DecodingKey)>>,
    ttl: Duration,
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionKeys(ttl={:?}, keys redacted)", self.ttl)
    }
}

impl SessionKeys {
    pub fn derive(master: &MasterKeys, ttl: Duration) -> anyhow::Result<Self> {
        let mut keys = Vec::new();
        for key in master.iter() {
            let mut derived = zeroize::Zeroizing::new([0u8; 32]);
            Hkdf::<Sha256>::new(Some(b"pipepay"), &key.key[..])
                .expand(b"session-jwt-hs256/v1", &mut derived[..])
                .map_err(|e| anyhow::anyhow!("deriving the session key: {e}"))?;
            keys.push((
                key.id.clone(),
                EncodingKey::from_secret(&derived[..])?,
                DecodingKey::from_secret(&derived[..])?,
            ));
        }
        Ok(SessionKeys { keys: std::sync::Arc::new(keys), ttl })
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A token for the session valid for one TTL from now.
    pub fn issue(&self, user: UserId, session: SessionId, csrf: &str) -> anyhow::Result<(String, Claims)> {
        let (kid, encoding, _) =
            self.keys.first().ok_or_else(|| anyhow::anyhow!("no session signing key"))?;
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: user,
            sid: session,
            csrf: csrf.to_owned(),
            iat: now,
            exp: now + i64::try_from(self.ttl.as_secs()).unwrap_or(900),
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid.clone());
        Ok((jsonwebtoken::encode(&header, &claims, encoding)?, claims))
    }

    /// The claims of a token we signed that has not expired. The algorithm is pinned to
    /// HS256 (no `none`, no key confusion); issuer, audience and expiry are checked.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        let kid = header.kid?;
        let (_, _, decoding) = self.keys.iter().find(|(id, _, _)| *id == kid)?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 0;
        jsonwebtoken::decode::<Claims>(token, decoding, &validation).ok().map(|d| d.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(entries: &str) -> SessionKeys {
        SessionKeys::derive(&entries.parse().unwrap(), Duration::from_secs(900)).unwrap()
    }

    #[test]
    fn tokens_verify_across_a_master_key_rotation_only() {
        let old = MasterKeys::generate_entry("old");
        let new = MasterKeys::generate_entry("new");
        let before = keys(&old);
        let (token, claims) = before.issue(UserId::new(), SessionId::new(), "c").unwrap();
        assert_eq!(before.verify(&token).unwrap().sid, claims.sid);
        assert!(keys(&format!("{new},{old}")).verify(&token).is_some(), "old sessions survive rotation");
        assert!(keys(&new).verify(&token).is_none(), "a retired master key ends its sessions");
    }

    #[test]
    fn refuses_tampered_unsigned_and_foreign_tokens() {
        let k = keys(&MasterKeys::generate_entry("k"));
        let (token, _) = k.issue(UserId::new(), SessionId::new(), "c").unwrap();
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged_body = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            br#"{"iss":"pipepay","aud":"pipepay-session","sub":"00000000-0000-0000-0000-000000000000","sid":"00000000-0000-0000-0000-000000000000","csrf":"c","iat":0,"exp":99999999999}"#,
        );
        parts[1] = &forged_body;
        assert!(k.verify(&parts.join(".")).is_none());
        let none_alg = format!("eyJhbGciOiJub25lIiwia2lkIjoiayJ9.{forged_body}.");
        assert!(k.verify(&none_alg).is_none());
        let other = keys(&MasterKeys::generate_entry("k"));
        assert!(other.verify(&token).is_none(), "same kid, different key");
    }
}
