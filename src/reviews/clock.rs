//! The review clock: lapsed claims go back to `open`, and tickets past their
//! SLA target get their queue's timeout action — each exactly once. A plain
//! method taking `now`, run by the timer loop and by tests.

use serde_json::json;

use super::service::{load_ticket, SYSTEM};
use crate::audit::AuditDraft;
use crate::clock::Millis;
use crate::config::TimeoutAction;
use crate::model::{
    Assignment, EventKind, Outcome, StateKind, TaskState, Ticket, TicketId, TicketState, Vote,
};
use crate::pipeline::transition::{append_event, move_to, Move, Note};
use crate::pipeline::{load_task, Pipeline, PipelineError};
use crate::store::keys;

/// What one run of the clock did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClockReport {
    /// Claims that lapsed.
    pub claims_expired: usize,
    /// Tickets escalated.
    pub escalated: usize,
    /// Tickets rejected by the clock.
    pub auto_rejected: usize,
    /// Tickets expired with their task requeued.
    pub requeued: usize,
}

impl Pipeline {
    /// The pending tickets.
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

    /// Runs the review clock once at `now`.
    pub async fn review_clock(&self, now: Millis) -> Result<ClockReport, PipelineError> {
        let mut report = ClockReport::default();
        for t in self.pending_tickets()? {
            let claim_lapsed =
                matches!(&t.state, TicketState::Claimed { until, .. } if *until <= now);
            let sla_due = !t.sla_breached && t.due_at <= now;
            if !claim_lapsed && !sla_due {
                continue;
            }
            let action = self.config().review.queue(t.queue.as_str()).on_timeout;
            let decided_task = self
                .commit(|txn, out| {
                    // Re-read inside the write: a reviewer may have acted since.
                    let mut t = load_ticket(txn, t.id)?;
                    if !t.state.pending() {
                        return Ok(None);
                    }
                    let mut task = load_task(txn, t.task_id)?;
                    if let TicketState::Claimed { by, until } = t.state.clone() {
                        if until <= now {
                            t.state = TicketState::Open;
                            let data = json!({"ticket_id": t.id.to_string(), "what": "claim", "by": by});
                            append_event(txn, out, &task, Note { kind: EventKind::ReviewExpired, run: Some(t.run_id), at: now, data })?;
                            report.claims_expired += 1;
                        }
                    }
                    let mut decided = None;
                    if !t.sla_breached && t.due_at <= now {
                        t.sla_breached = true;
                        self.metrics.review_sla_breach(t.queue.as_str());
                        let data = json!({"ticket_id": t.id.to_string(), "what": "sla", "action": timeout_name(action)});
                        append_event(txn, out, &task, Note { kind: EventKind::ReviewExpired, run: Some(t.run_id), at: now, data })?;
                        match action {
                            TimeoutAction::Escalate => {
                                t.escalated = true;
                                report.escalated += 1;
                                if let Some(to) = self.config().review.queue(t.queue.as_str()).escalate_to {
                                    let first = t.first_assigned_at.is_none();
                                    if first {
                                        t.first_assigned_at = Some(now);
                                        self.metrics.review_first_assignment(now.saturating_sub(t.created_at));
                                    }
                                    self.metrics.review_assignment(first);
                                    t.assignments.push(Assignment { to: to.clone(), by: SYSTEM.into(), at: now, first });
                                    t.state = TicketState::Assigned { to: to.clone(), by: SYSTEM.into() };
                                    let data = json!({"ticket_id": t.id.to_string(), "to": to, "by": SYSTEM, "kind": "escalation", "first": first});
                                    append_event(txn, out, &task, Note { kind: EventKind::ReviewAssigned, run: Some(t.run_id), at: now, data })?;
                                }
                            }
                            TimeoutAction::AutoReject => {
                                report.auto_rejected += 1;
                                let vote = Vote { by: SYSTEM.into(), outcome: Outcome::Rejected, comment: Some("SLA target passed".into()), at: now };
                                decided = self.vote(txn, out, &mut t, vote, now)?;
                                crate::audit::append(txn, AuditDraft {
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
                                })?;
                            }
                            TimeoutAction::Requeue => {
                                report.requeued += 1;
                                t.state = TicketState::Expired;
                                t.closed_at = Some(now);
                                txn.delete(keys::pending_ticket(&t.id.to_bytes()));
                                txn.put_raw(keys::closed_ticket(now, &t.id.to_bytes()), &[]);
                                if task.state.kind() == StateKind::AwaitingReview {
                                    task.budget_used = 0;
                                    let data = json!({"reason": "review_timeout", "ticket_id": t.id.to_string()});
                                    move_to(txn, out, &mut task, Move { to: TaskState::Queued { eligible_at: now }, event: EventKind::TaskQueued, run: Some(t.run_id), at: now, data })?;
                                }
                            }
                        }
                    }
                    txn.put(keys::ticket(&t.id.to_bytes()), &t)?;
                    Ok(decided.map(|task| (task, t.outcome())))
                })
                .await?;
            if let Some((task, Some(o))) = decided_task {
                self.observe_decided_task(&task, o);
            }
        }
        Ok(report)
    }
}

fn timeout_name(a: TimeoutAction) -> &'static str {
    match a {
        TimeoutAction::Escalate => "escalate",
        TimeoutAction::AutoReject => "auto_reject",
        TimeoutAction::Requeue => "requeue",
    }
}
