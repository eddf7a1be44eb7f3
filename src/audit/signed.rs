//! The chain's points: the head, and the signed ones: the anchor a prune leaves (the last pruned
//! record and the retention rule that pruned it) and the seal written when
//! the log first got a MAC key (the head and anchor at that moment, so the
//! records written before keys are bound by a MAC too).

use serde::{Deserialize, Serialize};

use super::key::AuditKeys;
use crate::clock::Millis;
use crate::store::{keys, CodecError, Commit, Record, Store, StoreError};

/// A position in the chain: the head (the last record), or where an anchor
/// or the seal points.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainPoint {
    /// The seq of the record it marks (0, with a zero hash, before any).
    pub seq: u64,
    /// Hash of that record.
    pub hash: [u8; 32],
}

impl Record for ChainPoint {
    const VERSION: u8 = 1;
}

/// The anchor: where verification starts after a prune.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    /// The last pruned record's seq.
    pub seq: u64,
    /// Its hash (the next record's `prev_hash`).
    pub hash: [u8; 32],
    /// When that record was written.
    pub record_at: Millis,
    /// When the prune ran.
    pub pruned_at: Millis,
    /// The head's seq when the prune ran.
    pub head_seq: u64,
    /// The rule applied: `audit.max_age` in ms (0: none).
    pub max_age_ms: u64,
    /// The rule applied: `audit.max_records` (0: none).
    pub max_records: u64,
    /// The key that signed it (0: an anchor from before keys, unsigned).
    pub key_id: u32,
    /// HMAC-SHA256 of the fields above.
    pub mac: [u8; 32],
}

impl Record for Anchor {
    const VERSION: u8 = 2;

    fn decode_old(version: u8, body: &[u8]) -> Result<Self, CodecError> {
        match version {
            // Version 1 was a bare ChainPoint.
            1 => {
                let (p, _): (ChainPoint, _) =
                    bincode::serde::decode_from_slice(body, bincode::config::standard())?;
                Ok(Anchor {
                    seq: p.seq,
                    hash: p.hash,
                    ..Anchor::default()
                })
            }
            v => Err(CodecError::UnknownVersion(v)),
        }
    }
}

fn message(tag: &[u8], fields: impl Serialize) -> Vec<u8> {
    let mut m = tag.to_vec();
    m.extend(
        bincode::serde::encode_to_vec(fields, bincode::config::standard()).unwrap_or_default(),
    );
    m
}

impl Anchor {
    /// The seq and hash the next record links to.
    pub fn point(&self) -> ChainPoint {
        ChainPoint {
            seq: self.seq,
            hash: self.hash,
        }
    }

    fn message(&self) -> Vec<u8> {
        message(
            b"forgeline.audit.anchor.v2",
            (
                self.seq,
                self.hash,
                self.record_at,
                self.pruned_at,
                self.head_seq,
                self.max_age_ms,
                self.max_records,
                self.key_id,
            ),
        )
    }

    /// Signs it with the current key.
    pub fn sign(mut self, keys: &AuditKeys) -> Anchor {
        self.key_id = keys.current().0;
        self.mac = keys
            .mac(self.key_id, &[&self.message()])
            .expect("current key");
        self
    }

    /// Whether the MAC holds (`None`: unsigned, or the key is not held).
    pub fn signature_ok(&self, keys: &AuditKeys) -> Option<bool> {
        if self.key_id == 0 {
            return None;
        }
        keys.mac(self.key_id, &[&self.message()])
            .map(|m| m == self.mac)
    }

    /// Why the rule the anchor states could not have pruned its record
    /// (`None`: it could have).
    pub fn rule_violation(&self, now: Millis) -> Option<String> {
        let by_age = self.max_age_ms > 0 && self.record_at + self.max_age_ms <= self.pruned_at;
        let by_count =
            self.max_records > 0 && self.head_seq.saturating_sub(self.seq) >= self.max_records;
        if self.pruned_at > now + 300_000 {
            return Some(format!(
                "the anchor says it was pruned at {} ms, in the future",
                self.pruned_at
            ));
        }
        (!by_age && !by_count).then(|| {
            format!(
                "the anchor's rule (max_age {} ms, max_records {}) could not have pruned record {} \
                 (written at {} ms, pruned at {} ms with the head at {})",
                self.max_age_ms,
                self.max_records,
                self.seq,
                self.record_at,
                self.pruned_at,
                self.head_seq
            )
        })
    }
}

/// The seal: the head and the anchor when the log first got a MAC key.
/// Records up to `seq` may be unkeyed (they were written before); every
/// later record must be signed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seal {
    /// The head's seq then (0: the log was empty).
    pub seq: u64,
    /// The head's hash then.
    pub hash: [u8; 32],
    /// The anchor's seq then.
    pub anchor_seq: u64,
    /// The anchor's hash then.
    pub anchor_hash: [u8; 32],
    /// The key that signed it.
    pub key_id: u32,
    /// HMAC-SHA256 of the fields above.
    pub mac: [u8; 32],
}

impl Record for Seal {
    const VERSION: u8 = 1;
}

impl Seal {
    fn message(&self) -> Vec<u8> {
        message(
            b"forgeline.audit.seal.v1",
            (
                self.seq,
                self.hash,
                self.anchor_seq,
                self.anchor_hash,
                self.key_id,
            ),
        )
    }

    /// Whether the MAC holds (`None`: the key is not held).
    pub fn signature_ok(&self, keys: &AuditKeys) -> Option<bool> {
        keys.mac(self.key_id, &[&self.message()])
            .map(|m| m == self.mac)
    }
}

/// Writes the seal if the log has none (the first start with a key). Returns
/// it, with the commit to wait for, when it was just written.
pub fn seal(store: &Store, keys: &AuditKeys) -> Result<Option<(Seal, Commit)>, StoreError> {
    if store.get::<Seal>(keys::AUDIT_SEAL)?.is_some() {
        return Ok(None);
    }
    let anchor = store.get::<Anchor>(keys::AUDIT_ANCHOR)?.unwrap_or_default();
    let head = store
        .get::<ChainPoint>(keys::AUDIT_HEAD)?
        .unwrap_or(anchor.point());
    let mut s = Seal {
        seq: head.seq,
        hash: head.hash,
        anchor_seq: anchor.seq,
        anchor_hash: anchor.hash,
        key_id: keys.current().0,
        mac: [0; 32],
    };
    s.mac = keys.mac(s.key_id, &[&s.message()]).expect("current key");
    let ((), c) = store.write_in_reserve(|t| t.put(keys::AUDIT_SEAL.to_vec(), &s))?;
    Ok(Some((s, c)))
}
