//! forgeline: a single-binary, observability-first pipeline for agent and
//! automation tasks.
//!
//! A task is submitted over HTTP (`tasks`), kept durably in sled (`store`),
//! leased by a worker (`queue`) — the built-in step executor (`exec`) or an
//! external agent (`workers`) — verified by named steps, and finished. Every
//! transition appends an event (`events`) that streams over SSE and feeds the
//! metrics (`telemetry`). `pipeline` ties the domains together, `http` serves
//! them behind `auth` (JWT roles, the permission matrix), `ratelimit` and
//! `audit` (the hash-chained log); `redact` keeps secrets out of every sink.
//! `app` builds and runs a server from a `config::Config`, `bench` measures
//! one end to end over HTTP, and `cli` is the command line. docs/architecture.md has the data flow and key layout.

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
pub mod reviews;
pub mod store;
pub mod tasks;
pub mod telemetry;
pub mod workers;
