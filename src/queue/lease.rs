//! The lease protocol: lease (long-poll), heartbeat, complete, fail, release.

use std::time::Duration;

use futures_util::future::select_all;
use serde_json::{json, Value};

use crate::clock::{format_rfc3339, Millis};
use crate::guardrails::Subject;
use crate::model::{
    EventKind, LeaseId, LeaseRecord, LeaseRef, LeaseState, QueueName, RunId, RunOutcome, RunRecord,
    ScheduleReason, Stage, TaskId, TaskRecord, TaskState, WorkerId, WorkerStatus,
};
use crate::pipeline::transition::{move_to, Move};
use crate::pipeline::{end_lease, enforce, finish_run, load_task, Pipeline, PipelineError};
use crate::store::{keys, Txn};
use crate::workers::{touch_worker, worker_done};

/// A lease request.
#[derive(Debug, Clone)]
pub struct LeaseRequest {
    /// Queues to take from, in order of preference.
    pub queues: Vec<QueueName>,
    /// Who asks (the worker id it gives itself).
    pub worker: WorkerId,
    /// The authenticated principal asking; only it may use the leases.
    pub holder: String,
    /// Most tasks to take.
    pub max: usize,
    /// How long to wait for work when none is ready.
    pub wait: Duration,
    /// Lease length.
    pub lease_for: Duration,
}

/// One granted lease.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The lease.
    pub lease: LeaseRecord,
    /// The task, now `running`.
    pub task: TaskRecord,
    /// The run it started.
    pub run: RunRecord,
}

/// What a worker reports when it gives up a task.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Retry if attempts remain.
    pub retryable: bool,
    /// Why.
    pub error: String,
}

/// The delay before retry number `n` (1-based): `base * 2^(n-1)`, capped, then
/// "equal jitter" (a uniformly random point in the upper half), so that workers
/// failing together do not retry together.
pub fn retry_delay(base: Duration, cap: Duration, n: u32, unit_random: f64) -> Duration {
    let exp = base
        .checked_mul(
            1u32.checked_shl(n.saturating_sub(1).min(31))
                .unwrap_or(u32::MAX),
        )
        .unwrap_or(cap)
        .min(cap);
    let half = exp / 2;
    half + half.mul_f64(unit_random.clamp(0.0, 1.0))
}

impl Pipeline {
    /// Leases up to `max` tasks, waiting up to `wait` for the first one.
    pub async fn lease(&self, req: &LeaseRequest) -> Result<Vec<Grant>, PipelineError> {
        let until = tokio::time::Instant::now() + req.wait;
        loop {
            let notifiers = self.queue_notifiers(&req.queues);
            let mut waits: Vec<_> = notifiers.iter().map(|n| Box::pin(n.notified())).collect();
            // Register interest before looking, so a submit between the look and
            // the wait is not missed.
            for w in &mut waits {
                w.as_mut().enable();
            }
            let grants = self.try_lease(req).await?;
            if !grants.is_empty() || tokio::time::Instant::now() >= until {
                return Ok(grants);
            }
            tokio::select! {
                _ = select_all(waits) => {}
                _ = tokio::time::sleep_until(until) => return Ok(Vec::new()),
                _ = self.shutdown.cancelled() => return Ok(Vec::new()),
            }
        }
    }

