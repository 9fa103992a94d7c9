//! Which hosts a Kommo `referer` may name. The client secret is sent to the referer's host, so
//! an unchecked referer would hand it to anyone who crafts a callback URL.

use std::fmt;
use std::str::FromStr;

/// `acme.kommo.com`-style patterns: exact hosts, or `*.` for any subdomain.
#[derive(Clone, PartialEq, Eq)]
pub struct HostPatterns(Vec<String>);

impl FromStr for HostPatterns {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let patterns: Vec<String> =
            value.split(',').map(|p| p.trim().to_ascii_lowercase()).filter(|p| !p.is_empty()).collect();
        if patterns.is_empty() {
            return Err("needs at least one host pattern, e.g. *.kommo.com".into());
        }
        for pattern in &patterns {
            let bare = pattern.strip_prefix("*.").unwrap_or(pattern);
            if !is_hostname(bare) || !bare.contains('.') {
                return Err(format!("{pattern:?} is not a host or *.host pattern"));
            }
        }
        Ok(HostPatterns(patterns))
    }
}

impl HostPatterns {
    /// The host, normalised, if it is a plain hostname matching one of the patterns.
    pub fn check(&self, host: &str) -> Option<String> {
        let host = host.trim().to_ascii_lowercase();
        if !is_hostname(&host) {
            return None;
        }
        self.0
            .iter()
            .any(|pattern| match pattern.strip_prefix("*.") {
                Some(suffix) => {
                    host.strip_suffix(suffix).is_some_and(|sub| sub.ends_with('.') && sub.len() > 1)
                }
                None => host == *pattern,
            })
            .then_some(host)
    }
}

/// Letters, digits, hyphens and dots only: no scheme, port, path, userinfo or spaces, so the
/// value cannot smuggle another destination into the URL built from it.
fn is_hostname(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

impl fmt::Debug for HostPatterns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_matching_plain_hosts_pass() {
        let p: HostPatterns = "*.kommo.com,*.amocrm.ru,exact.example.com".parse().unwrap();
        assert_eq!(p.check("Acme.Kommo.com").as_deref(), Some("acme.kommo.com"));
        assert!(p.check("shop.amocrm.ru").is_some());
        assert!(p.check("exact.example.com").is_some());
        for bad in [
            "kommo.com",
            "evil.com",
            "acme.kommo.com.evil.com",
            "evilkommo.com",
            "acme.kommo.com:8080",
            "acme.kommo.com/path",
            "user@acme.kommo.com",
            "https://acme.kommo.com",
            "127.0.0.1",
            "",
        ] {
            assert!(p.check(bad).is_none(), "{bad}");
        }
        assert!("".parse::<HostPatterns>().is_err());
        assert!("*.com/".parse::<HostPatterns>().is_err());
    }
}
