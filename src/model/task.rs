//! Tasks, runs and leases as stored, and the one state machine they obey.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ids::{LeaseId, QueueName, RunId, StepName, TaskId};
use crate::clock::Millis;
use crate::store::{CodecError, Record};

/// The kind of a task's state, without its data (indices, filters, metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateKind {
    /// Waiting for `eligible_at` (delayed submit or retry backoff).
    Scheduled,
    /// Eligible and waiting for a lease.
    Queued,
    /// Leased to a worker.
    Running,
    /// Leased, and the worker is running verification steps.
    Verifying,
    /// Steps passed; a human decision is pending.
    AwaitingReview,
    /// Finished: completed by its worker, or approved in review.
    Completed,
    /// Ended by a non-retryable failure or a rejection.
    Failed,
    /// Attempts exhausted (dead-letter; can be requeued).
    Dead,
    /// Cancelled by a user.
    Cancelled,
}

impl StateKind {
    /// Every state, in pipeline order.
    pub const ALL: [StateKind; 9] = [
        StateKind::Scheduled,
        StateKind::Queued,
        StateKind::Running,
        StateKind::Verifying,
        StateKind::AwaitingReview,
        StateKind::Completed,
        StateKind::Failed,
        StateKind::Dead,
        StateKind::Cancelled,
    ];

    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            StateKind::Scheduled => "scheduled",
            StateKind::Queued => "queued",
            StateKind::Running => "running",
            StateKind::Verifying => "verifying",
            StateKind::AwaitingReview => "awaiting_review",
            StateKind::Completed => "completed",
            StateKind::Failed => "failed",
            StateKind::Dead => "dead",
            StateKind::Cancelled => "cancelled",
        }
    }

    /// Parses the API spelling.
    pub fn parse(s: &str) -> Option<StateKind> {
        StateKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The byte used in store keys (stable: never renumber).
    pub fn code(self) -> u8 {
        match self {
            StateKind::Scheduled => 1,
            StateKind::Queued => 2,
            StateKind::Running => 3,
            StateKind::Verifying => 4,
            StateKind::AwaitingReview => 5,
            StateKind::Completed => 6,
            StateKind::Failed => 7,
            StateKind::Dead => 8,
            StateKind::Cancelled => 9,
        }
    }

    /// No further transition happens by itself (dead can still be requeued).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            StateKind::Completed | StateKind::Failed | StateKind::Dead | StateKind::Cancelled
        )
    }

    /// Holds a lease.
    pub fn is_leased(self) -> bool {
        matches!(self, StateKind::Running | StateKind::Verifying)
    }

    /// The state machine: may a task go from `self` to `to`?
    pub fn allows(self, to: StateKind) -> bool {
        use StateKind::*;
        matches!(
            (self, to),
            (Scheduled, Queued)
                | (Queued, Running)
                | (Running, Verifying)
                | (
                    Running | Verifying,
                    Completed | AwaitingReview | Failed | Dead | Scheduled | Queued
                )
                | (AwaitingReview, Completed | Failed | Queued | Scheduled)
                | (Dead, Queued)
                | (
                    Scheduled | Queued | Running | Verifying | AwaitingReview,
                    Cancelled
                )
        )
    }
}

/// Why a task waits in `scheduled`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScheduleReason {
    /// Submitted with `run_at`/`delay`.
    Delayed,
    /// Backing off before retry `attempt`.
    Retry,
}

/// The lease a running task is held under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRef {
    /// The lease's id; a call naming another lease is refused as stale.
    pub lease_id: LeaseId,
    /// The run it started.
    pub run_id: RunId,
    /// Its fencing token.
    pub token: u64,
    /// Who holds it.
    pub worker: String,
}

/// A task's state, carrying what that state needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskState {
    /// Not eligible before `eligible_at`.
    Scheduled {
        /// When it becomes eligible.
        eligible_at: Millis,
        /// Why it waits.
        reason: ScheduleReason,
    },
    /// Eligible since `eligible_at`, waiting in the ready index.
    Queued {
        /// Queue wait is measured from here.
        eligible_at: Millis,
    },
    /// Leased; no verification step reported yet.
    Running(LeaseRef),
    /// Leased, verification steps started.
    Verifying(LeaseRef),
    /// Waiting for a review decision.
    AwaitingReview {
        /// The run whose result is under review.
        run_id: RunId,
        /// When the review was requested, in ms since the Unix epoch.
        since: Millis,
    },
    /// Finished successfully (by its worker, or approved in review).
    Completed {
        /// When it completed, in ms since the Unix epoch.
        at: Millis,
    },
    /// Finished unsuccessfully: not retryable, blocked by a guardrail, or
    /// rejected in review.
    Failed {
        /// When it failed, in ms since the Unix epoch.
        at: Millis,
        /// The failure message (redacted); `last_error` holds the same text.
        error: String,
    },
    /// Attempts exhausted (`budget_used` reached `max_attempts`).
    Dead {
        /// When it was dead-lettered, in ms since the Unix epoch.
        at: Millis,
        /// The last error.
        error: String,
    },
    /// Cancelled by a user; a lease it held ended with it.
    Cancelled {
        /// When it was cancelled, in ms since the Unix epoch.
        at: Millis,
        /// The principal that cancelled it.
        by: String,
        /// Optional reason given.
        reason: Option<String>,
    },
}

