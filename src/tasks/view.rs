//! JSON views of tasks and runs, as the API returns them.

use serde_json::{json, Value};

use super::model::{RunRecord, ScheduleReason, StepResult, StepSpec, TaskRecord, TaskState};
use super::transition::trace_id_of;
use crate::clock::format_rfc3339;

/// The state's data (`state_detail`).
pub fn state_detail(state: &TaskState) -> Value {
    match state {
        TaskState::Scheduled {
            eligible_at,
            reason,
        } => json!({
            "eligible_at": format_rfc3339(*eligible_at),
            "reason": match reason { ScheduleReason::Delayed => "delayed", ScheduleReason::Retry => "retry" },
        }),
        TaskState::Queued { eligible_at } => json!({"eligible_at": format_rfc3339(*eligible_at)}),
        TaskState::Running(l) | TaskState::Verifying(l) => json!({
            "lease_id": l.lease_id.to_string(),
            "run_id": l.run_id.to_string(),
            "worker": l.worker,
        }),
        TaskState::AwaitingReview { run_id, since } => json!({
            "run_id": run_id.to_string(),
            "since": format_rfc3339(*since),
        }),
        TaskState::Completed { at } => json!({"at": format_rfc3339(*at)}),
        TaskState::Failed { at, error } | TaskState::Dead { at, error } => json!({
            "at": format_rfc3339(*at),
            "error": error,
        }),
        TaskState::Cancelled { at, by, reason } => json!({
            "at": format_rfc3339(*at),
            "by": by,
            "reason": reason,
        }),
    }
}

/// A step as submitted.
pub fn step_spec_json(s: &StepSpec) -> Value {
    match s {
        StepSpec::Named(n) => json!(n.as_str()),
        StepSpec::Inline { name, argv } => json!({"name": name.as_str(), "argv": argv}),
    }
}

fn parse_json_text(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or(Value::Null)
}

/// A task without its runs and events (lists).
pub fn task_summary(t: &TaskRecord) -> Value {
    json!({
        "id": t.id.to_string(),
        "queue": t.queue.as_str(),
        "priority": t.priority,
        "state": t.state.kind().as_str(),
        "labels": t.labels,
        "attempts": t.attempts,
        "max_attempts": t.max_attempts,
        "created_at": format_rfc3339(t.created_at),
        "updated_at": format_rfc3339(t.updated_at),
    })
}

/// A task in full (without runs and events; the handlers add those).
pub fn task_json(t: &TaskRecord) -> Value {
    json!({
        "id": t.id.to_string(),
        "queue": t.queue.as_str(),
        "priority": t.priority,
        "state": t.state.kind().as_str(),
        "state_detail": state_detail(&t.state),
        "labels": t.labels,
        "payload": parse_json_text(&t.payload),
        "steps": t.steps.iter().map(step_spec_json).collect::<Vec<_>>(),
        "max_attempts": t.max_attempts,
        "attempts": t.attempts,
        "attempts_left": t.max_attempts.saturating_sub(t.budget_used),
        "review": {
            "required": t.review.required,
            "required_approvals": t.review.required_approvals,
        },
        "workdir": t.workdir,
        "submitted_by": t.submitted_by,
        "idempotency_key": t.idempotency_key,
        "trace_id": t.traceparent.as_deref().and_then(trace_id_of),
        "created_at": format_rfc3339(t.created_at),
        "updated_at": format_rfc3339(t.updated_at),
        "last_error": t.last_error,
        "result": t.result.as_deref().map(parse_json_text),
    })
}

/// One step result.
pub fn step_json(s: &StepResult) -> Value {
    json!({
        "name": s.name,
        "started_at": format_rfc3339(s.started_at),
        "finished_at": s.finished_at.map(format_rfc3339),
        "duration_ms": s.duration_ms,
        "outcome": s.outcome,
        "exit_code": s.exit_code,
        "output_tail": s.output_tail,
    })
}

/// One run.
pub fn run_json(r: &RunRecord) -> Value {
    json!({
        "id": r.id.to_string(),
        "task_id": r.task_id.to_string(),
        "attempt": r.attempt,
        "lease_id": r.lease_id.to_string(),
        "worker": r.worker,
        "started_at": format_rfc3339(r.started_at),
        "queue_wait_ms": r.queue_wait_ms,
        "ended_at": r.ended_at.map(format_rfc3339),
        "outcome": r.outcome,
        "error": r.error,
        "agents": r.agents,
        "steps": r.steps.iter().map(step_json).collect::<Vec<_>>(),
    })
}
