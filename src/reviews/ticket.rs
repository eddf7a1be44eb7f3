//! Review tickets as records: opening one for a completed task, loading and
//! saving, closing, the dossier hash a decision is bound to, the guardrail
//! decisions behind a ticket, and the read side (a ticket, a task's tickets,
//! the last feedback). Claims live in `claim.rs`, decisions in `decide.rs`.

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::clock::{format_rfc3339, Millis};
use crate::model::{
    step_spec_json, EventKind, EventRecord, Outcome, RunRecord, StoredDecision, TaskId, TaskRecord,
    TaskState, Ticket, TicketId, TicketState, Verdict,
};
use crate::pipeline::transition::{move_to, Move};
use crate::pipeline::{Pipeline, PipelineError};
use crate::store::{keys, Txn};

/// The guardrail decisions stored for a task (flags and blocks), oldest first.
/// Inside a write this sees committed decisions only, not the write's own.
pub fn decisions_of(txn: &Txn<'_>, task: TaskId) -> Result<Vec<StoredDecision>, PipelineError> {
    let mut out = Vec::new();
    for (_, v) in txn.scan_prefix(&keys::guardrail_prefix(&task.to_bytes()), 1000)? {
        out.push(
            crate::store::decode::<StoredDecision>(&v)
                .map_err(|e| PipelineError::Store(crate::store::StoreError::Encode(e)))?,
        );
    }
    Ok(out)
}

