//! A secret in memory: redacted when printed, wiped when dropped.

use std::fmt;

use serde::{Deserialize, Deserializer};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A plaintext secret (an API key, a token, a password). It cannot be serialised and prints as
/// `[redacted]`; the only ways out are [`Secret::expose`] (into an outbound request) and
/// [`Secret::masked`] (its last four characters, for display).
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What a user may see of it: bullets and the last four characters.
    pub fn masked(&self) -> String {
        mask(&self.0)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Bullets and the last four characters; nothing at all of a value too short to hide.
pub fn mask(value: &str) -> String {
    let count = value.chars().count();
    if count < 12 {
        return "••••".into();
    }
    let tail: String = value.chars().skip(count - 4).collect();
    format!("••••{tail}")
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret::new(s))
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_nothing_of_itself() {
        let s = Secret::new("FLWSECK_TEST-0123456789abcdef0123456789abcdef-X");
        assert_eq!(format!("{s}"), "[redacted]");
        assert!(!format!("{s:?}").contains("0123"));
        assert_eq!(s.masked(), "••••ef-X");
        assert_eq!(mask("short"), "••••");
    }
}
