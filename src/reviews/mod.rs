//! The review gate: tickets for results that need a human, claims and
//! assignments, N-of-M decisions bound to the dossier the reviewer saw, an SLA
//! clock that acts by itself, and reviewer metrics in REST and Prometheus.

mod claim;
mod clock;
mod decide;
mod metrics;
mod ticket;

pub use clock::{ClockReport, SYSTEM};
pub use decide::MAX_COMMENT_LEN;
pub use metrics::{bucket_labels, bucket_of, percentile, short};
pub use ticket::{decisions_of, dossier_hash, flagged_by};
