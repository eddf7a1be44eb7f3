//! Events: the versioned envelope, and streams of them over SSE.

mod model;
pub mod routes;
pub mod stream;

pub use model::{format_event_id, parse_event_id, Envelope, EventKind, EventRecord, SCHEMA};
