//! Every tamper case against the verifier, as a table: what an attacker with
//! write access to the store does, and whether `verify` finds it with no key
//! and no saved head, with only a saved head, with only the key, and with
//! both. docs/security.md ("The audit log") prints the same table.

use super::chain::{compute_hash, AuditRecord, ChainPoint};
use super::fixtures::{draft, store_with, tamper, KEYS, NOW};
use super::key::AuditKeys;
use super::signed::{Anchor, Seal};
use super::verify::{verify, VerifyWith};
use crate::store::{keys, Store, Txn};

/// Rewrites records `from..=to` (after `edit` on the first) so that the chain
/// links again, signing with `sign` (`None`: as unkeyed SHA-256 records), and
/// moves the head: what an attacker who recomputes hashes does.
fn rewrite(
    t: &mut Txn<'_>,
    from: u64,
    to: u64,
    sign: Option<&AuditKeys>,
    edit: fn(&mut AuditRecord),
) {
    let mut prev = t
        .get::<AuditRecord>(&keys::audit(from - 1))
        .unwrap()
        .map(|r| r.hash)
        .unwrap_or([0; 32]);
    for seq in from..=to {
        let mut r: AuditRecord = t.get(&keys::audit(seq)).unwrap().unwrap();
        if seq == from {
            edit(&mut r);
        }
        r.prev_hash = prev;
        r.key_id = sign.map_or(0, |k| k.current().0);
        r.hash = compute_hash(&r, sign).unwrap();
        prev = r.hash;
        t.put(keys::audit(seq), &r).unwrap();
    }
    t.put(
        keys::AUDIT_HEAD.to_vec(),
        &ChainPoint {
            seq: to,
            hash: prev,
        },
    )
    .unwrap();
}

fn mallory(r: &mut AuditRecord) {
    r.principal = "mallory".into();
}

fn set_head_to(t: &mut Txn<'_>, seq: u64) {
    let r: AuditRecord = t.get(&keys::audit(seq)).unwrap().unwrap();
    t.put(keys::AUDIT_HEAD.to_vec(), &ChainPoint { seq, hash: r.hash })
        .unwrap();
}

/// Deletes records 1..=n and anchors at n with `anchor` built from record n.
fn fake_prune(t: &mut Txn<'_>, n: u64, anchor: fn(AuditRecord) -> Anchor) {
    let r: AuditRecord = t.get(&keys::audit(n)).unwrap().unwrap();
    for s in 1..=n {
        t.delete(keys::audit(s));
    }
    t.put(keys::AUDIT_ANCHOR.to_vec(), &anchor(r)).unwrap();
}

/// An anchor at record `r`, pruned 10 ms after it was written with the head at
/// 5, stating the rule (`max_age_ms`, `max_records`); unsigned.
fn pruned_by(r: AuditRecord, max_age_ms: u64, max_records: u64) -> Anchor {
    Anchor {
        seq: r.seq,
        hash: r.hash,
        record_at: r.at,
        pruned_at: r.at + 10,
        head_seq: 5,
        max_age_ms,
        max_records,
        ..Anchor::default()
    }
}

/// Another key, as an attacker without ours would use.
fn wrong_key() -> AuditKeys {
    AuditKeys::generate()
}

