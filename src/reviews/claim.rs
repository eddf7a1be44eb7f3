//! Who works on a ticket: a reviewer's claim (for `review.claim_ttl`), giving
//! a claimed or assigned ticket back, and review_admin's assignment, each
//! with its `review_assigned` event and assignment metrics.

use serde_json::json;

use super::ticket::{conflict, load_ticket, save};
use crate::clock::Millis;
use crate::model::{Assignment, EventKind, EventRecord, Ticket, TicketId, TicketState};
use crate::pipeline::transition::{append_event, Note};
use crate::pipeline::{load_task, Pipeline, PipelineError};
use crate::store::Txn;

impl Pipeline {
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
            self.check_four_eyes(&load_task(txn, t.task_id)?, &t, reviewer)?;
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
            self.check_four_eyes(&load_task(txn, t.task_id)?, &t, to)?;
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
}
