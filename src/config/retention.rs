//! The `[retention]` section: how long finished work stays in the store.
//!
//! A duration of `0s` keeps that kind forever. The audit log keeps its own
//! rule (`[audit]`), because pruning it moves a signed anchor.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::ConfigError;

const DAY: u64 = 24 * 3600;

/// `[retention]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Completed tasks are removed this long after they completed, with their
    /// runs, leases, events and guardrail decisions.
    #[serde(with = "humantime_serde")]
    pub completed: Duration,
    /// Failed tasks, the same way.
    #[serde(with = "humantime_serde")]
    pub failed: Duration,
    /// Dead-lettered tasks (no longer requeueable once removed).
    #[serde(with = "humantime_serde")]
    pub dead: Duration,
    /// Cancelled tasks.
    #[serde(with = "humantime_serde")]
    pub cancelled: Duration,
    /// Idempotency records, counted from the submission that created them:
    /// after this, the same key submits a new task.
    #[serde(with = "humantime_serde")]
    pub idempotency: Duration,
    /// Closed review tickets (with their votes), counted from the close. A
    /// task is kept while it still has a ticket, so its dossier stays whole.
    #[serde(with = "humantime_serde")]
    pub review_tickets: Duration,
    /// How often a retention pass runs (it also runs once at start).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Most tasks (or tickets, or idempotency records) removed per write, so
    /// a pass never holds the writer for long.
    pub batch: usize,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            completed: Duration::from_secs(14 * DAY),
            failed: Duration::from_secs(30 * DAY),
            dead: Duration::from_secs(30 * DAY),
            cancelled: Duration::from_secs(14 * DAY),
            idempotency: Duration::from_secs(DAY),
            review_tickets: Duration::from_secs(90 * DAY),
            interval: Duration::from_secs(60),
            batch: 32,
        }
    }
}

impl RetentionConfig {
    /// `batch` between 1 and 1024, `interval` at least 100 ms.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=1024).contains(&self.batch) {
            return Err(ConfigError::Invalid(format!(
                "retention.batch must be between 1 and 1024, got {}",
                self.batch
            )));
        }
        if self.interval < Duration::from_millis(100) {
            return Err(ConfigError::Invalid(format!(
                "retention.interval must be at least 100ms, got {:?}",
                self.interval
            )));
        }
        Ok(())
    }
}
