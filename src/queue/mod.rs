//! Queues: the lease protocol, timers (reaper, scheduler, reconciliation) and
//! dead-letter handling. The ready index itself is kept by
//! `tasks::transition`, since every state change maintains it.

mod deadletter;
mod lease;
mod timers;

pub use lease::{retry_delay, Failure, Grant, LeaseRequest};
