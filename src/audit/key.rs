//! The audit log's MAC keys: HMAC-SHA256 keys of their own (never the JWT
//! secret), in a file of `<id> <base64url key>` lines, newest last.
//!
//! The first `forgeline serve` writes `<data_dir>/audit-key` (mode 0600) unless
//! `audit.key_file` names one; `forgeline audit rotate-key` appends a new key,
//! which a restarted server signs with. Records name the key they were signed
//! with, so verification needs every key the log still uses.

use std::path::{Path, PathBuf};

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::auth::jwt::write_private;
use crate::auth::KeyError;
use crate::config::Config;

/// Bytes of one key.
pub const KEY_LEN: usize = 32;

/// The audit MAC keys, oldest first; the last signs new records.
#[derive(Clone)]
pub struct AuditKeys {
    keys: Vec<(u32, [u8; KEY_LEN])>,
}

impl std::fmt::Debug for AuditKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<u32> = self.keys.iter().map(|(id, _)| *id).collect();
        f.debug_struct("AuditKeys").field("ids", &ids).finish()
    }
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}

fn random_key() -> [u8; KEY_LEN] {
    use rand::RngCore;
    let mut k = [0u8; KEY_LEN];
    rand::rng().fill_bytes(&mut k);
    k
}

impl AuditKeys {
    /// One fresh key with id 1 (tests and the first start).
    pub fn generate() -> AuditKeys {
        AuditKeys {
            keys: vec![(1, random_key())],
        }
    }

    /// The key that signs new records, with its id.
    pub fn current(&self) -> (u32, &[u8; KEY_LEN]) {
        let (id, k) = self.keys.last().expect("at least one key");
        (*id, k)
    }

    /// The key with this id.
    pub fn get(&self, id: u32) -> Option<&[u8; KEY_LEN]> {
        self.keys.iter().find(|(i, _)| *i == id).map(|(_, k)| k)
    }

    /// HMAC-SHA256 of `parts` under key `id` (`None`: no such key).
    pub fn mac(&self, id: u32, parts: &[&[u8]]) -> Option<[u8; 32]> {
        let key = self.get(id)?;
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
        for p in parts {
            m.update(p);
        }
        Some(m.finalize().into_bytes().into())
    }

    /// Parses a key file.
    pub fn parse(text: &str) -> Result<AuditKeys, String> {
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: &str| format!("line {}: {why}", n + 1);
            let (id, key) = line
                .split_once(' ')
                .ok_or_else(|| bad("expected `<id> <base64url key>`"))?;
            let id: u32 = id
                .parse()
                .ok()
                .filter(|i| *i > 0)
                .ok_or_else(|| bad("the id must be a positive integer"))?;
            let key: [u8; KEY_LEN] = b64()
                .decode(key.trim())
                .ok()
                .and_then(|k| k.try_into().ok())
                .ok_or_else(|| bad("the key must be 32 bytes, base64url without padding"))?;
            if keys.iter().any(|(i, _)| *i == id) {
                return Err(bad("duplicate key id"));
            }
            keys.push((id, key));
        }
        if keys.is_empty() {
            return Err("no key in the file".into());
        }
        Ok(AuditKeys { keys })
    }

    fn render(&self) -> String {
        let mut out = String::from(
            "# forgeline audit MAC keys: <id> <base64url key>, newest last (keep every line)\n",
        );
        for (id, k) in &self.keys {
            out.push_str(&format!("{id} {}\n", b64().encode(k)));
        }
        out
    }

    /// Reads the key file (`None` when it does not exist).
    pub fn load(path: &Path) -> Result<Option<AuditKeys>, KeyError> {
        match std::fs::read_to_string(path) {
            Ok(text) => AuditKeys::parse(&text)
                .map(Some)
                .map_err(|e| KeyError::Invalid(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(KeyError::Io {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Reads the key file, writing a new one (mode 0600) when there is none.
    /// Returns the keys and whether they were just generated.
    pub fn load_or_create(path: &Path) -> Result<(AuditKeys, bool), KeyError> {
        if let Some(k) = AuditKeys::load(path)? {
            return Ok((k, false));
        }
        let k = AuditKeys::generate();
        write_private(path, k.render().as_bytes())?;
        Ok((k, true))
    }

    /// Adds a new key to the file, which signs from the next start on.
    /// Returns its id.
    pub fn rotate(path: &Path) -> Result<u32, KeyError> {
        let mut k = AuditKeys::load(path)?
            .ok_or_else(|| KeyError::Invalid(format!("no audit key file at {}", path.display())))?;
        let id = k.keys.iter().map(|(i, _)| *i).max().unwrap_or(0) + 1;
        k.keys.push((id, random_key()));
        let tmp = path.with_extension("new");
        let _ = std::fs::remove_file(&tmp);
        write_private(&tmp, k.render().as_bytes())?;
        std::fs::rename(&tmp, path).map_err(|source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(id)
    }
}

/// Where the audit keys are: `audit.key_file`, else `<data_dir>/audit-key`.
pub fn key_path(config: &Config) -> PathBuf {
    if config.audit.key_file.as_os_str().is_empty() {
        config.store.data_dir.join("audit-key")
    } else {
        config.audit.key_file.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_round_trips_and_rotation_keeps_old_keys() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("audit-key");
        let (k, created) = AuditKeys::load_or_create(&p).unwrap();
        assert!(created);
        assert_eq!(k.current().0, 1);
        let (again, created) = AuditKeys::load_or_create(&p).unwrap();
        assert!(!created);
        assert_eq!(again.current().1, k.current().1);
        assert_eq!(AuditKeys::rotate(&p).unwrap(), 2);
        let rotated = AuditKeys::load(&p).unwrap().unwrap();
        assert_eq!(rotated.current().0, 2);
        assert_eq!(rotated.get(1), k.get(1));
        assert_ne!(rotated.mac(1, &[b"x"]), rotated.mac(2, &[b"x"]));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_bad_key_file_is_refused_with_the_line() {
        for (text, want) in [
            ("", "no key"),
            ("1", "line 1"),
            ("0 AAAA", "positive"),
            ("1 AAAA", "32 bytes"),
        ] {
            let e = AuditKeys::parse(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
