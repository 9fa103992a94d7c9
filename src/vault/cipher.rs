//! AES-256-GCM with associated data: the one primitive the vault is built from.

use aes_gcm::aead::{Aead, Generate, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};

use super::VaultError;

const NONCE_LEN: usize = 12;

/// Encrypts `plaintext` under `key`, bound to `aad`. Output: nonce || ciphertext || tag. Nonces
/// are random: each data key seals few values, far below the 2^32 messages random 96-bit nonces
/// stay safe for.
pub fn seal(key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, VaultError> {
    let cipher = Aes256Gcm::new(&Key::<Aes256Gcm>::from(*key));
    let nonce = Nonce::generate();
    let mut out = nonce.to_vec();
    let ciphertext =
        cipher.encrypt(&nonce, Payload { msg: plaintext, aad }).map_err(|_| VaultError::Encrypt)?;
    out.extend_from_slice(&ciphertext);
    Ok(out)
}

/// Decrypts what [`seal`] produced; fails unless key, aad and every byte match.
pub fn open(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, VaultError> {
    if sealed.len() < NONCE_LEN + 16 {
        return Err(VaultError::Malformed);
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    let cipher = Aes256Gcm::new(&Key::<Aes256Gcm>::from(*key));
    let nonce = Nonce::try_from(nonce).map_err(|_| VaultError::Malformed)?;
    cipher.decrypt(&nonce, Payload { msg: ciphertext, aad }).map_err(|_| VaultError::Open)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_binds_the_aad() {
        let key = [9u8; 32];
        let sealed = seal(&key, b"tenant-a|field", b"hello").unwrap();
        assert_eq!(open(&key, b"tenant-a|field", &sealed).unwrap(), b"hello");
        assert!(open(&key, b"tenant-b|field", &sealed).is_err());
        assert!(open(&[8u8; 32], b"tenant-a|field", &sealed).is_err());
        let mut tampered = sealed.clone();
        tampered[20] ^= 1;
        assert!(open(&key, b"tenant-a|field", &tampered).is_err());
    }
}