    async fn try_lease(&self, req: &LeaseRequest) -> Result<Vec<Grant>, PipelineError> {
        if self.shutdown.is_cancelled() {
            return Ok(Vec::new());
        }
        let now = self.now();
        let grants = self
            .commit(|txn, out| {
                let mut grants = Vec::new();
                'take: while grants.len() < req.max {
                    for q in &req.queues {
                        let Some(key) = txn.first_key(&keys::ready_prefix(q.as_str()))? else {
                            continue;
                        };
                        match grant_one(txn, out, &key, req, now)? {
                            Some(g) => grants.push(g),
                            // A stale index entry: dropped, look again.
                            None => txn.delete(key),
                        }
                        continue 'take;
                    }
                    break;
                }
                if let Some(last) = grants.last() {
                    touch_worker(
                        txn,
                        &req.worker,
                        WorkerStatus::Busy,
                        Some(last.task.id),
                        now,
                        None,
                    )?;
                }
                Ok(grants)
            })
            .await?;
        for g in &grants {
            self.metrics
                .observe_queue_wait(g.task.queue.as_str(), g.run.queue_wait_ms);
        }
        Ok(grants)
    }

    /// Extends a lease; returns the new deadline.
    pub async fn heartbeat(
        &self,
        lease_id: LeaseId,
        token: u64,
        holder: Option<&str>,
        extend: Duration,
    ) -> Result<Millis, PipelineError> {
        let now = self.now();
        self.commit(|txn, _| {
            let (mut lease, _) = self.check_lease(txn, lease_id, token, holder, now)?;
            let lb = lease_id.to_bytes();
            txn.delete(keys::deadline(lease.deadline, &lb));
            lease.deadline = now + extend.as_millis() as u64;
            txn.put_raw(keys::deadline(lease.deadline, &lb), &[]);
            txn.put(keys::lease(&lb), &lease)?;
            let w = WorkerId::parse(&lease.worker).ok();
            if let Some(w) = w {
                touch_worker(txn, &w, WorkerStatus::Busy, Some(lease.task_id), now, None)?;
            }
            Ok(lease.deadline)
        })
        .await
    }

    /// Completes the leased task.
    pub async fn complete(
        &self,
        lease_id: LeaseId,
        token: u64,
        holder: Option<&str>,
        result: Option<Value>,
    ) -> Result<TaskRecord, PipelineError> {
        let result = result.map(|r| r.to_string());
        if let Some(r) = &result {
            if r.len() > self.config.tasks.max_payload_bytes {
                return Err(PipelineError::TooLarge {
                    message: format!(
                        "result is {} bytes; the limit is {} (tasks.max_payload_bytes)",
                        r.len(),
                        self.config.tasks.max_payload_bytes
                    ),
                });
            }
        }
        let now = self.now();
        let (task, run, decisions) = self
            .commit(|txn, out| {
                let (lease, mut task) = self.check_lease(txn, lease_id, token, holder, now)?;
                let run_id = Some(lease.run_id);
                // The output stage sees the result and the run's step output.
                let run_now = txn
                    .get::<RunRecord>(&keys::run(&lease.run_id.to_bytes()))?
                    .ok_or_else(|| PipelineError::not_found("run", lease.run_id))?;
                let mut text = result.clone().unwrap_or_default();
                for s in &run_now.steps {
                    text.push('\n');
                    text.push_str(s.output_tail.as_deref().unwrap_or_default());
                }
                let decisions = self.guardrails.evaluate(Subject {
                    stage: Stage::Output,
                    queue: task.queue.as_str(),
                    text: &text,
                    tool: None,
                });
                enforce::record(txn, out, &task, run_id, &decisions, now)?;
                if let Some(block) = enforce::blocking(&decisions) {
                    // A blocked output fails the task; the worker hears 422.
                    end_lease(txn, lease_id, now, "failed")?;
                    let error = enforce::blocked(block).to_string();
                    let run = finish_run(
                        txn,
                        lease.run_id,
                        now,
                        RunOutcome::Failed,
                        Some(error.clone()),
                    )?;
                    task.last_error = Some(error.clone());
                    let data = json!({"error": error, "retryable": false, "policy": block.policy});
                    move_to(
                        txn,
                        out,
                        &mut task,
                        Move {
                            to: TaskState::Failed { at: now, error },
                            event: EventKind::TaskFailed,
                            run: run_id,
                            at: now,
                            data,
                        },
                    )?;
                    idle_worker(txn, &lease, now)?;
                    return Ok((task, run, decisions));
                }
                end_lease(txn, lease_id, now, "completed")?;
                let run = finish_run(txn, lease.run_id, now, RunOutcome::Completed, None)?;
                task.result = result.clone();
                // Decisions of earlier writes, plus this completion's own.
                let mut stored = crate::reviews::decisions_of(txn, task.id)?;
                stored.extend(
                    decisions
                        .iter()
                        .filter(|d| d.action != crate::model::Action::Allowed)
                        .map(|d| crate::model::StoredDecision {
                            task_id: task.id,
                            run_id,
                            at: now,
                            decision: d.clone(),
                        }),
                );
                let flagged = !crate::reviews::flagged_by(&stored).is_empty();
                match (&run, task.review.required || flagged) {
                    (Some(run), true) => {
                        self.open_ticket(txn, out, &mut task, run, &stored, now)?;
                    }
                    _ => {
                        let data = json!({
                            "lease_id": lease_id.to_string(),
                            "run_duration_ms": now.saturating_sub(lease.granted_at),
                            "duration_ms": now.saturating_sub(task.created_at),
                        });
                        move_to(
                            txn,
                            out,
                            &mut task,
                            Move {
                                to: TaskState::Completed { at: now },
                                event: EventKind::TaskCompleted,
                                run: run_id,
                                at: now,
                                data,
                            },
                        )?;
                    }
                }
                idle_worker(txn, &lease, now)?;
                Ok((task, run, decisions))
            })
            .await?;
        self.count_decisions(&decisions);
        if let Some(block) = enforce::blocking(&decisions) {
            self.metrics
                .observe_task_end(&task, run.as_ref(), "failed", self.now());
            return Err(enforce::blocked(block));
        }
        if task.state.kind() == crate::model::StateKind::Completed {
            self.metrics
                .observe_task_end(&task, run.as_ref(), "completed", self.now());
        }
        Ok(task)
    }

    /// Fails the leased task: retry with backoff, fail, or dead-letter.
    pub async fn fail(
        &self,
        lease_id: LeaseId,
        token: u64,
        holder: Option<&str>,
        failure: Failure,
    ) -> Result<TaskRecord, PipelineError> {
        let failure = Failure {
            retryable: failure.retryable,
            error: crate::redact::redact(&failure.error).into_owned(),
        };
        let now = self.now();
        let jitter: f64 = rand::random();
        let (task, run, outcome) = self
            .commit(|txn, out| {
                let (lease, mut task) = self.check_lease(txn, lease_id, token, holder, now)?;
                end_lease(txn, lease_id, now, "failed")?;
                task.last_error = Some(failure.error.clone());
                let exhausted = task.budget_used >= task.max_attempts;
                let (to, kind, run_outcome, data, label) = if !failure.retryable {
                    (
                        TaskState::Failed {
                            at: now,
                            error: failure.error.clone(),
                        },
                        EventKind::TaskFailed,
                        RunOutcome::Failed,
                        json!({"error": failure.error, "retryable": false}),
                        "failed",
                    )
                } else if exhausted {
                    (
                        TaskState::Dead {
                            at: now,
                            error: failure.error.clone(),
                        },
                        EventKind::TaskDeadLettered,
                        RunOutcome::Failed,
                        json!({"error": failure.error, "attempts": task.budget_used}),
                        "dead",
                    )
                } else {
                    let q = &self.config.queue;
                    let delay = retry_delay(q.retry_base, q.retry_cap, task.budget_used, jitter);
                    let at = now + delay.as_millis() as u64;
                    (
                        TaskState::Scheduled {
                            eligible_at: at,
                            reason: ScheduleReason::Retry,
                        },
                        EventKind::TaskScheduled,
                        RunOutcome::Retried,
                        json!({
                            "reason": "retry",
                            "error": failure.error,
                            "delay_ms": delay.as_millis() as u64,
                            "eligible_at": format_rfc3339(at),
                            "next_attempt": task.attempts + 1,
                        }),
                        "retried",
                    )
                };
                let run = finish_run(
                    txn,
                    lease.run_id,
                    now,
                    run_outcome,
                    Some(failure.error.clone()),
                )?;
                move_to(
                    txn,
                    out,
                    &mut task,
                    Move {
                        to,
                        event: kind,
                        run: Some(lease.run_id),
                        at: now,
                        data,
                    },
                )?;
                idle_worker(txn, &lease, now)?;
                Ok((task, run, label))
            })
            .await?;
        if outcome != "retried" {
            self.metrics
                .observe_task_end(&task, run.as_ref(), outcome, self.now());
        }
        Ok(task)
    }

    /// Gives a lease back without counting the attempt (worker shutdown).
    pub async fn release(
        &self,
        lease_id: LeaseId,
        token: u64,
        holder: Option<&str>,
    ) -> Result<TaskRecord, PipelineError> {
        let now = self.now();
        self.commit(|txn, out| {
            let (lease, mut task) = self.check_lease(txn, lease_id, token, holder, now)?;
            end_lease(txn, lease_id, now, "released")?;
            finish_run(txn, lease.run_id, now, RunOutcome::Released, None)?;
            task.budget_used = task.budget_used.saturating_sub(1);
            let data = json!({"reason": "released", "lease_id": lease_id.to_string()});
            move_to(
                txn,
                out,
                &mut task,
                Move {
                    to: TaskState::Queued { eligible_at: now },
                    event: EventKind::TaskQueued,
                    run: Some(lease.run_id),
                    at: now,
                    data,
                },
            )?;
            idle_worker(txn, &lease, now)?;
            Ok(task)
        })
        .await
    }

    /// Checks that `holder` (None: the server itself) took the lease, that
    /// `token` is its current token, and that it is active on a task still
    /// running under it. Stale calls are counted.
    pub(crate) fn check_lease(
        &self,
        txn: &Txn<'_>,
        lease_id: LeaseId,
        token: u64,
        holder: Option<&str>,
        now: Millis,
    ) -> Result<(LeaseRecord, TaskRecord), PipelineError> {
        let lease = txn
            .get::<LeaseRecord>(&keys::lease(&lease_id.to_bytes()))?
            .ok_or_else(|| PipelineError::not_found("lease", lease_id))?;
        if let Some(h) = holder {
            if !lease.holder.is_empty() && lease.holder != h {
                return Err(PipelineError::Forbidden {
                    message: format!("lease {lease_id} belongs to another principal"),
                });
            }
        }
        let stale = |message: String| {
            self.metrics.stale_ack(lease.queue.as_str());
            PipelineError::StaleLease { message }
        };
        if lease.token != token {
            return Err(stale(format!(
                "token {token} is not the fencing token of lease {lease_id}"
            )));
        }
        if let LeaseState::Ended { at, how } = &lease.state {
            return Err(stale(format!(
                "lease {lease_id} ended ({how}) at {}; the task may have been redelivered",
                format_rfc3339(*at)
            )));
        }
        if lease.deadline <= now {
            return Err(stale(format!(
                "lease {lease_id} expired at {}",
                format_rfc3339(lease.deadline)
            )));
        }
        let task = load_task(txn, lease.task_id)?;
        if task.state.lease().map(|l| l.lease_id) != Some(lease_id) {
            return Err(stale(format!(
                "task {} is no longer held by lease {lease_id}",
                task.id
            )));
        }
        Ok((lease, task))
    }
}

