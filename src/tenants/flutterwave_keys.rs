//! A client account's Flutterwave keys: format-checked, sealed, shown masked, replaceable.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{audit, secrets};
use crate::auth::{Access, tokens};
use crate::error::{Checks, Error, Result};
use crate::flutterwave::client::{Flutterwave, FlutterwaveError};
use crate::flutterwave::keys::{self, Mode};
use crate::ids::ClientId;
use crate::roles::Role;
use crate::store::{self, Db};
use crate::vault::{Secret, Slot, Vault};

pub const SECRET_KEY: Slot = Slot { table: "client_secrets", field: "flutterwave_secret_key" };
pub const WEBHOOK_HASH: Slot = Slot { table: "client_secrets", field: "flutterwave_webhook_hash" };
pub const PUBLIC_KEY: Slot = Slot { table: "client_secrets", field: "flutterwave_public_key" };

const MIN_HASH: usize = 16;
const MAX_HASH: usize = 256;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeysInput {
    /// The v3 secret key, `FLWSECK_TEST-...-X` (test mode) or `FLWSECK-...-X` (live).
    #[schema(value_type = String)]
    pub secret_key: Secret,
    /// The "Secret hash" set under Settings > Webhooks in the Flutterwave dashboard. Leave it
    /// out and pipepay makes a strong one, returned once in `dashboard.secret_hash` to paste there.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub webhook_hash: Option<Secret>,
    /// The public key; optional, for reference only.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub public_key: Option<Secret>,
}

/// The keys as anyone may see them: masked to their last four characters.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct KeysView {
    pub mode: Mode,
    pub secret_key: String,
    pub webhook_hash: String,
    pub public_key: Option<String>,
    /// What to set in the Flutterwave dashboard (only when the keys are saved).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dashboard: Option<Dashboard>,
}

/// Settings > Webhooks in the Flutterwave dashboard, exactly as pipepay needs them.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Dashboard {
    pub webhook_url: String,
    /// The secret hash in full, only when pipepay generated it; otherwise the one you pasted.
    pub secret_hash: Option<String>,
    pub steps: Vec<String>,
}

fn check(input: &KeysInput) -> Result<Mode> {
    let mut checks = Checks::new();
    let mode = keys::secret_key_mode(input.secret_key.expose().trim());
    if let Err(message) = mode {
        checks.fail("secret_key", message);
    }
    if let Some(hash) = &input.webhook_hash {
        let hash_len = hash.expose().chars().count();
        checks.check(
            (MIN_HASH..=MAX_HASH).contains(&hash_len),
            "webhook_hash",
            format!(
                "Use {MIN_HASH} to {MAX_HASH} characters: a long random value. Or leave it empty and pipepay makes one."
            ),
        );
        checks.check(!hash.expose().chars().any(char::is_whitespace), "webhook_hash", "Remove the spaces.");
    }
    if let Some(public) = &input.public_key {
        match keys::public_key_mode(public.expose().trim()) {
            Err(message) => checks.fail("public_key", message),
            Ok(public_mode) => checks.check(
                mode.is_err() || mode == Ok(public_mode),
                "public_key",
                "This public key is for the other mode (test or live) than the secret key.",
            ),
        }
    }
    checks.finish()?;
    mode.map_err(|m| Error::invalid("secret_key", m))
}

