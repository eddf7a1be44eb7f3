//! Guardrail decisions: where a policy runs (stage), what it says (verdict),
//! what forgeline did about it (action), and the decision as stored under
//! `G task seq`. Verdict and action are kept apart so that a policy's effect
//! can be measured (`forgeline_guardrail_decisions_total{policy,stage,verdict,action}`).

use serde::{Deserialize, Serialize};

use super::ids::{RunId, TaskId};
use crate::clock::Millis;
use crate::store::Record;

/// Where a policy is evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// The submission (payload, labels).
    Input,
    /// A tool call an agent reports.
    Tool,
    /// The completion (result and step output).
    Output,
}

impl Stage {
    /// The label spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Input => "input",
            Stage::Tool => "tool",
            Stage::Output => "output",
        }
    }
}

/// What a matching policy says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The check found nothing (a policy cannot be configured with it).
    Allow,
    /// Hold the task for a human.
    Flag,
    /// Refuse: the submission, the reported events or the completion gets
    /// a 422 (a blocked completion fails the task).
    Block,
}

impl Verdict {
    /// The label spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Flag => "flag",
            Verdict::Block => "block",
        }
    }
}

/// What forgeline did about a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Let it through.
    Allowed,
    /// Let it through, then hold the result at the review gate.
    SentToReview,
    /// Refused (422 naming the policy).
    Rejected,
}

impl Action {
    /// The label spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allowed => "allowed",
            Action::SentToReview => "sent_to_review",
            Action::Rejected => "rejected",
        }
    }

    /// The action enforced for a verdict.
    pub fn for_verdict(v: Verdict) -> Action {
        match v {
            Verdict::Allow => Action::Allowed,
            Verdict::Flag => Action::SentToReview,
            Verdict::Block => Action::Rejected,
        }
    }
}

/// The kind of check a policy runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// The subject is larger than `max_bytes`.
    MaxBytes,
    /// The subject matches `pattern` (a regex).
    DenyPattern,
    /// The subject contains a secret (the redaction patterns).
    SecretScan,
    /// A tool outside `tools` was called (tool stage only).
    AllowTools,
}

/// A policy's decision about one subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The policy's configured `id` (a metric label; named in 422s).
    pub policy: String,
    /// The stage it was evaluated at.
    pub stage: Stage,
    /// `allow` when the check found nothing, else the policy's configured verdict.
    pub verdict: Verdict,
    /// What forgeline did, derived from the verdict ([`Action::for_verdict`]).
    pub action: Action,
    /// What matched (no secret text: a description).
    pub reason: String,
}

/// A non-allow decision as stored under `G task seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredDecision {
    /// The task it concerns (the first part of its `G` key).
    pub task_id: TaskId,
    /// Run, for tool and output decisions.
    pub run_id: Option<RunId>,
    /// When it was made, in ms since the Unix epoch.
    pub at: Millis,
    /// The decision itself (a flag or a block: allows are not stored).
    pub decision: Decision,
}

impl Record for StoredDecision {
    const VERSION: u8 = 1;
}
