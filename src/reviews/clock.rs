//! The review clock: lapsed claims go back to `open`, and tickets past their
//! SLA target get their queue's timeout action — each exactly once. A plain
//! method taking `now`, run by the timer loop and by tests.

use serde_json::json;

use super::ticket::{close, load_ticket};
use crate::audit::AuditDraft;
use crate::clock::Millis;
use crate::config::TimeoutAction;
use crate::model::{
    Assignment, EventKind, EventRecord, Outcome, StateKind, TaskRecord, TaskState, Ticket,
    TicketId, TicketState, Vote,
};
use crate::pipeline::transition::{append_event, move_to, Move, Note};
use crate::pipeline::{load_task, Pipeline, PipelineError};
use crate::store::{keys, Txn};

/// The principal the SLA clock acts as (its votes, assignments and audit
/// entries; reviewer metrics leave it out).
pub const SYSTEM: &str = "system";

/// What one run of the clock did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClockReport {
    /// Claims that lapsed.
    pub claims_expired: usize,
    /// Tickets past their SLA on an `escalate` queue (flagged, and assigned
    /// when `escalate_to` is set).
    pub escalated: usize,
    /// Tickets rejected by the clock.
    pub auto_rejected: usize,
    /// Tickets expired with their task requeued.
    pub requeued: usize,
    /// The earliest time a pending ticket falls due after this run (a claim
    /// lapsing or an SLA target passing), so the timer loop wakes for it.
    pub next_due: Option<Millis>,
}

/// A task the clock decided, with the ticket's outcome (for the metrics
/// observed after the write).
type Decided = Option<(TaskRecord, Option<Outcome>)>;

impl Pipeline {
    /// Every pending ticket (open, claimed or assigned), read through the
    /// pending index in pages of 1000.
    pub fn pending_tickets(&self) -> Result<Vec<Ticket>, PipelineError> {
        let mut out = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let ks = self
                .store
                .keys(&[keys::PENDING_TICKET], after.as_deref(), 1000)?;
            for k in &ks {
                if let Some(b) = keys::trailing_id(k) {
                    out.push(self.ticket(TicketId::from_bytes(b))?);
                }
            }
            match ks.last() {
                Some(k) if ks.len() == 1000 => after = Some(k.to_vec()),
                _ => return Ok(out),
            }
        }
    }

    /// Runs the review clock once at `now` (Unix ms). Each ticket that is due
    /// gets its own write.
    pub async fn review_clock(&self, now: Millis) -> Result<ClockReport, PipelineError> {
        let mut report = ClockReport::default();
        for t in self.pending_tickets()? {
            let claim_lapsed =
                matches!(&t.state, TicketState::Claimed { until, .. } if *until <= now);
            let sla_due = !t.sla_breached && t.due_at <= now;
            if !claim_lapsed && !sla_due {
                let claim = match &t.state {
                    TicketState::Claimed { until, .. } => Some(*until),
                    _ => None,
                };
                let sla = (!t.sla_breached).then_some(t.due_at);
                for at in claim.into_iter().chain(sla) {
                    report.next_due = Some(report.next_due.map_or(at, |d| d.min(at)));
                }
                continue;
            }
            let action = self.config().review.queue(t.queue.as_str()).on_timeout;
            let decided_task = self
                .commit(|txn, out| self.tick(txn, out, t.id, action, now, &mut report))
                .await?;
            if let Some((task, Some(o))) = decided_task {
                self.observe_decided_task(&task, o);
            }
        }
        Ok(report)
    }

    /// The clock's turn on one ticket, inside its write: a lapsed claim goes
    /// back to `open`, then a newly breached SLA gets `action`.
    fn tick(
        &self,
        txn: &mut Txn<'_>,
        out: &mut Vec<EventRecord>,
        id: TicketId,
        action: TimeoutAction,
        now: Millis,
        report: &mut ClockReport,
    ) -> Result<Decided, PipelineError> {
        // Re-read inside the write: a reviewer may have acted since.
        let mut t = load_ticket(txn, id)?;
        if !t.state.pending() {
            return Ok(None);
        }
        let mut task = load_task(txn, t.task_id)?;
        if expire_claim(txn, out, &mut t, &task, now)? {
            report.claims_expired += 1;
        }
        let mut decided = None;
        // `sla_breached` is set once and kept: the action runs exactly once.
        if !t.sla_breached && t.due_at <= now {
            match action {
                TimeoutAction::Escalate => report.escalated += 1,
                TimeoutAction::AutoReject => report.auto_rejected += 1,
                TimeoutAction::Requeue => report.requeued += 1,
            }
            decided = self.breach_sla(txn, out, &mut t, &mut task, action, now)?;
        }
        txn.put(keys::ticket(&t.id.to_bytes()), &t)?;
        Ok(decided.map(|task| (task, t.outcome())))
    }

    /// Marks `t`'s SLA breached (`review_expired`, counted) and applies the
    /// queue's timeout action. Returns the task when an auto-reject decided it.
    fn breach_sla(
        &self,
        txn: &mut Txn<'_>,
        out: &mut Vec<EventRecord>,
        t: &mut Ticket,
        task: &mut TaskRecord,
        action: TimeoutAction,
        now: Millis,
    ) -> Result<Option<TaskRecord>, PipelineError> {
        t.sla_breached = true;
        self.metrics.review_sla_breach(t.queue.as_str());
        let data =
            json!({"ticket_id": t.id.to_string(), "what": "sla", "action": timeout_name(action)});
        append_event(
            txn,
            out,
            task,
            Note {
                kind: EventKind::ReviewExpired,
                run: Some(t.run_id),
                at: now,
                data,
            },
        )?;
        match action {
            TimeoutAction::Escalate => {
                self.escalate(txn, out, t, task, now)?;
                Ok(None)
            }
            TimeoutAction::AutoReject => self.auto_reject(txn, out, t, now),
            TimeoutAction::Requeue => {
                requeue_on_timeout(txn, out, t, task, now)?;
                Ok(None)
            }
        }
    }

    /// Flags `t` escalated and, when the queue names an `escalate_to`
    /// principal, assigns the ticket to it (counted like any assignment).
    fn escalate(
        &self,
        txn: &mut Txn<'_>,
        out: &mut Vec<EventRecord>,
        t: &mut Ticket,
        task: &TaskRecord,
        now: Millis,
    ) -> Result<(), PipelineError> {
        t.escalated = true;
        if let Some(to) = self.config().review.queue(t.queue.as_str()).escalate_to {
            let first = t.first_assigned_at.is_none();
            if first {
                t.first_assigned_at = Some(now);
                self.metrics
                    .review_first_assignment(now.saturating_sub(t.created_at));
            }
            self.metrics.review_assignment(first);
            t.assignments.push(Assignment {
                to: to.clone(),
                by: SYSTEM.into(),
                at: now,
                first,
            });
            t.state = TicketState::Assigned {
                to: to.clone(),
                by: SYSTEM.into(),
            };
            let data = json!({"ticket_id": t.id.to_string(), "to": to, "by": SYSTEM, "kind": "escalation", "first": first});
            append_event(
                txn,
                out,
                task,
                Note {
                    kind: EventKind::ReviewAssigned,
                    run: Some(t.run_id),
                    at: now,
                    data,
                },
            )?;
        }
        Ok(())
    }

    /// Rejects `t` as [`SYSTEM`] through the ordinary vote, and appends an
    /// audit entry for it under the decision route (method `TIMER`): no
    /// request carries this decision, so the clock audits it itself.
    fn auto_reject(
        &self,
        txn: &mut Txn<'_>,
        out: &mut Vec<EventRecord>,
        t: &mut Ticket,
        now: Millis,
    ) -> Result<Option<TaskRecord>, PipelineError> {
        let vote = Vote {
            by: SYSTEM.into(),
            outcome: Outcome::Rejected,
            comment: Some("SLA target passed".into()),
            at: now,
        };
        let decided = self.vote(txn, out, t, vote, now)?;
        crate::audit::append(
            txn,
            &self.audit_keys,
            AuditDraft {
                at: now,
                request_id: format!("review-clock-{}", t.id),
                principal: SYSTEM.into(),
                roles: Vec::new(),
                method: "TIMER".into(),
                route: "/api/v1/reviews/{id}/decision".into(),
                body_sha256: None,
                status: 200,
                latency_us: 0,
                detail: Some(format!("review {} auto_rejected: SLA target passed", t.id)),
            },
        )?;
        Ok(decided)
    }
}

