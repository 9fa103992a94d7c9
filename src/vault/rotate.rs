//! `pipepay keys rotate`: re-wrap every data key under the active master key, online and
//! resumably. Each key is updated by compare-and-set on the master key id it was read with, so
//! running it twice, or alongside itself, does each key once.

use crate::ids::ClientId;
use crate::store::{self, Db, StoreError};

use super::{Vault, VaultError};

const BATCH: i64 = 200;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RotationReport {
    /// Data keys moved to the active master key by this run.
    pub rewrapped: u64,
    /// Data keys that were under the active master key already.
    pub current: u64,
    /// Data keys that could not be opened (their master key is not configured).
    pub failed: u64,
    pub missing_master_keys: Vec<String>,
}

pub async fn rotate(db: &Db, vault: &Vault) -> Result<RotationReport, VaultError> {
    let active = vault.master_keys().active().id.clone();
    let mut report = RotationReport::default();
    let mut after: Option<ClientId> = None;
    loop {
        let mut tx = db.read().await?;
        let batch = store::data_keys::page(&mut tx, after, BATCH).await?;
        tx.commit().await?;
        let Some(last) = batch.last() else { break };
        after = Some(last.client_id);
        for stored in batch {
            if stored.master_key_id == active {
                report.current += 1;
                continue;
            }
            match vault.rewrap(&stored) {
                Ok(rewrapped) => {
                    let mut tx = db.write().await?;
                    let moved = store::data_keys::replace_wrapping(&mut tx, &stored, &rewrapped).await?;
                    tx.commit().await?;
                    // Someone else moved it meanwhile (a parallel run): it is current all the same.
                    if moved { report.rewrapped += 1 } else { report.current += 1 }
                }
                Err(VaultError::UnknownMasterKey(id)) => {
                    report.failed += 1;
                    if !report.missing_master_keys.contains(&id) {
                        report.missing_master_keys.push(id);
                    }
                }
                Err(other) => return Err(other),
            }
        }
    }
    Ok(report)
}

impl From<sqlx::Error> for VaultError {
    fn from(e: sqlx::Error) -> Self {
        VaultError::Store(StoreError::Sqlx(e))
    }
}
