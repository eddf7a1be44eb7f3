//! `forgeline bench`: the server measured end to end over HTTP.
//!
//! A run starts a server in a temporary directory (or targets `--url`),
//! drives it with concurrent clients through the public API — durable
//! submits, the worker protocol, health probes — and reports throughput,
//! latency percentiles, start-up time and memory. The numbers are what a
//! client on the same machine sees, load generator included: on a 2-core
//! machine the clients and the server share the cores, and the report says
//! how many there were.

mod bare;
mod client;
mod options;
mod phases;
mod progress;
mod report;
mod run;
mod steps;
mod steps_config;
mod target;

/// Most concurrent clients in one measurement.
pub const MAX_CLIENTS: usize = 1024;

pub use client::{BenchClient, BenchError, Leased, Scrape};
pub use options::BenchOptions;
pub use phases::{E2E_QUEUE, PICKUP_QUEUE, SUBMIT_QUEUE};
pub use report::{Latency, Measurement, Report, TargetInfo};
pub use run::{run, BenchFailure};
pub use target::{preload, Spawned, Target, TargetOptions, BACKLOG_QUEUE};
