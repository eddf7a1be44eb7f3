//! The `[queue]` section: lease lengths, long-poll and batch bounds, and the
//! retry backoff, with their checks.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::{invalid, ConfigError};

/// `[queue]`: the lease protocol and retries.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Lease length when the worker does not ask for one.
    #[serde(with = "humantime_serde")]
    pub lease_timeout: Duration,
    /// Shortest lease a worker may ask for.
    #[serde(with = "humantime_serde")]
    pub min_lease: Duration,
    /// Longest lease a worker may ask for.
    #[serde(with = "humantime_serde")]
    pub max_lease: Duration,
    /// Longest long-poll (`wait_ms`) a lease request may hold.
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
    /// Most tasks one lease request may take.
    pub max_batch: usize,
    /// Retry backoff base: attempt n waits about `retry_base * 2^(n-1)`.
    #[serde(with = "humantime_serde")]
    pub retry_base: Duration,
    /// Upper bound of one retry delay.
    #[serde(with = "humantime_serde")]
    pub retry_cap: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            lease_timeout: Duration::from_secs(30),
            min_lease: Duration::from_millis(100),
            max_lease: Duration::from_secs(3600),
            max_wait: Duration::from_secs(30),
            max_batch: 100,
            retry_base: Duration::from_secs(1),
            retry_cap: Duration::from_secs(600),
        }
    }
}

impl QueueConfig {
    /// Checks that the lease bounds are ordered and the batch and backoff usable.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.min_lease.is_zero()
            || self.min_lease > self.lease_timeout
            || self.lease_timeout > self.max_lease
        {
            return invalid("queue: expected 0 < min_lease <= lease_timeout <= max_lease");
        }
        if self.max_batch == 0 {
            return invalid("queue.max_batch must be above 0");
        }
        if self.retry_base > self.retry_cap {
            return invalid("queue.retry_base may not exceed queue.retry_cap");
        }
        Ok(())
    }
}
