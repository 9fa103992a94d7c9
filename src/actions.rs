//! Changes to a client account that reach past its own rows: the ingress cache of this process,
//! and Kommo's webhook subscription. The JSON API and the web app both make them through here,
//! so neither can forget a step.

use crate::auth::Access;
use crate::connections;
use crate::error::Result;
use crate::ids::ClientId;
use crate::roles::Role;
use crate::state::AppState;
use crate::tenants::clients::{self, ClientView, IssuedToken};
use crate::tenants::flutterwave_keys::{self, KeysInput, KeysView};
use crate::tenants::settings::ClientSettings;

/// A new ingress token; Kommo's subscription moves to the new URL. (The old token stops at
/// once whatever the cache says: ingress checks the token in the transaction that stores.)
pub async fn rotate_ingress_token(
    state: &AppState,
    access: &Access,
    client: ClientId,
) -> Result<IssuedToken> {
    let issued =
        clients::rotate_ingress_token(&state.db, &state.vault, &state.public_url, access, client).await?;
    if let Some(old) = &issued.replaced {
        state.kommo.move_subscription(client, &old.kommo, &issued.webhook_urls.kommo).await;
    }
    state.ingress.tokens.forget(client);
    Ok(issued)
}

/// Checks and saves the Flutterwave keys; the ingress uses the new webhook hash from the next
/// webhook on.
pub async fn set_flutterwave_keys(
    state: &AppState,
    access: &Access,
    client: ClientId,
    input: KeysInput,
) -> Result<KeysView> {
    let urls =
        clients::current_webhook_urls(&state.db, &state.vault, &state.public_url, access, client).await?;
    let keys = flutterwave_keys::set(
        &state.db,
        &state.vault,
        &state.flutterwave,
        &urls.flutterwave,
        access,
        client,
        input,
    )
    .await?;
    state.ingress.tokens.forget(client);
    Ok(keys)
}

/// Saves the settings; the ingress reads the trigger stages afresh (they decide which Kommo
/// edits make a job).
pub async fn update_settings(
    state: &AppState,
    access: &Access,
    client: ClientId,
    settings: ClientSettings,
) -> Result<ClientView> {
    let view = clients::update_settings(&state.db, access, client, settings).await?;
    state.ingress.tokens.forget(client);
    Ok(view)
}

/// Disconnects Kommo; see [`connections::disconnect`] for when Kommo's refusal stops it.
pub async fn disconnect_kommo(
    state: &AppState,
    access: &Access,
    client: ClientId,
    force: bool,
) -> Result<()> {
    connections::disconnect(&state.kommo, access, client, force).await?;
    state.ingress.tokens.forget(client);
    Ok(())
}

/// Deletes the client account. Kommo's webhook is taken off first, while the data key that
/// opens the ingress token (the webhook's address) still exists; if Kommo cannot be reached,
/// nothing is deleted unless `force` says so.
pub async fn delete_client(state: &AppState, access: &Access, client: ClientId, force: bool) -> Result<()> {
    // Strangers get their 404 and members their 403 before Kommo is called.
    clients::get(&state.db, access, client).await?;
    access.require(Role::Admin)?;
    connections::unsubscribe_before_removal(&state.kommo, client, force).await?;
    clients::delete(&state.db, access, client).await?;
    state.ingress.tokens.forget(client);
    Ok(())
}
