//! What the store holds: records and bytes by kind (one walk of the data
//! tree, in sled's order, without the write lock), the oldest record time of
//! the kinds whose keys carry one, sled's size on disk, and the data
//! directory's file system.

use std::collections::BTreeMap;

use super::db::Store;
use super::error::{sled_err, StoreError};
use super::keys;

/// One kind's figures.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KindUsage {
    /// Records (index entries are not records; for `index` and `other`
    /// every key counts).
    pub records: u64,
    /// Bytes of keys and values, index entries included.
    pub bytes: u64,
    /// The creation time of the oldest record, in ms, for kinds keyed by a
    /// ULID (tasks, runs, leases, tickets).
    pub oldest_ms: Option<u64>,
}

/// The data directory's file system.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Disk {
    /// Bytes available to an unprivileged writer.
    pub free: u64,
    /// The file system's size.
    pub size: u64,
}

/// Whether a key holds a record rather than an index entry.
fn is_record(key: &[u8]) -> bool {
    matches!(
        key.first(),
        Some(
            &(keys::TASK
                | keys::RUN
                | keys::LEASE
                | keys::EVENT
                | keys::IDEMPOTENCY
                | keys::TICKET
                | keys::GUARDRAIL
                | keys::WORKER
                | keys::AUDIT)
        )
    )
}

/// The time in a ULID-keyed record's key (`T`, `R`, `L`, `V`).
fn ulid_ms(key: &[u8]) -> Option<u64> {
    match key.first() {
        Some(&(keys::TASK | keys::RUN | keys::LEASE | keys::TICKET)) => {
            let id: [u8; keys::ID_LEN] = key.get(1..1 + keys::ID_LEN)?.try_into().ok()?;
            Some(ulid::Ulid::from_bytes(id).timestamp_ms())
        }
        _ => None,
    }
}

impl Store {
    /// Walks the data tree: records and bytes by kind. Writes of the last
    /// moment not yet applied to sled are not counted; keys are read in
    /// order, so the first ULID-keyed record of a kind is its oldest.
    pub fn usage(&self) -> Result<BTreeMap<&'static str, KindUsage>, StoreError> {
        let mut out: BTreeMap<&'static str, KindUsage> = BTreeMap::new();
        for kv in self.data().iter() {
            let (k, v) = kv.map_err(sled_err("walking the store"))?;
            let kind = keys::kind_of(&k);
            let u = out.entry(kind).or_default();
            if is_record(&k) || kind == "index" || kind == "other" {
                u.records += 1;
            }
            u.bytes += (k.len() + v.len()) as u64;
            if u.oldest_ms.is_none() {
                u.oldest_ms = ulid_ms(&k);
            }
        }
        Ok(out)
    }

    /// The data directory's file system, or `None` when it cannot be read.
    pub fn disk(&self) -> Option<Disk> {
        let s = rustix::fs::statvfs(self.dir()).ok()?;
        Some(Disk {
            free: s.f_bavail.saturating_mul(s.f_frsize),
            size: s.f_blocks.saturating_mul(s.f_frsize),
        })
    }
}
