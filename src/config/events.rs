//! The `[events]` section: SSE keep-alives and the read batch of event
//! streams, with its check.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::{invalid, ConfigError};

/// `[events]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// Interval of SSE keep-alive comments.
    #[serde(with = "humantime_serde")]
    pub keepalive: Duration,
    /// Events read from the store per round when a stream catches up.
    pub read_batch: usize,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            keepalive: Duration::from_secs(15),
            read_batch: 256,
        }
    }
}

impl EventsConfig {
    /// Refuses a zero read batch (a stream would never catch up).
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.read_batch == 0 {
            return invalid("events.read_batch must be above 0");
        }
        Ok(())
    }
}
