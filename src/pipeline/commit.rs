//! The commit path: one atomic write, then its events reach telemetry and
//! the tracer, waiting lessees are woken, and the caller waits until the write
//! is durable — or, inside an HTTP request, hands the wait to the middleware
//! so that the request's audit record shares the same commit round.

use std::cell::Cell;
use std::future::Future;

use super::{Pipeline, PipelineError};
use crate::model::{EventKind, EventRecord, RunRecord, TaskId, TaskRecord};
use crate::store::{keys, Commit, Txn};

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

thread_local! {
    /// Runs ended by the write running on this thread (see [`note_run_ended`]).
    static ENDED_RUNS: std::cell::RefCell<Vec<RunRecord>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Records that the write in progress ended `run`; the commit hands the runs
/// to the tracer once the write has applied. Writes are synchronous closures,
/// so the thread-local is filled and drained on one thread, with no await
/// between.
pub(crate) fn note_run_ended(run: &RunRecord) {
    ENDED_RUNS.with(|r| r.borrow_mut().push(run.clone()));
}

impl Pipeline {
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
                    .get::<TaskRecord>(&keys::task(&id.to_bytes()))
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
                // A new deadline: a lease, a schedule, or a review claim
                // (and a ticket's SLA target) for the review clock.
                EventKind::TaskScheduled
                | EventKind::TaskLeased
                | EventKind::ReviewRequested
                | EventKind::ReviewAssigned => poke_timer = true,
                _ => {}
            }
        }
        if poke_timer {
            self.timer.notify_one();
        }
        self.metrics.observe_events(events);
        self.log_transitions(events);
    }

    /// One log line per task state change (target `forgeline::task`), with
    /// the task's ids: task, run, trace, and the `correlation_id`,
    /// `project_id` (or `project`) and `execution_id` labels when it has them.
    fn log_transitions(&self, events: &[EventRecord]) {
        if !tracing::enabled!(target: "forgeline::task", tracing::Level::INFO) {
            return;
        }
        // A write appends a task's events together: one lookup per run of them.
        let mut task: Option<(TaskId, Option<TaskRecord>)> = None;
        for e in events.iter().filter(|e| e.state_after.is_some()) {
            if task.as_ref().is_none_or(|(id, _)| *id != e.task_id) {
                let record = self
                    .store
                    .get::<TaskRecord>(&keys::task(&e.task_id.to_bytes()))
                    .ok()
                    .flatten();
                task = Some((e.task_id, record));
            }
            let task = task.as_ref().and_then(|(_, t)| t.as_ref());
            let label = |k: &str| task.and_then(|t| t.labels.get(k).cloned());
            tracing::info!(
                target: "forgeline::task",
                task_id = %e.task_id,
                queue = e.queue.as_str(),
                event = e.kind.as_str(),
                state = e.state_after.as_deref(),
                attempt = e.attempt,
                run_id = e.run_id.map(|r| r.to_string()),
                trace_id = e.trace_id.as_deref(),
                correlation_id = label("correlation_id"),
                project_id = label("project_id").or_else(|| label("project")),
                execution_id = label("execution_id"),
                "task transition"
            );
        }
    }
}
