//! Review spans: one `review` span per review round, opened by the request,
//! carrying each reviewer's vote as a span event, and emitted when the task
//! leaves review (completed, failed, re-queued or cancelled).

use opentelemetry::trace::{Event, SpanKind, Status};
use opentelemetry::KeyValue;

use super::context::SpanCtx;
use super::export::{at, Exporting, MAX_OPEN_SPANS};
use super::task::{task_attrs, text, Data};
use crate::model::{EventRecord, TaskRecord};

impl Exporting {
    /// A review was requested: remembered (by the task's span) until it ends.
    pub(super) fn review_opened(&self, task: &SpanCtx, e: &EventRecord) {
        let mut open = self.reviews.lock().unwrap_or_else(|p| p.into_inner());
        if open.len() >= MAX_OPEN_SPANS {
            open.clear();
        }
        open.insert(task.span_id, (e.at, Vec::new()));
    }

    /// A decision or an expiry: a span event on the open review (none open, as
    /// after a restart: dropped).
    pub(super) fn review_vote(&self, task: &SpanCtx, e: &EventRecord, d: &Data) {
        let mut open = self.reviews.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, votes)) = open.get_mut(&task.span_id) {
            let mut attrs = Vec::new();
            for (key, attr) in [
                ("by", "forgeline.review.reviewer"),
                ("outcome", "forgeline.review.outcome"),
                ("action", "forgeline.review.action"),
            ] {
                if let Some(v) = text(d, key) {
                    attrs.push(KeyValue::new(attr, v.to_string()));
                }
            }
            if let Some(f) = d.get("final").and_then(|v| v.as_bool()) {
                attrs.push(KeyValue::new("forgeline.review.final", f));
            }
            votes.push(Event::new(e.kind.as_str(), at(e.at), attrs, 0));
        }
    }

    /// The task left review: the `review` span, a child of the task's, from
    /// the request to this event, with the votes as its events.
    pub(super) fn review_closed(&self, task: &SpanCtx, t: &TaskRecord, e: &EventRecord) {
        let Some((started, votes)) = self
            .reviews
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&task.span_id)
        else {
            return;
        };
        let mut attrs = task_attrs(t, e.attempt);
        attrs.push(KeyValue::new("forgeline.review.result", e.kind.as_str()));
        if let Some(run_id) = e.run_id {
            attrs.push(KeyValue::new("forgeline.run.id", run_id.to_string()));
        }
        // Derived from the start, so each review round of a task gets its own id.
        self.emit(
            task.derived(&[b"review", &started.to_be_bytes()]),
            Some((task.span_id, false)),
            SpanKind::Internal,
            format!("review {}", t.queue),
            at(started),
            at(e.at),
            attrs,
            votes,
            Status::Unset,
        );
    }
}
