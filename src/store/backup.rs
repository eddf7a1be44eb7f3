//! The backup file: a consistent copy of the data tree (from a [`Snapshot`])
//! and a few files beside it, versioned and checksummed.
//!
//! ```text
//! "FORGELINE-BACKUP\n"
//! u32 header length, header (JSON: format, schema_version, created_at, …)
//! frames: u8 kind (1: data-tree key/value, 2: file name/contents),
//!         u32 key length, key, u32 value length, value
//! u8 0xFF, u64 frame count, SHA-256 of every byte before it
//! ```
//!
//! All integers are big-endian. Restoring checks the magic, the format and
//! schema versions, the frame count and the digest, and writes into an empty
//! directory only; a damaged file leaves nothing behind.

use std::io::{Read, Write};
use std::path::Path;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::db::Store;
use super::error::{sled_err, StoreError};
use super::schema::SCHEMA_VERSION;
use super::snapshot::Snapshot;
use super::StoreOptions;

const MAGIC: &[u8] = b"FORGELINE-BACKUP\n";
/// The backup format this build writes and reads.
pub const BACKUP_FORMAT: u64 = 1;
const DATA: u8 = 1;
const FILE: u8 = 2;
const END: u8 = 0xFF;
/// Keys written per sled batch when restoring.
const RESTORE_BATCH: usize = 4096;

fn bad(msg: impl Into<String>) -> StoreError {
    StoreError::Backup(msg.into())
}

/// A writer that hashes what passes through it.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn frame(w: &mut impl Write, kind: u8, key: &[u8], value: &[u8]) -> std::io::Result<()> {
    w.write_all(&[kind])?;
    w.write_all(&(key.len() as u32).to_be_bytes())?;
    w.write_all(key)?;
    w.write_all(&(value.len() as u32).to_be_bytes())?;
    w.write_all(value)
}

/// Writes a backup of `snapshot` to `out`: `header` (merged with the format
/// and schema version), every key and value, then `files` (name, contents).
/// Returns the number of frames.
pub fn write_backup(
    snapshot: &Snapshot,
    mut header: Value,
    files: &[(String, Vec<u8>)],
    out: impl Write,
) -> Result<u64, StoreError> {
    let io = |e: std::io::Error| bad(format!("writing: {e}"));
    let mut w = Hashing {
        inner: out,
        hash: Sha256::new(),
    };
    header["format"] = BACKUP_FORMAT.into();
    header["schema_version"] = SCHEMA_VERSION.into();
    let head = serde_json::to_vec(&header).map_err(|e| bad(e.to_string()))?;
    w.write_all(MAGIC).map_err(io)?;
    w.write_all(&(head.len() as u32).to_be_bytes())
        .map_err(io)?;
    w.write_all(&head).map_err(io)?;
    let mut n = snapshot.for_each(|k, v| frame(&mut w, DATA, k, v))?;
    for (name, bytes) in files {
        frame(&mut w, FILE, name.as_bytes(), bytes).map_err(io)?;
        n += 1;
    }
    w.write_all(&[END]).map_err(io)?;
    w.write_all(&n.to_be_bytes()).map_err(io)?;
    let digest = w.hash.clone().finalize();
    w.inner.write_all(&digest).map_err(io)?;
    w.inner.flush().map_err(io)?;
    Ok(n)
}

/// A reader that hashes what passes through it.
struct Reading<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Reading<R> {
    fn exact(&mut self, n: usize) -> Result<Vec<u8>, StoreError> {
        let mut buf = vec![0; n];
        self.inner
            .read_exact(&mut buf)
            .map_err(|e| bad(format!("the file ends early or cannot be read ({e})")))?;
        self.hash.update(&buf);
        Ok(buf)
    }
    fn u32(&mut self) -> Result<usize, StoreError> {
        let b = self.exact(4)?;
        Ok(u32::from_be_bytes(b.try_into().unwrap_or_default()) as usize)
    }
}

/// What a restore wrote.
#[derive(Debug, Clone)]
pub struct Restored {
    /// The backup's header.
    pub header: Value,
    /// Data-tree keys written.
    pub keys: u64,
    /// Files written beside the store (name, contents).
    pub files: Vec<(String, Vec<u8>)>,
}

/// Restores a backup read from `input` into `dir`, which must not exist or
/// be empty. On any error the directory is removed again.
pub fn restore(input: impl Read, dir: &Path, opts: StoreOptions) -> Result<Restored, StoreError> {
    if dir.exists() && std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_some()) {
        return Err(bad(format!(
            "{} is not empty: restore writes into a new or empty directory only",
            dir.display()
        )));
    }
    let result = restore_into(input, dir, opts);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(dir);
    }
    result
}

