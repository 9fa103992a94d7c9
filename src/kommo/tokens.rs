//! The token lifecycle: refresh before expiry and once on a 401, at most one refresh per
//! connection in flight across all instances, the new pair stored before it is used.
//!
//! Across instances, a refresh needs a lease on the connection row, taken by compare-and-set on
//! the token version. The owner calls Kommo holding no transaction, then stores the new pair
//! fenced on owner and version. Everyone else waits and re-reads. Kommo keeps the old refresh
//! token valid until the new one is used, so an owner that dies after Kommo answered loses
//! nothing: the next owner refreshes again with the old token.

use std::time::Duration;

use super::{Kommo, KommoError, health, oauth};
use crate::clock::{ms_after, now_ms};
use crate::ids::ClientId;
use crate::store::kommo::ConnectionRow;
use crate::store::{self};
use crate::telemetry::metrics::{kv, metrics};
use crate::vault::{Secret, Slot, Vault};

pub const ACCESS_TOKEN: Slot = Slot { table: "kommo_connections", field: "access_token" };
pub const REFRESH_TOKEN: Slot = Slot { table: "kommo_connections", field: "refresh_token" };

/// Refresh this long before the access token expires, so no call goes out with a dying token.
/// (At most half of a token's life, see [`Kommo::token`].)
const REFRESH_MARGIN: Duration = Duration::from_secs(10 * 60);
/// How long a refresh lease holds; longer than the token call's timeout.
const LEASE: Duration = Duration::from_secs(30);
/// How long a caller waits for someone else's refresh before giving up for now.
const WAIT_FOR_OTHERS: Duration = Duration::from_secs(40);
/// Refresh idle connections this often; Kommo drops refresh tokens unused for three months.
pub const IDLE_REFRESH: Duration = Duration::from_secs(14 * 24 * 3600);

/// A usable access token and where to use it.
#[derive(Debug, Clone)]
pub struct Token {
    pub client: ClientId,
    pub access: Secret,
    pub host: String,
    pub account_id: i64,
    pub version: i64,
    pub health: String,
    /// When (ms) to refresh it rather than use it again: `None` for at once.
    refresh_at: Option<i64>,
}

impl Token {
    fn due(&self, now: i64) -> bool {
        self.refresh_at.is_none_or(|at| now > at)
    }
}

/// When a pair issued at `refreshed_at` and expiring at `expires_at` should be refreshed: ten
/// minutes ahead, or half the token's life if Kommo issues shorter-lived tokens, so a fresh
/// token is never refreshed again at once. `None` (no expiry known) is at once.
fn refresh_at(expires_at: Option<i64>, refreshed_at: i64) -> Option<i64> {
    let at = expires_at?;
    let margin = i64::try_from(REFRESH_MARGIN.as_millis()).unwrap_or(i64::MAX).min((at - refreshed_at) / 2);
    Some(at - margin)
}

/// A Kommo connection as one unit of work (a job attempt) holds it: read once, then its token
/// is used for every call, refreshed only when it is about to expire or Kommo answers 401.
/// Refreshing still goes through [`Kommo::refresh`], so the versioned compare-and-swap still
/// decides which instance spends a refresh token; one holding an older token simply picks up
/// the newer pair.
pub struct Session {
    client: ClientId,
    held: tokio::sync::Mutex<Held>,
}

enum Held {
    /// Nothing read yet: the first call reads the connection.
    Unread,
    /// The connection as read with the unit of work's other reads, its access token opened.
    Read(Box<ConnectionRow>, Secret),
    Token(Token),
}

impl Session {
    /// A session that reads the connection at its first call.
    pub fn new(client: ClientId) -> Session {
        Session { client, held: tokio::sync::Mutex::new(Held::Unread) }
    }

    /// A session over a connection already read (in the caller's transaction), so its first
    /// call reads nothing more. No connection, or an access token that could not be opened,
    /// leaves the first call to read it and fail as it would have.
    pub async fn read(
        tx: &mut store::Tx,
        vault: &Vault,
        client: ClientId,
    ) -> Result<(Session, Option<ConnectionRow>), store::StoreError> {
        let row = store::kommo::connection(tx, client).await?;
        let mut held = Held::Unread;
        if let Some(row) = &row
            && let Some(sealed) = row.access_token.as_deref()
            && let Ok(access) = vault.open(tx, client, ACCESS_TOKEN, sealed).await
        {
            held = Held::Read(Box::new(row.clone()), access);
        }
        Ok((Session { client, held: tokio::sync::Mutex::new(held) }, row))
    }

