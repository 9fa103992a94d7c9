//! Random bearer tokens (API keys, ingress tokens, invitation links), stored only as hashes.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::vault::Secret;

/// API keys, shown once.
pub const API_KEY_PREFIX: &str = "ppk_";
/// Ingress tokens, part of the webhook URLs.
pub const INGRESS_PREFIX: &str = "pph_";
/// Invitation links.
pub const INVITATION_PREFIX: &str = "ppi_";
/// Password reset links.
pub const RESET_PREFIX: &str = "ppr_";
/// Address checks.
pub const VERIFY_PREFIX: &str = "ppv_";

/// A fresh token of 256 random bits, and the hash to store. The prefix lets people and secret
/// scanners tell the kinds apart.
pub fn generate(prefix: &str) -> (Secret, Vec<u8>) {
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    rand::fill(&mut bytes[..]);
    let token = Secret::new(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(&bytes[..])));
    let hash = hash(token.expose());
    (token, hash)
}

/// SHA-256 of the token. The tokens carry 256 bits of entropy, so a fast hash is enough:
/// there is nothing to brute-force, and lookups by hash stay one index probe.
pub fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}
