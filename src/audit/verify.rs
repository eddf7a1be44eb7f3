//! Verifying the chain: walk every record from the anchor, check each link
//! (position, decoding, seq, previous hash, own hash), then check the head
//! against where the log ends; report the first broken link.

use serde::Serialize;

use crate::store::{keys, Store, StoreError};

use super::chain::{compute_hash, AuditRecord, ChainPoint};

/// The first broken link found by [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokenLink {
    /// The sequence number where the chain breaks.
    pub seq: u64,
    /// What is wrong there.
    pub reason: String,
}

/// The result of walking the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// The chain is intact.
    pub ok: bool,
    /// Records that verified, from the anchor on (pruned ones are not counted).
    pub checked: u64,
    /// The anchor verification started from (0 when nothing was pruned).
    pub anchor_seq: u64,
    /// The last record's seq.
    pub head_seq: u64,
    /// The first broken link.
    pub broken: Option<BrokenLink>,
}

impl VerifyReport {
    fn fail(&mut self, broken: BrokenLink) {
        self.ok = false;
        self.broken = Some(broken);
    }
}

/// Records read from the store per round of the walk.
const VERIFY_BATCH: usize = 1000;

/// Walks the whole chain from the anchor and reports the first broken link.
pub fn verify(store: &Store) -> Result<VerifyReport, StoreError> {
    let anchor = store
        .get::<ChainPoint>(keys::AUDIT_ANCHOR)?
        .unwrap_or_default();
    let head = store.get::<ChainPoint>(keys::AUDIT_HEAD)?;
    let mut report = VerifyReport {
        ok: true,
        checked: 0,
        anchor_seq: anchor.seq,
        head_seq: head.map(|h| h.seq).unwrap_or(anchor.seq),
        broken: None,
    };
    let mut walk = Walk {
        expected: anchor.seq + 1,
        prev: anchor.hash,
    };
    let mut after: Option<Vec<u8>> = None;
    loop {
        let batch = store.raw_range(&[keys::AUDIT], after.as_deref(), VERIFY_BATCH)?;
        if batch.is_empty() {
            break;
        }
        for (k, v) in &batch {
            if let Err(broken) = walk.step(k, v) {
                report.fail(broken);
                return Ok(report);
            }
            report.checked += 1;
        }
        after = batch.last().map(|(k, _)| k.to_vec());
    }
    if let Some(broken) = check_head(head, anchor, &walk) {
        report.fail(broken);
    }
    Ok(report)
}

/// Where the walk is: the seq the next stored record must have, and the hash
/// it must link to.
struct Walk {
    expected: u64,
    prev: [u8; 32],
}

impl Walk {
    /// Checks the stored record `value` under `key` and advances past it.
    fn step(&mut self, key: &[u8], value: &[u8]) -> Result<(), BrokenLink> {
        let key_seq = keys::parse_audit(key).unwrap_or(0);
        if key_seq != self.expected {
            let reason = if key_seq > self.expected {
                format!(
                    "record {} is missing (next stored record is {key_seq})",
                    self.expected
                )
            } else {
                format!("unexpected record key {key_seq}")
            };
            return Err(BrokenLink {
                seq: self.expected,
                reason,
            });
        }
        // Decoded here rather than by a typed scan: an undecodable record is
        // a finding to report, not a store error.
        let r: AuditRecord = crate::store::decode(value).map_err(|e| BrokenLink {
            seq: key_seq,
            reason: format!("record {key_seq} does not decode: {e}"),
        })?;
        check_link(&r, key_seq, self.prev)?;
        self.prev = r.hash;
        self.expected += 1;
        Ok(())
    }
}

/// Checks a decoded record found at position `key_seq` whose predecessor's
/// hash is `prev`.
fn check_link(r: &AuditRecord, key_seq: u64, prev: [u8; 32]) -> Result<(), BrokenLink> {
    let broken = |reason: String| {
        Err(BrokenLink {
            seq: key_seq,
            reason,
        })
    };
    if r.seq != key_seq {
        return broken(format!(
            "position {key_seq} holds record {}: records were moved or reordered",
            r.seq
        ));
    }
    if r.prev_hash != prev {
        return broken(format!(
            "record {key_seq} does not link to record {}",
            key_seq - 1
        ));
    }
    if compute_hash(r) != r.hash {
        return broken(format!(
            "record {key_seq} was modified (its hash does not match its contents)"
        ));
    }
    Ok(())
}

/// Checks the stored head against where the walk ended, which catches a
/// deleted tail (the records themselves would still link).
fn check_head(head: Option<ChainPoint>, anchor: ChainPoint, walk: &Walk) -> Option<BrokenLink> {
    let last = walk.expected - 1;
    match head {
        Some(h) if h.seq != last || (last > anchor.seq && h.hash != walk.prev) => {
            Some(BrokenLink {
                seq: last + 1,
                reason: format!(
                    "the chain head says record {} but the log ends at {last}: records were deleted",
                    h.seq
                ),
            })
        }
        None if last > anchor.seq => Some(BrokenLink {
            seq: last,
            reason: "the chain head is missing".into(),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::fixtures::{store_with, tamper};

    #[test]
    fn an_untouched_chain_verifies() {
        let (_d, s) = store_with(5);
        let r = verify(&s).unwrap();
        assert!(r.ok, "{r:?}");
        assert_eq!((r.checked, r.head_seq), (5, 5));
    }

    #[test]
    fn an_edited_record_is_found() {
        let (_d, s) = store_with(5);
        tamper(&s, |t| {
            let mut r: AuditRecord = t.get(&keys::audit(3))?.unwrap();
            r.status = 200;
            t.put(keys::audit(3), &r)
        });
        let r = verify(&s).unwrap();
        assert_eq!(r.broken.unwrap().seq, 3);
    }

    #[test]
    fn an_edit_that_also_rehashes_breaks_the_next_link() {
        let (_d, s) = store_with(5);
        tamper(&s, |t| {
            let mut r: AuditRecord = t.get(&keys::audit(2))?.unwrap();
            r.principal = "mallory".into();
            r.hash = compute_hash(&r);
            t.put(keys::audit(2), &r)
        });
        assert_eq!(verify(&s).unwrap().broken.unwrap().seq, 3);
    }

    #[test]
    fn a_deleted_record_is_found_in_the_middle_and_at_the_end() {
        let (_d, s) = store_with(5);
        tamper(&s, |t| {
            t.delete(keys::audit(4));
            Ok(())
        });
        let b = verify(&s).unwrap().broken.unwrap();
        assert_eq!(b.seq, 4, "{}", b.reason);
        let (_d2, s2) = store_with(5);
        tamper(&s2, |t| {
            t.delete(keys::audit(5));
            Ok(())
        });
        let b = verify(&s2).unwrap().broken.unwrap();
        assert!(b.reason.contains("deleted"), "{}", b.reason);
    }

    #[test]
    fn reordered_records_are_found() {
        let (_d, s) = store_with(5);
        tamper(&s, |t| {
            let a: AuditRecord = t.get(&keys::audit(2))?.unwrap();
            let b: AuditRecord = t.get(&keys::audit(3))?.unwrap();
            t.put(keys::audit(2), &b)?;
            t.put(keys::audit(3), &a)
        });
        let b = verify(&s).unwrap().broken.unwrap();
        assert_eq!(b.seq, 2);
        assert!(b.reason.contains("reordered"), "{}", b.reason);
    }
}