/// Grants a lease on the task behind ready-index `key`; `None` when the entry
/// is stale (the caller drops it).
fn grant_one(
    txn: &mut Txn<'_>,
    out: &mut Vec<crate::model::EventRecord>,
    key: &[u8],
    req: &LeaseRequest,
    now: Millis,
) -> Result<Option<Grant>, PipelineError> {
    let Some((_, idb)) = keys::parse_ready_tail(key) else {
        return Ok(None);
    };
    let id = TaskId::from_bytes(idb);
    let Some(mut task) = txn.get::<TaskRecord>(&keys::task(&idb))? else {
        return Ok(None);
    };
    let TaskState::Queued { eligible_at } = task.state else {
        return Ok(None);
    };
    let lease_id = LeaseId::from_ulid(txn.new_ulid());
    let run_id = RunId::from_ulid(txn.new_ulid());
    let token = txn.next_sequence(keys::FENCE)?;
    let deadline = now + req.lease_for.as_millis() as u64;
    task.attempts += 1;
    task.budget_used += 1;
    task.runs.push(run_id);
    let queue_wait_ms = now.saturating_sub(eligible_at);
    let run = RunRecord {
        id: run_id,
        task_id: id,
        attempt: task.attempts,
        lease_id,
        worker: req.worker.to_string(),
        started_at: now,
        queue_wait_ms,
        ended_at: None,
        outcome: None,
        error: None,
        steps: Vec::new(),
        agents: Vec::new(),
    };
    let lease = LeaseRecord {
        id: lease_id,
        task_id: id,
        run_id,
        queue: task.queue.clone(),
        token,
        worker: req.worker.to_string(),
        holder: req.holder.clone(),
        granted_at: now,
        deadline,
        state: LeaseState::Active,
    };
    txn.put(keys::run(&run_id.to_bytes()), &run)?;
    txn.put(keys::lease(&lease_id.to_bytes()), &lease)?;
    txn.put_raw(keys::deadline(deadline, &lease_id.to_bytes()), &[]);
    let to = TaskState::Running(LeaseRef {
        lease_id,
        run_id,
        token,
        worker: req.worker.to_string(),
    });
    let data = json!({
        "lease_id": lease_id.to_string(),
        "worker": req.worker.as_str(),
        "token": token,
        "deadline": format_rfc3339(deadline),
        "queue_wait_ms": queue_wait_ms,
    });
    move_to(
        txn,
        out,
        &mut task,
        Move {
            to,
            event: EventKind::TaskLeased,
            run: Some(run_id),
            at: now,
            data,
        },
    )?;
    Ok(Some(Grant { lease, task, run }))
}

fn idle_worker(txn: &mut Txn<'_>, lease: &LeaseRecord, now: Millis) -> Result<(), PipelineError> {
    Ok(worker_done(txn, &lease.worker, lease.task_id, now)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_doubles_until_the_cap_and_jitters_in_the_upper_half() {
        let base = Duration::from_secs(1);
        let cap = Duration::from_secs(60);
        assert_eq!(retry_delay(base, cap, 1, 1.0), Duration::from_secs(1));
        assert_eq!(retry_delay(base, cap, 1, 0.0), Duration::from_millis(500));
        assert_eq!(retry_delay(base, cap, 3, 1.0), Duration::from_secs(4));
        assert_eq!(retry_delay(base, cap, 40, 1.0), cap);
        let d = retry_delay(base, cap, 4, 0.5);
        assert!(d >= Duration::from_secs(4) && d <= Duration::from_secs(8));
    }
}
