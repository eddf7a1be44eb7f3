//! Review operations: open a ticket, claim, release, assign, decide, and what
//! a decision does to the task.

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::clock::{format_rfc3339, Millis};
use crate::config::RejectAction;
use crate::model::{
    step_spec_json, Assignment, EventKind, EventRecord, Outcome, RunRecord, StateKind,
    StoredDecision, TaskId, TaskRecord, TaskState, Ticket, TicketId, TicketState, Verdict, Vote,
};
use crate::pipeline::transition::{append_event, move_to, Move, Note};
use crate::pipeline::{load_task, Pipeline, PipelineError};
use crate::store::{keys, Txn};

/// Longest decision comment.
pub const MAX_COMMENT_LEN: usize = 4096;
/// The principal the SLA clock acts as.
pub const SYSTEM: &str = "system";

/// The guardrail decisions stored for a task (flags and blocks), oldest first.
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

fn save(txn: &mut Txn<'_>, t: &Ticket) -> Result<(), PipelineError> {
    txn.put(ticket_key(t.id), t)?;
    Ok(())
}

/// Moves a ticket out of the pending set.
fn close(txn: &mut Txn<'_>, t: &mut Ticket, state: TicketState, now: Millis) {
    t.state = state;
    t.closed_at = Some(now);
    txn.delete(keys::pending_ticket(&t.id.to_bytes()));
    txn.put_raw(keys::closed_ticket(now, &t.id.to_bytes()), &[]);
}

