//! The Prometheus registry and the handles the hot paths hold.
//!
//! Names, types and labels are a contract (docs/metrics.md). Labels are
//! bounded: queue names come from users, so at most `MAX_QUEUE_LABELS`
//! distinct queues get their own series and the rest share `_other`.
//!
//! - `registry`: [`Metrics`], the one registry, and its methods.
//! - `register`: registration helpers and [`OTHER_LABEL`].
//! - `http`: requests, latencies, 401s and 429s.
//! - `queues`: per-queue counters and queue wait (and the queue label cap).
//! - `outcomes`: task and verification step durations.
//! - `guardrails`: guardrail decisions.
//! - `reviews`: the review backlog, assignments, verdicts and SLAs.
//! - `store`: retention, records and bytes by kind, the data directory's disk.
//! - `gauges`: the gauges other modules set directly, and build info.

mod gauges;
mod guardrails;
mod http;
mod outcomes;
mod queues;
mod recent;
mod register;
mod registry;
mod reviews;
mod store;

pub use http::HTTP_BUCKETS;
pub use outcomes::DURATION_BUCKETS;
pub use queues::{MAX_QUEUE_LABELS, QUEUE_WAIT_BUCKETS};
pub use register::OTHER_LABEL;
pub use registry::Metrics;
