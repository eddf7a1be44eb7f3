//! Tasks: identifiers, the stored model and its state machine, submission,
//! the operations on tasks, and their JSON views.

pub mod service;
pub mod submit;

pub use service::{Page, Submission, Submitted, TaskFilter};
