//! The review gate: tickets for results that need a human, claims and
//! assignments, N-of-M decisions bound to the dossier the reviewer saw, an SLA
//! clock that acts by itself, and reviewer metrics in REST and Prometheus.

mod clock;
mod metrics;
mod service;

pub use clock::ClockReport;
pub use metrics::{bucket_labels, bucket_of, percentile, short};
pub use service::{decisions_of, dossier_hash, flagged_by, MAX_COMMENT_LEN, SYSTEM};
