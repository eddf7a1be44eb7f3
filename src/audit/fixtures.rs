//! Test fixtures shared by the audit tests: drafts, the test key, and a
//! sealed store holding a chain of a given length.

use std::sync::LazyLock;

use super::chain::{append, AuditDraft};
use super::key::AuditKeys;
use super::verify::{verify, VerifyReport, VerifyWith};
use crate::store::{Durability, Store, StoreError, Txn};

/// The key the fixtures sign with.
pub(super) static KEYS: LazyLock<AuditKeys> = LazyLock::new(AuditKeys::generate);

/// "Now" for the fixtures' verification (after every draft's time).
pub(super) const NOW: u64 = 10_000;

/// Draft number `n`: recorded at `1_000 + n` ms, with a body hash of `n`s.
pub(super) fn draft(n: u64) -> AuditDraft {
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

/// A relaxed, sealed store holding records 1 to `n` signed with [`KEYS`]
/// (keep the directory alive).
pub(super) fn store_with(n: u64) -> (tempfile::TempDir, Store) {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path(), Durability::Relaxed).unwrap();
    super::signed::seal(&s, &KEYS).unwrap();
    for i in 1..=n {
        let _ = s.write(|t| append(t, &KEYS, draft(i)).map(drop)).unwrap();
    }
    (d, s)
}

/// Verifies with the keys and no saved head.
pub(super) fn check(s: &Store) -> VerifyReport {
    verify(
        s,
        VerifyWith {
            keys: Some(&KEYS),
            expect_head: None,
            now: NOW,
        },
    )
    .unwrap()
}

/// Writes behind the chain's back, as an attacker with store access would.
pub(super) fn tamper(s: &Store, f: impl FnOnce(&mut Txn<'_>) -> Result<(), StoreError>) {
    let _ = s.write(f).unwrap();
}
