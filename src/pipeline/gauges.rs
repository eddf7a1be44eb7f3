//! The gauges read from the store at scrape time rather than kept up to date
//! on every write: a scrape every 15 s costs less than a gauge update in every
//! commit, and the store's counters are the truth the gauges must show.

use std::collections::BTreeSet;

use super::{Pipeline, PipelineError};
use crate::model::StateKind;

/// Sets the gauges that are read from the store at scrape time: task counts
/// by state and queue, queue depth, oldest ready task per queue, store size.
pub fn refresh_gauges(p: &Pipeline) -> Result<(), PipelineError> {
    let m = p.metrics();
    m.tasks.reset();
    m.queue_depth.reset();
    let counts = p.task_counts()?;
    // Every known queue (one with a task in any state, or one the executor
    // serves) reports every state and its depth, at 0 when empty: a series
    // that vanishes when its queue empties would make `sum(...)` return
    // nothing instead of 0.
    let mut known: BTreeSet<&str> = counts.keys().map(|(_, q)| q.as_str()).collect();
    let config = p.config();
    if config.executor.enabled {
        known.extend(config.executor.queues.iter().map(|q| q.as_str()));
    }
    for queue in known {
        let q = m.queue_label(queue);
        for state in StateKind::ALL {
            m.tasks.with_label_values(&[state.as_str(), q]);
        }
        m.queue_depth.with_label_values(&[q]);
    }
    for ((state, queue), n) in counts {
        let q = m.queue_label(&queue);
        m.tasks
            .with_label_values(&[state.as_str(), q])
            .add(n as i64);
        if state == StateKind::Queued {
            m.queue_depth.with_label_values(&[q]).add(n as i64);
        }
    }
    m.queue_oldest_age.reset();
    let now = p.now();
    for (queue, eligible_at) in p.oldest_ready()? {
        let age = now.saturating_sub(eligible_at) as f64 / 1000.0;
        let q = m.queue_label(&queue);
        // Queues past the label cap share `_other`: it shows the oldest of them.
        let g = m.queue_oldest_age.with_label_values(&[q]);
        if age > g.get() {
            g.set(age);
        }
    }
    m.store_size.set(p.store().size_on_disk() as i64);
    if let Some(d) = p.store().disk() {
        m.store_disk(d.free, d.size);
    }
    m.audit_head_seq.set(p.audit_head()?.seq as i64);
    p.refresh_review_gauges()?;
    Ok(())
}
