//! The one way a task changes state: indexes, counts and events kept in step.
//!
//! Every operation that moves a task calls [`move_to`]; it checks the state
//! machine (`StateKind::allows`), removes the task from the indexes of its old
//! state, adds it to those of the new one, and appends the event that records
//! the move. Informational events (agent activity, lease expiry) go through
//! [`append_event`] alone.

use serde_json::Value;

use super::model::{StateKind, TaskRecord, TaskState};
use super::RunId;
use crate::clock::Millis;
use crate::events::{EventKind, EventRecord};
use crate::pipeline::PipelineError;
use crate::store::{keys, StoreError, Txn};

/// Appends an event about `task` and indexes it under the task.
#[allow(clippy::too_many_arguments)]
pub fn append_event(
    txn: &mut Txn<'_>,
    out: &mut Vec<EventRecord>,
    task: &TaskRecord,
    kind: EventKind,
    run_id: Option<RunId>,
    at: Millis,
    data: Value,
    state_changed: bool,
) -> Result<(), StoreError> {
    let id = txn.next_event_id();
    // Events are shown to every observer: no secret may ride along.
    let mut data = data;
    crate::redact::redact_json(&mut data);
    let record = EventRecord {
        id,
        kind,
        at,
        task_id: task.id,
        queue: task.queue.clone(),
        run_id,
        attempt: task.attempts,
        trace_id: task.traceparent.as_deref().and_then(trace_id_of),
        data: data.to_string(),
        state_after: state_changed.then(|| task.state.kind().as_str().to_string()),
    };
    txn.put(keys::event(id), &record)?;
    txn.put_raw(keys::task_event(&task.id.to_bytes(), id), &[]);
    out.push(record);
    Ok(())
}

/// The trace id inside a W3C `traceparent` (`00-<trace>-<span>-<flags>`).
pub fn trace_id_of(traceparent: &str) -> Option<String> {
    traceparent.split('-').nth(1).map(str::to_string)
}

/// Adds a new task to the indexes of its initial state and stores it.
pub fn insert(txn: &mut Txn<'_>, task: &TaskRecord) -> Result<(), StoreError> {
    index(txn, task)?;
    txn.put(keys::task(&task.id.to_bytes()), task)
}

/// Moves `task` to `to`, records `kind` with `data`, and stores the task.
#[allow(clippy::too_many_arguments)]
pub fn move_to(
    txn: &mut Txn<'_>,
    out: &mut Vec<EventRecord>,
    task: &mut TaskRecord,
    to: TaskState,
    kind: EventKind,
    run_id: Option<RunId>,
    now: Millis,
    data: Value,
) -> Result<(), PipelineError> {
    let from = task.state.kind();
    if !from.allows(to.kind()) {
        return Err(illegal(task, to.kind()));
    }
    unindex(txn, task)?;
    task.state = to;
    task.updated_at = now;
    index(txn, task)?;
    append_event(txn, out, task, kind, run_id, now, data, true)?;
    txn.put(keys::task(&task.id.to_bytes()), task)?;
    Ok(())
}

/// The 409 for a transition the state machine forbids.
pub fn illegal(task: &TaskRecord, to: StateKind) -> PipelineError {
    PipelineError::Conflict {
        code: "illegal_transition",
        message: format!(
            "task {} is {} and cannot become {}",
            task.id,
            task.state.kind().as_str(),
            to.as_str()
        ),
    }
}

fn unindex(txn: &mut Txn<'_>, task: &TaskRecord) -> Result<(), StoreError> {
    let id = task.id.to_bytes();
    match &task.state {
        TaskState::Queued { eligible_at } => txn.delete(keys::ready(
            task.queue.as_str(),
            task.priority,
            *eligible_at,
            &id,
        )),
        TaskState::Scheduled { eligible_at, .. } => txn.delete(keys::scheduled(*eligible_at, &id)),
        _ => {}
    }
    let kind = task.state.kind();
    txn.delete(keys::state(kind.code(), &id));
    txn.add_count(keys::count(kind.code(), task.queue.as_str()), -1)
}

fn index(txn: &mut Txn<'_>, task: &TaskRecord) -> Result<(), StoreError> {
    let id = task.id.to_bytes();
    match &task.state {
        TaskState::Queued { eligible_at } => txn.put_raw(
            keys::ready(task.queue.as_str(), task.priority, *eligible_at, &id),
            &[],
        ),
        TaskState::Scheduled { eligible_at, .. } => {
            txn.put_raw(keys::scheduled(*eligible_at, &id), &[])
        }
        _ => {}
    }
    let kind = task.state.kind();
    txn.put_raw(keys::state(kind.code(), &id), &[]);
    txn.add_count(keys::count(kind.code(), task.queue.as_str()), 1)
}
