//! The `[executor]` section: whether the built-in step runner runs, its pool,
//! the queues it serves, its workspace and output limits, with their checks.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::{invalid, ConfigError};

/// `[executor]`: the built-in step runner.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ExecutorConfig {
    /// Run the built-in executor at all.
    pub enabled: bool,
    /// Tasks run at once.
    pub pool_size: usize,
    /// Queues the executor leases from; other queues are for external workers.
    pub queues: Vec<String>,
    /// Root under which every step runs; empty means `<data_dir>/workspace`.
    pub workspace_root: PathBuf,
    /// Accept `{"name", "argv"}` steps in submissions (off: only named recipes).
    pub allow_inline_commands: bool,
    /// Bytes of combined stdout/stderr kept per step (the tail).
    pub output_tail_bytes: usize,
    /// Timeout for inline commands (recipes carry their own).
    #[serde(with = "humantime_serde")]
    pub inline_timeout: Duration,
    /// `/health/ready` fails once this share of the pool is busy (0 < x ≤ 1).
    pub ready_max_utilization: f64,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            enabled: true,
            pool_size: 2,
            queues: vec!["default".to_string()],
            workspace_root: PathBuf::new(),
            allow_inline_commands: false,
            output_tail_bytes: 16 * 1024,
            inline_timeout: Duration::from_secs(600),
            ready_max_utilization: 0.9,
        }
    }
}

impl ExecutorConfig {
    /// Checks the readiness threshold, the pool size and the queue names.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let u = self.ready_max_utilization;
        // Written as a negated range so that NaN is refused too.
        if !(u > 0.0 && u <= 1.0) {
            return invalid(format!(
                "executor.ready_max_utilization must be in (0, 1], got {u}"
            ));
        }
        if self.enabled && self.pool_size == 0 {
            return invalid("executor.pool_size must be above 0 when the executor is enabled");
        }
        for q in &self.queues {
            if crate::model::QueueName::parse(q).is_err() {
                return invalid(format!("executor.queues: {q:?} is not a valid queue name"));
            }
        }
        Ok(())
    }
}
