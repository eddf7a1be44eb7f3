//! Verifying the chain: check the seal and the anchor, walk every record from
//! the anchor (position, decoding, seq, previous hash, MAC), then check the
//! head against where the log ends and, when given, against a head saved
//! outside the store; report the first broken link.
//!
//! Without the keys only the structure is checked (positions, links, the
//! unkeyed hashes of records from before keys): an attacker who can write the
//! store can rewrite it consistently. With the keys a rewritten, forged or
//! re-signed-without-the-key record, a forged anchor and a downgrade to
//! unkeyed records are found. Only a saved head finds a cut tail or, for an
//! attacker who also holds the key, a rewrite up to that head.

use serde::Serialize;

use crate::clock::Millis;
use crate::store::{keys, Store, StoreError};

use super::chain::{compute_hash, AuditRecord, ChainPoint};
use super::key::AuditKeys;
use super::signed::{Anchor, Seal};

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
    /// The last record's hash (hex): with `head_seq`, what to save outside
    /// the store and pass back as `--expect-head SEQ:HASH`.
    pub head_hash: String,
    /// The MACs were checked (the keys were at hand).
    pub keyed: bool,
    /// A saved head was given and compared (false when none was, or when it
    /// predates the anchor).
    pub expected_head_checked: bool,
    /// The first broken link.
    pub broken: Option<BrokenLink>,
}

/// What to verify against.
#[derive(Debug, Clone, Copy, Default)]
pub struct VerifyWith<'a> {
    /// The MAC keys (`None`: structure only).
    pub keys: Option<&'a AuditKeys>,
    /// A head saved earlier (`forgeline audit head`).
    pub expect_head: Option<ChainPoint>,
    /// Now, to refuse an anchor from the future.
    pub now: Millis,
}

/// Parses `SEQ:HASH` (the hash as 64 hex digits).
pub fn parse_head(s: &str) -> Result<ChainPoint, String> {
    let (seq, hash) = s
        .split_once(':')
        .ok_or_else(|| format!("expected SEQ:HASH, got {s:?}"))?;
    let seq = seq
        .parse()
        .map_err(|_| format!("{seq:?} is not a record number"))?;
    let hash = hex::decode(hash)
        .ok()
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| format!("{hash:?} is not a hash (64 hex digits)"))?;
    Ok(ChainPoint { seq, hash })
}

/// Records read from the store per round of the walk.
const VERIFY_BATCH: usize = 1000;

fn broken(seq: u64, reason: impl Into<String>) -> BrokenLink {
    BrokenLink {
        seq,
        reason: reason.into(),
    }
}

/// Walks the whole chain from the anchor and reports the first broken link.
pub fn verify(store: &Store, with: VerifyWith<'_>) -> Result<VerifyReport, StoreError> {
    let anchor = store.get::<Anchor>(keys::AUDIT_ANCHOR)?.unwrap_or_default();
    let head = store.get::<ChainPoint>(keys::AUDIT_HEAD)?;
    let seal = store.get::<Seal>(keys::AUDIT_SEAL)?;
    let mut report = VerifyReport {
        ok: true,
        checked: 0,
        anchor_seq: anchor.seq,
        head_seq: head.map(|h| h.seq).unwrap_or(anchor.seq),
        head_hash: hex::encode(head.unwrap_or(anchor.point()).hash),
        keyed: with.keys.is_some(),
        expected_head_checked: false,
        broken: None,
    };
    let mut walk = Walk {
        expected: anchor.seq + 1,
        prev: anchor.hash,
        keys: with.keys,
        seal,
        expect: with.expect_head,
        expect_seen: false,
    };
    let result = (|| {
        check_points(&anchor, seal, &with)?;
        let mut after: Option<Vec<u8>> = None;
        loop {
            let batch = store.raw_range(&[keys::AUDIT], after.as_deref(), VERIFY_BATCH)?;
            if batch.is_empty() {
                break;
            }
            for (k, v) in &batch {
                walk.step(k, v)?;
                report.checked += 1;
            }
            after = batch.last().map(|(k, _)| k.to_vec());
        }
        check_head(head, &anchor, &walk)?;
        walk.check_expected(&anchor)
    })();
    report.expected_head_checked = walk.expect_seen;
    match result {
        Ok(()) => {}
        Err(Found::Broken(b)) => {
            report.ok = false;
            report.broken = Some(b);
        }
        Err(Found::Store(e)) => return Err(e),
    }
    Ok(report)
}

/// Why the walk stopped early.
enum Found {
    Broken(BrokenLink),
    Store(StoreError),
}

impl From<BrokenLink> for Found {
    fn from(b: BrokenLink) -> Found {
        Found::Broken(b)
    }
}

impl From<StoreError> for Found {
    fn from(e: StoreError) -> Found {
        Found::Store(e)
    }
}