/// The policies that flagged a task.
pub fn flagged_by(decisions: &[StoredDecision]) -> Vec<String> {
    let mut ids: Vec<String> = decisions
        .iter()
        .filter(|d| d.decision.verdict == Verdict::Flag)
        .map(|d| d.decision.policy.clone())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// SHA-256 of what a reviewer judges: the task's content, the run under
/// review (steps, output, agents) and the guardrail decisions. Review
/// bookkeeping (claims, events) does not change it; a new run or result does.
pub fn dossier_hash(task: &TaskRecord, run: &RunRecord, decisions: &[StoredDecision]) -> [u8; 32] {
    let steps: Vec<_> = run
        .steps
        .iter()
        .map(|s| json!([s.name, s.outcome, s.exit_code, s.duration_ms, s.output_tail]))
        .collect();
    let canonical = json!({
        "task": task.id.to_string(),
        "queue": task.queue.as_str(),
        "priority": task.priority,
        "labels": task.labels,
        "payload": task.payload,
        "steps": task.steps.iter().map(step_spec_json).collect::<Vec<_>>(),
        "result": task.result,
        "run": {"id": run.id.to_string(), "attempt": run.attempt, "steps": steps, "agents": run.agents},
        "guardrails": decisions.iter().map(|d| json!([d.decision.policy, d.decision.stage, d.decision.verdict, d.run_id.map(|r| r.to_string())])).collect::<Vec<_>>(),
    });
    Sha256::digest(serde_json::to_vec(&canonical).unwrap_or_default()).into()
}

fn ticket_key(id: TicketId) -> Vec<u8> {
    keys::ticket(&id.to_bytes())
}

/// Loads a ticket inside a write.
pub fn load_ticket(txn: &Txn<'_>, id: TicketId) -> Result<Ticket, PipelineError> {
    txn.get::<Ticket>(&ticket_key(id))?
        .ok_or_else(|| PipelineError::not_found("review", id))
}

/// Stores a ticket inside a write.
pub(super) fn save(txn: &mut Txn<'_>, t: &Ticket) -> Result<(), PipelineError> {
    txn.put(ticket_key(t.id), t)?;
    Ok(())
}

/// Moves a ticket out of the pending set.
pub(super) fn close(txn: &mut Txn<'_>, t: &mut Ticket, state: TicketState, now: Millis) {
    t.state = state;
    t.closed_at = Some(now);
    txn.delete(keys::pending_ticket(&t.id.to_bytes()));
    txn.put_raw(keys::closed_ticket(now, &t.id.to_bytes()), &[]);
}

/// A 409 with `code` (`ticket_closed`, `ticket_held`, `not_held`,
/// `already_decided`): the ticket's state does not allow the action.
pub(super) fn conflict(code: &'static str, message: String) -> PipelineError {
    PipelineError::Conflict { code, message }
}

impl Pipeline {
    /// Holds `task` (just completed by `run`) for review: opens a ticket and
    /// moves the task to `awaiting_review`. Called inside the completing write.
    pub(crate) fn open_ticket(
        &self,
        txn: &mut Txn<'_>,
        out: &mut Vec<EventRecord>,
        task: &mut TaskRecord,
        run: &RunRecord,
        decisions: &[StoredDecision],
        now: Millis,
    ) -> Result<Ticket, PipelineError> {
        let cfg = &self.config().review;
        let id = TicketId::from_ulid(txn.new_ulid());
        let flags = flagged_by(decisions);
        let ticket = Ticket {
            id,
            task_id: task.id,
            run_id: run.id,
            queue: task.queue.clone(),
            priority: task.priority,
            dossier_hash: dossier_hash(task, run, decisions),
            flagged_by: flags.clone(),
            review_required: task.review.required,
            required_approvals: cfg
                .approvals_for(task.queue.as_str(), task.review.required_approvals),
            created_at: now,
            first_assigned_at: None,
            closed_at: None,
            due_at: now + cfg.sla_for(task.queue.as_str(), task.priority).as_millis() as u64,
            sla_breached: false,
            escalated: false,
            state: TicketState::Open,
            votes: Vec::new(),
            assignments: Vec::new(),
        };
        save(txn, &ticket)?;
        txn.put_raw(keys::task_ticket(&task.id.to_bytes(), &id.to_bytes()), &[]);
        txn.put_raw(keys::pending_ticket(&id.to_bytes()), &[]);
        let data = json!({
            "ticket_id": id.to_string(),
            "required_approvals": ticket.required_approvals,
            "flagged_by": flags,
            "review_required": ticket.review_required,
            "due_at": format_rfc3339(ticket.due_at),
            "dossier_hash": hex::encode(ticket.dossier_hash),
        });
        let to = TaskState::AwaitingReview {
            run_id: run.id,
            since: now,
        };
        move_to(
            txn,
            out,
            task,
            Move {
                to,
                event: EventKind::ReviewRequested,
                run: Some(run.id),
                at: now,
                data,
            },
        )?;
        Ok(ticket)
    }

    /// One ticket, read outside any write (`not_found` when unknown).
    pub fn ticket(&self, id: TicketId) -> Result<Ticket, PipelineError> {
        self.store
            .get::<Ticket>(&ticket_key(id))?
            .ok_or_else(|| PipelineError::not_found("review", id))
    }

    /// The dossier hash a reviewer must name to decide `ticket` now.
    pub fn current_dossier_hash(&self, ticket: &Ticket) -> Result<[u8; 32], PipelineError> {
        let task = self.task(ticket.task_id)?;
        let run = self.run(ticket.run_id)?;
        let decisions = self.guardrail_decisions(task.id)?;
        Ok(dossier_hash(&task, &run, &decisions))
    }

    /// Cancels the pending ticket of a task being cancelled (inside its write).
    pub(crate) fn cancel_ticket_of(
        &self,
        txn: &mut Txn<'_>,
        task: TaskId,
        now: Millis,
    ) -> Result<(), PipelineError> {
        for (k, _) in txn.scan_prefix(&keys::task_tickets_prefix(&task.to_bytes()), 1000)? {
            let Some(tb) = keys::trailing_id(&k) else {
                continue;
            };
            let id = TicketId::from_bytes(tb);
            let mut t = load_ticket(txn, id)?;
            if t.state.pending() {
                close(txn, &mut t, TicketState::Cancelled, now);
                save(txn, &t)?;
            }
        }
        Ok(())
    }

    /// The guardrail decisions stored for a task.
    pub fn guardrail_decisions(&self, task: TaskId) -> Result<Vec<StoredDecision>, PipelineError> {
        Ok(self
            .store
            .scan::<StoredDecision>(&keys::guardrail_prefix(&task.to_bytes()), None, 1000)?
            .into_iter()
            .map(|(_, d)| d)
            .collect())
    }

    /// The tickets of a task, oldest first.
    pub fn tickets_of(&self, task: TaskId) -> Result<Vec<Ticket>, PipelineError> {
        let ks = self
            .store
            .keys(&keys::task_tickets_prefix(&task.to_bytes()), None, 1000)?;
        ks.iter()
            .filter_map(|k| keys::trailing_id(k))
            .map(|b| self.ticket(TicketId::from_bytes(b)))
            .collect()
    }

    /// The feedback of the last `changes_requested` decision on a task, for
    /// the run that follows it.
    pub fn review_feedback(
        &self,
        task: TaskId,
    ) -> Result<Option<serde_json::Value>, PipelineError> {
        let last = self.tickets_of(task)?.into_iter().next_back();
        Ok(last.and_then(|t| {
            (t.outcome() == Some(Outcome::ChangesRequested)).then(|| {
                let v = t
                    .votes
                    .iter()
                    .rev()
                    .find(|v| v.outcome == Outcome::ChangesRequested);
                json!({
                    "ticket_id": t.id.to_string(),
                    "by": v.map(|v| v.by.clone()),
                    "comment": v.and_then(|v| v.comment.clone()),
                })
            })
        }))
    }
}

impl Pipeline {
    /// Four eyes: refuses (403) when `principal` submitted the ticket's
    /// task, unless `review.allow_self_review` is set or auth is off (every
    /// caller is then `anonymous`).
    pub(crate) fn check_four_eyes(
        &self,
        task: &crate::model::TaskRecord,
        ticket: &Ticket,
        principal: &str,
    ) -> Result<(), PipelineError> {
        let cfg = self.config();
        if cfg.review.allow_self_review
            || cfg.auth.mode == crate::config::AuthMode::None
            || task.submitted_by != principal
        {
            return Ok(());
        }
        Err(PipelineError::Forbidden {
            message: format!(
                "{principal} submitted task {}; review {} needs another principal (review.allow_self_review is off)",
                task.id, ticket.id
            ),
        })
    }
}
