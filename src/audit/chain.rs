//! The chain itself: the stored record, the draft callers fill in, the head,
//! the record MAC, and appending inside a write.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::key::AuditKeys;
use super::signed::Anchor;
pub use super::signed::ChainPoint;
use crate::clock::Millis;
use crate::store::{keys, CodecError, Record, StoreError, Txn};

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
    /// This record's hash: HMAC-SHA256 under key `key_id` (a plain SHA-256
    /// for records written before the log had a key, `key_id` 0).
    pub hash: [u8; 32],
    /// The audit key that signed it (0: none, a record from before keys).
    pub key_id: u32,
}

/// Version 1 of the record: SHA-256 chained, no key.
#[derive(Deserialize)]
struct AuditRecordV1 {
    seq: u64,
    at: Millis,
    request_id: String,
    principal: String,
    roles: Vec<String>,
    method: String,
    route: String,
    body_sha256: Option<[u8; 32]>,
    status: u16,
    latency_us: u64,
    detail: Option<String>,
    prev_hash: [u8; 32],
    hash: [u8; 32],
}

impl Record for AuditRecord {
    const VERSION: u8 = 2;

    fn decode_old(version: u8, body: &[u8]) -> Result<Self, CodecError> {
        match version {
            1 => {
                let (r, _): (AuditRecordV1, _) =
                    bincode::serde::decode_from_slice(body, bincode::config::standard())?;
                Ok(AuditRecord {
                    seq: r.seq,
                    at: r.at,
                    request_id: r.request_id,
                    principal: r.principal,
                    roles: r.roles,
                    method: r.method,
                    route: r.route,
                    body_sha256: r.body_sha256,
                    status: r.status,
                    latency_us: r.latency_us,
                    detail: r.detail,
                    prev_hash: r.prev_hash,
                    hash: r.hash,
                    key_id: 0,
                })
            }
            v => Err(CodecError::UnknownVersion(v)),
        }
    }
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

/// The record's hash: for a keyed record (`key_id` > 0) the HMAC-SHA256
/// under that key of `prev_hash`, the fields (bincode) and the key id; for a
/// record from before keys, the SHA-256 of `prev_hash` and the fields.
/// `None` when the record names a key `keys` does not hold (or there are no
/// keys). Changing this breaks every stored chain.
pub fn compute_hash(r: &AuditRecord, keys: Option<&AuditKeys>) -> Option<[u8; 32]> {
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
    if r.key_id == 0 {
        let mut h = Sha256::new();
        h.update(r.prev_hash);
        h.update(&body);
        return Some(h.finalize().into());
    }
    keys?.mac(r.key_id, &[&r.prev_hash, &body, &r.key_id.to_be_bytes()])
}

/// Appends a record signed with the current key inside a write.
pub fn append(
    txn: &mut Txn<'_>,
    keys: &AuditKeys,
    d: AuditDraft,
) -> Result<AuditRecord, StoreError> {
    let head = txn.get::<ChainPoint>(keys::AUDIT_HEAD)?;
    // After a prune that removed every record only the anchor is left to link to.
    let prev = match head {
        Some(h) => h,
        None => txn
            .get::<Anchor>(keys::AUDIT_ANCHOR)?
            .map(|a| a.point())
            .unwrap_or_default(),
    };
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
        key_id: keys.current().0,
    };
    r.hash = compute_hash(&r, Some(keys)).expect("the current key is held");
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
