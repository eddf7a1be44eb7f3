//! Retention: removing finished tasks (with their runs, leases, events,
//! guardrail decisions and idempotency record), closed review tickets and
//! expired idempotency records once their time in `[retention]` has passed.
//!
//! A pass walks each family from its oldest entry and removes what is due in
//! writes of at most `retention.batch` items (and [`MAX_KEYS_PER_WRITE`]
//! keys), so the writer is never held for long and submits go on meanwhile.
//! Task ids are ULIDs: the walk of a state index stops at the first task
//! created after the cutoff, since a task cannot finish before it exists.
//! A task that still has a review ticket is kept until the ticket's own
//! retention removes it, so a dossier never loses its task.

pub mod backup;
mod check;
mod remove;
mod report;

use std::sync::Arc;
use std::time::Duration;

pub use check::{check_store, Inconsistency};
pub use remove::Tally;
pub use report::store_report;

use crate::clock::Millis;
use crate::model::{IdempotencyRecord, StateKind, TaskId, TaskRecord, TaskState, Ticket};
use crate::pipeline::{Pipeline, PipelineError};
use crate::store::keys;

use remove::{raise_watermarks, remove_idempotency, remove_task, remove_ticket};

/// Keys read per scan step.
const SCAN: usize = 256;
/// A write stops taking tasks once it deletes this many keys.
pub const MAX_KEYS_PER_WRITE: usize = 2048;

/// What one pass did.
#[derive(Debug, Default, Clone)]
pub struct PassReport {
    /// Records and bytes removed per kind.
    pub tally: Tally,
    /// How long past its retention the most overdue item removed had waited.
    pub lag_ms: u64,
    /// Writes made.
    pub writes: u64,
}

