//! Master keys: parsed from `PIPEPAY_MASTER_KEYS`, or a development key kept under `data/`.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

pub const KEY_LEN: usize = 32;
/// Where development keeps its generated master key when none is configured.
pub const DEV_KEY_PATH: &str = "data/master.key";

/// One AES-256 master key and the id sealed values name it by.
pub struct MasterKey {
    pub id: String,
    pub key: Zeroizing<[u8; KEY_LEN]>,
}

/// The configured master keys. The first one wraps new and rotated data keys; every one of them
/// can unwrap, so a rotation can run while older wrappings are still in use.
#[derive(Clone)]
pub struct MasterKeys(std::sync::Arc<Vec<MasterKey>>);

impl MasterKeys {
    pub fn active(&self) -> &MasterKey {
        // Parsing refuses an empty list, so there is always a first key.
        &self.0[0]
    }

    pub fn get(&self, id: &str) -> Option<&MasterKey> {
        self.0.iter().find(|k| k.id == id)
    }

    pub fn ids(&self) -> Vec<&str> {
        self.0.iter().map(|k| k.id.as_str()).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &MasterKey> {
        self.0.iter()
    }

    /// A fresh random key, in the `id:base64` form `PIPEPAY_MASTER_KEYS` takes.
    pub fn generate_entry(id: &str) -> String {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        rand::fill(&mut key[..]);
        format!("{id}:{}", STANDARD.encode(&key[..]))
    }

    /// Loads the development key from `path`, creating it (readable by the owner only) when missing.
    pub fn load_or_create_dev(path: &Path) -> Result<MasterKeys, String> {
        if !path.exists() {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            let entry = Self::generate_entry(&format!("dev-{}", chrono::Utc::now().format("%Y%m%d")));
            write_private(path, &entry).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        text.trim().parse().map_err(|e| format!("{}: {e}", path.display()))
    }
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(contents.as_bytes())
}

impl FromStr for MasterKeys {
    type Err = String;

    /// `id:base64key[,id:base64key...]`. Errors never quote key material.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let mut keys = Vec::new();
        for (index, entry) in value.split(',').map(str::trim).filter(|e| !e.is_empty()).enumerate() {
            let position = index + 1;
            let (id, encoded) = entry
                .split_once(':')
                .ok_or_else(|| format!("entry {position} is not of the form id:base64key"))?;
            if id.is_empty()
                || id.len() > 32
                || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(format!("entry {position}: the id must be 1-32 letters, digits, '-' or '_'"));
            }
            let bytes = Zeroizing::new(
                STANDARD
                    .decode(encoded.trim())
                    .map_err(|_| format!("entry {position} ({id}): the key is not valid base64"))?,
            );
            let key: [u8; KEY_LEN] = bytes.as_slice().try_into().map_err(|_| {
                format!("entry {position} ({id}): the key must be {KEY_LEN} bytes, got {}", bytes.len())
            })?;
            if keys.iter().any(|k: &MasterKey| k.id == id) {
                return Err(format!("the id {id} appears twice"));
            }
            keys.push(MasterKey { id: id.to_owned(), key: Zeroizing::new(key) });
        }
        if keys.is_empty() {
            return Err("at least one id:base64key is needed".into());
        }
        Ok(MasterKeys(std::sync::Arc::new(keys)))
    }
}

impl fmt::Debug for MasterKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKeys({:?}, keys redacted)", self.ids())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_list_and_the_first_seals() {
        let a = MasterKeys::generate_entry("new");
        let b = MasterKeys::generate_entry("old");
        let keys: MasterKeys = format!("{a}, {b}").parse().unwrap();
        assert_eq!(keys.active().id, "new");
        assert!(keys.get("old").is_some());
        assert!(!format!("{keys:?}").contains(a.split(':').nth(1).unwrap()));
    }

    #[test]
    fn refuses_bad_entries_without_quoting_them() {
        let short = format!("k1:{}", STANDARD.encode([7u8; 16]));
        for bad in ["", "nokey", "k1:!!!", short.as_str(), "bad id:AAAA"] {
            let err = bad.parse::<MasterKeys>().unwrap_err();
            assert!(!err.contains("!!!") && !err.contains("AAAA"), "{err}");
        }
        let entry = MasterKeys::generate_entry("k1");
        assert!(format!("{entry},{entry}").parse::<MasterKeys>().unwrap_err().contains("twice"));
    }
}
