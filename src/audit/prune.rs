//! Pruning the audit log: delete the oldest records by age or count, in
//! batches, and move the anchor so the rest still verifies.

use crate::clock::Millis;
use crate::store::{keys, Commit, Store, StoreError};

use super::chain::{AuditRecord, ChainPoint};

/// Records examined (and at most deleted) per write.
const PRUNE_BATCH: usize = 500;

/// Deletes records older than `older_than` or beyond the newest `keep`
/// (whichever removes more) and moves the anchor. Returns how many went.
pub fn prune(
    store: &Store,
    older_than: Option<Millis>,
    keep: Option<u64>,
) -> Result<(u64, Option<Commit>), StoreError> {
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
            doomed.push((r.seq, r.hash));
        }
        let Some(&(seq, hash)) = doomed.last() else {
            return Ok((pruned, last_commit));
        };
        // The deletions and the new anchor go in one batch, so the log always
        // verifies from its anchor.
        let ((), c) = store.write(|txn| {
            for (s, _) in &doomed {
                txn.delete(keys::audit(*s));
            }
            txn.put(keys::AUDIT_ANCHOR.to_vec(), &ChainPoint { seq, hash })
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
    use crate::audit::fixtures::{draft, store_with, tamper};
    use crate::audit::verify::verify;

    #[test]
    fn pruning_keeps_the_rest_verifiable_and_appends_continue_the_chain() {
        let (_d, s) = store_with(10);
        let (n, _) = prune(&s, Some(1_004), None).unwrap();
        assert_eq!(n, 3, "records at 1001..=1003 are older than 1004");
        let (n, _) = prune(&s, None, Some(5)).unwrap();
        assert_eq!(n, 2);
        let r = verify(&s).unwrap();
        assert!(r.ok, "{r:?}");
        assert_eq!((r.anchor_seq, r.checked), (5, 5));
        let _ = s.write(|t| append(t, draft(11)).map(drop)).unwrap();
        assert!(verify(&s).unwrap().ok);
        // Tampering with the first record after the anchor is still caught.
        tamper(&s, |t| {
            let mut r: AuditRecord = t.get(&keys::audit(6))?.unwrap();
            r.status = 500;
            t.put(keys::audit(6), &r)
        });
        assert_eq!(verify(&s).unwrap().broken.unwrap().seq, 6);
    }
}
