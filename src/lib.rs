//! forgeline: a single-binary, observability-first pipeline for agent and
//! automation tasks.
//!
//! The crate is built in layers; a module imports only its own layer or the
//! ones below it (`scripts/layers` checks this; docs/architecture.md draws it):
//!
//! - entry: `cli` (the command line), `app` (builds and runs a server from a
//!   `config::Config`), `bench` (`forgeline bench`);
//! - `api`: the router, one file of handlers per domain, the JSON views;
//! - `http`: the accept loop and middleware (request id, the durable
//!   acknowledgement, metrics, log line), admission, bodies, errors, health;
//! - domains: `tasks` (submit, read, cancel), `queue` (the lease protocol,
//!   timers, dead-letter), `reviews` (the human gate), `workers` (agent events
//!   and status), `exec` (the built-in step executor), `events` (SSE streams);
//! - the kernel, `pipeline`: the commit path every write takes, the state
//!   machine's one door (`pipeline::transition`), `PipelineError`;
//! - sinks and policy: `telemetry`, `audit`, `ratelimit`, `auth`, `config`,
//!   `guardrails`;
//! - `model`: what is stored and passed around, with its state machines;
//! - ground: `store` (sled, group commit), `clock`, `redact`, `build_info`.

#![warn(missing_docs)]

pub mod api;
pub mod app;
pub mod audit;
pub mod auth;
pub mod bench;
pub mod build_info;
pub mod cli;
pub mod clock;
pub mod config;
pub mod events;
pub mod exec;
pub mod guardrails;
pub mod http;
pub mod model;
pub mod pipeline;
pub mod queue;
pub mod ratelimit;
pub mod redact;
pub mod retention;
pub mod reviews;
pub mod store;
pub mod tasks;
pub mod telemetry;
pub mod workers;