    pub fn client(&self) -> ClientId {
        self.client
    }
}

impl Kommo {
    async fn connection(&self, client: ClientId) -> Result<ConnectionRow, KommoError> {
        let mut tx = self.db.read().await?;
        let row = store::kommo::connection(&mut tx, client).await?;
        tx.commit().await?;
        usable(row.ok_or(KommoError::NotConnected)?)
    }

    /// The session's token, read or refreshed only if the one it holds will not do.
    pub(super) async fn session_token(&self, session: &Session) -> Result<Token, KommoError> {
        let mut held = session.held.lock().await;
        // Left `Unread` on a failure, so the next call starts again from the stored connection.
        let token = match std::mem::replace(&mut *held, Held::Unread) {
            Held::Token(token) if !token.due(now_ms()) => token,
            Held::Token(token) => self.refresh(session.client, token.version).await?,
            Held::Read(row, access) => {
                let row = usable(*row)?;
                if refresh_at(row.access_expires_at, row.refreshed_at).is_none_or(|at| now_ms() > at) {
                    self.refresh(session.client, row.token_version).await?
                } else {
                    token_of(&row, access)
                }
            }
            Held::Unread => self.token(session.client).await?,
        };
        *held = Held::Token(token.clone());
        Ok(token)
    }

    /// Kommo refused the session's token (401): refreshes unless someone already did, and holds
    /// the new one.
    pub(super) async fn session_refresh(
        &self,
        session: &Session,
        seen_version: i64,
    ) -> Result<Token, KommoError> {
        let mut held = session.held.lock().await;
        *held = Held::Unread;
        let token = self.refresh(session.client, seen_version).await?;
        *held = Held::Token(token.clone());
        Ok(token)
    }

    /// The connection's health as last recorded by this session.
    pub(super) async fn session_health(&self, session: &Session, version: i64, health: &str) {
        if let Held::Token(token) = &mut *session.held.lock().await
            && token.version == version
        {
            health.clone_into(&mut token.health);
        }
    }
}

/// The connection, unless its health says no call can succeed.
fn usable(row: ConnectionRow) -> Result<ConnectionRow, KommoError> {
    match row.health.as_str() {
        health::REVOKED => Err(KommoError::Revoked),
        health::NEEDS_REAUTH => Err(KommoError::NeedsReauth(
            row.health_reason.clone().unwrap_or_else(|| "re-connect Kommo".into()),
        )),
        _ => Ok(row),
    }
}

fn token_of(row: &ConnectionRow, access: Secret) -> Token {
    Token {
        client: row.client_id,
        access,
        host: row.host.clone(),
        account_id: row.account_id,
        version: row.token_version,
        health: row.health.clone(),
        refresh_at: refresh_at(row.access_expires_at, row.refreshed_at),
    }
}

impl Kommo {
    async fn open_access(&self, row: &ConnectionRow) -> Result<Token, KommoError> {
        let sealed = row.access_token.as_deref().ok_or(KommoError::Revoked)?;
        let mut tx = self.db.read().await?;
        let access = self.vault.open(&mut tx, row.client_id, ACCESS_TOKEN, sealed).await?;
        tx.commit().await?;
        Ok(token_of(row, access))
    }

    /// A valid access token for the client's Kommo account, refreshed first if it is about to
    /// expire.
    pub async fn token(&self, client: ClientId) -> Result<Token, KommoError> {
        let row = self.connection(client).await?;
        if refresh_at(row.access_expires_at, row.refreshed_at).is_none_or(|at| now_ms() > at) {
            return self.refresh(client, row.token_version).await;
        }
        self.open_access(&row).await
    }