/// A lapsed claim goes back to `open` (`review_expired`). Returns whether it
/// did.
fn expire_claim(
    txn: &mut Txn<'_>,
    out: &mut Vec<EventRecord>,
    t: &mut Ticket,
    task: &TaskRecord,
    now: Millis,
) -> Result<bool, PipelineError> {
    let TicketState::Claimed { by, until } = t.state.clone() else {
        return Ok(false);
    };
    if until > now {
        return Ok(false);
    }
    t.state = TicketState::Open;
    let data = json!({"ticket_id": t.id.to_string(), "what": "claim", "by": by});
    append_event(
        txn,
        out,
        task,
        Note {
            kind: EventKind::ReviewExpired,
            run: Some(t.run_id),
            at: now,
            data,
        },
    )?;
    Ok(true)
}

/// Expires `t` (closed, out of the pending set) and, when its task still
/// waits for review, puts the task back on its queue with a fresh attempt
/// budget.
fn requeue_on_timeout(
    txn: &mut Txn<'_>,
    out: &mut Vec<EventRecord>,
    t: &mut Ticket,
    task: &mut TaskRecord,
    now: Millis,
) -> Result<(), PipelineError> {
    close(txn, t, TicketState::Expired, now);
    if task.state.kind() == StateKind::AwaitingReview {
        task.budget_used = 0;
        let data = json!({"reason": "review_timeout", "ticket_id": t.id.to_string()});
        move_to(
            txn,
            out,
            task,
            Move {
                to: TaskState::Queued { eligible_at: now },
                event: EventKind::TaskQueued,
                run: Some(t.run_id),
                at: now,
                data,
            },
        )?;
    }
    Ok(())
}

fn timeout_name(a: TimeoutAction) -> &'static str {
    match a {
        TimeoutAction::Escalate => "escalate",
        TimeoutAction::AutoReject => "auto_reject",
        TimeoutAction::Requeue => "requeue",
    }
}
