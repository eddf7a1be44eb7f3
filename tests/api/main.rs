//! The integration suite: one binary, every test against a real server on a
//! loopback port with a real sled store in a temp dir.

mod audit_and_limits;
mod audit_head;
mod backup;
mod bad_input;
mod bench;
mod cli;
mod client;
mod disk_full;
mod disk_stall;
mod durability;
mod example_policies;
mod executor;
mod fixtures;
mod helpers;
mod metrics_contract;
mod openapi;
mod process;
mod redaction;
mod retention;
mod retention_process;
mod reviews;
mod security;
mod soak;
mod step_output_guardrails;
mod streams;
mod tasks;
mod traces;
mod visibility;
mod worker_protocol;