fn conflict(code: &'static str, message: String) -> PipelineError {
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

    /// A ticket.
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

    /// Reserves a ticket for `reviewer` for `review.claim_ttl`.
    pub async fn claim(&self, id: TicketId, reviewer: &str) -> Result<Ticket, PipelineError> {
        let now = self.now();
        let ttl = self.config().review.claim_ttl.as_millis() as u64;
        self.commit(|txn, out| {
            let mut t = load_ticket(txn, id)?;
            if !t.state.pending() {
                return Err(conflict(
                    "ticket_closed",
                    format!("review {id} is {}", t.state.as_str()),
                ));
            }
            if let Some(h) = t.state.holder() {
                if h != reviewer {
                    return Err(conflict(
                        "ticket_held",
                        format!("review {id} is {} by {h}", t.state.as_str()),
                    ));
                }
            }
            if t.votes.iter().any(|v| v.by == reviewer) {
                return Err(conflict(
                    "already_decided",
                    format!("{reviewer} has already decided review {id}"),
                ));
            }
            let renew = matches!(&t.state, TicketState::Claimed { by, .. } if by == reviewer);
            t.state = TicketState::Claimed {
                by: reviewer.to_string(),
                until: now + ttl,
            };
            if !renew {
                self.record_assignment(txn, out, &mut t, reviewer, reviewer, "claim", now)?;
            }
            save(txn, &t)?;
            Ok(t)
        })
        .await
    }

    /// Adds an assignment to `t`, emits `review_assigned`, counts it.
    /// Returns whether it was the ticket's first.
    #[allow(clippy::too_many_arguments)]
    fn record_assignment(
        &self,
        txn: &mut Txn<'_>,
        out: &mut Vec<EventRecord>,
        t: &mut Ticket,
        to: &str,
        by: &str,
        kind: &str,
        now: Millis,
    ) -> Result<bool, PipelineError> {
        let first = t.first_assigned_at.is_none();
        if first {
            t.first_assigned_at = Some(now);
            self.metrics
                .review_first_assignment(now.saturating_sub(t.created_at));
        }
        t.assignments.push(Assignment {
            to: to.to_string(),
            by: by.to_string(),
            at: now,
            first,
        });
        self.metrics.review_assignment(first);
        let task = load_task(txn, t.task_id)?;
        let data = json!({
            "ticket_id": t.id.to_string(),
            "to": to,
            "by": by,
            "kind": kind,
            "first": first,
        });
        append_event(
            txn,
            out,
            &task,
            Note {
                kind: EventKind::ReviewAssigned,
                run: Some(t.run_id),
                at: now,
                data,
            },
        )?;
        Ok(first)
    }

    /// Gives a claimed or assigned ticket back to the open pool.
    pub async fn release_ticket(
        &self,
        id: TicketId,
        reviewer: &str,
        admin: bool,
    ) -> Result<Ticket, PipelineError> {
        let now = self.now();
        self.commit(|txn, out| {
            let mut t = load_ticket(txn, id)?;
            let holder = t.state.holder().map(str::to_string);
            match holder {
                None => return Err(conflict("not_held", format!("review {id} is {}, not claimed or assigned", t.state.as_str()))),
                Some(h) if h != reviewer && !admin => {
                    return Err(PipelineError::Forbidden { message: format!("review {id} is held by {h}") })
                }
                Some(_) => {}
            }
            t.state = TicketState::Open;
            save(txn, &t)?;
            let task = load_task(txn, t.task_id)?;
            let data = json!({"ticket_id": id.to_string(), "to": null, "by": reviewer, "kind": "released", "first": false});
            append_event(txn, out, &task, Note { kind: EventKind::ReviewAssigned, run: Some(t.run_id), at: now, data })?;
            Ok(t)
        })
        .await
    }

    /// Puts a ticket on `to` (review_admin).
    pub async fn assign(&self, id: TicketId, to: &str, by: &str) -> Result<Ticket, PipelineError> {
        let now = self.now();
        self.commit(|txn, out| {
            let mut t = load_ticket(txn, id)?;
            if !t.state.pending() {
                return Err(conflict(
                    "ticket_closed",
                    format!("review {id} is {}", t.state.as_str()),
                ));
            }
            if t.votes.iter().any(|v| v.by == to) {
                return Err(conflict(
                    "already_decided",
                    format!("{to} has already decided review {id}"),
                ));
            }
            t.state = TicketState::Assigned {
                to: to.to_string(),
                by: by.to_string(),
            };
            self.record_assignment(txn, out, &mut t, to, by, "assign", now)?;
            save(txn, &t)?;
            Ok(t)
        })
        .await
    }

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
                let run = txn
                    .get::<RunRecord>(&keys::run(&t.run_id.to_bytes()))?
                    .ok_or_else(|| PipelineError::not_found("run", t.run_id))?;
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
        t.votes.push(vote);
        self.metrics.review_vote(&by, outcome);
        let approvals = t.approvals();
        let decided = outcome != Outcome::Approved || approvals >= t.required_approvals as usize;
        let mut task = load_task(txn, t.task_id)?;
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
        let policy = self.config().review.queue(task.queue.as_str());
        let run = Some(t.run_id);
        match outcome {
            Outcome::Approved => {
                move_to(
                    txn,
                    out,
                    &mut task,
                    Move {
                        to: TaskState::Completed { at: now },
                        event: EventKind::TaskCompleted,
                        run,
                        at: now,
                        data: json!({"ticket_id": t.id.to_string(), "approved_by": t.votes.iter().map(|v| v.by.clone()).collect::<Vec<_>>()}),
                    },
                )?;
            }
            Outcome::Rejected if policy.on_reject == RejectAction::Requeue => {
                task.budget_used = 0;
                move_to(
                    txn,
                    out,
                    &mut task,
                    Move {
                        to: TaskState::Queued { eligible_at: now },
                        event: EventKind::TaskQueued,
                        run,
                        at: now,
                        data: json!({"reason": "review_rejected", "ticket_id": t.id.to_string()}),
                    },
                )?;
            }
            Outcome::Rejected => {
                let error = format!(
                    "rejected in review {} by {by}{}",
                    t.id,
                    comment
                        .as_deref()
                        .map(|c| format!(": {c}"))
                        .unwrap_or_default()
                );
                task.last_error = Some(error.clone());
                move_to(
                    txn,
                    out,
                    &mut task,
                    Move {
                        to: TaskState::Failed {
                            at: now,
                            error: error.clone(),
                        },
                        event: EventKind::TaskFailed,
                        run,
                        at: now,
                        data: json!({"error": error, "retryable": false, "ticket_id": t.id.to_string()}),
                    },
                )?;
            }
            Outcome::ChangesRequested => {
                // Human feedback starts a fresh attempt budget.
                task.budget_used = 0;
                move_to(
                    txn,
                    out,
                    &mut task,
                    Move {
                        to: TaskState::Queued { eligible_at: now },
                        event: EventKind::TaskQueued,
                        run,
                        at: now,
                        data: json!({"reason": "changes_requested", "ticket_id": t.id.to_string(), "comment": comment}),
                    },
                )?;
            }
        }
        Ok(Some(task))
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
