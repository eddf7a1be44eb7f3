//! The audit log: one record per mutating request, auth failure and review
//! decision, hash-chained so that an edited, missing or reordered record is
//! found by `verify`.
//!
//! Record n stores `prev_hash` (record n−1's hash) and its own `hash`, the
//! SHA-256 of `prev_hash` followed by the record's fields (bincode). The head
//! (last seq and hash) is kept beside the records so a deleted tail is noticed
//! too. Pruning deletes the oldest records and moves the anchor (the seq and
//! hash of the last pruned record), from which verification starts.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::clock::Millis;
use crate::store::{keys, Record, Store, StoreError, Txn};

/// A stored audit record (`A` + seq).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the chain (1-based, contiguous).
    pub seq: u64,
    /// When.
    pub at: Millis,
    /// The request's id.
    pub request_id: String,
    /// Who (`anonymous` when unauthenticated).
    pub principal: String,
    /// Their roles.
    pub roles: Vec<String>,
    /// HTTP method (or `TIMER` for actions the server's clocks take by themselves).
    pub method: String,
    /// Route template.
    pub route: String,
    /// SHA-256 of the request body, when one was read.
    pub body_sha256: Option<[u8; 32]>,
    /// Response status.
    pub status: u16,
    /// Time to the response, in microseconds.
    pub latency_us: u64,
    /// Extra context: the auth failure reason, the decision…
    pub detail: Option<String>,
    /// The previous record's hash (the anchor's for the first).
    pub prev_hash: [u8; 32],
    /// This record's hash.
    pub hash: [u8; 32],
}

impl Record for AuditRecord {
    const VERSION: u8 = 1;
}

/// A record to append (the chain fields are filled in by [`append`]).
#[derive(Debug, Clone, Default)]
pub struct AuditDraft {
    /// When.
    pub at: Millis,
    /// The request's id.
    pub request_id: String,
    /// Who.
    pub principal: String,
    /// Their roles.
    pub roles: Vec<String>,
    /// Method.
    pub method: String,
    /// Route template.
    pub route: String,
    /// SHA-256 of the body.
    pub body_sha256: Option<[u8; 32]>,
    /// Status.
    pub status: u16,
    /// Latency (µs).
    pub latency_us: u64,
    /// Extra context.
    pub detail: Option<String>,
}

/// A position in the chain: the head (last record) or the anchor (last pruned).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainPoint {
    /// Sequence number.
    pub seq: u64,
    /// Hash of that record.
    pub hash: [u8; 32],
}

impl Record for ChainPoint {
    const VERSION: u8 = 1;
}

fn compute_hash(r: &AuditRecord) -> [u8; 32] {
    let fields = (
        r.seq,
        r.at,
        &r.request_id,
        &r.principal,
        &r.roles,
        &r.method,
        &r.route,
        r.body_sha256,
        r.status,
        r.latency_us,
        &r.detail,
    );
    let body =
        bincode::serde::encode_to_vec(fields, bincode::config::standard()).unwrap_or_default();
    let mut h = Sha256::new();
    h.update(r.prev_hash);
    h.update(&body);
    h.finalize().into()
}

/// Appends a record inside a write.
pub fn append(txn: &mut Txn<'_>, d: AuditDraft) -> Result<AuditRecord, StoreError> {
    let head = txn.get::<ChainPoint>(keys::AUDIT_HEAD)?;
    let anchor = txn.get::<ChainPoint>(keys::AUDIT_ANCHOR)?;
    let prev = head.or(anchor).unwrap_or_default();
    let mut r = AuditRecord {
        seq: prev.seq + 1,
        at: d.at,
        request_id: d.request_id,
        principal: d.principal,
        roles: d.roles,
        method: d.method,
        route: d.route,
        body_sha256: d.body_sha256,
        status: d.status,
        latency_us: d.latency_us,
        detail: d.detail,
        prev_hash: prev.hash,
        hash: [0; 32],
    };
    r.hash = compute_hash(&r);
    txn.put(keys::audit(r.seq), &r)?;
    txn.put(
        keys::AUDIT_HEAD.to_vec(),
        &ChainPoint {
            seq: r.seq,
            hash: r.hash,
        },
    )?;
    Ok(r)
}

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
    /// Records checked.
    pub checked: u64,
    /// The anchor verification started from (0 when nothing was pruned).
    pub anchor_seq: u64,
    /// The last record's seq.
    pub head_seq: u64,
    /// The first broken link.
    pub broken: Option<BrokenLink>,
}

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
    let mut expected = anchor.seq + 1;
    let mut prev = anchor.hash;
    let mut after: Option<Vec<u8>> = None;
    let fail = |report: &mut VerifyReport, seq: u64, reason: String| {
        report.ok = false;
        report.broken = Some(BrokenLink { seq, reason });
    };
    loop {
        let batch = store.raw_range(&[keys::AUDIT], after.as_deref(), 1000)?;
        if batch.is_empty() {
            break;
        }
        for (k, v) in &batch {
            let key_seq = keys::parse_audit(k).unwrap_or(0);
            if key_seq != expected {
                let reason = if key_seq > expected {
                    format!("record {expected} is missing (next stored record is {key_seq})")
                } else {
                    format!("unexpected record key {key_seq}")
                };
                fail(&mut report, expected, reason);
                return Ok(report);
            }
            let r: AuditRecord = match crate::store::decode(v) {
                Ok(r) => r,
                Err(e) => {
                    fail(
                        &mut report,
                        key_seq,
                        format!("record {key_seq} does not decode: {e}"),
                    );
                    return Ok(report);
                }
            };
            if r.seq != key_seq {
                fail(
                    &mut report,
                    key_seq,
                    format!(
                        "position {key_seq} holds record {}: records were moved or reordered",
                        r.seq
                    ),
                );
                return Ok(report);
            }
            if r.prev_hash != prev {
                fail(
                    &mut report,
                    key_seq,
                    format!("record {key_seq} does not link to record {}", key_seq - 1),
                );
                return Ok(report);
            }
            if compute_hash(&r) != r.hash {
                fail(
                    &mut report,
                    key_seq,
                    format!("record {key_seq} was modified (its hash does not match its contents)"),
                );
                return Ok(report);
            }
            prev = r.hash;
            expected += 1;
            report.checked += 1;
        }
        after = batch.last().map(|(k, _)| k.to_vec());
    }
    let last = expected - 1;
    match head {
        Some(h) if h.seq != last || (last > anchor.seq && h.hash != prev) => {
            fail(&mut report, last + 1, format!("the chain head says record {} but the log ends at {last}: records were deleted", h.seq));
        }
        None if last > anchor.seq => {
            fail(&mut report, last, "the chain head is missing".into());
        }
        _ => {}
    }
    Ok(report)
}

