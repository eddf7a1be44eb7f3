//! The `[tasks]` section: bounds on what a submission may carry and on what
//! reads return, with their checks.

use serde::{Deserialize, Serialize};

use super::error::{invalid, ConfigError};

/// `[tasks]`: bounds on submissions and on what reads return.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TaskLimits {
    /// Largest JSON payload (serialised bytes).
    pub max_payload_bytes: usize,
    /// Most labels on one task.
    pub max_labels: usize,
    /// Longest label key.
    pub max_label_key_bytes: usize,
    /// Longest label value.
    pub max_label_value_bytes: usize,
    /// Most steps on one task.
    pub max_steps: usize,
    /// `max_attempts` when a submission does not say.
    pub default_max_attempts: u32,
    /// Highest `max_attempts` a submission may ask for.
    pub max_attempts_limit: u32,
    /// Events returned by `GET /tasks/{id}` when `?events` is absent.
    pub default_event_history: usize,
    /// Highest `?events=N`.
    pub max_event_history: usize,
    /// Largest page for list endpoints.
    pub max_page_size: usize,
}

impl Default for TaskLimits {
    fn default() -> Self {
        TaskLimits {
            max_payload_bytes: 256 * 1024,
            max_labels: 32,
            max_label_key_bytes: 64,
            max_label_value_bytes: 256,
            max_steps: 32,
            default_max_attempts: 3,
            max_attempts_limit: 100,
            default_event_history: 20,
            max_event_history: 1000,
            max_page_size: 500,
        }
    }
}

impl TaskLimits {
    /// Checks the limits against each other and against the server's body
    /// limit (`max_body_bytes`, in bytes): a payload the server would refuse
    /// to read could never be submitted.
    pub(super) fn validate(&self, max_body_bytes: usize) -> Result<(), ConfigError> {
        if self.max_payload_bytes > max_body_bytes {
            return invalid(format!(
                "tasks.max_payload_bytes ({}) exceeds server.max_body_bytes ({})",
                self.max_payload_bytes, max_body_bytes
            ));
        }
        if self.default_max_attempts == 0 || self.default_max_attempts > self.max_attempts_limit {
            return invalid("tasks.default_max_attempts must be between 1 and max_attempts_limit");
        }
        if self.max_page_size == 0 || self.max_event_history == 0 {
            return invalid("tasks.max_page_size and tasks.max_event_history must be above 0");
        }
        Ok(())
    }
}
