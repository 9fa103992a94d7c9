//! Passwords: argon2id hashing off the async threads, and a minimum strength.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

use crate::error::{Error, FieldError};
use crate::vault::Secret;

pub const MIN_LEN: usize = 10;
/// argon2 takes any length; a cap keeps one request from costing seconds of CPU.
pub const MAX_LEN: usize = 256;

/// Hashes with argon2id (default parameters: 19 MiB, 2 passes) on the blocking pool.
pub async fn hash(password: Secret) -> Result<String, Error> {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.expose().as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))
    })
    .await
    .map_err(|e| anyhow::anyhow!("password hashing task: {e}"))?
    .map_err(Error::Internal)
}

/// Whether `password` matches `stored`. With no stored hash (unknown email) it still spends the
/// time of a real check, so response timing does not reveal which emails have accounts.
pub async fn verify(password: Secret, stored: Option<String>) -> Result<bool, Error> {
    tokio::task::spawn_blocking(move || {
        let stored = stored.unwrap_or_else(|| DUMMY_HASH.to_owned());
        let Ok(parsed) = PasswordHash::new(&stored) else { return false };
        let ok = Argon2::default().verify_password(password.expose().as_bytes(), &parsed).is_ok();
        ok && stored != DUMMY_HASH
    })
    .await
    .map_err(|e| Error::Internal(anyhow::anyhow!("password check task: {e}")))
}

/// A real argon2id hash of a random string nobody knows; verified against for unknown emails.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$3J1Lq3wq8c0c6hZr4Zxk3yqB8n5m2Xr5bW3Hq1kZ0pA";

/// Refuses passwords that are short, very long, or easy to guess given the user's own details.
pub fn check_strength(field: &str, password: &Secret, user_inputs: &[&str]) -> Result<(), FieldError> {
    let fail = |message: String| FieldError { field: field.to_owned(), message };
    let length = password.expose().chars().count();
    if length < MIN_LEN {
        return Err(fail(format!("Use at least {MIN_LEN} characters.")));
    }
    if length > MAX_LEN {
        return Err(fail(format!("Use at most {MAX_LEN} characters.")));
    }
    let estimate = zxcvbn::zxcvbn(password.expose(), user_inputs);
    if u8::from(estimate.score()) < 3 {
        let hint = estimate
            .feedback()
            .and_then(|f| f.warning().map(|w| w.to_string()))
            .unwrap_or_else(|| "It is too easy to guess.".into());
        return Err(fail(format!("Choose a harder password: {hint} Add more words or characters.")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_and_short_passwords_are_refused() {
        let s = |p: &str| Secret::new(p);
        assert!(check_strength("password", &s("short"), &[]).is_err());
        assert!(check_strength("password", &s("password123"), &[]).is_err());
        assert!(check_strength("password", &s("ada@acme.africa1"), &["ada@acme.africa"]).is_err());
        assert!(check_strength("password", &s("correct horse battery staple"), &[]).is_ok());
    }

    #[tokio::test]
    async fn hashes_verify_and_unknown_users_never_do() {
        let h = hash(Secret::new("a long enough passphrase")).await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify(Secret::new("a long enough passphrase"), Some(h.clone())).await.unwrap());
        assert!(!verify(Secret::new("another passphrase!!"), Some(h)).await.unwrap());
        assert!(!verify(Secret::new("anything at all here"), None).await.unwrap());
        assert!(PasswordHash::new(DUMMY_HASH).is_ok(), "the dummy costs a real verification");
    }
}
