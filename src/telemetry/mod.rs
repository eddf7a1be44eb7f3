//! Telemetry: the metrics registry and its handles, and log set-up.

pub mod logging;
mod metrics;

pub use metrics::{
    Metrics, DURATION_BUCKETS, HTTP_BUCKETS, MAX_QUEUE_LABELS, OTHER_LABEL, QUEUE_WAIT_BUCKETS,
};

use crate::pipeline::{Pipeline, PipelineError};
use crate::tasks::StateKind;

/// Sets the gauges that are read from the store at scrape time: task counts
/// by state and queue, queue depth, store size.
pub fn refresh_gauges(p: &Pipeline) -> Result<(), PipelineError> {
    let m = p.metrics();
    m.tasks.reset();
    m.queue_depth.reset();
    for ((state, queue), n) in p.task_counts()? {
        let q = m.queue_label(&queue);
        m.tasks
            .with_label_values(&[state.as_str(), q])
            .add(n as i64);
        if state == StateKind::Queued {
            m.queue_depth.with_label_values(&[q]).add(n as i64);
        }
    }
    m.store_size.set(p.store().size_on_disk() as i64);
    p.refresh_review_gauges()?;
    Ok(())
}