impl TaskState {
    /// The state's kind.
    pub fn kind(&self) -> StateKind {
        match self {
            TaskState::Scheduled { .. } => StateKind::Scheduled,
            TaskState::Queued { .. } => StateKind::Queued,
            TaskState::Running(_) => StateKind::Running,
            TaskState::Verifying(_) => StateKind::Verifying,
            TaskState::AwaitingReview { .. } => StateKind::AwaitingReview,
            TaskState::Completed { .. } => StateKind::Completed,
            TaskState::Failed { .. } => StateKind::Failed,
            TaskState::Dead { .. } => StateKind::Dead,
            TaskState::Cancelled { .. } => StateKind::Cancelled,
        }
    }

    /// The lease, when leased.
    pub fn lease(&self) -> Option<&LeaseRef> {
        match self {
            TaskState::Running(l) | TaskState::Verifying(l) => Some(l),
            _ => None,
        }
    }
}

/// A step a task asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepSpec {
    /// A recipe from the server's `[steps.NAME]` config, or a step an external
    /// worker knows by that name.
    Named(StepName),
    /// An inline command (only when `executor.allow_inline_commands`).
    Inline {
        /// The name its results and events carry (and the child's `FORGELINE_STEP`).
        name: StepName,
        /// Program and arguments (no shell).
        argv: Vec<String>,
    },
}

impl StepSpec {
    /// The step's name.
    pub fn name(&self) -> &StepName {
        match self {
            StepSpec::Named(n) => n,
            StepSpec::Inline { name, .. } => name,
        }
    }
}

/// What a submission asked of the review gate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewRequest {
    /// Hold the result for a human decision.
    pub required: bool,
    /// Distinct approvals needed (N of M); 0 means the queue's default.
    pub required_approvals: u8,
}

/// A task as stored under `T id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// Id (a ULID: sorts by creation time).
    pub id: TaskId,
    /// The queue it was submitted to; part of its ready-index and counter keys.
    pub queue: QueueName,
    /// 0–9, higher leased first.
    pub priority: u8,
    /// Free key/values (project_id, correlation_id…).
    pub labels: BTreeMap<String, String>,
    /// The JSON payload, as text (bincode cannot hold `serde_json::Value`).
    pub payload: String,
    /// Steps to run, in order.
    pub steps: Vec<StepSpec>,
    /// Attempts before dead-letter.
    pub max_attempts: u32,
    /// Review gate request (used by the review gate).
    pub review: ReviewRequest,
    /// Working directory under the workspace root for the built-in executor.
    pub workdir: Option<String>,
    /// Principal that submitted it.
    pub submitted_by: String,
    /// The submission's Idempotency-Key.
    pub idempotency_key: Option<String>,
    /// W3C traceparent of the submission (the task's trace).
    pub traceparent: Option<String>,
    /// When it was submitted, in ms since the Unix epoch (server clock).
    pub created_at: Millis,
    /// When its state last changed, in ms since the Unix epoch.
    pub updated_at: Millis,
    /// Current state; changed only by `transition::move_to`, which keeps the
    /// state indexes and counters in step.
    pub state: TaskState,
    /// Runs started, ever (the attempt number of the latest run).
    pub attempts: u32,
    /// Attempts counted against `max_attempts` since the last requeue.
    pub budget_used: u32,
    /// Every run, oldest first.
    pub runs: Vec<RunId>,
    /// The last failure message.
    pub last_error: Option<String>,
    /// The completion result (JSON text).
    pub result: Option<String>,
}

impl Record for TaskRecord {
    const VERSION: u8 = 1;
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    /// Completed (possibly pending review).
    Completed,
    /// Failed; a retry was scheduled.
    Retried,
    /// Failed for good (or dead-lettered).
    Failed,
    /// The lease expired.
    LeaseExpired,
    /// The task was cancelled during the run.
    Cancelled,
    /// The worker released the lease (shutdown); not counted as an attempt.
    Released,
}

/// One step's result within a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepResult {
    /// The step's name as reported; a finish is matched to the latest
    /// unfinished step of that name.
    pub name: String,
    /// When it started (ms since the Unix epoch): the worker's timestamp, else
    /// the time the server received the report.
    pub started_at: Millis,
    /// Finished, once it has.
    pub finished_at: Option<Millis>,
    /// Duration reported or measured.
    pub duration_ms: Option<u64>,
    /// `passed`, `failed`, `timed_out` or `error` once finished.
    pub outcome: Option<String>,
    /// Exit status, when a process ran.
    pub exit_code: Option<i32>,
    /// Tail of the output (bounded, redacted).
    pub output_tail: Option<String>,
}

