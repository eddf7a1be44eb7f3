//! What a bench run measures and how hard: the command line's choices.

use std::time::Duration;

use super::target::TargetOptions;

/// What to measure and how hard.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Which server: one the bench starts (and how), or `--url`.
    pub target: TargetOptions,
    /// Tasks per throughput measurement.
    pub tasks: u64,
    /// Client counts of the durable-submit measurement.
    pub submit_clients: Vec<usize>,
    /// Submitters of the end-to-end measurement.
    pub e2e_clients: usize,
    /// Lessees of the end-to-end measurement.
    pub e2e_workers: usize,
    /// Tasks per lease request in the end-to-end measurement.
    pub lease_batch: usize,
    /// Measured enqueue → pickup rounds.
    pub pickup_samples: usize,
    /// Clients of the `/health/live` measurements.
    pub health_clients: usize,
    /// Length of each `/health/live` measurement.
    pub health_duration: Duration,
    /// Also measure a bare warp server answering `/health/live`.
    pub bare_warp: bool,
    /// Tasks of the shell-steps measurement (0: not measured; a spawned
    /// server only).
    pub steps: u64,
}
