//! Who is asking: accounts, passwords, sessions, CSRF, API keys, and what each may do.

mod access;
pub mod email;
mod limiter;
pub mod password;
mod principal;
pub mod recovery;
pub mod session;
pub mod tokens;

use std::net::IpAddr;
use std::time::Duration;

pub use self::access::{Access, Actor, access};
pub use self::limiter::AttemptLimiter;
pub use self::principal::{AuthState, FormPrincipal, Principal, SessionCookies, SessionCsrf, authenticate};
use self::session::{Claims, SessionKeys};
use crate::clock::{ms_after, now_ms};
use crate::error::{Checks, Error, Result};
use crate::ids::{AgencyId, SessionId, UserId};
use crate::roles::Role;
use crate::store::agencies::AgencyRow;
use crate::store::users::UserRow;
use crate::store::{self, Db, Tx};
use crate::vault::Secret;

/// A session's absolute lifetime; activity renews its token but not past this.
pub const SESSION_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
pub const MAX_AGENCY_NAME: usize = 120;

/// Authentication's long-lived parts, shared by every request.
#[derive(Debug)]
pub struct Auth {
    pub keys: SessionKeys,
    pub limiter: AttemptLimiter,
    /// Cookies get `Secure` when pipepay is served over https.
    pub secure_cookies: bool,
}

/// A freshly started session: the JWT for the cookie and its claims.
#[derive(Debug)]
pub struct NewSession {
    pub token: Secret,
    pub claims: Claims,
}

pub struct SignUp {
    pub email: String,
    pub password: Secret,
    pub agency_name: String,
}

/// Creates the user, their agency (they own it) and a session, all or nothing.
pub async fn sign_up(
    db: &Db,
    auth: &Auth,
    ip: IpAddr,
    input: SignUp,
) -> Result<(UserRow, AgencyRow, NewSession)> {
    auth.limiter.attempt(ip, None)?;
    let mut checks = Checks::new();
    let email = checks.take(email::normalise("email", &input.email));
    let agency_name = input.agency_name.trim().to_owned();
    checks.check(!agency_name.is_empty(), "agency_name", "Enter your agency's name.");
    checks.check(
        agency_name.chars().count() <= MAX_AGENCY_NAME,
        "agency_name",
        format!("Use at most {MAX_AGENCY_NAME} characters."),
    );
    let inputs = [email.as_deref().unwrap_or_default(), agency_name.as_str()];
    checks.take(password::check_strength("password", &input.password, &inputs));
    checks.finish()?;
    let email = email.unwrap_or_default();

    let hash = password::hash(input.password).await?;
    let now = now_ms();
    let user =
        UserRow { id: UserId::new(), email, password_hash: hash, created_at: now, password_changed_at: now };
    let agency = AgencyRow { id: AgencyId::new(), name: agency_name, created_at: now };
    let mut tx = db.write().await?;
    if let Err(e) = store::users::insert(&mut tx, &user).await {
        return Err(if e.is_unique_violation() {
            Error::conflict("email", "An account with this email address exists already; log in instead.")
        } else {
            e.into()
        });
    }
    store::agencies::insert(&mut tx, &agency).await?;
    store::agencies::add_member(&mut tx, agency.id, user.id, Role::Owner, now).await?;
    let session = start_session(&mut tx, auth, user.id).await?;
    tx.commit().await?;
    tracing::info!(user = %user.id, agency = %agency.id, "signed up");
    Ok((user, agency, session))
}

/// Checks the password (within the attempt limits) and starts a session.
pub async fn log_in(
    db: &Db,
    auth: &Auth,
    ip: IpAddr,
    email: &str,
    password: Secret,
) -> Result<(UserRow, NewSession)> {
    let email = email.trim().to_lowercase();
    auth.limiter.attempt(ip, Some(&email))?;
    let mut tx = db.read().await?;
    let user = store::users::by_email(&mut tx, &email).await?;
    tx.commit().await?;
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    let user = match (password::verify(password, stored).await?, user) {
        (true, Some(user)) => user,
        // One answer for a wrong password and an unknown email.
        _ => return Err(Error::Unauthenticated("the email or password is wrong")),
    };
    let mut tx = db.write().await?;
    let session = start_session(&mut tx, auth, user.id).await?;
    tx.commit().await?;
    Ok((user, session))
}

pub async fn log_out(db: &Db, session: SessionId) -> Result<()> {
    let mut tx = db.write().await?;
    store::users::revoke_session(&mut tx, session, now_ms()).await?;
    tx.commit().await?;
    Ok(())
}

/// Changes the password after checking the current one, ends every session of the user
/// (other browsers, and this one's old token), and starts a new one for this browser.
pub async fn change_password(
    db: &Db,
    auth: &Auth,
    ip: IpAddr,
    user: UserId,
    current: Secret,
    new: Secret,
) -> Result<NewSession> {
    let mut tx = db.read().await?;
    let row = store::users::by_id(&mut tx, user).await?.ok_or(Error::Unauthenticated("no such user"))?;
    tx.commit().await?;
    auth.limiter.attempt(ip, Some(&row.email))?;
    if !password::verify(current, Some(row.password_hash.clone())).await? {
        return Err(Error::invalid("current_password", "This is not your current password."));
    }
    password::check_strength("new_password", &new, &[&row.email]).map_err(|e| Error::Invalid(vec![e]))?;
    let hash = password::hash(new).await?;
    let now = now_ms();
    let mut tx = db.write().await?;
    store::users::set_password(&mut tx, user, &hash, now).await?;
    let ended = store::users::revoke_all_sessions(&mut tx, user, now).await?;
    let session = start_session(&mut tx, auth, user).await?;
    tx.commit().await?;
    tracing::info!(user = %user, sessions_ended = ended, "password changed");
    Ok(session)
}

/// Records a session row and signs its first token.
pub async fn start_session(tx: &mut Tx, auth: &Auth, user: UserId) -> Result<NewSession> {
    let id = SessionId::new();
    let now = now_ms();
    store::users::insert_session(tx, id, user, now, ms_after(SESSION_MAX_AGE)).await?;
    let (csrf, _) = tokens::generate("");
    let (token, claims) = auth.keys.issue(user, id, csrf.expose())?;
    Ok(NewSession { token: Secret::new(token), claims })
}
