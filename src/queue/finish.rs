//! Finishing a lease: `complete` (with the output guardrails and the review
//! gate), `fail` (retry with backoff, fail, or dead-letter) and `release`, and
//! the retry backoff. Each ends the lease, the run and the worker's busy
//! spell in the same write that moves the task.

use std::time::Duration;

use serde_json::{json, Value};

use crate::clock::{format_rfc3339, Millis};
use crate::guardrails::Subject;
use crate::model::{
    Action, Decision, EventKind, EventRecord, LeaseId, LeaseRecord, RunOutcome, RunRecord,
    ScheduleReason, Stage, StateKind, StoredDecision, TaskRecord, TaskState, Verdict,
};
use crate::pipeline::transition::{move_to, Move};
use crate::pipeline::{end_lease, enforce, finish_run, Pipeline, PipelineError};
use crate::store::Txn;
use crate::workers::worker_done;

/// What a worker reports when it gives up a task.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Retry if attempts remain.
    pub retryable: bool,
    /// Why, in the worker's words (redacted before it is stored: it reaches
    /// events and `last_error`).
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

/// Where a failure sends the task: its next state, the event recording the
/// move, how the run ended, the event's data, and the `observe_task_end`
/// label (`"retried"`: the task is not over and is not observed).
struct FailMove {
    to: TaskState,
    event: EventKind,
    run_outcome: RunOutcome,
    data: Value,
    label: &'static str,
}

impl Pipeline {
    /// Completes the leased task. `result` is stored as JSON text, at most
    /// `tasks.max_payload_bytes` (413 beyond). A blocking output guardrail
    /// fails the task instead and answers 422; a required review or a flag
    /// holds it in `awaiting_review`.
    pub async fn complete(
        &self,
        lease_id: LeaseId,
        token: u64,
        holder: Option<&str>,
        result: Option<Value>,
    ) -> Result<TaskRecord, PipelineError> {
        let result = result.map(|r| r.to_string());
        self.check_result_size(result.as_deref())?;
        let now = self.now();
        // One write, in this order: the output guardrails run and their
        // decisions are stored first (whatever comes next, they are part of
        // the record); a block then fails the task; otherwise the lease and
        // run end and the task completes or waits for review. Nothing is
        // observed in metrics before the write has succeeded.
        let (task, run, decisions, block) = self
            .commit(|txn, out| {
                let (lease, mut task) = self.check_lease(txn, lease_id, token, holder, now)?;
                // Read once, before this write adds to them.
                let earlier = crate::reviews::decisions_of(txn, task.id)?;
                let decisions =
                    self.screen_output(txn, out, &lease, &task, result.as_deref(), now)?;
                let block = enforce::blocking(&decisions)
                    .cloned()
                    .or_else(|| step_output_block(&earlier, &lease));
                let run = match &block {
                    Some(block) => fail_blocked(txn, out, &lease, &mut task, block, now)?,
                    None => {
                        let stored = stored_with(earlier, &task, &lease, &decisions, now);
                        self.complete_or_hold(
                            txn,
                            out,
                            &lease,
                            &mut task,
                            result.clone(),
                            &stored,
                            now,
                        )?
                    }
                };
                idle_worker(txn, &lease, now)?;
                Ok((task, run, decisions, block))
            })
            .await?;
        self.count_decisions(&decisions);
        if let Some(block) = block {
            self.metrics
                .observe_task_end(&task, run.as_ref(), "failed", self.now());
            return Err(enforce::blocked(&block));
        }
        if task.state.kind() == StateKind::Completed {
            self.metrics
                .observe_task_end(&task, run.as_ref(), "completed", self.now());
        }
        Ok(task)
    }

