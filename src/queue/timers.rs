//! Time-driven work: expiring leases, promoting scheduled tasks, and the
//! start-up reconciliation. Each step is a plain method taking `now`, so tests
//! drive them without sleeping; `run_timers` is the loop the server runs.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::clock::{format_rfc3339, Millis};
use crate::model::{
    EventKind, EventRecord, LeaseId, LeaseRecord, LeaseState, RunOutcome, StateKind, TaskId,
    TaskRecord, TaskState,
};
use crate::pipeline::transition::{append_event, move_to, Move, Note};
use crate::pipeline::{end_lease, finish_run, Pipeline, PipelineError};
use crate::store::{keys, Txn};

/// Most entries handled in one write.
const TIMER_BATCH: usize = 256;
/// Longest sleep of the timer loop, so a wall-clock jump is noticed.
const MAX_TIMER_SLEEP: Duration = Duration::from_secs(1);

impl Pipeline {
    /// Expires every lease whose deadline is at or before `now`. Returns how many.
    pub async fn reap_expired(&self, now: Millis) -> Result<usize, PipelineError> {
        let mut total = 0;
        loop {
            let due = self.due_keys(keys::DEADLINE, now)?;
            if due.is_empty() {
                return Ok(total);
            }
            let n = due.len();
            let expired = self
                .commit(|txn, out| {
                    let mut expired = Vec::new();
                    for (deadline, lb) in &due {
                        let lease_id = LeaseId::from_bytes(*lb);
                        // The entry goes whatever the lease says: either it is
                        // stale (checked next) or `expire` ends the lease.
                        txn.delete(keys::deadline(*deadline, lb));
                        let Some(lease) = txn.get::<LeaseRecord>(&keys::lease(lb))? else {
                            continue;
                        };
                        if lease.state != LeaseState::Active || lease.deadline != *deadline {
                            continue; // ended, or extended by a heartbeat
                        }
                        expire(txn, out, &lease, lease_id, now)?;
                        expired.push(lease.queue.to_string());
                    }
                    Ok(expired)
                })
                .await?;
            for q in &expired {
                self.metrics.lease_expired(q);
            }
            total += expired.len();
            if n < TIMER_BATCH {
                return Ok(total);
            }
        }
    }

    /// Moves every scheduled task whose time has come to its ready queue.
    pub async fn promote_due(&self, now: Millis) -> Result<usize, PipelineError> {
        let mut total = 0;
        loop {
            let due = self.due_keys(keys::SCHEDULED, now)?;
            if due.is_empty() {
                return Ok(total);
            }
            let n = due.len();
            total += self
                .commit(|txn, out| {
                    let mut moved = 0;
                    for (at, tb) in &due {
                        let Some(mut task) = txn.get::<TaskRecord>(&keys::task(tb))? else {
                            txn.delete(keys::scheduled(*at, tb));
                            continue;
                        };
                        let reason = match &task.state {
                            TaskState::Scheduled {
                                eligible_at,
                                reason,
                            } if eligible_at == at => reason.clone(),
                            // Not the task's current schedule: a stale entry.
                            _ => {
                                txn.delete(keys::scheduled(*at, tb));
                                continue;
                            }
                        };
                        let why = match reason {
                            crate::model::ScheduleReason::Delayed => "eligible",
                            crate::model::ScheduleReason::Retry => "retry",
                        };
                        let to = TaskState::Queued { eligible_at: *at };
                        move_to(
                            txn,
                            out,
                            &mut task,
                            Move {
                                to,
                                event: EventKind::TaskQueued,
                                run: None,
                                at: now,
                                data: json!({"reason": why}),
                            },
                        )?;
                        moved += 1;
                    }
                    Ok(moved)
                })
                .await?;
            if n < TIMER_BATCH {
                return Ok(total);
            }
        }
    }

    /// Requeues tasks left leased without a live lease (after a crash). Leases
    /// whose deadline is still ahead stay: their worker may still finish.
    pub async fn reconcile(&self, now: Millis) -> Result<usize, PipelineError> {
        let mut orphans: Vec<TaskId> = Vec::new();
        for state in [StateKind::Running, StateKind::Verifying] {
            let mut after: Option<Vec<u8>> = None;
            loop {
                let prefix = keys::state_prefix(state.code());
                let ks = self.store.keys(&prefix, after.as_deref(), TIMER_BATCH)?;
                for k in &ks {
                    if let Some(id) = keys::trailing_id(k) {
                        orphans.push(TaskId::from_bytes(id));
                    }
                }
                match ks.last() {
                    Some(k) if ks.len() == TIMER_BATCH => after = Some(k.to_vec()),
                    _ => break,
                }
            }
        }
        let mut requeued = 0;
        for chunk in orphans.chunks(TIMER_BATCH) {
            requeued += self
                .commit(|txn, out| {
                    let mut n = 0;
                    for id in chunk {
                        let Some(task) = txn.get::<TaskRecord>(&keys::task(&id.to_bytes()))? else {
                            continue;
                        };
                        let Some(l) = task.state.lease().cloned() else {
                            continue;
                        };
                        let lease = txn.get::<LeaseRecord>(&keys::lease(&l.lease_id.to_bytes()))?;
                        match lease {
                            Some(lease)
                                if lease.state == LeaseState::Active && lease.deadline > now => {}
                            Some(lease) => {
                                expire(txn, out, &lease, l.lease_id, now)?;
                                n += 1;
                            }
                            None => {
                                // No lease record at all: requeue the task directly.
                                let mut task = task;
                                let to = TaskState::Queued { eligible_at: now };
                                move_to(
                                    txn,
                                    out,
                                    &mut task,
                                    Move {
                                        to,
                                        event: EventKind::TaskQueued,
                                        run: Some(l.run_id),
                                        at: now,
                                        data: json!({"reason": "reconciled"}),
                                    },
                                )?;
                                n += 1;
                            }
                        }
                    }
                    Ok(n)
                })
                .await?;
        }
        Ok(requeued)
    }

