//! The pipeline: the shared core that every domain operation runs through.
//!
//! [`Pipeline`] owns the store, the clock, the limits and the wake-up channels.
//! Its operations live beside their domain (`tasks::service`, `queue::lease`,
//! `queue::timers`, `queue::deadletter`, `workers`), each an `impl Pipeline`
//! block, and all of them write through `Pipeline::commit`, which is the one
//! place where a transition's events are handed to telemetry and waiting
//! lessees are woken.

use std::cell::Cell;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, Millis};
use crate::config::Config;
use crate::events::{EventKind, EventRecord};
use crate::store::{Commit, Store, StoreError, Txn};
use crate::tasks::QueueName;
use crate::telemetry::Metrics;

tokio::task_local! {
    /// Set while an HTTP request is handled: commits are collected here
    /// instead of awaited, so that the request's audit record joins the same
    /// commit round (see `deferring_durability`).
    static DEFERRED: Cell<Option<Commit>>;
}

/// Runs `fut` with durability waits deferred: every `Pipeline::commit` inside
/// it returns once its write is applied, and the latest commit is handed back
/// for the caller to wait on (after adding its own writes) before it
/// acknowledges anything.
pub async fn deferring_durability<F: Future>(fut: F) -> (F::Output, Option<Commit>) {
    DEFERRED
        .scope(Cell::new(None), async {
            let out = fut.await;
            (out, DEFERRED.with(|d| d.take()))
        })
        .await
}

/// Why a pipeline operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The named thing does not exist.
    #[error("{what} {id} not found")]
    NotFound {
        /// `task`, `run`, `lease`…
        what: &'static str,
        /// The id asked for.
        id: String,
    },
    /// The input is well-formed but not acceptable (422).
    #[error("{message}")]
    Invalid {
        /// The offending field (dotted path), when there is one.
        field: Option<String>,
        /// What is wrong and what is accepted.
        message: String,
    },
    /// A guardrail policy blocked it (422, naming the policy).
    #[error("{message}")]
    Blocked {
        /// The policy id.
        policy: String,
        /// The stage.
        stage: &'static str,
        /// What happened.
        message: String,
    },
    /// The caller is authenticated but may not do this to this object (403).
    #[error("{message}")]
    Forbidden {
        /// Why.
        message: String,
    },
    /// The request conflicts with the current state (409).
    #[error("{message}")]
    Conflict {
        /// Machine-readable reason (`illegal_transition`, `idempotency_key_reused`…).
        code: &'static str,
        /// Human-readable explanation.
        message: String,
    },
    /// A review decision was made on a dossier that has changed since (409
    /// `stale_dossier`); the current hash goes in `details.current_hash` so a
    /// client can show the new dossier instead of failing silently.
    #[error("{message}")]
    StaleDossier {
        /// Human-readable explanation.
        message: String,
        /// The dossier's hash now, hex.
        current_hash: String,
    },
    /// A value exceeds a configured size limit (413).
    #[error("{message}")]
    TooLarge {
        /// Which limit, and the sizes.
        message: String,
    },
    /// A lease call whose lease ended or whose token is not the current one (409).
    #[error("{message}")]
    StaleLease {
        /// What made it stale.
        message: String,
    },
    /// Storage failed; the client should retry (503).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PipelineError {
    /// Shorthand for a 422 on one field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        PipelineError::Invalid {
            field: Some(field.into()),
            message: message.into(),
        }
    }
    /// Shorthand for a 404.
    pub fn not_found(what: &'static str, id: impl ToString) -> Self {
        PipelineError::NotFound {
            what,
            id: id.to_string(),
        }
    }
}

/// Wakes long-polling lessees when their queue gets work.
#[derive(Debug, Default)]
pub struct QueueWakers {
    map: Mutex<HashMap<String, Arc<Notify>>>,
}

impl QueueWakers {
    /// The notifier of one queue (created on first use).
    pub fn get(&self, queue: &str) -> Arc<Notify> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(queue.to_string()).or_default().clone()
    }

    /// Wakes every lessee waiting on `queue`.
    pub fn wake(&self, queue: &str) {
        let n = {
            let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            map.get(queue).cloned()
        };
        if let Some(n) = n {
            n.notify_waiters();
        }
    }
}

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
}

thread_local! {
    /// Runs ended by the write running on this thread (see [`note_run_ended`]).
    static ENDED_RUNS: std::cell::RefCell<Vec<crate::tasks::RunRecord>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Records that the write in progress ended `run`; the commit hands the runs
/// to the tracer once the write has applied. Writes are synchronous closures,
/// so the thread-local is filled and drained on one thread, with no await
/// between.
pub(crate) fn note_run_ended(run: &crate::tasks::RunRecord) {
    ENDED_RUNS.with(|r| r.borrow_mut().push(run.clone()));
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

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Now, by the pipeline's clock.
    pub fn now(&self) -> Millis {
        self.clock.now_ms()
    }

    /// Cancelled when the server starts shutting down.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Runs one atomic write, then reports its events, wakes whoever they
    /// concern, and waits until the write is durable (or, inside
    /// [`deferring_durability`], leaves the wait to the caller).
    pub(crate) async fn commit<T>(
        &self,
        f: impl FnOnce(&mut Txn<'_>, &mut Vec<EventRecord>) -> Result<T, PipelineError>,
    ) -> Result<T, PipelineError> {
        let mut events = Vec::new();
        ENDED_RUNS.with(|r| r.borrow_mut().clear());
        let written = self.store.write(|txn| f(txn, &mut events));
        let ended = ENDED_RUNS.with(|r| std::mem::take(&mut *r.borrow_mut()));
        let (out, commit) = written?;
        self.after_write(&events);
        if self.traces.enabled() {
            self.traces.observe(&events, &ended, |id| {
                self.store
                    .get::<crate::tasks::TaskRecord>(&crate::store::keys::task(&id.to_bytes()))
                    .ok()
                    .flatten()
            });
        }
        let deferred = DEFERRED
            .try_with(|d| d.set(Some(d.get().map_or(commit, |c| c.max(commit)))))
            .is_ok();
        if !deferred {
            self.store.wait_durable(commit).await?;
        }
        Ok(out)
    }

    fn after_write(&self, events: &[EventRecord]) {
        let mut poke_timer = false;
        for e in events {
            match e.kind {
                EventKind::TaskQueued => self.wakers.wake(e.queue.as_str()),
                EventKind::TaskScheduled | EventKind::TaskLeased => poke_timer = true,
                _ => {}
            }
        }
        if poke_timer {
            self.timer.notify_one();
        }
        self.metrics.observe_events(events);
    }

    /// Appends an audit record (applied now; durable with the next commit
    /// round, which the caller waits for).
    pub fn audit(&self, draft: crate::audit::AuditDraft) -> Result<Commit, StoreError> {
        let draft = crate::audit::AuditDraft {
            detail: draft.detail.map(|d| crate::redact::redact(&d).into_owned()),
            ..draft
        };
        let (_, c) = self.store.write(|txn| crate::audit::append(txn, draft))?;
        Ok(c)
    }

    /// Waits on the notifiers of several queues at once.
    pub(crate) fn queue_notifiers(&self, queues: &[QueueName]) -> Vec<Arc<Notify>> {
        queues.iter().map(|q| self.wakers.get(q.as_str())).collect()
    }
}
