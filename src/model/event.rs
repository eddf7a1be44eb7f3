//! The `forgeline.task-event.v1` envelope and the stored event record.

use serde::{Deserialize, Serialize};

use crate::clock::{format_rfc3339, Millis};
use crate::model::{QueueName, RunId, TaskId};
use crate::store::Record;

/// Schema name carried by every envelope.
pub const SCHEMA: &str = "forgeline.task-event.v1";

macro_rules! event_kinds {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// Event types (DESIGN.md §3). Stable: names are a contract.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum EventKind {
            $($(#[$doc])* $variant,)*
        }

        impl EventKind {
            /// Every type, in the order declared below.
            pub const ALL: &'static [EventKind] = &[$(EventKind::$variant,)*];

            /// The wire name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(EventKind::$variant => $name,)*
                }
            }

            /// Parses a wire name.
            pub fn parse(s: &str) -> Option<EventKind> {
                match s {
                    $($name => Some(EventKind::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

event_kinds! {
    /// Accepted by the API.
    TaskSubmitted => "task_submitted",
    /// Eligible and in the ready index.
    TaskQueued => "task_queued",
    /// Waiting for `eligible_at` (delay or retry backoff).
    TaskScheduled => "task_scheduled",
    /// Leased to a worker.
    TaskLeased => "task_leased",
    /// A lease ran out; the task was redelivered or dead-lettered.
    LeaseExpired => "lease_expired",
    /// An agent began (reported by a worker).
    AgentStarted => "agent_started",
    /// An agent called a tool.
    ToolInvoked => "tool_invoked",
    /// A guardrail policy flagged or blocked something.
    GuardrailTriggered => "guardrail_triggered",
    /// An agent ended.
    AgentFinished => "agent_finished",
    /// A verification step began.
    VerificationStarted => "verification_started",
    /// A verification step ended.
    VerificationFinished => "verification_finished",
    /// Held for review.
    ReviewRequested => "review_requested",
    /// A reviewer claimed or was assigned the ticket.
    ReviewAssigned => "review_assigned",
    /// A review decision.
    ReviewDecided => "review_decided",
    /// A review timed out.
    ReviewExpired => "review_expired",
    /// Finished successfully (by its worker, or approved in review).
    TaskCompleted => "task_completed",
    /// Failed for good (a retry is a `task_scheduled` with `reason: retry`).
    TaskFailed => "task_failed",
    /// Attempts exhausted; the task is dead-lettered (an admin can requeue it).
    TaskDeadLettered => "task_dead_lettered",
    /// Cancelled by a user; a lease it held ended with it.
    TaskCancelled => "task_cancelled",
    /// Brought back from dead-letter by an operator.
    TaskRequeued => "task_requeued",
}

/// An event as stored under `E id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Global, monotonic id.
    pub id: u64,
    /// Its type (the envelope's `type`).
    pub kind: EventKind,
    /// When it happened, in ms since the Unix epoch (the server's clock).
    pub at: Millis,
    /// The task it is about; also indexed under `X task-id event-id`.
    pub task_id: TaskId,
    /// The task's queue (firehose filter).
    pub queue: QueueName,
    /// Run, when the event belongs to one.
    pub run_id: Option<RunId>,
    /// The task's attempt number at the time.
    pub attempt: u32,
    /// Trace id of the task, when traced.
    pub trace_id: Option<String>,
    /// Type-specific data, as JSON text.
    pub data: String,
    /// The task's state after this event.
    pub state_after: Option<String>,
}

impl Record for EventRecord {
    const VERSION: u8 = 1;
}

/// The envelope as sent on the wire.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Envelope {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// 16 hex digits of `seq` (the SSE `id:` field).
    pub id: String,
    /// The numeric id.
    pub seq: u64,
    /// The type's wire name ([`EventKind::as_str`]).
    #[serde(rename = "type")]
    pub kind: String,
    /// RFC 3339 time.
    pub time: String,
    /// The task's id (26-character ULID).
    pub task_id: String,
    /// The task's queue (what firehose subscribers filter on).
    pub queue: String,
    /// The run it belongs to; `None` for events outside any run.
    pub run_id: Option<String>,
    /// The task's attempt count when it was recorded (0 before the first lease).
    pub attempt: u32,
    /// The trace id from the submission's `traceparent`; `None` without one.
    pub trace_id: Option<String>,
    /// Task state after the event, when it changed one.
    pub state: Option<String>,
    /// Type-specific data.
    pub data: serde_json::Value,
}

/// Formats an event id as the SSE `id:` (16 lowercase hex digits).
pub fn format_event_id(id: u64) -> String {
    format!("{id:016x}")
}

/// Parses an SSE id (16 hex digits; plain decimal also accepted).
pub fn parse_event_id(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.len() == 16 {
        u64::from_str_radix(s, 16).ok()
    } else {
        s.parse().ok()
    }
}

impl EventKind {
    /// Reported by a worker or the executor: its `data` is the run's content
    /// (tool calls, agent output, step output), which a metadata reader does
    /// not see.
    pub fn carries_content(self) -> bool {
        matches!(
            self,
            EventKind::AgentStarted
                | EventKind::ToolInvoked
                | EventKind::AgentFinished
                | EventKind::VerificationStarted
                | EventKind::VerificationFinished
        )
    }
}

impl Envelope {
    /// Withholds the content a metadata reader may not see (`auth.visibility`):
    /// the `data` of worker-reported events becomes `{"withheld": true}`, and
    /// a review `comment` is removed (with `"withheld": true` in its place).
    pub fn withhold_content(&mut self) {
        let reported = EventKind::parse(&self.kind).is_some_and(EventKind::carries_content);
        if reported {
            self.data = serde_json::json!({"withheld": true});
        } else if let Some(obj) = self.data.as_object_mut() {
            if obj.remove("comment").is_some() {
                obj.insert("withheld".into(), true.into());
            }
        }
    }
}

impl EventRecord {
    /// The wire envelope.
    pub fn envelope(&self) -> Envelope {
        Envelope {
            schema: SCHEMA.to_string(),
            id: format_event_id(self.id),
            seq: self.id,
            kind: self.kind.as_str().to_string(),
            time: format_rfc3339(self.at),
            task_id: self.task_id.to_string(),
            queue: self.queue.to_string(),
            run_id: self.run_id.map(|r| r.to_string()),
            attempt: self.attempt,
            trace_id: self.trace_id.clone(),
            state: self.state_after.clone(),
            data: serde_json::from_str(&self.data).unwrap_or(serde_json::Value::Null),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_its_name() {
        assert_eq!(EventKind::ALL.len(), 20);
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(*k));
        }
    }

    #[test]
    fn event_ids_are_sixteen_hex_digits() {
        assert_eq!(format_event_id(42), "000000000000002a");
        assert_eq!(parse_event_id("000000000000002a"), Some(42));
        assert_eq!(parse_event_id("42"), Some(42));
        assert_eq!(parse_event_id("zz"), None);
    }
}
