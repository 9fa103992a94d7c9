//! The vault: AES-256-GCM envelope encryption. Master keys (configuration, never stored) wrap
//! one data key per client account (stored wrapped in `data_keys`); data keys seal the
//! client's secrets. Every sealed value is bound by its associated data to its client, table
//! and field, so ciphertext moved anywhere else fails to open. Deleting a client account
//! deletes its data key, after which nothing of its secrets can be opened.

mod cipher;
pub mod master;
mod rotate;
mod secret;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use zeroize::Zeroizing;

pub use self::master::MasterKeys;
pub use self::rotate::{RotationReport, rotate};
pub use self::secret::{Secret, mask};
use crate::ids::{AgencyId, ClientId};
use crate::store::data_keys::WrappedKey;
use crate::store::{self, Tx};

/// The format version written in front of every sealed value.
const FORMAT: &str = "pp1";
/// The same, for agency secrets (sealed by a per-agency key derived from the master key).
const AGENCY_FORMAT: &str = "pa1";

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("encryption failed")]
    Encrypt,
    #[error("the sealed value does not open: wrong tenant, field or key, or tampered with")]
    Open,
    #[error("the sealed value is not in a format this version knows")]
    Malformed,
    #[error("client account {0} has no data key (deleted?)")]
    NoDataKey(ClientId),
    #[error("master key {0} is not configured (PIPEPAY_MASTER_KEYS)")]
    UnknownMasterKey(String),
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

/// Where a secret lives, which becomes part of what it is sealed to.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    pub table: &'static str,
    pub field: &'static str,
}

#[derive(Clone, Debug)]
pub struct Vault {
    master: MasterKeys,
}

impl Vault {
    pub fn new(master: MasterKeys) -> Self {
        Vault { master }
    }

    pub fn master_keys(&self) -> &MasterKeys {
        &self.master
    }

    /// A fresh data key for a new client account, wrapped by the active master key. The caller
    /// stores it in the same transaction that creates the account.
    pub fn new_data_key(&self, client: ClientId) -> Result<WrappedKey, VaultError> {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::fill(&mut key[..]);
        let key_id = uuid::Uuid::new_v4().simple().to_string();
        self.wrap(client, &key_id, &key)
    }

    fn wrap(&self, client: ClientId, key_id: &str, key: &[u8; 32]) -> Result<WrappedKey, VaultError> {
        let master = self.master.active();
        let wrapped = cipher::seal(&master.key, wrap_aad(client, key_id).as_bytes(), key)?;
        Ok(WrappedKey {
            client_id: client,
            key_id: key_id.to_owned(),
            master_key_id: master.id.clone(),
            wrapped,
        })
    }

    fn unwrap(&self, stored: &WrappedKey) -> Result<Zeroizing<[u8; 32]>, VaultError> {
        let master = self
            .master
            .get(&stored.master_key_id)
            .ok_or_else(|| VaultError::UnknownMasterKey(stored.master_key_id.clone()))?;
        let plain = Zeroizing::new(cipher::open(
            &master.key,
            wrap_aad(stored.client_id, &stored.key_id).as_bytes(),
            &stored.wrapped,
        )?);
        let key: [u8; 32] = plain.as_slice().try_into().map_err(|_| VaultError::Malformed)?;
        Ok(Zeroizing::new(key))
    }

    /// Seals `secret` for `client` at `slot`: `pp1.<data key id>.<base64url(nonce|ciphertext)>`.
    pub async fn seal(
        &self,
        tx: &mut Tx,
        client: ClientId,
        slot: Slot,
        secret: &Secret,
    ) -> Result<String, VaultError> {
        let stored = store::data_keys::get(tx, client).await?.ok_or(VaultError::NoDataKey(client))?;
        let key = self.unwrap(&stored)?;
        let sealed = cipher::seal(&key, seal_aad(client, slot).as_bytes(), secret.expose().as_bytes())?;
        Ok(format!("{FORMAT}.{}.{}", stored.key_id, URL_SAFE_NO_PAD.encode(sealed)))
    }

