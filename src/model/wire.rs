//! The wire form of a task's state and of a step spec: shared by the API's
//! views and by the review dossier's hash, which must hash exactly what a
//! reviewer is shown.

use serde_json::{json, Value};

use super::task::{ScheduleReason, StepSpec, TaskState};
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
