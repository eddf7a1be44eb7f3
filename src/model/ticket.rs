//! Review tickets as stored.

use serde::{Deserialize, Serialize};

use crate::clock::Millis;
use crate::model::{QueueName, RunId, TaskId};
use crate::store::Record;

crate::model::ulid_id!(
    /// A review ticket's id.
    TicketId,
    "ticket id"
);

/// A reviewer's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Good to go (counts towards N of M).
    Approved,
    /// Not acceptable; decides the ticket at once.
    Rejected,
    /// Needs another run; decides the ticket at once.
    ChangesRequested,
}

impl Outcome {
    /// Every outcome (metrics pre-register one label value each).
    pub const ALL: [Outcome; 3] = [
        Outcome::Approved,
        Outcome::Rejected,
        Outcome::ChangesRequested,
    ];

    /// The API spelling (and metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Approved => "approved",
            Outcome::Rejected => "rejected",
            Outcome::ChangesRequested => "changes_requested",
        }
    }

    /// Parses the API spelling.
    pub fn parse(s: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

/// Where a ticket stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TicketState {
    /// Waiting for a reviewer.
    Open,
    /// Reserved by a reviewer until `until`.
    Claimed {
        /// The claiming reviewer; meanwhile only they (or a review_admin) may
        /// decide.
        by: String,
        /// When the reservation lapses.
        until: Millis,
    },
    /// Put on a reviewer by a review_admin (or by escalation).
    Assigned {
        /// The reviewer it is put on; only they (or a review_admin) may decide.
        to: String,
        /// Who assigned it.
        by: String,
    },
    /// Decided: by a non-approval, or by the last approval needed.
    Decided {
        /// The deciding vote's outcome (every vote is kept in `votes`).
        outcome: Outcome,
    },
    /// Timed out and the task was requeued.
    Expired,
    /// The task was cancelled.
    Cancelled,
}

impl TicketState {
    /// The API spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            TicketState::Open => "open",
            TicketState::Claimed { .. } => "claimed",
            TicketState::Assigned { .. } => "assigned",
            TicketState::Decided { .. } => "decided",
            TicketState::Expired => "expired",
            TicketState::Cancelled => "cancelled",
        }
    }

    /// Still waiting for a decision.
    pub fn pending(&self) -> bool {
        matches!(
            self,
            TicketState::Open | TicketState::Claimed { .. } | TicketState::Assigned { .. }
        )
    }

    /// The reviewer holding it (claim or assignment).
    pub fn holder(&self) -> Option<&str> {
        match self {
            TicketState::Claimed { by, .. } => Some(by),
            TicketState::Assigned { to, .. } => Some(to),
            _ => None,
        }
    }
}

/// One reviewer's verdict on a ticket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    /// Reviewer (principal, or `system` for the SLA clock).
    pub by: String,
    /// Their verdict; anything but `approved` decides the ticket at once.
    pub outcome: Outcome,
    /// The reviewer's comment (redacted before it is stored).
    pub comment: Option<String>,
    /// When it was cast, in ms since the Unix epoch.
    pub at: Millis,
}

/// One assignment (claim, assign, escalation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// The reviewer it went to (for a claim, the claimer).
    pub to: String,
    /// Who made it: the claimer, a review_admin, or `system` (escalation).
    pub by: String,
    /// When it was made, in ms since the Unix epoch.
    pub at: Millis,
    /// First assignment of the ticket, or a later one.
    pub first: bool,
}

/// A review ticket, stored under `V id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    /// Id (a ULID, so ticket keys sort by opening time).
    pub id: TicketId,
    /// The task held for review (indexed under `K task ticket`).
    pub task_id: TaskId,
    /// The run whose result is under review.
    pub run_id: RunId,
    /// The task's queue.
    pub queue: QueueName,
    /// The task's priority.
    pub priority: u8,
    /// SHA-256 of the dossier at the time the ticket opened.
    pub dossier_hash: [u8; 32],
    /// Guardrail policies that flagged the task.
    pub flagged_by: Vec<String>,
    /// The submission asked for review.
    pub review_required: bool,
    /// Approvals needed (N of M).
    pub required_approvals: u8,
    /// When it opened (the run's completion), in ms since the Unix epoch.
    pub created_at: Millis,
    /// First claimed or assigned.
    pub first_assigned_at: Option<Millis>,
    /// Decided, expired or cancelled.
    pub closed_at: Option<Millis>,
    /// The SLA target.
    pub due_at: Millis,
    /// The SLA clock acted on it.
    pub sla_breached: bool,
    /// Escalated by the SLA clock.
    pub escalated: bool,
    /// Where it stands: pending tickets are indexed under `P`, closed ones
    /// under `O closed_at`.
    pub state: TicketState,
    /// Every verdict, in order.
    pub votes: Vec<Vote>,
    /// Every assignment, in order.
    pub assignments: Vec<Assignment>,
}

impl Record for Ticket {
    const VERSION: u8 = 1;
}

impl Ticket {
    /// Distinct approvals so far.
    pub fn approvals(&self) -> usize {
        self.votes
            .iter()
            .filter(|v| v.outcome == Outcome::Approved)
            .count()
    }

    /// The deciding outcome, once decided.
    pub fn outcome(&self) -> Option<Outcome> {
        match self.state {
            TicketState::Decided { outcome } => Some(outcome),
            _ => None,
        }
    }
}
