//! The kernel: the shared core that every domain operation runs through.
//!
//! [`Pipeline`] owns the store, the clock, the configuration, the metrics and
//! the wake-up channels. The domains (`tasks`, `queue`, `reviews`, `workers`,
//! `guardrails`, `exec`, `events`) add their operations as `impl Pipeline`
//! blocks; every one of them writes through `Pipeline::commit` (in
//! `commit.rs`), the one place where a write's events reach telemetry, waiting
//! lessees are woken and the durable wait happens. A task changes state only
//! through [`transition::move_to`], which keeps indexes, counters and events in
//! step. The kernel imports the sinks below it (telemetry, audit, config) and
//! the model, never a domain.

mod audit;
mod commit;
pub mod enforce;
mod error;
mod finish;
mod gauges;
pub mod transition;
mod wakers;

use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, Millis};
use crate::config::Config;
use crate::model::QueueName;
use crate::store::Store;
use crate::telemetry::Metrics;

pub use commit::deferring_durability;
pub(crate) use commit::note_run_ended;
pub use error::PipelineError;
pub use finish::missing_task;
pub(crate) use finish::{end_lease, finish_run, load_task};
pub use gauges::refresh_gauges;
pub use wakers::QueueWakers;

/// The shared core of a running server.
pub struct Pipeline {
    pub(crate) store: Store,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) config: Arc<Config>,
    pub(crate) wakers: QueueWakers,
    /// Pokes the timer loop when an earlier deadline may exist.
    pub(crate) timer: Notify,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) guardrails: crate::guardrails::Guardrails,
    pub(crate) traces: crate::telemetry::Traces,
    pub(crate) audit_keys: crate::audit::AuditKeys,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("store", &self.store)
            .finish()
    }
}

impl Pipeline {
    /// Assembles a pipeline over an open store.
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        config: Arc<Config>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
        audit_keys: crate::audit::AuditKeys,
    ) -> Pipeline {
        let guardrails = crate::guardrails::Guardrails::new(&config.guardrails);
        for (id, stages) in guardrails.ids() {
            for s in stages {
                metrics.guardrail_policy(&id, s.as_str());
            }
        }
        metrics.set_max_reviewer_labels(config.review.max_reviewer_labels);
        Pipeline {
            store,
            clock,
            config,
            wakers: QueueWakers::default(),
            timer: Notify::new(),
            metrics,
            shutdown,
            guardrails,
            traces: crate::telemetry::Traces::disabled(),
            audit_keys,
        }
    }

    /// Exports task spans through `traces`.
    pub fn with_traces(mut self, traces: crate::telemetry::Traces) -> Pipeline {
        self.traces = traces;
        self
    }

    /// The trace exporter (or its absence).
    pub fn traces(&self) -> &crate::telemetry::Traces {
        &self.traces
    }

    /// The store, for work outside `commit`: durability waits, probes, the
    /// audit log, closing.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The configuration the server started with (not reloaded).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The metrics registry (shared with the HTTP layer and the scrape).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The error for a task that is not stored (`gone` or `not_found`,
    /// see [`missing_task`]).
    pub fn task_missing(&self, id: crate::model::TaskId) -> PipelineError {
        match self.store.get_raw_value(crate::store::keys::PRUNED_TASK) {
            Ok(pruned) => missing_task(pruned.as_deref(), id),
            Err(e) => e.into(),
        }
    }

    /// Now, by the pipeline's clock.
    pub fn now(&self) -> Millis {
        self.clock.now_ms()
    }

    /// Cancelled when the server starts shutting down.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Waits on the notifiers of several queues at once.
    pub(crate) fn queue_notifiers(&self, queues: &[QueueName]) -> Vec<Arc<Notify>> {
        queues.iter().map(|q| self.wakers.get(q.as_str())).collect()
    }
}
