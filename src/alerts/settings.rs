//! An agency's alert settings: mail to its owners (on unless turned off) and a webhook, whose
//! signing secret is shown once and kept sealed.

use serde_json::json;

use crate::auth::{Access, tokens};
use crate::clock::now_ms;
use crate::error::{Error, Result};
use crate::outbox::webhook::SECRET;
use crate::roles::Role;
use crate::store::alerts::{self as rows, AlertSettingsRow, IncidentRow};
use crate::store::outbox::OutboxRow;
use crate::store::{self, Db};
use crate::telemetry::agency::refused_target;
use crate::tenants::audit;
use crate::vault::{Secret, Vault};

/// Webhook secrets start with this, so people and scanners can tell them apart.
pub const SECRET_PREFIX: &str = "ppw_";

#[derive(Debug, Clone)]
pub struct AlertSettings {
    pub email_owners: bool,
    pub webhook_url: Option<String>,
}

pub async fn get(db: &Db, access: &Access) -> Result<AlertSettings> {
    access.require(Role::Member)?;
    let mut tx = db.read().await?;
    let row = rows::settings(&mut tx, access.agency).await?;
    tx.commit().await?;
    Ok(match row {
        Some(row) => AlertSettings { email_owners: row.email_owners != 0, webhook_url: row.webhook_url },
        None => AlertSettings { email_owners: true, webhook_url: None },
    })
}

/// Saves the settings (owners only). A new webhook URL, or `new_secret`, makes a new signing
/// secret, returned to be shown once.
pub async fn save(
    db: &Db,
    vault: &Vault,
    access: &Access,
    allow_private: bool,
    email_owners: bool,
    webhook_url: &str,
    new_secret: bool,
) -> Result<Option<Secret>> {
    access.require(Role::Owner)?;
    let webhook_url = webhook_url.trim();
    let webhook_url =
        if webhook_url.is_empty() { None } else { Some(check_url(webhook_url, allow_private)?) };
    let mut tx = db.write().await?;
    let current = rows::settings(&mut tx, access.agency).await?;
    let changed_url = current.as_ref().and_then(|c| c.webhook_url.as_deref()) != webhook_url.as_deref();
    let (secret, sealed) = match (&webhook_url, new_secret || changed_url) {
        (None, _) => (None, None),
        (Some(_), true) => {
            let (secret, _) = tokens::generate(SECRET_PREFIX);
            let sealed = vault.seal_for_agency(access.agency, SECRET, &secret)?;
            (Some(secret), Some(sealed))
        }
        (Some(_), false) => (None, current.and_then(|c| c.webhook_secret)),
    };
    let row = AlertSettingsRow {
        agency_id: access.agency,
        email_owners: i64::from(email_owners),
        webhook_url: webhook_url.clone(),
        webhook_secret: sealed,
        updated_at: now_ms(),
    };
    rows::put_settings(&mut tx, &row).await?;
    let detail =
        json!({ "email_owners": email_owners, "webhook_url": webhook_url, "new_secret": secret.is_some() });
    audit::record(&mut tx, access, None, "alerts.updated", detail).await?;
    tx.commit().await?;
    Ok(secret)
}

fn check_url(url: &str, allow_private: bool) -> Result<String> {
    let parsed = url::Url::parse(url).map_err(|_| Error::invalid("webhook_url", "Enter a web address"))?;
    let scheme_ok = parsed.scheme() == "https" || (allow_private && parsed.scheme() == "http");
    if !scheme_ok || parsed.host().is_none() {
        return Err(Error::invalid("webhook_url", "Enter an https:// address"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(Error::invalid("webhook_url", "Leave the user name and password out of the address"));
    }
    if let Some(why) = refused_target(url, allow_private) {
        return Err(Error::invalid("webhook_url", format!("Enter a public address ({why})")));
    }
    Ok(parsed.to_string())
}

/// The agency's incidents, newest first.
pub async fn incidents(db: &Db, access: &Access) -> Result<Vec<IncidentRow>> {
    access.require(Role::Member)?;
    let mut tx = db.read().await?;
    let rows = rows::incidents_for(&mut tx, access.agency, 50).await?;
    tx.commit().await?;
    Ok(rows)
}

/// The agency's own mail and webhooks (owners only: invitation mail carries join links).
pub async fn outbox(db: &Db, access: &Access) -> Result<Vec<OutboxRow>> {
    access.require(Role::Owner)?;
    let mut tx = db.read().await?;
    let rows = store::outbox::for_agency(&mut tx, access.agency, 100).await?;
    tx.commit().await?;
    Ok(rows)
}
