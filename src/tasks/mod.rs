//! Tasks: identifiers, the stored model and its state machine, submission,
//! the operations on tasks, and their JSON views.

mod ids;
mod model;
pub mod routes;
pub mod service;
pub mod submit;
pub mod transition;
pub mod view;

pub(crate) use ids::ulid_id;
pub use ids::{InvalidName, LeaseId, QueueName, RunId, StepName, TaskId, WorkerId};
pub use model::{
    IdempotencyRecord, LeaseRecord, LeaseRef, LeaseState, ReviewRequest, RunOutcome, RunRecord,
    ScheduleReason, StateKind, StepResult, StepSpec, TaskRecord, TaskState,
};
pub use service::{Page, Submission, Submitted, TaskFilter};
