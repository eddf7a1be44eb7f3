//! The one way a task changes state: indexes, counts and events kept in step.
//!
//! Every operation that moves a task calls [`move_to`]; it checks the state
//! machine (`StateKind::allows`), removes the task from the indexes of its old
//! state, adds it to those of the new one, and appends the event that records
//! the move. Informational events (agent activity, lease expiry) go through
//! [`append_event`] alone.

use serde_json::Value;

use crate::clock::Millis;
use crate::model::{EventKind, EventRecord, RunId, StateKind, TaskRecord, TaskState};
use crate::pipeline::PipelineError;
use crate::store::{keys, StoreError, Txn};

/// An event about a task: what happened, in which run, when, and the
/// event's data (redacted before it is stored: events reach every observer).
#[derive(Debug)]
pub struct Note {
    /// The event type.
    pub kind: EventKind,
    /// The run it concerns, when it concerns one.
    pub run: Option<RunId>,
    /// When it happened.
    pub at: Millis,
    /// The event's `data` object.
    pub data: Value,
}

/// One step of the state machine: the state the task moves to and the event
/// that records the move.
#[derive(Debug)]
pub struct Move {
    /// The new state (checked against `StateKind::allows`).
    pub to: TaskState,
    /// The event type that records the move.
    pub event: EventKind,
    /// The run it concerns, when it concerns one.
    pub run: Option<RunId>,
    /// When it happened (also the task's new `updated_at`).
    pub at: Millis,
    /// The event's `data` object.
    pub data: Value,
}

/// Appends an event about `task` that leaves its state as it is (agent
/// activity, a lease that expired, a guardrail that fired).
pub fn append_event(
    txn: &mut Txn<'_>,
    out: &mut Vec<EventRecord>,
    task: &TaskRecord,
    note: Note,
) -> Result<(), StoreError> {
    record(txn, out, task, note, false)
}

/// Appends the event of a new task's first state (`task_queued` or
/// `task_scheduled`), which carries `state_after` like every move does.
pub fn entered(
    txn: &mut Txn<'_>,
    out: &mut Vec<EventRecord>,
    task: &TaskRecord,
    note: Note,
) -> Result<(), StoreError> {
    record(txn, out, task, note, true)
}

/// Stores the event and indexes it under the task. `state_changed` sets
/// `state_after`, which lets a stream consumer follow the state without
/// reading the task.
fn record(
    txn: &mut Txn<'_>,
    out: &mut Vec<EventRecord>,
    task: &TaskRecord,
    note: Note,
    state_changed: bool,
) -> Result<(), StoreError> {
    let id = txn.next_event_id();
    // Events are shown to every observer: no secret may ride along.
    let mut data = note.data;
    crate::redact::redact_json(&mut data);
    let record = EventRecord {
        id,
        kind: note.kind,
        at: note.at,
        task_id: task.id,
        queue: task.queue.clone(),
        run_id: note.run,
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

/// Moves `task` as `m` says, records the move's event, and stores the task.
/// This is the state machine's one door: the old state's index entries and
/// counter go, the new state's come, in the same write as the event, so that
/// indexes, counters and the event log never disagree with the task record.
pub fn move_to(
    txn: &mut Txn<'_>,
    out: &mut Vec<EventRecord>,
    task: &mut TaskRecord,
    m: Move,
) -> Result<(), PipelineError> {
    let from = task.state.kind();
    if !from.allows(m.to.kind()) {
        return Err(illegal(task, m.to.kind()));
    }
    unindex(txn, task)?;
    task.state = m.to;
    task.updated_at = m.at;
    index(txn, task)?;
    let note = Note {
        kind: m.event,
        run: m.run,
        at: m.at,
        data: m.data,
    };
    record(txn, out, task, note, true)?;
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