    /// When the next lease expires or scheduled task becomes eligible.
    pub fn next_timer_due(&self) -> Result<Option<Millis>, PipelineError> {
        let first = |prefix: u8| -> Result<Option<Millis>, PipelineError> {
            Ok(self
                .store
                .first_key(&[prefix])?
                .and_then(|k| keys::parse_time_id(&k))
                .map(|(at, _)| at))
        };
        Ok(match (first(keys::DEADLINE)?, first(keys::SCHEDULED)?) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// Runs the reaper and the scheduler until shutdown.
    pub async fn run_timers(self: Arc<Self>) {
        loop {
            let now = self.now();
            if let Err(e) = self.reap_expired(now).await {
                tracing::error!(error = %e, "lease reaper failed");
            }
            if let Err(e) = self.promote_due(now).await {
                tracing::error!(error = %e, "scheduler failed");
            }
            let review_due = match self.review_clock(now).await {
                Ok(report) => report.next_due,
                Err(e) => {
                    tracing::error!(error = %e, "review clock failed");
                    None
                }
            };
            let next = self.next_timer_due().map(|t| match (t, review_due) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            });
            let sleep = match next {
                Ok(Some(at)) => {
                    Duration::from_millis(at.saturating_sub(self.now())).min(MAX_TIMER_SLEEP)
                }
                _ => MAX_TIMER_SLEEP,
            };
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = self.timer.notified() => {}
                _ = self.shutdown.cancelled() => return,
            }
        }
    }

    fn due_keys(&self, prefix: u8, now: Millis) -> Result<Vec<(Millis, [u8; 16])>, PipelineError> {
        Ok(self
            .store
            .keys(&[prefix], None, TIMER_BATCH)?
            .iter()
            .filter_map(|k| keys::parse_time_id(k))
            .take_while(|(at, _)| *at <= now)
            .collect())
    }
}

/// Ends `lease` as expired and redelivers (or dead-letters) its task.
fn expire(
    txn: &mut Txn<'_>,
    out: &mut Vec<EventRecord>,
    lease: &LeaseRecord,
    lease_id: LeaseId,
    now: Millis,
) -> Result<(), PipelineError> {
    // Lease, worker and run are closed first and unconditionally: an expired
    // lease must never stay active. The task only moves below if this very
    // lease still holds it.
    end_lease(txn, lease_id, now, "expired")?;
    crate::workers::worker_done(txn, &lease.worker, lease.task_id, now)?;
    finish_run(
        txn,
        lease.run_id,
        now,
        RunOutcome::LeaseExpired,
        Some("lease expired".into()),
    )?;
    let Some(mut task) = txn.get::<TaskRecord>(&keys::task(&lease.task_id.to_bytes()))? else {
        return Ok(());
    };
    if task.state.lease().map(|l| l.lease_id) != Some(lease_id) {
        return Ok(());
    }
    // `lease_expired` is appended before the move, so the cause gets the
    // smaller event id: a stream sees it before `task_queued` or
    // `task_dead_lettered`.
    let info = json!({
        "lease_id": lease_id.to_string(),
        "worker": lease.worker,
        "deadline": format_rfc3339(lease.deadline),
    });
    append_event(
        txn,
        out,
        &task,
        Note {
            kind: EventKind::LeaseExpired,
            run: Some(lease.run_id),
            at: now,
            data: info,
        },
    )?;
    task.last_error = Some(format!("lease {lease_id} held by {} expired", lease.worker));
    // The expired run was charged when it was leased: `>=` means none is left.
    if task.budget_used >= task.max_attempts {
        let error = task.last_error.clone().unwrap_or_default();
        let data = json!({"error": error, "attempts": task.budget_used});
        move_to(
            txn,
            out,
            &mut task,
            Move {
                to: TaskState::Dead { at: now, error },
                event: EventKind::TaskDeadLettered,
                run: Some(lease.run_id),
                at: now,
                data,
            },
        )?;
    } else {
        let to = TaskState::Queued { eligible_at: now };
        move_to(
            txn,
            out,
            &mut task,
            Move {
                to,
                event: EventKind::TaskQueued,
                run: Some(lease.run_id),
                at: now,
                data: json!({"reason": "lease_expired"}),
            },
        )?;
    }
    Ok(())
}