/// The seal and the anchor, before any record.
fn check_points(anchor: &Anchor, seal: Option<Seal>, with: &VerifyWith<'_>) -> Result<(), Found> {
    // An unsigned anchor states no rule (it is from before keys).
    if anchor.key_id != 0 {
        if let Some(why) = anchor.rule_violation(with.now) {
            return Err(broken(anchor.seq, why).into());
        }
    }
    let Some(keys) = with.keys else {
        return Ok(());
    };
    let seal = seal.ok_or_else(|| {
        broken(
            0,
            "the seal is missing: a store whose server has an audit key is sealed at its first start",
        )
    })?;
    match seal.signature_ok(keys) {
        Some(true) => {}
        Some(false) => {
            return Err(broken(
                seal.seq,
                "the seal's MAC does not match: it was forged or edited",
            )
            .into())
        }
        None => {
            return Err(broken(
                seal.seq,
                format!(
                    "the seal is signed with key {}, which the key file does not hold",
                    seal.key_id
                ),
            )
            .into())
        }
    }
    match anchor.signature_ok(keys) {
        Some(true) => Ok(()),
        Some(false) => Err(broken(anchor.seq, "the anchor's MAC does not match: records were deleted and the anchor forged").into()),
        None if anchor.key_id != 0 => Err(broken(anchor.seq, format!("the anchor is signed with key {}, which the key file does not hold", anchor.key_id)).into()),
        // Unsigned: only the anchor the seal found is allowed.
        None if anchor.seq == seal.anchor_seq && anchor.hash == seal.anchor_hash => Ok(()),
        None => Err(broken(anchor.seq, format!(
            "the anchor at record {} is unsigned and is not the one sealed (record {}): records were deleted and the anchor moved",
            anchor.seq, seal.anchor_seq
        )).into()),
    }
}

/// Where the walk is: the seq the next stored record must have, and the hash
/// it must link to.
struct Walk<'a> {
    expected: u64,
    prev: [u8; 32],
    keys: Option<&'a AuditKeys>,
    seal: Option<Seal>,
    expect: Option<ChainPoint>,
    expect_seen: bool,
}

impl Walk<'_> {
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
            return Err(broken(self.expected, reason));
        }
        // Decoded here rather than by a typed scan: an undecodable record is
        // a finding to report, not a store error.
        let r: AuditRecord = crate::store::decode(value)
            .map_err(|e| broken(key_seq, format!("record {key_seq} does not decode: {e}")))?;
        self.check_link(&r, key_seq)?;
        if let Some(s) = self.seal.filter(|s| s.seq == key_seq) {
            if self.keys.is_some() && s.hash != r.hash {
                return Err(broken(key_seq, format!("record {key_seq} is not the record the seal holds: the log before the key was rewritten")));
            }
        }
        if let Some(e) = self.expect.filter(|e| e.seq == key_seq) {
            self.expect_seen = true;
            if e.hash != r.hash {
                return Err(broken(
                    key_seq,
                    format!(
                        "record {key_seq} is not the one in the saved head: the log was rewritten"
                    ),
                ));
            }
        }
        self.prev = r.hash;
        self.expected += 1;
        Ok(())
    }

    /// Checks a decoded record found at position `key_seq`.
    fn check_link(&self, r: &AuditRecord, key_seq: u64) -> Result<(), BrokenLink> {
        let fail = |reason: String| Err(broken(key_seq, reason));
        if r.seq != key_seq {
            return fail(format!(
                "position {key_seq} holds record {}: records were moved or reordered",
                r.seq
            ));
        }
        if r.prev_hash != self.prev {
            return fail(format!(
                "record {key_seq} does not link to record {}",
                key_seq - 1
            ));
        }
        if let (Some(_), 0) = (self.keys, r.key_id) {
            if self.seal.is_none_or(|s| key_seq > s.seq) {
                return fail(format!(
                    "record {key_seq} is unsigned but was written after the log got its key: it was forged or rewritten"
                ));
            }
        }
        match compute_hash(r, self.keys) {
            Some(h) if h == r.hash => Ok(()),
            Some(_) => fail(format!(
                "record {key_seq} was modified (its {} does not match its contents)",
                if r.key_id == 0 { "hash" } else { "MAC" }
            )),
            None if self.keys.is_some() => fail(format!(
                "record {key_seq} is signed with key {}, which the key file does not hold",
                r.key_id
            )),
            // No keys: a signed record's MAC cannot be checked; its link was.
            None => Ok(()),
        }
    }

    /// A saved head older than the log's start cannot be checked; one past
    /// its end means records were cut.
    fn check_expected(&mut self, anchor: &Anchor) -> Result<(), Found> {
        let Some(e) = self.expect else { return Ok(()) };
        let last = self.expected - 1;
        if e.seq > last {
            return Err(broken(
                last + 1,
                format!(
                    "the saved head is record {} but the log ends at {last}: records were deleted",
                    e.seq
                ),
            )
            .into());
        }
        if e.seq == anchor.seq && e.seq > 0 {
            self.expect_seen = true;
            if e.hash != anchor.hash {
                return Err(broken(
                    e.seq,
                    "the anchor is not the record in the saved head: the log was rewritten",
                )
                .into());
            }
        }
        Ok(())
    }
}

/// Checks the stored head against where the walk ended, which catches a
/// deleted tail the head still remembers (the records themselves would still
/// link) and an edit of the last record.
fn check_head(
    head: Option<ChainPoint>,
    anchor: &Anchor,
    walk: &Walk<'_>,
) -> Result<(), BrokenLink> {
    let last = walk.expected - 1;
    match head {
        Some(h) if h.seq > last => Err(broken(last + 1, format!(
            "the chain head says record {} but the log ends at {last}: records were deleted",
            h.seq
        ))),
        Some(h) if h.seq < last => Err(broken(h.seq + 1, format!(
            "the log goes on past the chain head (record {}) to {last}: records were appended behind the chain's back",
            h.seq
        ))),
        Some(h) if last > anchor.seq && h.hash != walk.prev => Err(broken(last, format!(
            "the chain head does not match record {last}: the record or the head was rewritten"
        ))),
        None if last > anchor.seq => Err(broken(last, "the chain head is missing")),
        _ => Ok(()),
    }
}
