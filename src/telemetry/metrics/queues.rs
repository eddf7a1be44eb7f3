//! Per-queue counters: submits, queue wait, lease expiries, stale worker
//! calls, retries and dead letters, all labelled by queue. Queue names come
//! from users, so at most [`MAX_QUEUE_LABELS`] get their own series; this file
//! owns that cap (other families label by `QueueMetrics::label`).

use std::collections::HashMap;
use std::sync::RwLock;

use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec, Registry};

use super::register::{counter_vec, histogram_vec, OTHER_LABEL};
use crate::model::{EventKind, EventRecord};

/// Distinct queue label values before new queues share `_other`.
pub const MAX_QUEUE_LABELS: usize = 200;

/// Queue wait buckets: 1 ms to 24 h, with boundaries at the SLO thresholds
/// (1 s, 30 s, 5 min).
pub const QUEUE_WAIT_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0, 86400.0,
];

/// Per-queue handles, resolved once per queue.
#[derive(Clone)]
struct QueueHandles {
    /// Past the label cap: exported as `_other`.
    overflow: bool,
    submitted: IntCounter,
    wait: Histogram,
    expired: IntCounter,
    stale: IntCounter,
    retries: IntCounter,
    dead: IntCounter,
}

/// The per-queue family's handles.
pub(super) struct QueueMetrics {
    submitted: IntCounterVec,
    queue_wait: HistogramVec,
    leases_expired: IntCounterVec,
    stale_acks: IntCounterVec,
    retries: IntCounterVec,
    dead_letter: IntCounterVec,
    /// Queue label → its children (at most `MAX_QUEUE_LABELS` + `_other`).
    queues: RwLock<HashMap<String, QueueHandles>>,
}

impl QueueMetrics {
    /// Registers the family (no series until a queue is first seen).
    pub(super) fn new(r: &Registry) -> QueueMetrics {
        let per_queue = |name: &str, help: &str| counter_vec(r, name, help, &["queue"]);
        QueueMetrics {
            submitted: per_queue(
                "forgeline_tasks_submitted_total",
                "Tasks accepted by the API.",
            ),
            queue_wait: histogram_vec(
                r,
                "forgeline_queue_wait_seconds",
                "Time from a task becoming eligible to its lease.",
                &["queue"],
                QUEUE_WAIT_BUCKETS,
            ),
            leases_expired: per_queue(
                "forgeline_leases_expired_total",
                "Leases that ran out before the worker finished.",
            ),
            stale_acks: per_queue(
                "forgeline_stale_acks_total",
                "Worker calls refused because their lease had ended or their token was stale.",
            ),
            retries: per_queue(
                "forgeline_retries_total",
                "Failed runs scheduled for another attempt.",
            ),
            dead_letter: per_queue(
                "forgeline_dead_letter_total",
                "Tasks moved to dead-letter after exhausting their attempts.",
            ),
            queues: RwLock::new(HashMap::new()),
        }
    }

    /// Runs `f` on the queue's cached handles (created on first use).
    fn handles<R>(&self, queue: &str, f: impl FnOnce(&QueueHandles) -> R) -> R {
        if let Some(h) = self
            .queues
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(queue)
        {
            return f(h);
        }
        let mut map = self.queues.write().unwrap_or_else(|e| e.into_inner());
        // Past the cap, queues share the one `_other` entry (the map stays
        // bounded; their lookups take this slower path).
        let label = if map.len() >= MAX_QUEUE_LABELS && !map.contains_key(queue) {
            OTHER_LABEL
        } else {
            queue
        };
        let h = map
            .entry(label.to_string())
            .or_insert_with(|| QueueHandles {
                overflow: label == OTHER_LABEL,
                submitted: self.submitted.with_label_values(&[label]),
                wait: self.queue_wait.with_label_values(&[label]),
                expired: self.leases_expired.with_label_values(&[label]),
                stale: self.stale_acks.with_label_values(&[label]),
                retries: self.retries.with_label_values(&[label]),
                dead: self.dead_letter.with_label_values(&[label]),
            });
        f(h)
    }

    /// Leases taken from `queue` since start, and their summed queue wait in
    /// seconds (the `forgeline_queue_wait_seconds` histogram's count and sum).
    pub(super) fn wait_summary(&self, queue: &str) -> (u64, f64) {
        self.handles(queue, |h| {
            (h.wait.get_sample_count(), h.wait.get_sample_sum())
        })
    }

    /// The label value `queue` is exported under (itself, or `_other`).
    pub(super) fn label<'a>(&self, queue: &'a str) -> &'a str {
        if self.handles(queue, |h| h.overflow) {
            OTHER_LABEL
        } else {
            queue
        }
    }

    /// Counts the submits, dead letters and retries among `events`.
    pub(super) fn observe_events(&self, events: &[EventRecord]) {
        for e in events {
            match e.kind {
                EventKind::TaskSubmitted => self.handles(e.queue.as_str(), |h| h.submitted.inc()),
                EventKind::TaskDeadLettered => self.handles(e.queue.as_str(), |h| h.dead.inc()),
                // A substring test, not a parse: this runs on every committed
                // write, and the data is our own compact JSON.
                EventKind::TaskScheduled if e.data.contains("\"reason\":\"retry\"") => {
                    self.handles(e.queue.as_str(), |h| h.retries.inc())
                }
                _ => {}
            }
        }
    }

    /// One queue wait, in milliseconds (exported in seconds).
    pub(super) fn observe_wait(&self, queue: &str, wait_ms: u64) {
        self.handles(queue, |h| h.wait.observe(wait_ms as f64 / 1000.0));
    }

    /// Counts one lease expiry.
    pub(super) fn lease_expired(&self, queue: &str) {
        self.handles(queue, |h| h.expired.inc());
    }

    /// Counts one refused stale worker call.
    pub(super) fn stale_ack(&self, queue: &str) {
        self.handles(queue, |h| h.stale.inc());
    }
}
