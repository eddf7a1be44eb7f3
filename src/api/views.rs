//! JSON views: tasks, runs, tickets, workers and audit records as the API
//! returns them.

use serde_json::{json, Value};

use crate::audit::AuditRecord;
use crate::auth::Sight;
use crate::clock::format_rfc3339;
use crate::clock::Millis;
use crate::model::{
    state_detail, step_spec_json, RunRecord, StepResult, TaskRecord, Ticket, TicketState,
    WorkerRecord,
};
use crate::pipeline::transition::trace_id_of;

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

/// JSON view of a run, times in RFC 3339 (in a task, a run page, a dossier).
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

/// JSON view of a worker.
pub fn worker_json(w: &WorkerRecord) -> serde_json::Value {
    json!({
        "id": w.id,
        "status": w.status.as_str(),
        "current_task": w.current_task.map(|t| t.to_string()),
        "detail": w.detail,
        "last_seen": crate::clock::format_rfc3339(w.last_seen),
    })
}

/// The JSON view of a ticket.
pub fn ticket_json(t: &Ticket, now: Millis) -> serde_json::Value {
    json!({
        "id": t.id.to_string(),
        "task_id": t.task_id.to_string(),
        "run_id": t.run_id.to_string(),
        "queue": t.queue.as_str(),
        "priority": t.priority,
        "state": t.state.as_str(),
        "outcome": t.outcome().map(|o| o.as_str()),
        "holder": t.state.holder(),
        "claim_expires_at": match &t.state { TicketState::Claimed { until, .. } => Some(format_rfc3339(*until)), _ => None },
        "dossier_hash": hex::encode(t.dossier_hash),
        "flagged_by": t.flagged_by,
        "review_required": t.review_required,
        "required_approvals": t.required_approvals,
        "approvals": t.approvals(),
        "created_at": format_rfc3339(t.created_at),
        "age_seconds": now.saturating_sub(t.created_at) / 1000,
        "first_assigned_at": t.first_assigned_at.map(format_rfc3339),
        "closed_at": t.closed_at.map(format_rfc3339),
        "due_at": format_rfc3339(t.due_at),
        "sla_breached": t.sla_breached,
        "escalated": t.escalated,
        "votes": t.votes.iter().map(|v| json!({"by": v.by, "outcome": v.outcome.as_str(), "comment": v.comment, "at": format_rfc3339(v.at)})).collect::<Vec<_>>(),
        "assignments": t.assignments.iter().map(|a| json!({"to": a.to, "by": a.by, "at": format_rfc3339(a.at), "first": a.first})).collect::<Vec<_>>(),
    })
}

/// The task summary shown with a ticket.
pub fn task_brief(task: &TaskRecord) -> serde_json::Value {
    json!({
        "id": task.id.to_string(),
        "state": task.state.kind().as_str(),
        "state_detail": state_detail(&task.state),
        "submitted_by": task.submitted_by,
        "labels": task.labels,
    })
}

/// JSON view of a record.
pub fn record_json(r: &AuditRecord) -> serde_json::Value {
    serde_json::json!({
        "seq": r.seq,
        "time": format_rfc3339(r.at),
        "request_id": r.request_id,
        "principal": r.principal,
        "roles": r.roles,
        "method": r.method,
        "route": r.route,
        "body_sha256": r.body_sha256.map(hex::encode),
        "status": r.status,
        "latency_us": r.latency_us,
        "detail": r.detail,
        "prev_hash": hex::encode(r.prev_hash),
        "hash": hex::encode(r.hash),
    })
}

/// What a metadata reader does not see of a task view (`auth.visibility`),
/// named in the view's `withheld` list.
pub const WITHHELD: [&str; 4] = ["payload", "result", "step_output", "event_data"];

/// Withholds content from a task or run view ([`task_json`], a task with its
/// history, [`run_json`]): payload and result become null, step
/// `output_tail`s null, review comments null; `withheld` lists what was held
/// back. Events are withheld as they are built ([`event_json`]).
pub fn withhold_content(v: &mut Value) {
    for key in ["payload", "result"] {
        if let Some(x) = v.get_mut(key) {
            *x = Value::Null;
        }
    }
    let runs = match v.get_mut("runs").and_then(Value::as_array_mut) {
        Some(runs) => runs.iter_mut().collect(),
        None => vec![&mut *v],
    };
    for run in runs {
        for step in run
            .get_mut("steps")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(out) = step.get_mut("output_tail") {
                *out = Value::Null;
            }
        }
    }
    for t in v
        .get_mut("reviews")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        for vote in t
            .get_mut("votes")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(c) = vote.get_mut("comment") {
                *c = Value::Null;
            }
        }
    }
    v["withheld"] = json!(WITHHELD);
}

/// One event as a view shows it: its envelope, with content withheld for a
/// metadata reader.
pub fn event_json(e: &crate::model::EventRecord, sight: Sight) -> Value {
    let mut env = e.envelope();
    if sight == Sight::Metadata {
        env.withhold_content();
    }
    json!(env)
}
