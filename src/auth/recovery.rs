//! Links sent by mail: a password reset (single-use, an hour), and the check of a person's
//! address at sign-up (single-use, a week). Only hashes of the links' tokens are stored.

use std::net::IpAddr;
use std::time::Duration;

use url::Url;

use super::{Auth, NewSession, password, start_session, tokens};
use crate::clock::{ms_after, now_ms};
use crate::error::{Error, Result};
use crate::ids::UserId;
use crate::outbox;
use crate::store::email_tokens::{self, purpose};
use crate::store::{self, Db, Tx};
use crate::vault::Secret;

pub const RESET_LIFETIME: Duration = Duration::from_secs(3600);
pub const VERIFY_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

fn link(public_url: &Url, path: &str, token: &Secret) -> String {
    format!("{}/{path}/{}", public_url.as_str().trim_end_matches('/'), token.expose())
}

/// Mails a reset link if `email` has an account. The answer is the same either way, so the form
/// does not tell who has an account; attempts count against the log-in limits.
pub async fn request_reset(db: &Db, auth: &Auth, public_url: &Url, ip: IpAddr, email: &str) -> Result<()> {
    let email = email.trim().to_lowercase();
    auth.limiter.attempt(ip, Some(&email))?;
    if email.is_empty() {
        return Err(Error::invalid("email", "Enter the email address you log in with"));
    }
    let mut tx = db.write().await?;
    let Some(user) = store::users::by_email(&mut tx, &email).await? else {
        tracing::info!("password reset asked for an address with no account");
        return Ok(());
    };
    let now = now_ms();
    // Only the newest link works: an older mail read later must not reset the password.
    email_tokens::expire_all(&mut tx, user.id, purpose::RESET, now).await?;
    let (token, hash) = tokens::generate(tokens::RESET_PREFIX);
    email_tokens::insert(&mut tx, &hash, user.id, purpose::RESET, &email, now, ms_after(RESET_LIFETIME))
        .await?;
    let body = format!(
        "Someone (hopefully you) asked to reset the password of your pipepay account.\n\n\
         Choose a new password here within an hour:\n{}\n\n\
         The link works once. If you did not ask for it, ignore this mail: your password stays as it is.\n",
        link(public_url, "reset", &token)
    );
    outbox::mail(&mut tx, None, &email, "Reset your pipepay password", &body, true).await?;
    tx.commit().await?;
    outbox::wake();
    tracing::info!(user = %user.id, "password reset link sent");
    Ok(())
}

/// The address a reset link is for, if it can still be used.
pub async fn reset_preview(db: &Db, token: &str) -> Result<Option<String>> {
    let mut tx = db.read().await?;
    let row = email_tokens::peek(&mut tx, &tokens::hash(token.trim()), purpose::RESET, now_ms()).await?;
    tx.commit().await?;
    Ok(row.map(|r| r.email))
}

/// Sets a new password through a reset link: the link is used up, every session of the person
/// ends, and this browser gets a new one. The link also proves the address.
pub async fn reset_password(
    db: &Db,
    auth: &Auth,
    ip: IpAddr,
    token: &str,
    new_password: Secret,
) -> Result<NewSession> {
    auth.limiter.attempt(ip, None)?;
    let hash = tokens::hash(token.trim());
    let email = reset_preview(db, token).await?.ok_or(Error::NotFound)?;
    password::check_strength("password", &new_password, &[&email]).map_err(|e| Error::Invalid(vec![e]))?;
    let password_hash = password::hash(new_password).await?;
    let now = now_ms();
    let mut tx = db.write().await?;
    // Taken in the same transaction as the change: of two posts of one link, one changes it.
    let row = email_tokens::take(&mut tx, &hash, purpose::RESET, now).await?.ok_or(Error::NotFound)?;
    store::users::set_password(&mut tx, row.user_id, &password_hash, now).await?;
    let ended = store::users::revoke_all_sessions(&mut tx, row.user_id, now).await?;
    email_tokens::mark_verified(&mut tx, row.user_id, &row.email, now).await?;
    let session = start_session(&mut tx, auth, row.user_id).await?;
    tx.commit().await?;
    tracing::info!(user = %row.user_id, sessions_ended = ended, "password reset through a mailed link");
    Ok(session)
}

/// Writes an address check for a new account into the outbox, in the caller's transaction.
pub async fn verification_mail(tx: &mut Tx, public_url: &Url, user: UserId, email: &str) -> Result<()> {
    let now = now_ms();
    email_tokens::expire_all(tx, user, purpose::VERIFY, now).await?;
    let (token, hash) = tokens::generate(tokens::VERIFY_PREFIX);
    email_tokens::insert(tx, &hash, user, purpose::VERIFY, email, now, ms_after(VERIFY_LIFETIME)).await?;
    let body = format!(
        "Welcome to pipepay.\n\nConfirm that this is your address by opening this link within a week:\n{}\n\n\
         Until then you can use pipepay as usual; alerts and password resets are mailed to this address.\n",
        link(public_url, "verify", &token)
    );
    outbox::mail(tx, None, email, "Confirm your email address for pipepay", &body, true).await?;
    Ok(())
}

/// Mails a new account's address check. A failure does not undo the sign-up (it is logged):
/// the app's banner offers to send the link again.
pub async fn after_sign_up(db: &Db, public_url: &Url, user: UserId, email: &str) {
    let sent = async {
        let mut tx = db.write().await?;
        verification_mail(&mut tx, public_url, user, email).await?;
        tx.commit().await?;
        outbox::wake();
        Ok::<_, Error>(())
    };
    if let Err(error) = sent.await {
        tracing::warn!(%user, error = %crate::error_chain(&error), "cannot write the address check");
    }
}

/// Sends (again) the address check of a logged-in person whose address is not verified yet.
pub async fn resend_verification(
    db: &Db,
    auth: &Auth,
    public_url: &Url,
    ip: IpAddr,
    user: UserId,
) -> Result<()> {
    let mut tx = db.write().await?;
    let row = store::users::by_id(&mut tx, user).await?.ok_or(Error::Unauthenticated("no such user"))?;
    auth.limiter.attempt(ip, Some(&row.email))?;
    if email_tokens::is_verified(&mut tx, user).await? {
        return Ok(());
    }
    verification_mail(&mut tx, public_url, user, &row.email).await?;
    tx.commit().await?;
    outbox::wake();
    Ok(())
}

/// Uses an address-check link; `NotFound` if it is unknown, used or expired.
pub async fn verify(db: &Db, token: &str) -> Result<()> {
    let now = now_ms();
    let mut tx = db.write().await?;
    let row = email_tokens::take(&mut tx, &tokens::hash(token.trim()), purpose::VERIFY, now)
        .await?
        .ok_or(Error::NotFound)?;
    email_tokens::mark_verified(&mut tx, row.user_id, &row.email, now).await?;
    tx.commit().await?;
    Ok(())
}

pub async fn is_verified(db: &Db, user: UserId) -> Result<bool> {
    let mut tx = db.read().await?;
    let verified = email_tokens::is_verified(&mut tx, user).await?;
    tx.commit().await?;
    Ok(verified)
}
