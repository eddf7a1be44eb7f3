//! Enforcing guardrail decisions inside pipeline writes: storing non-allow
//! decisions, emitting `guardrail_triggered`, counting every decision.

use serde_json::json;

use super::transition::{append_event, Note};
use super::{Pipeline, PipelineError};
use crate::clock::Millis;
use crate::model::{
    Action, Decision, EventKind, EventRecord, RunId, StoredDecision, TaskRecord, Verdict,
};
use crate::store::{keys, Txn};

/// The first blocking decision, if any.
pub fn blocking(decisions: &[Decision]) -> Option<&Decision> {
    decisions.iter().find(|d| d.verdict == Verdict::Block)
}

/// The 422 for a block.
pub fn blocked(d: &Decision) -> PipelineError {
    PipelineError::Blocked {
        policy: d.policy.clone(),
        stage: d.stage.as_str(),
        message: format!(
            "blocked by guardrail policy {:?} at the {} stage: {}",
            d.policy,
            d.stage.as_str(),
            d.reason
        ),
    }
}

/// Stores every non-allow decision about `task` and appends a
/// `guardrail_triggered` event for each.
pub fn record(
    txn: &mut Txn<'_>,
    out: &mut Vec<EventRecord>,
    task: &TaskRecord,
    run_id: Option<RunId>,
    decisions: &[Decision],
    now: Millis,
) -> Result<(), PipelineError> {
    for d in decisions.iter().filter(|d| d.action != Action::Allowed) {
        let seq = txn.next_sequence(keys::GUARDRAIL_SEQ)?;
        let stored = StoredDecision {
            task_id: task.id,
            run_id,
            at: now,
            decision: d.clone(),
        };
        txn.put(keys::guardrail(&task.id.to_bytes(), seq), &stored)?;
        let data = json!({
            "policy": d.policy,
            "stage": d.stage,
            "verdict": d.verdict,
            "action": d.action,
            "reason": d.reason,
        });
        append_event(
            txn,
            out,
            task,
            Note {
                kind: EventKind::GuardrailTriggered,
                run: run_id,
                at: now,
                data,
            },
        )?;
    }
    Ok(())
}

impl Pipeline {
    /// Counts decisions in `forgeline_guardrail_decisions_total`.
    pub(crate) fn count_decisions(&self, decisions: &[Decision]) {
        for d in decisions {
            self.metrics.guardrail_decision(d);
        }
    }
}
