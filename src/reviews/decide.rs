//! Decisions: a reviewer's verdict bound to the dossier they saw, the N-of-M
//! vote count, and what a final decision does to the task (complete, requeue,
//! fail). The SLA clock's auto-reject votes through the same path.

use serde_json::json;

use super::ticket::{close, conflict, decisions_of, dossier_hash, load_ticket, save};
use crate::clock::Millis;
use crate::config::RejectAction;
use crate::model::{
    EventKind, EventRecord, Outcome, RunRecord, StateKind, TaskRecord, TaskState, Ticket, TicketId,
    TicketState, Vote,
};
use crate::pipeline::transition::{append_event, move_to, Move, Note};
use crate::pipeline::{load_task, Pipeline, PipelineError};
use crate::store::{keys, Txn};

/// Longest decision comment, in bytes.
pub const MAX_COMMENT_LEN: usize = 4096;

impl Pipeline {
    /// Records `reviewer`'s verdict. `seen` is the dossier hash the reviewer
    /// judged; a decision on a dossier that has changed since is refused.
    pub async fn decide(
        &self,
        id: TicketId,
        reviewer: &str,
        admin: bool,
        outcome: Outcome,
        comment: Option<String>,
        seen: [u8; 32],
    ) -> Result<Ticket, PipelineError> {
        let now = self.now();
        let comment = comment.map(|c| crate::redact::redact(&c).into_owned());
        let (ticket, task) = self
            .commit(|txn, out| {
                let mut t = load_ticket(txn, id)?;
                if !t.state.pending() {
                    return Err(conflict("ticket_closed", format!("review {id} is {}", t.state.as_str())));
                }
                if let Some(h) = t.state.holder() {
                    if h != reviewer && !admin {
                        return Err(conflict("ticket_held", format!("review {id} is {} by {h}", t.state.as_str())));
                    }
                }
                if t.votes.iter().any(|v| v.by == reviewer) {
                    return Err(conflict("already_decided", format!("{reviewer} has already decided review {id}")));
                }
                let task = load_task(txn, t.task_id)?;
                self.check_four_eyes(&task, &t, reviewer)?;
                let run = txn
                    .get::<RunRecord>(&keys::run(&t.run_id.to_bytes()))?
                    .ok_or_else(|| PipelineError::not_found("run", t.run_id))?;
                // The verdict is about what the reviewer saw: if a new run,
                // result or guardrail decision has changed the dossier since,
                // the decision is refused rather than applied to something else.
                let current = dossier_hash(&task, &run, &decisions_of(txn, task.id)?);
                if current != seen {
                    let current_hash = hex::encode(current);
                    return Err(PipelineError::StaleDossier {
                        message: format!("the dossier of review {id} changed since you saw it (now {current_hash}); reload it and decide again"),
                        current_hash,
                    });
                }
                let task = self.vote(txn, out, &mut t, Vote { by: reviewer.to_string(), outcome, comment: comment.clone(), at: now }, now)?;
                Ok((t, task))
            })
            .await?;
        if let (Some(task), Some(o)) = (task, ticket.outcome()) {
            self.observe_decided_task(&task, o);
        }
        Ok(ticket)
    }

    /// Applies a vote; when it decides the ticket, applies the outcome to the
    /// task and returns the task.
    pub(crate) fn vote(
        &self,
        txn: &mut Txn<'_>,
        out: &mut Vec<EventRecord>,
        t: &mut Ticket,
        vote: Vote,
        now: Millis,
    ) -> Result<Option<TaskRecord>, PipelineError> {
        let outcome = vote.outcome;
        let by = vote.by.clone();
        let comment = vote.comment.clone();
        let (decided, mut task) = self.count_vote(txn, out, t, vote, now)?;
        if !decided {
            // One of N approvals: the next reviewer may take it.
            t.state = TicketState::Open;
            save(txn, t)?;
            return Ok(None);
        }
        close(txn, t, TicketState::Decided { outcome }, now);
        save(txn, t)?;
        self.metrics
            .review_decided(outcome, now.saturating_sub(t.created_at));
        if task.state.kind() != StateKind::AwaitingReview {
            return Ok(Some(task)); // cancelled meanwhile: nothing to apply
        }
        let on_reject = self.config().review.queue(task.queue.as_str()).on_reject;
        let m = outcome_move(
            t,
            &mut task,
            outcome,
            on_reject,
            &by,
            comment.as_deref(),
            now,
        );
        move_to(txn, out, &mut task, m)?;
        Ok(Some(task))
    }

