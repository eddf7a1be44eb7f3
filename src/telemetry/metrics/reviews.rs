//! Human review: the backlog and its ages (set at scrape time), each
//! reviewer's work in progress, claims and assignments, decision latency,
//! verdicts and SLA breaches. Reviewer names are capped like queue names
//! (`review.max_reviewer_labels`, default 50).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::RwLock;

use prometheus::{GaugeVec, Histogram, HistogramVec, IntCounterVec, IntGaugeVec, Registry};

use super::register::{
    counter_vec, float_gauge_vec, gauge_vec, histogram, histogram_vec, OTHER_LABEL,
};
use crate::model::Outcome;

/// Review latency buckets: 1 min to 7 days, with the SLA defaults (30 min, 4 h).
pub const REVIEW_BUCKETS: &[f64] = &[
    60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0, 172800.0, 604800.0,
];

/// The review family's handles.
pub(super) struct ReviewMetrics {
    backlog: IntGaugeVec,
    oldest: GaugeVec,
    by_age: IntGaugeVec,
    wip: IntGaugeVec,
    assignments: IntCounterVec,
    time_to_assign: Histogram,
    latency: HistogramVec,
    decisions: IntCounterVec,
    sla_breaches: IntCounterVec,
    /// Reviewers with their own label value (a set; the unit value is unused).
    reviewers: RwLock<HashMap<String, ()>>,
    /// The cap on `reviewers`, set from config after start-up.
    max_reviewer_labels: AtomicUsize,
}

impl ReviewMetrics {
    /// Registers the family, every assignment kind and outcome at zero.
    pub(super) fn new(r: &Registry) -> ReviewMetrics {
        let m = ReviewMetrics {
            backlog: gauge_vec(
                r,
                "forgeline_review_backlog",
                "Review tickets waiting for a decision, by state (unassigned, assigned) and queue.",
                &["state", "queue"],
            ),
            oldest: float_gauge_vec(
                r,
                "forgeline_review_oldest_age_seconds",
                "Age of the oldest pending review ticket, by state (unassigned, assigned).",
                &["state"],
            ),
            by_age: gauge_vec(
                r,
                "forgeline_review_backlog_by_age",
                "Pending review tickets by age range.",
                &["age"],
            ),
            wip: gauge_vec(
                r,
                "forgeline_review_wip",
                "Pending review tickets claimed by or assigned to each reviewer.",
                &["reviewer"],
            ),
            assignments: counter_vec(
                r,
                "forgeline_review_assignments_total",
                "Review claims and assignments, first or reassignment.",
                &["kind"],
            ),
            time_to_assign: histogram(
                r,
                "forgeline_review_time_to_first_assignment_seconds",
                "Time from a ticket opening to its first claim or assignment.",
                REVIEW_BUCKETS,
            ),
            latency: histogram_vec(
                r,
                "forgeline_review_decision_latency_seconds",
                "Time from a ticket opening to its final decision, by outcome.",
                &["outcome"],
                REVIEW_BUCKETS,
            ),
            decisions: counter_vec(
                r,
                "forgeline_review_decisions_total",
                "Review verdicts by reviewer and outcome (each vote of an N-of-M approval counts).",
                &["reviewer", "outcome"],
            ),
            sla_breaches: counter_vec(
                r,
                "forgeline_review_sla_breaches_total",
                "Review tickets that passed their SLA target, by queue.",
                &["queue"],
            ),
            reviewers: RwLock::new(HashMap::new()),
            max_reviewer_labels: AtomicUsize::new(50),
        };
        // Every bounded label value exists from the start, so rate() works
        // before the first event.
        for kind in ["first", "reassign"] {
            m.assignments.with_label_values(&[kind]);
        }
        for o in Outcome::ALL {
            m.latency.with_label_values(&[o.as_str()]);
        }
        m
    }

    /// Sets the reviewer label cap (already labelled reviewers keep theirs).
    pub(super) fn set_max_reviewer_labels(&self, n: usize) {
        self.max_reviewer_labels.store(n, Ordering::Relaxed);
    }

    /// The label value `reviewer` is exported under (itself, or `_other`
    /// once the cap is reached).
    fn reviewer_label<'a>(&self, reviewer: &'a str) -> &'a str {
        if self
            .reviewers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(reviewer)
        {
            return reviewer;
        }
        let mut map = self.reviewers.write().unwrap_or_else(|e| e.into_inner());
        if map.len() < self.max_reviewer_labels.load(Ordering::Relaxed) {
            map.insert(reviewer.to_string(), ());
            reviewer
        } else {
            OTHER_LABEL
        }
    }

    /// Counts a claim or assignment (`first`: the ticket's first one).
    pub(super) fn assignment(&self, first: bool) {
        self.assignments
            .with_label_values(&[if first { "first" } else { "reassign" }])
            .inc();
    }

    /// Observes the time to a first assignment, in ms (exported in seconds).
    pub(super) fn first_assignment(&self, ms: u64) {
        self.time_to_assign.observe(ms as f64 / 1000.0);
    }

    /// Counts one reviewer's verdict.
    pub(super) fn vote(&self, reviewer: &str, outcome: Outcome) {
        let r = self.reviewer_label(reviewer);
        self.decisions
            .with_label_values(&[r, outcome.as_str()])
            .inc();
    }

    /// Observes a final decision `ms` after the ticket opened.
    pub(super) fn decided(&self, outcome: Outcome, ms: u64) {
        self.latency
            .with_label_values(&[outcome.as_str()])
            .observe(ms as f64 / 1000.0);
    }

    /// Counts an SLA breach on `queue` (already its capped label).
    pub(super) fn sla_breach(&self, queue: &str) {
        self.sla_breaches.with_label_values(&[queue]).inc();
    }

    /// Clears the scrape-time gauges, then recreates every age bucket and
    /// state at 0 (a bucket that empties must read 0, not vanish).
    pub(super) fn reset_gauges(&self, age_labels: &[String]) {
        self.backlog.reset();
        self.oldest.reset();
        self.by_age.reset();
        self.wip.reset();
        for l in age_labels {
            self.by_age.with_label_values(&[l]);
        }
        for s in ["unassigned", "assigned"] {
            self.oldest.with_label_values(&[s]);
        }
    }

    /// Adds one pending ticket in `state` on `queue` (already its capped label).
    pub(super) fn backlog(&self, state: &str, queue: &str) {
        self.backlog.with_label_values(&[state, queue]).inc();
    }

    /// Adds one pending ticket to age bucket `label`.
    pub(super) fn backlog_age(&self, label: &str) {
        self.by_age.with_label_values(&[label]).inc();
    }

    /// Adds one pending ticket held by `reviewer`.
    pub(super) fn wip(&self, reviewer: &str) {
        let r = self.reviewer_label(reviewer);
        self.wip.with_label_values(&[r]).inc();
    }

    /// Sets the age of the oldest pending ticket in `state`, in seconds.
    pub(super) fn oldest(&self, state: &str, secs: f64) {
        self.oldest.with_label_values(&[state]).set(secs);
    }
}
