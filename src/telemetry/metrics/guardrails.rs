//! Guardrail decisions by policy, stage, verdict and the action enforced.

use prometheus::{IntCounterVec, Registry};

use super::register::counter_vec;
use crate::model::Decision;

/// The guardrail family's handles.
pub(super) struct GuardrailMetrics {
    /// `forgeline_guardrail_decisions_total{policy,stage,verdict,action}`
    decisions: IntCounterVec,
}

impl GuardrailMetrics {
    /// Registers the family (policies add their series as they load).
    pub(super) fn new(r: &Registry) -> GuardrailMetrics {
        GuardrailMetrics {
            decisions: counter_vec(
                r,
                "forgeline_guardrail_decisions_total",
                "Guardrail policy decisions by policy, stage, verdict and enforced action.",
                &["policy", "stage", "verdict", "action"],
            ),
        }
    }

    /// Creates a policy's `allow`/`allowed` series at zero.
    pub(super) fn policy(&self, policy: &str, stage: &str) {
        self.decisions
            .with_label_values(&[policy, stage, "allow", "allowed"]);
    }

    /// Counts one decision.
    pub(super) fn decision(&self, d: &Decision) {
        self.decisions
            .with_label_values(&[
                &d.policy,
                d.stage.as_str(),
                d.verdict.as_str(),
                d.action.as_str(),
            ])
            .inc();
    }
}
