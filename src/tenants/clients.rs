//! Client accounts: create, read, configure, rotate their ingress token, delete.

use serde::Serialize;
use serde_json::json;
use url::Url;

use super::audit;
use super::settings::{self, ClientSettings};
use crate::auth::{Access, tokens};
use crate::clock::{now_ms, rfc3339};
use crate::error::{Checks, Error, Result};
use crate::ids::ClientId;
use crate::roles::Role;
use crate::store::clients::ClientRow;
use crate::store::{self, Db};
use crate::vault::{Secret, Slot, Vault};

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ClientView {
    pub id: ClientId,
    pub name: String,
    pub settings: ClientSettings,
    pub created_at: String,
    pub updated_at: String,
}

/// Where Kommo and Flutterwave must send this client account's webhooks.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WebhookUrls {
    pub kommo: String,
    pub flutterwave: String,
}

/// What creating or rotating returns: the token and the URLs built from it.
#[derive(Debug)]
pub struct IssuedToken {
    pub token: Secret,
    pub webhook_urls: WebhookUrls,
    /// The URLs of the token this one replaced, so subscriptions can move.
    pub replaced: Option<WebhookUrls>,
}

/// The ingress token is looked up by its hash; it is also sealed here so pipepay can show the
/// webhook URLs again and subscribe Kommo to them. It is never stored in plaintext.
pub const INGRESS_TOKEN: Slot = Slot { table: "client_secrets", field: "ingress_token" };

pub fn webhook_urls(public_url: &Url, token: &Secret) -> WebhookUrls {
    let base = public_url.as_str().trim_end_matches('/');
    WebhookUrls {
        kommo: format!("{base}/hooks/{}/kommo", token.expose()),
        flutterwave: format!("{base}/hooks/{}/flutterwave", token.expose()),
    }
}

fn view(row: ClientRow) -> Result<ClientView> {
    let settings = serde_json::from_str(&row.settings)
        .map_err(|e| Error::Internal(anyhow::anyhow!("settings of client {} do not parse: {e}", row.id)))?;
    Ok(ClientView {
        id: row.id,
        name: row.name,
        settings,
        created_at: rfc3339(row.created_at),
        updated_at: rfc3339(row.updated_at),
    })
}

/// Creates a client account with its own data key and a fresh ingress token.
pub async fn create(
    db: &Db,
    vault: &Vault,
    public_url: &Url,
    access: &Access,
    name: &str,
) -> Result<(ClientView, IssuedToken)> {
    access.require(Role::Admin)?;
    let name = name.trim();
    let mut checks = Checks::new();
    settings::check_name(&mut checks, "name", name);
    checks.finish()?;
    let now = now_ms();
    let row = ClientRow {
        id: ClientId::new(),
        agency_id: access.agency,
        name: name.to_owned(),
        settings: serde_json::to_string(&ClientSettings::new(name)).map_err(anyhow::Error::from)?,
        created_at: now,
        updated_at: now,
    };
    let (token, token_hash) = tokens::generate(tokens::INGRESS_PREFIX);
    let data_key = vault.new_data_key(row.id)?;
    let mut tx = db.write().await?;
    store::clients::insert(&mut tx, &row, &token_hash).await?;
    store::data_keys::insert(&mut tx, &data_key).await?;
    super::secrets::put(&mut tx, vault, row.id, INGRESS_TOKEN, &token).await?;
    audit::record(&mut tx, access, Some(row.id), "client.created", json!({ "name": name })).await?;
    tx.commit().await?;
    let webhook_urls = webhook_urls(public_url, &token);
    Ok((view(row)?, IssuedToken { token, webhook_urls, replaced: None }))
}

pub async fn list(db: &Db, access: &Access) -> Result<Vec<ClientView>> {
    let mut tx = db.read().await?;
    let rows = store::clients::list(&mut tx, access.agency).await?;
    tx.commit().await?;
    rows.into_iter().map(view).collect()
}

