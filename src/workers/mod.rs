//! External workers: their event payloads and their status projection.

mod normalize;
pub mod routes;
mod service;

pub use normalize::{
    normalize_event, normalize_status, snake_case, AgentEvent, AgentEventKind, ShapeError,
    StatusReport, WorkerStatus, MAX_OUTPUT_TAIL, STEP_OUTCOMES,
};
pub use service::{touch_worker, worker_done, worker_json, Reported, WorkerRecord};
