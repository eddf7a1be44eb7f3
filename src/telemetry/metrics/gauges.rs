//! The gauges other modules set directly: task and queue state and the store
//! size (recomputed at scrape time), open event streams and the built-in
//! executor's utilization (kept current by their owners), and the constant
//! build-info gauge.

use prometheus::{Gauge, GaugeVec, IntGauge, IntGaugeVec, Opts, Registry};

use super::register::{float_gauge, float_gauge_vec, gauge_vec, int_gauge, register};

/// The handles `Metrics` exposes as public fields.
pub(super) struct StateGauges {
    pub(super) tasks: IntGaugeVec,
    pub(super) queue_depth: IntGaugeVec,
    pub(super) sse_subscribers: IntGauge,
    pub(super) store_size: IntGauge,
    pub(super) audit_head_seq: IntGauge,
    pub(super) queue_oldest_age: GaugeVec,
    pub(super) pool_utilization: Gauge,
}

impl StateGauges {
    /// Registers the gauges (all at 0 until first set).
    pub(super) fn new(r: &Registry) -> StateGauges {
        StateGauges {
            tasks: gauge_vec(
                r,
                "forgeline_tasks",
                "Tasks by state and queue.",
                &["state", "queue"],
            ),
            queue_depth: gauge_vec(
                r,
                "forgeline_queue_depth",
                "Tasks eligible and waiting for a lease.",
                &["queue"],
            ),
            sse_subscribers: int_gauge(r, "forgeline_sse_subscribers", "Open event streams."),
            store_size: int_gauge(
                r,
                "forgeline_store_size_bytes",
                "Bytes the sled store occupies on disk.",
            ),
            audit_head_seq: int_gauge(
                r,
                "forgeline_audit_head_seq",
                "Sequence number of the last audit record (the chain head).",
            ),
            queue_oldest_age: float_gauge_vec(
                r,
                "forgeline_queue_oldest_age_seconds",
                "Age of the oldest eligible task waiting in each queue.",
                &["queue"],
            ),
            pool_utilization: float_gauge(
                r,
                "forgeline_worker_pool_utilization_ratio",
                "Share of the built-in executor's workers running a task (0 to 1).",
            ),
        }
    }
}

/// Registers `forgeline_build_info{version,commit,profile}`, set to 1 once:
/// the build is in the labels, so dashboards can join on them.
pub(super) fn register_build_info(r: &Registry) {
    let build = IntGaugeVec::new(
        Opts::new("forgeline_build_info", "Build information; always 1."),
        &["version", "commit", "profile"],
    )
    .expect("valid metric");
    build
        .with_label_values(&[
            crate::build_info::VERSION,
            crate::build_info::COMMIT,
            crate::build_info::PROFILE,
        ])
        .set(1);
    register(r, build);
}