    /// Refuses a result (JSON text) over `tasks.max_payload_bytes` with 413.
    fn check_result_size(&self, result: Option<&str>) -> Result<(), PipelineError> {
        if let Some(r) = result {
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
        Ok(())
    }

    /// Runs the output-stage guardrails over the result and stores their
    /// non-allow decisions (with their events).
    fn screen_output(
        &self,
        txn: &mut Txn<'_>,
        out: &mut Vec<EventRecord>,
        lease: &LeaseRecord,
        task: &TaskRecord,
        result: Option<&str>,
        now: Millis,
    ) -> Result<Vec<Decision>, PipelineError> {
        // The output stage sees the result here; each step's output was
        // screened, unredacted, when it was reported (`report_events`), and
        // a block recorded then still stops this run from completing.
        let decisions = self.guardrails.evaluate(Subject {
            stage: Stage::Output,
            queue: task.queue.as_str(),
            text: result.unwrap_or_default(),
            tool: None,
        });
        enforce::record(txn, out, task, Some(lease.run_id), &decisions, now)?;
        Ok(decisions)
    }

    /// Ends the lease and the run as completed and stores the result; then
    /// either holds the task for review (review required, or a guardrail
    /// flagged it) or moves it to `completed`. Returns the finished run.
    #[allow(clippy::too_many_arguments)]
    fn complete_or_hold(
        &self,
        txn: &mut Txn<'_>,
        out: &mut Vec<EventRecord>,
        lease: &LeaseRecord,
        task: &mut TaskRecord,
        result: Option<String>,
        stored: &[StoredDecision],
        now: Millis,
    ) -> Result<Option<RunRecord>, PipelineError> {
        let lease_id = lease.id;
        let run_id = Some(lease.run_id);
        end_lease(txn, lease_id, now, "completed")?;
        let run = finish_run(txn, lease.run_id, now, RunOutcome::Completed, None)?;
        task.result = result;
        let flagged = !crate::reviews::flagged_by(stored).is_empty();
        match (&run, task.review.required || flagged) {
            (Some(run), true) => {
                self.open_ticket(txn, out, task, run, stored, now)?;
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
                    task,
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
        Ok(run)
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
                let m = self.fail_move(&task, &failure, jitter, now);
                let run = finish_run(
                    txn,
                    lease.run_id,
                    now,
                    m.run_outcome,
                    Some(failure.error.clone()),
                )?;
                move_to(
                    txn,
                    out,
                    &mut task,
                    Move {
                        to: m.to,
                        event: m.event,
                        run: Some(lease.run_id),
                        at: now,
                        data: m.data,
                    },
                )?;
                idle_worker(txn, &lease, now)?;
                Ok((task, run, m.label))
            })
            .await?;
        if outcome != "retried" {
            self.metrics
                .observe_task_end(&task, run.as_ref(), outcome, self.now());
        }
        Ok(task)
    }

    /// Decides where a failure sends `task`: `failed` when the worker says it
    /// is not retryable, `dead` when its attempt budget is spent, otherwise
    /// `scheduled` for a retry after [`retry_delay`].
    fn fail_move(
        &self,
        task: &TaskRecord,
        failure: &Failure,
        jitter: f64,
        now: Millis,
    ) -> FailMove {
        let exhausted = task.budget_used >= task.max_attempts;
        if !failure.retryable {
            return FailMove {
                to: TaskState::Failed {
                    at: now,
                    error: failure.error.clone(),
                },
                event: EventKind::TaskFailed,
                run_outcome: RunOutcome::Failed,
                data: json!({"error": failure.error, "retryable": false}),
                label: "failed",
            };
        }
        if exhausted {
            return FailMove {
                to: TaskState::Dead {
                    at: now,
                    error: failure.error.clone(),
                },
                event: EventKind::TaskDeadLettered,
                run_outcome: RunOutcome::Failed,
                data: json!({"error": failure.error, "attempts": task.budget_used}),
                label: "dead",
            };
        }
        let q = &self.config.queue;
        let delay = retry_delay(q.retry_base, q.retry_cap, task.budget_used, jitter);
        let at = now + delay.as_millis() as u64;
        FailMove {
            to: TaskState::Scheduled {
                eligible_at: at,
                reason: ScheduleReason::Retry,
            },
            event: EventKind::TaskScheduled,
            run_outcome: RunOutcome::Retried,
            data: json!({
                "reason": "retry",
                "error": failure.error,
                "delay_ms": delay.as_millis() as u64,
                "eligible_at": format_rfc3339(at),
                "next_attempt": task.attempts + 1,
            }),
            label: "retried",
        }
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
            // A release is the worker stopping, not the task failing: give back
            // the attempt the grant charged (`attempts` still counts the run).
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
}

/// A blocked output fails the task (the worker hears 422): ends the lease and
/// the run as failed and moves the task to `failed`. Returns the finished run.
fn fail_blocked(
    txn: &mut Txn<'_>,
    out: &mut Vec<EventRecord>,
    lease: &LeaseRecord,
    task: &mut TaskRecord,
    block: &Decision,
    now: Millis,
) -> Result<Option<RunRecord>, PipelineError> {
    end_lease(txn, lease.id, now, "failed")?;
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
        task,
        Move {
            to: TaskState::Failed { at: now, error },
            event: EventKind::TaskFailed,
            run: Some(lease.run_id),
            at: now,
            data,
        },
    )?;
    Ok(run)
}

/// The task's guardrail decisions as the review gate must see them: those of
/// earlier writes (`earlier`, read before this one), plus this completion's
/// own. The latter are added by hand because a scan inside a write sees
/// committed data only, not the decisions `screen_output` has just stored.
fn stored_with(
    mut earlier: Vec<StoredDecision>,
    task: &TaskRecord,
    lease: &LeaseRecord,
    decisions: &[Decision],
    now: Millis,
) -> Vec<StoredDecision> {
    earlier.extend(
        decisions
            .iter()
            .filter(|d| d.action != Action::Allowed)
            .map(|d| StoredDecision {
                task_id: task.id,
                run_id: Some(lease.run_id),
                at: now,
                decision: d.clone(),
            }),
    );
    earlier
}

/// A block the output stage gave this run's step output when it was
/// reported (among the task's `earlier` decisions): the run may not
/// complete past it.
fn step_output_block(earlier: &[StoredDecision], lease: &LeaseRecord) -> Option<Decision> {
    earlier
        .iter()
        .find(|d| {
            d.run_id == Some(lease.run_id)
                && d.decision.stage == Stage::Output
                && d.decision.verdict == Verdict::Block
        })
        .map(|d| d.decision.clone())
}

/// The worker that held `lease` is done with its task.
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