/// One attempt, stored under `R id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Id (a ULID minted with the lease).
    pub id: RunId,
    /// The task this run is an attempt of.
    pub task_id: TaskId,
    /// Attempt number (1-based).
    pub attempt: u32,
    /// The lease it ran under.
    pub lease_id: LeaseId,
    /// The worker id the lessee gave (not its authenticated principal).
    pub worker: String,
    /// When the lease was granted, in ms since the Unix epoch.
    pub started_at: Millis,
    /// Queue wait before this run (eligible → leased).
    pub queue_wait_ms: u64,
    /// When the run ended, in ms since the Unix epoch; `None` while it runs.
    pub ended_at: Option<Millis>,
    /// How it ended.
    pub outcome: Option<RunOutcome>,
    /// Error, when it failed.
    pub error: Option<String>,
    /// Verification steps, in the order they started.
    pub steps: Vec<StepResult>,
    /// Distinct agent names seen in this run's agent events.
    pub agents: Vec<String>,
}

impl Record for RunRecord {
    const VERSION: u8 = 1;
}

/// Where a lease stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseState {
    /// Held; its deadline has an entry in the `D` index until it ends.
    Active,
    /// Ended: `how` is `completed`, `failed`, `expired`, `cancelled`, `released`.
    Ended {
        /// When it ended, in ms since the Unix epoch.
        at: Millis,
        /// How it ended (one of the words above).
        how: String,
    },
}

/// A lease, stored under `L id` (kept after it ends, so stale calls are told so).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// Id (a ULID minted at grant); calls name it together with `token`.
    pub id: LeaseId,
    /// The task it was granted on.
    pub task_id: TaskId,
    /// The run the grant started; it ends when the lease does.
    pub run_id: RunId,
    /// Queue leased from.
    pub queue: QueueName,
    /// Fencing token (global, increasing).
    pub token: u64,
    /// Holder (the worker id it gave).
    pub worker: String,
    /// The authenticated principal that took the lease; only it may use the
    /// lease. Empty for leases written before v2 (anyone with the worker role).
    pub holder: String,
    /// When it was granted, in ms since the Unix epoch.
    pub granted_at: Millis,
    /// Expires unless extended.
    pub deadline: Millis,
    /// Active or ended.
    pub state: LeaseState,
}

/// Version 1 of [`LeaseRecord`] (before leases were bound to a principal).
#[derive(Debug, Clone, Deserialize)]
struct LeaseRecordV1 {
    id: LeaseId,
    task_id: TaskId,
    run_id: RunId,
    queue: QueueName,
    token: u64,
    worker: String,
    granted_at: Millis,
    deadline: Millis,
    state: LeaseState,
}

impl Record for LeaseRecord {
    const VERSION: u8 = 2;

    fn decode_old(version: u8, body: &[u8]) -> Result<Self, CodecError> {
        match version {
            1 => {
                let (v1, _): (LeaseRecordV1, _) =
                    bincode::serde::decode_from_slice(body, bincode::config::standard())?;
                Ok(LeaseRecord {
                    id: v1.id,
                    task_id: v1.task_id,
                    run_id: v1.run_id,
                    queue: v1.queue,
                    token: v1.token,
                    worker: v1.worker,
                    holder: String::new(),
                    granted_at: v1.granted_at,
                    deadline: v1.deadline,
                    state: v1.state,
                })
            }
            v => Err(CodecError::UnknownVersion(v)),
        }
    }
}

/// An Idempotency-Key, stored under `I principal key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// SHA-256 of the request body that first used the key.
    pub body_sha256: [u8; 32],
    /// The task it created.
    pub task_id: TaskId,
}

impl Record for IdempotencyRecord {
    const VERSION: u8 = 1;
}

#[cfg(test)]
mod tests {
    use super::*;
    use StateKind::*;

    #[test]
    fn terminal_states_only_leave_by_requeue() {
        for from in [Completed, Failed, Cancelled] {
            for to in StateKind::ALL {
                assert!(!from.allows(to), "{from:?} -> {to:?}");
            }
        }
        assert!(Dead.allows(Queued));
        assert!(!Dead.allows(Running));
    }

    #[test]
    fn leasing_needs_a_queued_task() {
        assert!(Queued.allows(Running));
        for from in [
            Scheduled,
            Running,
            Verifying,
            AwaitingReview,
            Completed,
            Dead,
        ] {
            assert!(!from.allows(Running), "{from:?}");
        }
    }

    #[test]
    fn state_codes_and_names_are_unique() {
        let mut codes: Vec<u8> = StateKind::ALL.iter().map(|k| k.code()).collect();
        codes.dedup();
        assert_eq!(codes.len(), 9);
        for k in StateKind::ALL {
            assert_eq!(StateKind::parse(k.as_str()), Some(k));
        }
    }
}