/// When a finished task finished.
fn finished_at(task: &TaskRecord) -> Option<Millis> {
    match &task.state {
        TaskState::Completed { at }
        | TaskState::Failed { at, .. }
        | TaskState::Dead { at, .. }
        | TaskState::Cancelled { at, .. } => Some(*at),
        _ => None,
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

impl Pipeline {
    /// Removes everything `[retention]` says is due at `now`, in small writes.
    pub async fn retention_pass(&self, now: Millis) -> Result<PassReport, PipelineError> {
        let cfg = self.config().retention.clone();
        let mut report = PassReport::default();
        for (state, keep) in [
            (StateKind::Completed, cfg.completed),
            (StateKind::Failed, cfg.failed),
            (StateKind::Dead, cfg.dead),
            (StateKind::Cancelled, cfg.cancelled),
        ] {
            if !keep.is_zero() {
                let cutoff = now.saturating_sub(ms(keep));
                self.expire_tasks(state, cutoff, cfg.batch, &mut report)
                    .await?;
            }
        }
        if !cfg.review_tickets.is_zero() {
            let cutoff = now.saturating_sub(ms(cfg.review_tickets));
            self.expire_tickets(cutoff, cfg.batch, &mut report).await?;
        }
        if !cfg.idempotency.is_zero() {
            let cutoff = now.saturating_sub(ms(cfg.idempotency));
            self.expire_idempotency(cutoff, cfg.batch, &mut report)
                .await?;
        }
        self.metrics
            .retention_pass(&report.tally.removed, now, report.lag_ms);
        Ok(report)
    }

    /// Finished tasks in `state` that finished at or before `cutoff`.
    async fn expire_tasks(
        &self,
        state: StateKind,
        cutoff: Millis,
        batch: usize,
        report: &mut PassReport,
    ) -> Result<(), PipelineError> {
        let prefix = keys::state_prefix(state.code());
        let mut after: Option<Vec<u8>> = None;
        loop {
            let ks = self.store.keys(&prefix, after.as_deref(), SCAN)?;
            let mut done = ks.len() < SCAN;
            let mut due = Vec::new();
            for k in &ks {
                let Some(id) = keys::trailing_id(k).map(TaskId::from_bytes) else {
                    continue;
                };
                if id.timestamp_ms() > cutoff {
                    done = true;
                    break;
                }
                after = Some(k.to_vec());
                let task = self.store.get::<TaskRecord>(&keys::task(&id.to_bytes()))?;
                if let Some(at) = task.as_ref().and_then(finished_at) {
                    if at <= cutoff {
                        due.push(id);
                    }
                }
            }
            for chunk in due.chunks(batch) {
                self.remove_tasks(chunk, state, cutoff, report).await?;
            }
            if done || self.shutdown.is_cancelled() {
                return Ok(());
            }
        }
    }

    /// One write removing the tasks of `ids` that are still due (checked
    /// again inside the write) and have no review ticket left.
    async fn remove_tasks(
        &self,
        ids: &[TaskId],
        state: StateKind,
        cutoff: Millis,
        report: &mut PassReport,
    ) -> Result<(), PipelineError> {
        let mut rest = ids;
        while !rest.is_empty() {
            let (tally, used, lag) = self
                .commit(|txn, _| {
                    let mut tally = Tally::default();
                    let (mut used, mut lag) = (0, 0);
                    for id in rest {
                        if tally.keys >= MAX_KEYS_PER_WRITE {
                            break;
                        }
                        used += 1;
                        let Some(task) = txn.get::<TaskRecord>(&keys::task(&id.to_bytes()))? else {
                            continue;
                        };
                        let at = match finished_at(&task) {
                            Some(at) if task.state.kind() == state && at <= cutoff => at,
                            _ => continue,
                        };
                        let tickets = keys::task_tickets_prefix(&id.to_bytes());
                        if txn.first_key(&tickets)?.is_some() {
                            continue;
                        }
                        remove_task(txn, &task, &mut tally)?;
                        lag = lag.max(cutoff - at);
                    }
                    raise_watermarks(txn, &tally)?;
                    Ok((tally, used, lag))
                })
                .await?;
            report.tally.add(&tally);
            report.lag_ms = report.lag_ms.max(lag);
            report.writes += 1;
            rest = &rest[used.max(1)..];
        }
        Ok(())
    }

    /// Closed review tickets closed at or before `cutoff` (the `O` index is
    /// in closing order, so this reads only what it removes).
    async fn expire_tickets(
        &self,
        cutoff: Millis,
        batch: usize,
        report: &mut PassReport,
    ) -> Result<(), PipelineError> {
        loop {
            let due: Vec<(Millis, [u8; keys::ID_LEN])> = self
                .store
                .keys(&[keys::CLOSED_TICKET], None, batch)?
                .iter()
                .filter_map(|k| keys::parse_time_id(k))
                .take_while(|(at, _)| *at <= cutoff)
                .collect();
            if due.is_empty() {
                return Ok(());
            }
            let n = due.len();
            let tally = self
                .commit(|txn, _| {
                    let mut tally = Tally::default();
                    for (at, id) in &due {
                        match txn.get::<Ticket>(&keys::ticket(id))? {
                            Some(t) => remove_ticket(txn, &t, *at, &mut tally)?,
                            None => txn.delete(keys::closed_ticket(*at, id)),
                        }
                    }
                    Ok(tally)
                })
                .await?;
            report.lag_ms = report.lag_ms.max(cutoff - due[0].0);
            report.tally.add(&tally);
            report.writes += 1;
            if n < batch || self.shutdown.is_cancelled() {
                return Ok(());
            }
        }
    }

    /// Idempotency records whose first use (their task's id time) is at or
    /// before `cutoff`. The family is keyed by principal and key, so this
    /// reads all of it, a batch at a time.
    async fn expire_idempotency(
        &self,
        cutoff: Millis,
        batch: usize,
        report: &mut PassReport,
    ) -> Result<(), PipelineError> {
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self.store.scan::<IdempotencyRecord>(
                &[keys::IDEMPOTENCY],
                after.as_deref(),
                SCAN,
            )?;
            let done = page.len() < SCAN;
            after = page.last().map(|(k, _)| k.to_vec());
            let due: Vec<Vec<u8>> = page
                .iter()
                .filter(|(_, r)| r.task_id.timestamp_ms() <= cutoff)
                .map(|(k, _)| k.to_vec())
                .collect();
            for chunk in due.chunks(batch) {
                let tally = self
                    .commit(|txn, _| {
                        let mut tally = Tally::default();
                        for k in chunk {
                            let rec = txn.get::<IdempotencyRecord>(k)?;
                            if rec.is_some_and(|r| r.task_id.timestamp_ms() <= cutoff) {
                                remove_idempotency(txn, k.clone(), &mut tally)?;
                            }
                        }
                        Ok(tally)
                    })
                    .await?;
                report.tally.add(&tally);
                report.writes += 1;
            }
            if done || self.shutdown.is_cancelled() {
                return Ok(());
            }
        }
    }

    /// Runs a retention pass every `retention.interval` until shutdown.
    pub async fn run_retention(self: Arc<Self>) {
        let every = self.config().retention.interval;
        loop {
            match self.retention_pass(self.now()).await {
                Ok(r) if r.tally.removed.is_empty() => {}
                Ok(r) => {
                    let count = |k: &str| r.tally.removed.get(k).map_or(0, |c| c.0);
                    let bytes: u64 = r.tally.removed.values().map(|c| c.1).sum();
                    tracing::info!(
                        tasks = count("task"),
                        events = count("event"),
                        tickets = count("ticket"),
                        idempotency = count("idempotency"),
                        bytes,
                        writes = r.writes,
                        "retention removed finished work"
                    );
                }
                Err(e) => tracing::error!(error = %e, "retention pass failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = self.shutdown.cancelled() => return,
            }
        }
    }
}

impl Pipeline {
    /// Counts records and bytes by kind for the metrics every
    /// `store.stats_interval` until shutdown (the walk runs on a blocking
    /// thread: it reads the whole store).
    pub async fn run_store_stats(self: Arc<Self>) {
        let every = self
            .config()
            .store
            .stats_interval
            .max(Duration::from_secs(1));
        loop {
            let store = self.store.clone();
            match tokio::task::spawn_blocking(move || store.usage()).await {
                Ok(Ok(usage)) => {
                    let by_kind = usage
                        .into_iter()
                        .map(|(k, u)| (k, (u.records, u.bytes)))
                        .collect();
                    self.metrics.store_stats(&by_kind);
                }
                Ok(Err(e)) => tracing::error!(error = %e, "counting the store failed"),
                Err(e) => tracing::error!(error = %e, "counting the store panicked"),
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = self.shutdown.cancelled() => return,
            }
        }
    }
}