/// Filters for listing.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only this principal.
    pub principal: Option<String>,
    /// Only this route template.
    pub route: Option<String>,
    /// At or after.
    pub since: Option<Millis>,
    /// Before.
    pub until: Option<Millis>,
}

/// Most records one list page examines.
pub const LIST_SCAN_BUDGET: usize = 10_000;

/// Records newest first, before `cursor` (a seq), at most `limit`; returns
/// the next cursor.
pub fn list(
    store: &Store,
    f: &AuditFilter,
    cursor: Option<u64>,
    limit: usize,
) -> Result<(Vec<AuditRecord>, Option<u64>), StoreError> {
    let mut out = Vec::new();
    let mut before = cursor.map(keys::audit);
    let mut scanned = 0;
    loop {
        let batch = store.scan_rev::<AuditRecord>(&[keys::AUDIT], before.as_deref(), 256)?;
        let exhausted = batch.len() < 256;
        for (k, r) in batch {
            scanned += 1;
            before = Some(k.to_vec());
            if f.since.is_some_and(|s| r.at < s) {
                return Ok((out, None)); // newest first: everything further is older
            }
            let keep = f.principal.as_deref().is_none_or(|p| r.principal == p)
                && f.route.as_deref().is_none_or(|x| r.route == x)
                && f.until.is_none_or(|u| r.at < u);
            let seq = r.seq;
            if keep {
                out.push(r);
                if out.len() == limit {
                    return Ok((out, Some(seq)));
                }
            }
            if scanned >= LIST_SCAN_BUDGET {
                return Ok((out, Some(seq)));
            }
        }
        if exhausted {
            return Ok((out, None));
        }
    }
}

/// Deletes records older than `older_than` or beyond the newest `keep`
/// (whichever removes more) and moves the anchor. Returns how many went.
pub fn prune(
    store: &Store,
    older_than: Option<Millis>,
    keep: Option<u64>,
) -> Result<(u64, Option<crate::store::Commit>), StoreError> {
    let head = store
        .get::<ChainPoint>(keys::AUDIT_HEAD)?
        .unwrap_or_default();
    let mut pruned = 0;
    let mut last_commit = None;
    loop {
        let batch = store.scan::<AuditRecord>(&[keys::AUDIT], None, 500)?;
        let mut doomed = Vec::new();
        for (_, r) in &batch {
            let too_old = older_than.is_some_and(|t| r.at < t);
            let too_many = keep.is_some_and(|k| head.seq.saturating_sub(r.seq) >= k);
            if !(too_old || too_many) {
                break;
            }
            doomed.push((r.seq, r.hash));
        }
        let Some(&(seq, hash)) = doomed.last() else {
            return Ok((pruned, last_commit));
        };
        let ((), c) = store.write(|txn| {
            for (s, _) in &doomed {
                txn.delete(keys::audit(*s));
            }
            txn.put(keys::AUDIT_ANCHOR.to_vec(), &ChainPoint { seq, hash })
        })?;
        pruned += doomed.len() as u64;
        last_commit = Some(c);
        if doomed.len() < batch.len() || batch.len() < 500 {
            return Ok((pruned, last_commit));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Durability;

    fn draft(n: u64) -> AuditDraft {
        AuditDraft {
            at: 1_000 + n,
            request_id: format!("r{n}"),
            principal: "alice".into(),
            roles: vec!["submitter".into()],
            method: "POST".into(),
            route: "/api/v1/tasks".into(),
            body_sha256: Some([n as u8; 32]),
            status: 201,
            latency_us: 10,
            detail: None,
        }
    }

    fn store_with(n: u64) -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path(), Durability::Relaxed).unwrap();
        for i in 1..=n {
            let _ = s.write(|t| append(t, draft(i)).map(drop)).unwrap();
        }
        (d, s)
    }

    fn tamper(s: &Store, f: impl FnOnce(&mut Txn<'_>) -> Result<(), StoreError>) {
        let _ = s.write(f).unwrap();
    }

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

    #[test]
    fn listing_filters_and_pages_newest_first() {
        let (_d, s) = store_with(7);
        let (page, next) = list(&s, &AuditFilter::default(), None, 3).unwrap();
        assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), [7, 6, 5]);
        let (page, _) = list(&s, &AuditFilter::default(), next, 3).unwrap();
        assert_eq!(page[0].seq, 4);
        let f = AuditFilter {
            since: Some(1_005),
            ..Default::default()
        };
        let (page, next) = list(&s, &f, None, 100).unwrap();
        assert_eq!(page.len(), 3);
        assert_eq!(next, None);
    }
}
