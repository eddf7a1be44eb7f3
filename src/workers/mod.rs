//! External workers: their event payloads and their status projection.

mod normalize;
mod service;

pub use normalize::{
    normalize_event, normalize_status, snake_case, AgentEvent, AgentEventKind, ShapeError,
    StatusReport, MAX_OUTPUT_TAIL, STEP_OUTCOMES,
};
pub use service::{touch_worker, worker_done, Reported};
