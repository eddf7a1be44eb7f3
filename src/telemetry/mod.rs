//! Telemetry: the metrics registry and its handles, OTLP traces, and log
//! set-up.

pub mod logging;
mod metrics;
pub mod traces;

pub use traces::{SpanCtx, Traces};

pub use metrics::{
    Metrics, DURATION_BUCKETS, HTTP_BUCKETS, MAX_QUEUE_LABELS, OTHER_LABEL, QUEUE_WAIT_BUCKETS,
};
