//! The chain itself: the stored record, the draft callers fill in, the chain
//! points (head and anchor), the record hash, and appending inside a write.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::clock::Millis;
use crate::store::{keys, Record, StoreError, Txn};

/// A stored audit record (`A` + seq).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the chain (1-based, contiguous).
    pub seq: u64,
    /// When the action was recorded (ms since the epoch).
    pub at: Millis,
    /// The request's id.
    pub request_id: String,
    /// Who (`anonymous` when unauthenticated).
    pub principal: String,
    /// Their role names (empty when unauthenticated and for `TIMER` actions).
    pub roles: Vec<String>,
    /// HTTP method (or `TIMER` for actions the server's clocks take by themselves).
    pub method: String,
    /// The route template, never the raw path (`unmatched` when none matched).
    pub route: String,
    /// SHA-256 of the request body, when one was read.
    pub body_sha256: Option<[u8; 32]>,
    /// The status the request was answered with (`TIMER` actions record 200).
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
    /// When the action was recorded (ms since the epoch).
    pub at: Millis,
    /// The request's id.
    pub request_id: String,
    /// Who (`anonymous` when unauthenticated).
    pub principal: String,
    /// Their role names (empty when unauthenticated and for `TIMER` actions).
    pub roles: Vec<String>,
    /// HTTP method, or `TIMER` for actions the server takes by itself.
    pub method: String,
    /// The route template, never the raw path (`unmatched` when none matched).
    pub route: String,
    /// SHA-256 of the request body, when one was read.
    pub body_sha256: Option<[u8; 32]>,
    /// The status the request was answered with (`TIMER` actions record 200).
    pub status: u16,
    /// Time to the response, in microseconds.
    pub latency_us: u64,
    /// Extra context: the auth failure reason, the decision…
    pub detail: Option<String>,
}

/// A position in the chain: the head (last record) or the anchor (last pruned).
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

/// SHA-256 of `prev_hash` followed by the record's fields (bincode), leaving
/// out `hash` itself. Changing this breaks every stored chain.
pub(super) fn compute_hash(r: &AuditRecord) -> [u8; 32] {
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
    // After a prune that removed every record only the anchor is left to link to.
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
