//! Why a client account's work is paused, as a code: the alerts read the code, never the
//! wording of the reason shown to people.

use crate::ids::ClientId;
use crate::on_tx;

use super::{StoreError, Tx};

crate::text_enum! {
    /// What a paused client account waits for (`client_pauses.cause`).
    pub enum PauseCause {
        /// Flutterwave answered 401 to the stored secret key.
        FlutterwaveKeyRefused = "flutterwave_key_refused",
        FlutterwaveKeysMissing = "flutterwave_keys_missing",
        KommoNotConnected = "kommo_not_connected",
        /// The integration was uninstalled from Kommo.
        KommoRevoked = "kommo_revoked",
        /// Kommo refuses pipepay's tokens, fresh ones too.
        KommoReauth = "kommo_reauth",
        /// The Kommo account's subscription ended.
        KommoPayment = "kommo_payment",
        /// pipepay's own settings (the operator's Kommo integration) are missing or wrong.
        Settings = "settings",
    }
}

/// Records the cause of the client account's current pause (the row `jobs::pause_client` made,
/// in the same transaction).
pub async fn set_cause(tx: &mut Tx, client: ClientId, cause: PauseCause) -> Result<(), StoreError> {
    on_tx!(tx, c => sqlx::query("UPDATE client_pauses SET cause = $2 WHERE client_id = $1")
        .bind(client)
        .bind(cause)
        .execute(c)
        .await
        .map(drop))?;
    Ok(())
}
