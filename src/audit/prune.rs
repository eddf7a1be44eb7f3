//! Pruning the audit log: delete the oldest records by age or count, in
//! batches, and move the anchor — signed, with the rule that pruned — so the
//! rest still verifies and a prune the rule did not call for is refused.

use crate::clock::Millis;
use crate::store::{keys, Commit, Store, StoreError};

use super::chain::{AuditRecord, ChainPoint};
use super::key::AuditKeys;
use super::signed::Anchor;

/// A retention rule: `audit.max_age` and `audit.max_records` (0: none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Records older than this many ms are pruned (0: no age limit).
    pub max_age_ms: u64,
    /// At most this many records are kept (0: no count limit).
    pub max_records: u64,
}

/// Records examined (and at most deleted) per write.
const PRUNE_BATCH: usize = 500;

/// Deletes records older than the rule's age or beyond its newest count
/// (whichever removes more) and moves the anchor. Returns how many went.
pub fn prune(
    store: &Store,
    keys: &AuditKeys,
    rule: Retention,
    now: Millis,
) -> Result<(u64, Option<Commit>), StoreError> {
    let older_than = (rule.max_age_ms > 0).then(|| now.saturating_sub(rule.max_age_ms));
    let keep = (rule.max_records > 0).then_some(rule.max_records);
    let head = store
        .get::<ChainPoint>(keys::AUDIT_HEAD)?
        .unwrap_or_default();
    let mut pruned = 0;
    let mut last_commit = None;
    loop {
        let batch = store.scan::<AuditRecord>(&[keys::AUDIT], None, PRUNE_BATCH)?;
        let mut doomed = Vec::new();
        for (_, r) in &batch {
            let too_old = older_than.is_some_and(|t| r.at < t);
            let too_many = keep.is_some_and(|k| head.seq.saturating_sub(r.seq) >= k);
            // Records are in seq order: the first one to keep ends the prune.
            if !(too_old || too_many) {
                break;
            }
            doomed.push((r.seq, r.hash, r.at));
        }
        let Some(&(seq, hash, record_at)) = doomed.last() else {
            return Ok((pruned, last_commit));
        };
        let anchor = Anchor {
            seq,
            hash,
            record_at,
            pruned_at: now,
            head_seq: head.seq,
            max_age_ms: rule.max_age_ms,
            max_records: rule.max_records,
            ..Anchor::default()
        }
        .sign(keys);
        // The deletions and the new anchor go in one batch, so the log always
        // verifies from its anchor.
        let ((), c) = store.write(|txn| {
            for (s, _, _) in &doomed {
                txn.delete(keys::audit(*s));
            }
            txn.put(keys::AUDIT_ANCHOR.to_vec(), &anchor)
        })?;
        pruned += doomed.len() as u64;
        last_commit = Some(c);
        if doomed.len() < batch.len() || batch.len() < PRUNE_BATCH {
            return Ok((pruned, last_commit));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::chain::append;
    use crate::audit::fixtures::{check, draft, store_with, tamper, KEYS};

    #[test]
    fn pruning_keeps_the_rest_verifiable_and_appends_continue_the_chain() {
        let (_d, s) = store_with(10);
        let by_age = Retention {
            max_age_ms: 10,
            max_records: 0,
        };
        let (n, _) = prune(&s, &KEYS, by_age, 1_014).unwrap();
        assert_eq!(n, 3, "records at 1001..=1003 are older than 1004");
        let by_count = Retention {
            max_age_ms: 0,
            max_records: 5,
        };
        let (n, _) = prune(&s, &KEYS, by_count, 1_014).unwrap();
        assert_eq!(n, 2);
        let r = check(&s);
        assert!(r.ok, "{r:?}");
        assert_eq!((r.anchor_seq, r.checked), (5, 5));
        let _ = s.write(|t| append(t, &KEYS, draft(11)).map(drop)).unwrap();
        assert!(check(&s).ok);
        // Tampering with the first record after the anchor is still caught.
        tamper(&s, |t| {
            let mut r: AuditRecord = t.get(&keys::audit(6))?.unwrap();
            r.status = 500;
            t.put(keys::audit(6), &r)
        });
        assert_eq!(check(&s).broken.unwrap().seq, 6);
    }
}