type Tamper = fn(&mut Txn<'_>);

/// (case, tamper, found with: [nothing, saved head, key, key + saved head]).
const CASES: &[(&str, Tamper, [bool; 4])] = &[
    (
        "edit a record",
        |t| {
            let mut r: AuditRecord = t.get(&keys::audit(3)).unwrap().unwrap();
            r.status = 200;
            t.put(keys::audit(3), &r).unwrap();
        },
        [false, false, true, true],
    ),
    (
        "edit a middle record, rehash the rest as unkeyed, rewrite the head",
        |t| rewrite(t, 3, 5, None, mallory),
        [false, true, true, true],
    ),
    (
        "edit a middle record, re-sign the rest with another key",
        |t| rewrite(t, 3, 5, Some(&wrong_key()), mallory),
        [false, true, true, true],
    ),
    (
        "edit the last record and rewrite the head",
        |t| rewrite(t, 5, 5, None, mallory),
        [false, true, true, true],
    ),
    (
        "delete the last records and rewrite the head",
        |t| {
            t.delete(keys::audit(5));
            t.delete(keys::audit(4));
            set_head_to(t, 3);
        },
        [false, true, false, true],
    ),
    (
        "delete the last record, head untouched",
        |t| t.delete(keys::audit(5)),
        [true, true, true, true],
    ),
    (
        "delete a middle record",
        |t| t.delete(keys::audit(3)),
        [true, true, true, true],
    ),
    (
        "swap two records",
        |t| {
            let a: AuditRecord = t.get(&keys::audit(2)).unwrap().unwrap();
            let b: AuditRecord = t.get(&keys::audit(3)).unwrap().unwrap();
            t.put(keys::audit(2), &b).unwrap();
            t.put(keys::audit(3), &a).unwrap();
        },
        [true, true, true, true],
    ),
    (
        "append a forged record and move the head",
        |t| {
            let last: AuditRecord = t.get(&keys::audit(5)).unwrap().unwrap();
            let d = draft(6);
            let mut r = AuditRecord {
                seq: 6,
                at: d.at,
                request_id: d.request_id,
                principal: "mallory".into(),
                roles: d.roles,
                method: d.method,
                route: d.route,
                body_sha256: None,
                status: 200,
                latency_us: 1,
                detail: None,
                prev_hash: last.hash,
                hash: [0; 32],
                key_id: 0,
            };
            r.hash = compute_hash(&r, None).unwrap();
            t.put(keys::audit(6), &r).unwrap();
            t.put(
                keys::AUDIT_HEAD.to_vec(),
                &ChainPoint {
                    seq: 6,
                    hash: r.hash,
                },
            )
            .unwrap();
        },
        [false, false, true, true],
    ),
    (
        "delete the oldest records and move the anchor (unsigned)",
        |t| {
            fake_prune(t, 2, |r| Anchor {
                seq: r.seq,
                hash: r.hash,
                ..Anchor::default()
            })
        },
        [false, false, true, true],
    ),
    (
        "delete the oldest records and sign an anchor with another key",
        |t| fake_prune(t, 2, |r| pruned_by(r, 0, 3).sign(&wrong_key())),
        [false, false, true, true],
    ),
    (
        "prune with the key under a rule that could not have pruned",
        |t| {
            // Records at 1001.. kept for a day: nothing was old enough at 1012.
            fake_prune(t, 2, |r| pruned_by(r, 86_400_000, 0).sign(&KEYS))
        },
        [true, true, true, true],
    ),
    (
        "delete the seal",
        |t| t.delete(keys::AUDIT_SEAL.to_vec()),
        [false, false, true, true],
    ),
    (
        "forge the seal",
        |t| {
            let mut s: Seal = t.get(keys::AUDIT_SEAL).unwrap().unwrap();
            s.seq = 3;
            t.put(keys::AUDIT_SEAL.to_vec(), &s).unwrap();
        },
        [false, false, true, true],
    ),
    (
        "rewrite with the key itself",
        |t| rewrite(t, 3, 5, Some(&KEYS), mallory),
        [false, true, false, true],
    ),
];

fn found(s: &Store, keys: Option<&AuditKeys>, head: Option<ChainPoint>) -> Option<String> {
    let r = verify(
        s,
        VerifyWith {
            keys,
            expect_head: head,
            now: NOW,
        },
    )
    .unwrap();
    r.broken.map(|b| format!("at {}: {}", b.seq, b.reason))
}

#[test]
fn every_tamper_case_is_found_where_the_table_says() {
    let mut wrong = Vec::new();
    for (case, f, expected) in CASES {
        let (_d, s) = store_with(5);
        let saved: ChainPoint = s.get(keys::AUDIT_HEAD).unwrap().unwrap();
        assert!(
            found(&s, Some(&KEYS), Some(saved)).is_none(),
            "{case}: untouched chain"
        );
        tamper(&s, |t| {
            f(t);
            Ok(())
        });
        let seen = [
            found(&s, None, None),
            found(&s, None, Some(saved)),
            found(&s, Some(&KEYS), None),
            found(&s, Some(&KEYS), Some(saved)),
        ];
        for (i, (got, want)) in seen.iter().zip(expected).enumerate() {
            if got.is_some() != *want {
                wrong.push(format!(
                    "{case} [{}]: expected found={want}, got {got:?}",
                    ["plain", "saved head", "key", "key+head"][i]
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

#[test]
fn an_edited_last_record_is_reported_as_rewritten_not_deleted() {
    let (_d, s) = store_with(5);
    tamper(&s, |t| {
        let mut r: AuditRecord = t.get(&keys::audit(5))?.unwrap();
        r.principal = "mallory".into();
        r.key_id = 0;
        r.hash = compute_hash(&r, None).unwrap();
        t.put(keys::audit(5), &r)?;
        Ok(())
    });
    // The head still has the old hash.
    let why = found(&s, None, None).expect("found without a key");
    assert!(
        why.contains("rewritten") && !why.contains("deleted"),
        "{why}"
    );
}

#[test]
fn a_log_from_before_keys_verifies_after_the_seal_and_only_up_to_it() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path(), crate::store::Durability::Relaxed).unwrap();
    // Records 1..=3 written as a server before keys did: unkeyed.
    for i in 1..=3 {
        let _ = s
            .write(|t| {
                let mut r = super::chain::append(t, &KEYS, draft(i))?;
                r.key_id = 0;
                r.prev_hash = t
                    .get::<AuditRecord>(&keys::audit(i - 1))?
                    .map(|p| p.hash)
                    .unwrap_or([0; 32]);
                r.hash = compute_hash(&r, None).unwrap();
                t.put(keys::audit(i), &r)?;
                t.put(
                    keys::AUDIT_HEAD.to_vec(),
                    &ChainPoint {
                        seq: i,
                        hash: r.hash,
                    },
                )
            })
            .unwrap();
    }
    super::signed::seal(&s, &KEYS).unwrap();
    let _ = s
        .write(|t| super::chain::append(t, &KEYS, draft(4)).map(drop))
        .unwrap();
    assert_eq!(found(&s, Some(&KEYS), None), None);
    // Rewriting the pre-key part consistently is still found: the seal holds
    // record 3's hash.
    tamper(&s, |t| {
        rewrite(t, 2, 3, None, mallory);
        set_head_to(t, 3);
        Ok(())
    });
    let why = found(&s, Some(&KEYS), None).expect("found");
    assert!(why.contains("seal"), "{why}");
}