    /// Refreshes the tokens, unless someone already replaced the `seen_version` ones, in which
    /// case their new token is returned.
    pub async fn refresh(&self, client: ClientId, seen_version: i64) -> Result<Token, KommoError> {
        let lock = self.refresh_lock(client);
        let _in_process = lock.lock().await;
        let started = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(50);
        loop {
            let row = self.connection(client).await?;
            if row.token_version > seen_version {
                return self.open_access(&row).await;
            }
            let owner = uuid::Uuid::new_v4().to_string();
            let now = now_ms();
            let mut tx = self.db.write().await?;
            let won = store::kommo::try_lease_refresh(
                &mut tx,
                client,
                row.token_version,
                &owner,
                now,
                ms_after(LEASE),
            )
            .await?;
            tx.commit().await?;
            if won {
                match self.refresh_as_owner(&row, &owner).await? {
                    Some(token) => return Ok(token),
                    // Our lease ran out and someone else refreshed: read their pair.
                    None => continue,
                }
            }
            if started.elapsed() > WAIT_FOR_OTHERS {
                return Err(KommoError::Unavailable(
                    "another instance is still refreshing the tokens".into(),
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// Refreshes holding the lease. `None` if the lease was lost before the pair could be stored.
    async fn refresh_as_owner(&self, row: &ConnectionRow, owner: &str) -> Result<Option<Token>, KommoError> {
        let (client_id, secret) = self.settings.credentials()?;
        let sealed = row.refresh_token.as_deref().ok_or(KommoError::Revoked)?;
        let mut tx = self.db.read().await?;
        let refresh_token = self.vault.open(&mut tx, row.client_id, REFRESH_TOKEN, sealed).await?;
        tx.commit().await?;
        let base = self.settings.api_base(&row.host);
        let outcome =
            oauth::refresh(&self.http, &base, client_id, secret, &self.settings.redirect_uri, &refresh_token)
                .await;
        let counted = match &outcome {
            Ok(_) => "refreshed",
            Err(KommoError::Grant(_)) => "refused",
            Err(_) => "failed",
        };
        metrics().token_refreshes.add(1, &[kv("outcome", counted)]);
        let pair = match outcome {
            Ok(pair) => pair,
            Err(KommoError::Grant(detail)) => {
                // Kommo refused the refresh token itself: only a new consent can help. Fenced on
                // the version, so a refresh that succeeded elsewhere is never undone.
                let reason = format!("Kommo refused to refresh the tokens ({detail}); connect Kommo again");
                let mut tx = self.db.write().await?;
                store::kommo::set_health(
                    &mut tx,
                    row.client_id,
                    health::NEEDS_REAUTH,
                    Some(&reason),
                    Some(row.token_version),
                    now_ms(),
                )
                .await?;
                tx.commit().await?;
                tracing::warn!(client = %row.client_id, account = row.account_id, "Kommo refused a token refresh");
                return Err(KommoError::NeedsReauth(reason));
            }
            Err(other) => {
                let mut tx = self.db.write().await?;
                store::kommo::release_lease(&mut tx, row.client_id, owner).await?;
                tx.commit().await?;
                return Err(other);
            }
        };
        let expires_in = i64::try_from(pair.expires_in.as_millis()).unwrap_or(86_400_000);
        let now = now_ms();
        // The new pair is stored, in one transaction, before the new access token is used.
        let mut tx = self.db.write().await?;
        let access = self.vault.seal(&mut tx, row.client_id, ACCESS_TOKEN, &pair.access).await?;
        let refresh = self.vault.seal(&mut tx, row.client_id, REFRESH_TOKEN, &pair.refresh).await?;
        let stored = store::kommo::store_refreshed(
            &mut tx,
            row.client_id,
            row.token_version,
            owner,
            &access,
            &refresh,
            now + expires_in,
            now,
        )
        .await?;
        if !stored {
            return Ok(None);
        }
        tx.commit().await?;
        tracing::info!(client = %row.client_id, account = row.account_id, "Kommo tokens refreshed");
        Ok(Some(Token {
            client: row.client_id,
            access: pair.access,
            host: row.host.clone(),
            account_id: row.account_id,
            version: row.token_version + 1,
            health: health::ACTIVE.into(),
            refresh_at: refresh_at(Some(now + expires_in), now),
        }))
    }

    /// Refreshes connections nobody used for a while, so their refresh tokens never reach
    /// Kommo's three-month expiry. Returns how many were refreshed.
    pub async fn refresh_idle(&self, older_than: Duration) -> Result<usize, KommoError> {
        let before = now_ms() - i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX);
        let mut tx = self.db.read().await?;
        let due = store::kommo::due_for_refresh(&mut tx, before, 100).await?;
        tx.commit().await?;
        let mut refreshed = 0;
        for client in due {
            let version = self.connection(client).await.map(|r| r.token_version);
            match version {
                Ok(version) => match self.refresh(client, version).await {
                    Ok(_) => refreshed += 1,
                    Err(error) => tracing::warn!(%client, %error, "scheduled Kommo refresh failed"),
                },
                Err(error) => tracing::debug!(%client, %error, "skipping scheduled refresh"),
            }
        }
        Ok(refreshed)
    }
}
