//! The model: what forgeline stores and passes between its parts — ids,
//! tasks with their runs and leases, events, review tickets, guardrail
//! decisions and worker records — with their state machines. Data only: this
//! module knows the store's codec and the clock, and nothing of the domains
//! that act on it.

mod decision;
mod event;
mod ids;
mod task;
mod ticket;
mod wire;
mod worker;

pub use decision::{Action, CheckKind, Decision, Stage, StoredDecision, Verdict};
pub use event::{format_event_id, parse_event_id, Envelope, EventKind, EventRecord, SCHEMA};
pub(crate) use ids::ulid_id;
pub use ids::{InvalidName, LeaseId, QueueName, RunId, StepName, TaskId, WorkerId};
pub use task::{
    IdempotencyRecord, LeaseRecord, LeaseRef, LeaseState, ReviewRequest, RunOutcome, RunRecord,
    ScheduleReason, StateKind, StepResult, StepSpec, TaskRecord, TaskState,
};
pub use ticket::{Assignment, Outcome, Ticket, TicketId, TicketState, Vote};
pub use wire::{state_detail, step_spec_json};
pub use worker::{WorkerRecord, WorkerStatus};
