//! Queues: the lease protocol, timers (reaper, scheduler, reconciliation) and
//! dead-letter handling. The ready index itself is kept by
//! `tasks::transition`, since every state change maintains it.

mod deadletter;
mod finish;
mod lease;
mod timers;

pub use finish::{retry_delay, Failure};
pub use lease::{Grant, LeaseRequest};
