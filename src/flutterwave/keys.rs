//! Flutterwave key formats. Test keys carry `_TEST`; the key itself decides the mode.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Test,
    Live,
}

/// The mode of a v3 secret key (`FLWSECK_TEST-<hex>-X` or `FLWSECK-<hex>-X`), or why it is not one.
pub fn secret_key_mode(key: &str) -> Result<Mode, &'static str> {
    key_mode(key, "FLWSECK").ok_or(
        "Paste a Flutterwave secret key (FLWSECK_TEST-...-X or FLWSECK-...-X, from Settings > API Keys).",
    )
}

/// The mode of a v3 public key (`FLWPUBK_TEST-<hex>-X` or `FLWPUBK-<hex>-X`).
pub fn public_key_mode(key: &str) -> Result<Mode, &'static str> {
    key_mode(key, "FLWPUBK").ok_or("Paste a Flutterwave public key (FLWPUBK_TEST-...-X or FLWPUBK-...-X).")
}

fn key_mode(key: &str, kind: &str) -> Option<Mode> {
    let rest = key.strip_prefix(kind)?;
    let (mode, body) = match rest.strip_prefix("_TEST-") {
        Some(body) => (Mode::Test, body),
        None => (Mode::Live, rest.strip_prefix('-')?),
    };
    let middle = body.strip_suffix("-X")?;
    let plausible = (16..=64).contains(&middle.len()) && middle.chars().all(|c| c.is_ascii_alphanumeric());
    plausible.then_some(mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_the_mode_from_the_key() {
        assert_eq!(secret_key_mode("FLWSECK_TEST-0123456789abcdef0123456789abcdef-X"), Ok(Mode::Test));
        assert_eq!(secret_key_mode("FLWSECK-0123456789abcdef0123456789abcdef-X"), Ok(Mode::Live));
        assert_eq!(public_key_mode("FLWPUBK_TEST-32193bba8dab84e3d9c4525c85ea7a12-X"), Ok(Mode::Test));
        for bad in [
            "",
            "sk_live_123",
            "FLWPUBK_TEST-32193bba8dab84e3d9c4525c85ea7a12-X",
            "FLWSECK_TEST-short-X",
            "FLWSECK_TEST0123456789ab",
            "FLWSECK-0123456789abcdef0123456789abcdef",
        ] {
            assert!(secret_key_mode(bad).is_err(), "{bad}");
        }
    }
}