fn restore_into(input: impl Read, dir: &Path, opts: StoreOptions) -> Result<Restored, StoreError> {
    let mut r = Reading {
        inner: std::io::BufReader::new(input),
        hash: Sha256::new(),
    };
    if r.exact(MAGIC.len())? != MAGIC {
        return Err(bad("not a forgeline backup (the magic line is missing)"));
    }
    let len = r.u32()?;
    let header: Value =
        serde_json::from_slice(&r.exact(len)?).map_err(|e| bad(format!("header: {e}")))?;
    if header["format"].as_u64() != Some(BACKUP_FORMAT) {
        return Err(bad(format!(
            "backup format {} is not {BACKUP_FORMAT}",
            header["format"]
        )));
    }
    match header["schema_version"].as_u64() {
        Some(v) if v <= u64::from(SCHEMA_VERSION) => {}
        v => {
            return Err(bad(format!(
                "store schema {v:?} is newer than this build's {SCHEMA_VERSION}"
            )))
        }
    }
    let store = Store::open_with(dir, opts)?;
    let (mut keys, mut frames, mut files) = (0u64, 0u64, Vec::new());
    let mut batch = sled::Batch::default();
    let mut in_batch = 0;
    loop {
        let kind = r.exact(1)?[0];
        if kind == END {
            break;
        }
        let klen = r.u32()?;
        let key = r.exact(klen)?;
        let vlen = r.u32()?;
        let value = r.exact(vlen)?;
        frames += 1;
        match kind {
            DATA => {
                batch.insert(key, value);
                keys += 1;
                in_batch += 1;
                if in_batch == RESTORE_BATCH {
                    store
                        .data()
                        .apply_batch(std::mem::take(&mut batch))
                        .map_err(sled_err("restoring"))?;
                    in_batch = 0;
                }
            }
            FILE => files.push((String::from_utf8_lossy(&key).into_owned(), value)),
            k => return Err(bad(format!("unknown frame kind {k}"))),
        }
    }
    let count = u64::from_be_bytes(r.exact(8)?.try_into().unwrap_or_default());
    let digest = r.hash.clone().finalize();
    let mut stored = [0u8; 32];
    r.inner
        .read_exact(&mut stored)
        .map_err(|_| bad("the checksum is missing (the file was cut short)"))?;
    if stored != digest.as_slice() {
        return Err(bad("the checksum does not match: the file is damaged"));
    }
    if count != frames {
        return Err(bad(format!("{frames} frames read, the file says {count}")));
    }
    store
        .data()
        .apply_batch(batch)
        .map_err(sled_err("restoring"))?;
    store.close()?;
    Ok(Restored {
        header,
        keys,
        files,
    })
}

impl Store {
    /// Opens a point-in-time snapshot for a backup, or `None` while another
    /// backup is running.
    pub fn snapshot(&self) -> Option<Snapshot> {
        Snapshot::open(self.snapshots(), self.data())
    }
}

#[cfg(test)]
mod tests {
    use crate::store::{Durability, Store, StoreError};

    fn put(s: &Store, k: &str, v: Option<&str>) {
        let (_, c) = s
            .write(|t| {
                match v {
                    Some(v) => t.put_raw(k.as_bytes().to_vec(), v.as_bytes()),
                    None => t.delete(k.as_bytes().to_vec()),
                }
                Ok::<_, StoreError>(())
            })
            .unwrap();
        // Relaxed: a round applies the write without a flush.
        futures_executor(s.wait_durable(c)).unwrap();
    }

    fn futures_executor<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn a_snapshot_sees_the_store_as_it_was_when_it_opened() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), Durability::Relaxed).unwrap();
        put(&s, "a", Some("1"));
        put(&s, "b", Some("2"));
        put(&s, "c", Some("3"));
        let snap = s.snapshot().unwrap();
        assert!(s.snapshot().is_none(), "one backup at a time");
        put(&s, "a", Some("changed")); // changed
        put(&s, "b", None); // deleted
        put(&s, "d", Some("4")); // created
        put(&s, "a", Some("again")); // changed twice: the first pre-image stays
        let mut seen = Vec::new();
        let n = snap
            .for_each(|k, v| {
                seen.push((
                    String::from_utf8_lossy(k).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                ));
                Ok(())
            })
            .unwrap();
        seen.sort();
        let want =
            [("a", "1"), ("b", "2"), ("c", "3")].map(|(k, v)| (k.to_string(), v.to_string()));
        assert_eq!(seen, want);
        assert_eq!(n, 3);
        drop(snap);
        assert!(s.snapshot().is_some(), "closed when dropped");
    }
}
