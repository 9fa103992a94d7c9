//! The outbox: mail and alert webhooks, written in the transaction of whatever caused them and
//! then delivered by a loop on every instance. Each row is its own job: claimed with a lease,
//! finished only by the attempt that claimed it, retried with backoff, dead after too many
//! attempts. A crash between claiming and finishing leaves the lease to lapse, and the row is
//! sent again: delivery is at least once, as with any mail relay.

pub mod smtp;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use self::smtp::Mailer;
use crate::clock::now_ms;
use crate::ids::AgencyId;
use crate::store::outbox::{self, NewMessage, OutboxRow, channel, state};
use crate::store::{Db, StoreError, Tx};
use crate::vault::Vault;

/// Attempts before a row is given up (with the default backoff, about a day of trying).
pub const MAX_ATTEMPTS: i64 = 12;
/// Why mail is kept rather than sent.
pub const NOT_CONFIGURED: &str = "not sent: mail is not configured (PIPEPAY_SMTP_URL)";

/// Wakes this process's delivery loop once something was committed to the outbox.
static WAKE: Notify = Notify::const_new();

pub fn wake() {
    WAKE.notify_waiters();
}

/// Writes a mail into the outbox in the caller's transaction. `agency`: whose mail it is (its
/// owners may read it on the outbox page); `None` for a person's own mail. `link`: the body
/// carries a one-time link, blanked once the mail is sent.
pub async fn mail(
    tx: &mut Tx,
    agency: Option<AgencyId>,
    to: &str,
    subject: &str,
    body: &str,
    link: bool,
) -> Result<(), StoreError> {
    let message = NewMessage {
        agency,
        channel: channel::EMAIL,
        recipient: to,
        subject,
        body,
        secret_body: link,
        max_attempts: MAX_ATTEMPTS,
        now: now_ms(),
    };
    outbox::insert(tx, &message).await.map(drop)
}

/// Writes a webhook call into the outbox in the caller's transaction; it is signed when sent.
pub async fn webhook(
    tx: &mut Tx,
    agency: AgencyId,
    url: &str,
    subject: &str,
    body: &serde_json::Value,
) -> Result<(), StoreError> {
    let body = body.to_string();
    let message = NewMessage {
        agency: Some(agency),
        channel: channel::WEBHOOK,
        recipient: url,
        subject,
        body: &body,
        secret_body: false,
        max_attempts: MAX_ATTEMPTS,
        now: now_ms(),
    };
    outbox::insert(tx, &message).await.map(drop)
}

/// How one delivery attempt failed.
#[derive(Debug)]
pub enum Failure {
    /// Worth trying again later (a timeout, a 5xx, a full mailbox).
    Transient(String),
    /// Trying again cannot help (an address refused, a 4xx).
    Permanent(String),
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// How long a claimed row is held before another instance may send it again.
    pub lease: Duration,
    pub poll: Duration,
    pub allow_private: bool,
}

/// The delivery side: SMTP (if configured) and the webhook client.
pub struct Outbox {
    db: Db,
    vault: Vault,
    mailer: Option<Mailer>,
    webhooks: webhook::Client,
    settings: Settings,
}

impl Outbox {
    pub fn new(db: Db, vault: Vault, mailer: Option<Mailer>, settings: Settings) -> anyhow::Result<Outbox> {
        let webhooks = webhook::Client::new(settings.allow_private)?;
        Ok(Outbox { db, vault, mailer, webhooks, settings })
    }

    /// Delivers due rows until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let woken = WAKE.notified();
            match self.deliver_one().await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(error = %crate::error_chain(&error), "cannot read the outbox")
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = woken => {}
                () = tokio::time::sleep(self.settings.poll) => {}
            }
        }
    }

    /// Claims and delivers one due row; `false` when none was due.
    pub async fn deliver_one(&self) -> Result<bool, StoreError> {
        let now = now_ms();
        let lease = i64::try_from(self.settings.lease.as_millis()).unwrap_or(i64::MAX / 2);
        let mut tx = self.db.write().await?;
        let row = outbox::claim(&mut tx, now, now.saturating_add(lease)).await?;
        tx.commit().await?;
        let Some(row) = row else { return Ok(false) };
        let sent = match row.channel.as_str() {
            channel::EMAIL => match &self.mailer {
                Some(mailer) => mailer.send(&row.recipient, &row.subject, &row.body).await.map(|()| true),
                None => Ok(false),
            },
            channel::WEBHOOK => self.webhooks.send(&self.db, &self.vault, &row).await.map(|()| true),
            other => Err(Failure::Permanent(format!("unknown channel {other:?}"))),
        };
        let now = now_ms();
        let (next, run_at, error) = match sent {
            Ok(true) => (state::SENT, now, None),
            Ok(false) => (state::UNSENT, now, Some(NOT_CONFIGURED.to_owned())),
            Err(Failure::Transient(error)) if row.attempts < row.max_attempts => {
                let wait = backoff(self.settings.retry_base, self.settings.retry_max, row.attempts);
                let wait = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 2);
                (state::READY, now.saturating_add(wait), Some(error))
            }
            Err(Failure::Transient(error) | Failure::Permanent(error)) => (state::DEAD, now, Some(error)),
        };
        log_outcome(&row, next, error.as_deref());
        let mut tx = self.db.write().await?;
        let finished =
            outbox::finish(&mut tx, row.id, row.attempts, next, run_at, error.as_deref(), now).await?;
        tx.commit().await?;
        if !finished {
            tracing::warn!(message = %row.id, "an outbox row was taken over meanwhile; its outcome is dropped");
        }
        Ok(true)
    }
}

fn log_outcome(row: &OutboxRow, next: &str, error: Option<&str>) {
    let agency = row.agency_id.map(|a| a.to_string()).unwrap_or_default();
    match next {
        state::SENT => tracing::info!(message = %row.id, channel = %row.channel, %agency, "delivered"),
        state::UNSENT => tracing::debug!(message = %row.id, "mail kept in the outbox: not configured"),
        _ => tracing::warn!(
            message = %row.id,
            channel = %row.channel,
            %agency,
            attempt = row.attempts,
            error = error.unwrap_or_default(),
            will_retry = next == state::READY,
            "delivery failed"
        ),
    }
}

/// base, 2×base, 4×base ... up to `max`, each ±25% so many retries do not arrive together.
fn backoff(first: Duration, max: Duration, attempt: i64) -> Duration {
    let exponent = u32::try_from(attempt.clamp(1, 20) - 1).unwrap_or(0);
    let base = first.saturating_mul(2u32.saturating_pow(exponent)).min(max);
    base.mul_f64(0.75 + rand::random::<f64>() * 0.5)
}