    /// Opens what [`Vault::seal`] produced for the same client and slot.
    pub async fn open(
        &self,
        tx: &mut Tx,
        client: ClientId,
        slot: Slot,
        sealed: &str,
    ) -> Result<Secret, VaultError> {
        let mut parts = sealed.splitn(3, '.');
        let (Some(FORMAT), Some(key_id), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(VaultError::Malformed);
        };
        let stored = store::data_keys::get(tx, client).await?.ok_or(VaultError::NoDataKey(client))?;
        if stored.key_id != key_id {
            // Sealed under another client's data key: it was moved here.
            return Err(VaultError::Open);
        }
        let key = self.unwrap(&stored)?;
        let bytes = URL_SAFE_NO_PAD.decode(body).map_err(|_| VaultError::Malformed)?;
        let plain = Zeroizing::new(cipher::open(&key, seal_aad(client, slot).as_bytes(), &bytes)?);
        let text = String::from_utf8(plain.to_vec()).map_err(|_| VaultError::Malformed)?;
        Ok(Secret::new(text))
    }

    /// Seals an agency's secret (not a client account's: agencies have no data key). The key is
    /// derived from the active master key for this agency; `keys rotate` re-seals these too.
    pub fn seal_for_agency(
        &self,
        agency: AgencyId,
        slot: Slot,
        secret: &Secret,
    ) -> Result<String, VaultError> {
        let master = self.master.active();
        let key = agency_key(&master.key, agency)?;
        let sealed = cipher::seal(&key, agency_aad(agency, slot).as_bytes(), secret.expose().as_bytes())?;
        Ok(format!("{AGENCY_FORMAT}.{}.{}", master.id, URL_SAFE_NO_PAD.encode(sealed)))
    }

    /// Opens what [`Vault::seal_for_agency`] produced for the same agency and slot.
    pub fn open_for_agency(&self, agency: AgencyId, slot: Slot, sealed: &str) -> Result<Secret, VaultError> {
        let mut parts = sealed.splitn(3, '.');
        let (Some(AGENCY_FORMAT), Some(master_id), Some(body)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(VaultError::Malformed);
        };
        let master =
            self.master.get(master_id).ok_or_else(|| VaultError::UnknownMasterKey(master_id.to_owned()))?;
        let key = agency_key(&master.key, agency)?;
        let bytes = URL_SAFE_NO_PAD.decode(body).map_err(|_| VaultError::Malformed)?;
        let plain = Zeroizing::new(cipher::open(&key, agency_aad(agency, slot).as_bytes(), &bytes)?);
        String::from_utf8(plain.to_vec()).map(Secret::new).map_err(|_| VaultError::Malformed)
    }

    /// Whether an agency secret is sealed under the active master key already.
    pub fn is_current_for_agency(&self, sealed: &str) -> bool {
        sealed.split('.').nth(1) == Some(self.master.active().id.as_str())
    }

    /// Re-wraps one data key under the active master key.
    pub(crate) fn rewrap(&self, stored: &WrappedKey) -> Result<WrappedKey, VaultError> {
        let key = self.unwrap(stored)?;
        self.wrap(stored.client_id, &stored.key_id, &key)
    }
}

fn agency_key(master: &[u8; 32], agency: AgencyId) -> Result<Zeroizing<[u8; 32]>, VaultError> {
    let mut key = Zeroizing::new([0u8; 32]);
    hkdf::Hkdf::<sha2::Sha256>::new(Some(b"pipepay"), master)
        .expand(format!("agency-key/v1/{agency}").as_bytes(), &mut key[..])
        .map_err(|_| VaultError::Encrypt)?;
    Ok(key)
}

fn agency_aad(agency: AgencyId, slot: Slot) -> String {
    format!("pipepay/agency-secret/v1/{agency}/{}/{}", slot.table, slot.field)
}

fn wrap_aad(client: ClientId, key_id: &str) -> String {
    format!("pipepay/data-key/v1/{client}/{key_id}")
}

fn seal_aad(client: ClientId, slot: Slot) -> String {
    format!("pipepay/secret/v1/{client}/{}/{}", slot.table, slot.field)
}
