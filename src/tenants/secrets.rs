//! A client account's secrets in the vault: sealed into `client_secrets`, opened on demand.

use crate::clock::now_ms;
use crate::error::Result;
use crate::ids::ClientId;
use crate::store::{self, Tx};
use crate::vault::{Secret, Slot, Vault};

/// Opens one of the client's secrets, if it is set.
pub async fn open(tx: &mut Tx, vault: &Vault, client: ClientId, slot: Slot) -> Result<Option<Secret>> {
    match store::clients::get_secret(tx, client, slot.field).await? {
        Some(sealed) => Ok(Some(vault.open(tx, client, slot, &sealed).await?)),
        None => Ok(None),
    }
}

/// Seals and stores (or replaces) one of the client's secrets.
pub async fn put(tx: &mut Tx, vault: &Vault, client: ClientId, slot: Slot, secret: &Secret) -> Result<()> {
    let sealed = vault.seal(tx, client, slot, secret).await?;
    store::clients::put_secret(tx, client, slot.field, &sealed, now_ms()).await?;
    Ok(())
}