    /// Adds the vote to `t`, counts it, and appends `review_decided`. Returns
    /// whether the ticket is now decided (any non-approval decides at once;
    /// approvals only once `required_approvals` are in) and the ticket's task.
    fn count_vote(
        &self,
        txn: &mut Txn<'_>,
        out: &mut Vec<EventRecord>,
        t: &mut Ticket,
        vote: Vote,
        now: Millis,
    ) -> Result<(bool, TaskRecord), PipelineError> {
        let outcome = vote.outcome;
        let by = vote.by.clone();
        let comment = vote.comment.clone();
        t.votes.push(vote);
        self.metrics.review_vote(&by, outcome);
        let approvals = t.approvals();
        let decided = outcome != Outcome::Approved || approvals >= t.required_approvals as usize;
        let task = load_task(txn, t.task_id)?;
        let data = json!({
            "ticket_id": t.id.to_string(),
            "by": by,
            "outcome": outcome.as_str(),
            "comment": comment,
            "approvals": approvals,
            "required_approvals": t.required_approvals,
            "final": decided,
        });
        append_event(
            txn,
            out,
            &task,
            Note {
                kind: EventKind::ReviewDecided,
                run: Some(t.run_id),
                at: now,
                data,
            },
        )?;
        Ok((decided, task))
    }

    pub(crate) fn observe_decided_task(&self, task: &TaskRecord, outcome: Outcome) {
        let label = match (outcome, task.state.kind()) {
            (Outcome::Approved, _) => "completed",
            (_, StateKind::Failed) => "failed",
            _ => return,
        };
        let run = task.runs.last().and_then(|r| self.run(*r).ok());
        self.metrics
            .observe_task_end(task, run.as_ref(), label, self.now());
    }
}

/// The move a final decision makes: approved completes the task; rejected
/// requeues it (when the queue's `on_reject` says so) or fails it; changes
/// requested requeues it. A requeue starts a fresh attempt budget; a failure
/// sets `last_error`. Both are set on `task` here, before the caller moves it.
fn outcome_move(
    t: &Ticket,
    task: &mut TaskRecord,
    outcome: Outcome,
    on_reject: RejectAction,
    by: &str,
    comment: Option<&str>,
    now: Millis,
) -> Move {
    let run = Some(t.run_id);
    let (to, event, data) = match outcome {
        Outcome::Approved => (
            TaskState::Completed { at: now },
            EventKind::TaskCompleted,
            json!({"ticket_id": t.id.to_string(), "approved_by": t.votes.iter().map(|v| v.by.clone()).collect::<Vec<_>>()}),
        ),
        Outcome::Rejected if on_reject == RejectAction::Requeue => {
            task.budget_used = 0;
            (
                TaskState::Queued { eligible_at: now },
                EventKind::TaskQueued,
                json!({"reason": "review_rejected", "ticket_id": t.id.to_string()}),
            )
        }
        Outcome::Rejected => {
            let error = format!(
                "rejected in review {} by {by}{}",
                t.id,
                comment.map(|c| format!(": {c}")).unwrap_or_default()
            );
            task.last_error = Some(error.clone());
            let data = json!({"error": error, "retryable": false, "ticket_id": t.id.to_string()});
            (
                TaskState::Failed { at: now, error },
                EventKind::TaskFailed,
                data,
            )
        }
        Outcome::ChangesRequested => {
            // Human feedback starts a fresh attempt budget.
            task.budget_used = 0;
            (
                TaskState::Queued { eligible_at: now },
                EventKind::TaskQueued,
                json!({"reason": "changes_requested", "ticket_id": t.id.to_string(), "comment": comment}),
            )
        }
    };
    Move {
        to,
        event,
        run,
        at: now,
        data,
    }
}
