//! External workers: their event payloads and their status projection.
//!
//! `normalize` holds the shape handling both payload kinds share,
//! `agent_event` the agent and verification events, `status` the status
//! reports, and `service` the projection and the event intake.

mod agent_event;
mod normalize;
mod service;
mod status;

pub use agent_event::{
    normalize_event, AgentEvent, AgentEventKind, MAX_OUTPUT_TAIL, STEP_OUTCOMES,
};
pub use normalize::{snake_case, ShapeError};
pub use service::{check_worker_owner, touch_worker, worker_done, Reported};
pub use status::{normalize_status, StatusReport};
