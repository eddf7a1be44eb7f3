//! The audit log: one record per mutating request, auth failure and review
//! decision, chained with a keyed MAC so that an edited, missing, reordered
//! or forged record is found by `verify`.
//!
//! Record n stores `prev_hash` (record n−1's hash) and its own `hash`, the
//! HMAC-SHA256 under the audit key (`key`) of `prev_hash`, the record's fields
//! (bincode) and the key id; records written before the log had a key keep
//! their plain SHA-256 and are bound by the seal (`signed`), a signed copy of
//! the head and anchor taken when the key was made. The head (last seq and
//! hash) is kept beside the records and published outside the store (log,
//! metric, `forgeline audit head`) so a cut tail is noticed too. Pruning
//! deletes the oldest records and moves the anchor, signed with the rule
//! that pruned, from which verification starts.
//!
//! `chain` holds the records and `append`, `verify` the walk, `list` the
//! filtered listing and `prune` the retention.

mod chain;
#[cfg(test)]
mod fixtures;
mod key;
mod list;
mod prune;
mod signed;
#[cfg(test)]
mod tamper_tests;
mod verify;

pub use chain::{append, compute_hash, AuditDraft, AuditRecord, ChainPoint};
pub use key::{key_path, AuditKeys, KEY_LEN};
pub use list::{list, AuditFilter, LIST_SCAN_BUDGET};
pub use prune::{prune, Retention};
pub use signed::{seal, Anchor, Seal};
pub use verify::{parse_head, verify, BrokenLink, VerifyReport, VerifyWith};
