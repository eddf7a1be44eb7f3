//! The audit log: one record per mutating request, auth failure and review
//! decision, hash-chained so that an edited, missing or reordered record is
//! found by `verify`.
//!
//! Record n stores `prev_hash` (record n−1's hash) and its own `hash`, the
//! SHA-256 of `prev_hash` followed by the record's fields (bincode). The head
//! (last seq and hash) is kept beside the records so a deleted tail is noticed
//! too. Pruning deletes the oldest records and moves the anchor (the seq and
//! hash of the last pruned record), from which verification starts.
//!
//! `chain` holds the records and `append`, `verify` the walk, `list` the
//! filtered listing and `prune` the retention.

mod chain;
#[cfg(test)]
mod fixtures;
mod list;
mod prune;
mod verify;

pub use chain::{append, AuditDraft, AuditRecord, ChainPoint};
pub use list::{list, AuditFilter, LIST_SCAN_BUDGET};
pub use prune::prune;
pub use verify::{verify, BrokenLink, VerifyReport};