pub async fn get(db: &Db, access: &Access, id: ClientId) -> Result<ClientView> {
    let mut tx = db.read().await?;
    let row = store::clients::get(&mut tx, access.agency, id).await?.ok_or(Error::NotFound)?;
    tx.commit().await?;
    view(row)
}

/// Replaces the settings document; the audit entry names the fields that changed.
pub async fn update_settings(
    db: &Db,
    access: &Access,
    id: ClientId,
    settings: ClientSettings,
) -> Result<ClientView> {
    let mut tx = db.write().await?;
    // Existence before permission: a member probing another agency's ids learns nothing.
    let old = store::clients::get(&mut tx, access.agency, id).await?.ok_or(Error::NotFound)?;
    access.require(Role::Admin)?;
    let settings = settings.validated()?;
    let json = serde_json::to_string(&settings).map_err(anyhow::Error::from)?;
    let changed = changed_fields(&old.settings, &json);
    let now = now_ms();
    store::clients::update_settings(&mut tx, access.agency, id, &settings.display_name, &json, now).await?;
    if !changed.is_empty() {
        audit::record(&mut tx, access, Some(id), "client.settings_changed", json!({ "fields": changed }))
            .await?;
    }
    tx.commit().await?;
    view(ClientRow { name: settings.display_name.clone(), settings: json, updated_at: now, ..old })
}

fn changed_fields(old: &str, new: &str) -> Vec<String> {
    let parse =
        |s: &str| serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(s).unwrap_or_default();
    let (old, new) = (parse(old), parse(new));
    let mut fields: Vec<String> =
        new.iter().filter(|(k, v)| old.get(*k) != Some(*v)).map(|(k, _)| k.clone()).collect();
    fields.extend(old.keys().filter(|k| !new.contains_key(*k)).cloned());
    fields.sort();
    fields
}

/// A new ingress token; the old one stops working the moment this commits.
pub async fn rotate_ingress_token(
    db: &Db,
    vault: &Vault,
    public_url: &Url,
    access: &Access,
    id: ClientId,
) -> Result<IssuedToken> {
    let (token, hash) = tokens::generate(tokens::INGRESS_PREFIX);
    let mut tx = db.write().await?;
    store::clients::get(&mut tx, access.agency, id).await?.ok_or(Error::NotFound)?;
    access.require(Role::Admin)?;
    let old = super::secrets::open(&mut tx, vault, id, INGRESS_TOKEN).await?;
    store::clients::set_ingress_token(&mut tx, access.agency, id, &hash, now_ms()).await?;
    super::secrets::put(&mut tx, vault, id, INGRESS_TOKEN, &token).await?;
    audit::record(&mut tx, access, Some(id), "client.ingress_token_rotated", json!({})).await?;
    tx.commit().await?;
    let webhook_urls = webhook_urls(public_url, &token);
    let replaced = old.map(|old| self::webhook_urls(public_url, &old));
    Ok(IssuedToken { token, webhook_urls, replaced })
}

/// The client account's webhook URLs (admins only: they carry the ingress token).
pub async fn current_webhook_urls(
    db: &Db,
    vault: &Vault,
    public_url: &Url,
    access: &Access,
    id: ClientId,
) -> Result<WebhookUrls> {
    let mut tx = db.read().await?;
    store::clients::get(&mut tx, access.agency, id).await?.ok_or(Error::NotFound)?;
    access.require(Role::Admin)?;
    let token = super::secrets::open(&mut tx, vault, id, INGRESS_TOKEN).await?.ok_or(Error::NotFound)?;
    tx.commit().await?;
    Ok(webhook_urls(public_url, &token))
}

/// Deletes the account and, with it, its data key: its sealed secrets can never be opened again.
pub async fn delete(db: &Db, access: &Access, id: ClientId) -> Result<()> {
    let mut tx = db.write().await?;
    let row = store::clients::get(&mut tx, access.agency, id).await?.ok_or(Error::NotFound)?;
    access.require(Role::Admin)?;
    store::clients::delete(&mut tx, access.agency, id).await?;
    audit::record(&mut tx, access, Some(id), "client.deleted", json!({ "name": row.name })).await?;
    tx.commit().await?;
    Ok(())
}