/// Checks the secret key with Flutterwave, then seals and stores the keys, replacing any before
/// them. A key Flutterwave refuses is not saved.
pub async fn set(
    db: &Db,
    vault: &Vault,
    flutterwave: &Flutterwave,
    webhook_url: &str,
    access: &Access,
    client: ClientId,
    input: KeysInput,
) -> Result<KeysView> {
    let mut tx = db.read().await?;
    store::clients::get(&mut tx, access.agency, client).await?.ok_or(Error::NotFound)?;
    tx.commit().await?;
    access.require(Role::Admin)?;
    let mode = check(&input)?;
    let secret_key = Secret::new(input.secret_key.expose().trim());
    // A cheap read-only call, outside any transaction: a wrong or revoked key is caught now,
    // not at the first customer's payment.
    match flutterwave.check_key(&secret_key).await {
        Ok(()) => {}
        Err(FlutterwaveError::Unauthorized) => {
            return Err(Error::invalid(
                "secret_key",
                "Flutterwave refused this secret key. Copy it again from Settings > API Keys, and check test or live mode.",
            ));
        }
        Err(other) => {
            return Err(Error::Upstream {
                field: Some("secret_key"),
                message: format!(
                    "could not check the key with Flutterwave ({other}); nothing was saved, try again"
                ),
            });
        }
    }
    let generated = input.webhook_hash.is_none();
    let webhook_hash = match input.webhook_hash {
        Some(hash) => hash,
        None => Secret::new(tokens::generate("").0.expose().to_owned()),
    };
    let public_key = input.public_key.as_ref().map(|p| Secret::new(p.expose().trim()));
    let mut tx = db.write().await?;
    store::clients::get(&mut tx, access.agency, client).await?.ok_or(Error::NotFound)?;
    let replaced = store::clients::get_secret(&mut tx, client, SECRET_KEY.field).await?.is_some();
    secrets::put(&mut tx, vault, client, SECRET_KEY, &secret_key).await?;
    secrets::put(&mut tx, vault, client, WEBHOOK_HASH, &webhook_hash).await?;
    match &public_key {
        Some(public) => secrets::put(&mut tx, vault, client, PUBLIC_KEY, public).await?,
        None => store::clients::delete_secret(&mut tx, client, PUBLIC_KEY.field).await?,
    }
    // Jobs parked for want of keys can run again.
    crate::queue::resume(&mut tx, client).await?;
    let action = if replaced { "client.flutterwave_keys_replaced" } else { "client.flutterwave_keys_set" };
    let detail = json!({ "mode": mode, "secret_key": secret_key.masked() });
    audit::record(&mut tx, access, Some(client), action, detail).await?;
    tx.commit().await?;
    Ok(KeysView {
        mode,
        secret_key: secret_key.masked(),
        webhook_hash: webhook_hash.masked(),
        public_key: public_key.map(|p| p.masked()),
        dashboard: Some(Dashboard {
            webhook_url: webhook_url.to_owned(),
            secret_hash: generated.then(|| webhook_hash.expose().to_owned()),
            steps: vec![
                "In the Flutterwave dashboard, open Settings > Webhooks.".into(),
                "Paste the webhook URL above into URL.".into(),
                if generated {
                    "Paste the secret hash above into Secret hash (it is shown only now).".into()
                } else {
                    "Set Secret hash to the same value you gave pipepay.".into()
                },
                "Tick \"Enable webhook retries\" and \"Enable webhook for failed transactions\", then save: \
                 retries recover webhooks lost in transit, and pipepay also checks open links itself."
                    .into(),
            ],
        }),
    })
}

/// The masked keys, or `None` when none are set.
pub async fn get(db: &Db, vault: &Vault, access: &Access, client: ClientId) -> Result<Option<KeysView>> {
    let mut tx = db.read().await?;
    store::clients::get(&mut tx, access.agency, client).await?.ok_or(Error::NotFound)?;
    let Some(secret_key) = secrets::open(&mut tx, vault, client, SECRET_KEY).await? else { return Ok(None) };
    let webhook_hash = secrets::open(&mut tx, vault, client, WEBHOOK_HASH).await?;
    let public_key = secrets::open(&mut tx, vault, client, PUBLIC_KEY).await?;
    tx.commit().await?;
    let mode = keys::secret_key_mode(secret_key.expose()).unwrap_or(Mode::Live);
    Ok(Some(KeysView {
        mode,
        secret_key: secret_key.masked(),
        webhook_hash: webhook_hash.map(|h| h.masked()).unwrap_or_default(),
        public_key: public_key.map(|p| p.masked()),
        dashboard: None,
    }))
}
