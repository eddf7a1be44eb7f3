//! Worker status reports (`idle`, `busy`, `draining`, `offline`) normalised
//! to one form, enforcing the projection's rules.

use serde_json::Value;

use crate::model::{TaskId, WorkerStatus};

use super::normalize::{err, flatten, snake_case, take_str, ShapeError};

/// A normalised status report.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusReport {
    /// What the worker says it is doing.
    pub status: WorkerStatus,
    /// The task it works on.
    pub current_task: Option<TaskId>,
    /// Free text from the worker (redacted before it is stored).
    pub detail: Option<String>,
}

/// Normalises a status report, enforcing the projection's rules.
pub fn normalize_status(value: &Value) -> Result<StatusReport, ShapeError> {
    let mut m = flatten(value)?;
    let status =
        take_str(&mut m, &["status", "state"])?.ok_or_else(|| err("status", "missing status"))?;
    let status = match snake_case(&status).as_str() {
        "idle" => WorkerStatus::Idle,
        "busy" | "working" => WorkerStatus::Busy,
        "draining" => WorkerStatus::Draining,
        "offline" => WorkerStatus::Offline,
        _ => {
            return Err(err(
                "status",
                format!("unknown status {status:?}; expected idle, busy, draining or offline"),
            ))
        }
    };
    let current_task = match take_str(&mut m, &["current_task", "current_task_id", "task_id"])? {
        None => None,
        Some(t) => Some(TaskId::parse(&t).map_err(|e| err("current_task", e.0))?),
    };
    let detail = take_str(&mut m, &["detail", "message"])?;
    m.remove("type");
    if let Some(k) = m.keys().next() {
        return Err(err(k, format!("unknown field {k:?} in a status report")));
    }
    if status == WorkerStatus::Idle && current_task.is_some() {
        return Err(err(
            "current_task",
            "an idle worker cannot have a current_task",
        ));
    }
    Ok(StatusReport {
        status,
        current_task,
        detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn idle_with_a_current_task_is_refused() {
        let id = TaskId::from_ulid(ulid::Ulid::new()).to_string();
        let e = normalize_status(&json!({"status": "idle", "currentTask": id})).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("current_task"));
        let ok = normalize_status(&json!({"event_data": {"status": "busy", "current_task": id}}))
            .unwrap();
        assert_eq!(ok.status, WorkerStatus::Busy);
        assert!(normalize_status(&json!({"status": "idle", "mood": "ok"})).is_err());
    }
}
