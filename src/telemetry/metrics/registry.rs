//! [`Metrics`]: the one Prometheus registry, the handles other modules set
//! directly (public fields), and the methods the hot paths call, each handed
//! to its family. Queue labels are capped in one place (the queue family), so
//! the other families that label by queue ask it first.

use std::sync::Arc;

use prometheus::{Encoder, Gauge, GaugeVec, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec};
use prometheus::{Registry, TextEncoder};

use super::gauges::{register_build_info, StateGauges};
use super::guardrails::GuardrailMetrics;
use super::http::HttpMetrics;
use super::outcomes::OutcomeMetrics;
use super::queues::QueueMetrics;
use super::reviews::ReviewMetrics;
use super::store::StoreMetrics;
use crate::model::{Decision, EventRecord, Outcome, RunRecord, TaskRecord};

/// Every metric forgeline exports.
pub struct Metrics {
    registry: Registry,
    /// `forgeline_http_requests_total{route,method,status}`
    pub http_requests: IntCounterVec,
    /// `forgeline_http_request_duration_seconds{route,method}`
    pub http_duration: HistogramVec,
    /// `forgeline_tasks{state,queue}` (set at scrape time)
    pub tasks: IntGaugeVec,
    /// `forgeline_queue_depth{queue}` (set at scrape time)
    pub queue_depth: IntGaugeVec,
    /// `forgeline_sse_subscribers`
    pub sse_subscribers: IntGauge,
    /// `forgeline_store_size_bytes` (set at scrape time)
    pub store_size: IntGauge,
    /// `forgeline_audit_head_seq` (set at scrape time)
    pub audit_head_seq: IntGauge,
    /// `forgeline_queue_oldest_age_seconds{queue}` (set at scrape time)
    pub queue_oldest_age: GaugeVec,
    /// `forgeline_worker_pool_utilization_ratio` (set by the executor)
    pub pool_utilization: Gauge,
    /// Holds the same two HTTP metrics as `http_requests` and `http_duration`
    /// (a handle clone shares its metric), plus the per-route cache.
    http: HttpMetrics,
    queues: QueueMetrics,
    outcomes: OutcomeMetrics,
    recent: super::recent::Recent,
    guardrails: GuardrailMetrics,
    reviews: ReviewMetrics,
    store: StoreMetrics,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// A fresh registry with every metric registered (and the process collector).
    pub fn new() -> Arc<Metrics> {
        let r = Registry::new();
        // Families register in the order the metrics always have; the text
        // encoder sorts by name anyway, so /metrics does not depend on it.
        let http = HttpMetrics::new(&r);
        let queues = QueueMetrics::new(&r);
        let outcomes = OutcomeMetrics::new(&r);
        let state = StateGauges::new(&r);
        let guardrails = GuardrailMetrics::new(&r);
        let reviews = ReviewMetrics::new(&r);
        let store = StoreMetrics::new(&r);
        register_build_info(&r);
        #[cfg(target_os = "linux")]
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("unique metric");
        Arc::new(Metrics {
            registry: r,
            http_requests: http.requests.clone(),
            http_duration: http.duration.clone(),
            tasks: state.tasks,
            queue_depth: state.queue_depth,
            sse_subscribers: state.sse_subscribers,
            store_size: state.store_size,
            audit_head_seq: state.audit_head_seq,
            queue_oldest_age: state.queue_oldest_age,
            pool_utilization: state.pool_utilization,
            http,
            queues,
            outcomes,
            recent: Default::default(),
            guardrails,
            reviews,
            store,
        })
    }

    /// One HTTP request: counted and timed (`secs`) under its route template.
    /// The labels are `'static` so their children can be cached by address.
    pub fn observe_http(
        &self,
        route: &'static str,
        method: &'static str,
        status: &'static str,
        secs: f64,
    ) {
        self.http.observe(route, method, status, secs);
    }

    /// The label value a queue is exported under: itself, or `_other` once
    /// `MAX_QUEUE_LABELS` queues have their own.
    pub fn queue_label<'a>(&self, queue: &'a str) -> &'a str {
        self.queues.label(queue)
    }

    /// Counts what a committed write's events say happened (submits, retries,
    /// dead letters).
    pub fn observe_events(&self, events: &[EventRecord]) {
        self.queues.observe_events(events);
    }

    /// Leases taken from `queue` since start and their summed queue wait in
    /// seconds (queues past the label cap share `_other`'s).
    pub fn queue_wait_summary(&self, queue: &str) -> (u64, f64) {
        self.queues.wait_summary(queue)
    }

    /// Tasks of `queue` completed per minute over the last five minutes
    /// before `now` (ms).
    pub fn completed_per_minute(&self, queue: &str, now: u64) -> f64 {
        self.recent.per_minute(self.queue_label(queue), now)
    }

    /// One lease's queue wait, in milliseconds (exported in seconds).
    pub fn observe_queue_wait(&self, queue: &str, wait_ms: u64) {
        self.queues.observe_wait(queue, wait_ms);
    }

    /// A request refused with 401: `forgeline_auth_failures_total{reason}`.
    pub fn auth_failure(&self, reason: crate::auth::AuthFailure) {
        self.http.auth_failure(reason);
    }

    /// A request refused with 429: `forgeline_rate_limited_total{class}`.
    pub fn rate_limited(&self, class: crate::auth::RateClass) {
        self.http.rate_limited(class);
    }

    /// Caps the `reviewer` label (`review.max_reviewer_labels`).
    pub fn set_max_reviewer_labels(&self, n: usize) {
        self.reviews.set_max_reviewer_labels(n);
    }

    /// Pre-registers a policy's series (so rates exist before its first hit).
    pub fn guardrail_policy(&self, policy: &str, stage: &str) {
        self.guardrails.policy(policy, stage);
    }

    /// One guardrail decision: `forgeline_guardrail_decisions_total`.
    pub fn guardrail_decision(&self, d: &Decision) {
        self.guardrails.decision(d);
    }

    /// A review claim or assignment (`first`: the ticket's first, else a
    /// reassignment).
    pub fn review_assignment(&self, first: bool) {
        self.reviews.assignment(first);
    }

    /// A ticket's first assignment, `ms` after it opened.
    pub fn review_first_assignment(&self, ms: u64) {
        self.reviews.first_assignment(ms);
    }

    /// One reviewer's verdict (each vote of an N-of-M approval counts).
    pub fn review_vote(&self, reviewer: &str, outcome: Outcome) {
        self.reviews.vote(reviewer, outcome);
    }

    /// A ticket's final decision, `ms` after it opened.
    pub fn review_decided(&self, outcome: Outcome, ms: u64) {
        self.reviews.decided(outcome, ms);
    }

    /// A ticket past its SLA target.
    pub fn review_sla_breach(&self, queue: &str) {
        self.reviews.sla_breach(self.queue_label(queue));
    }

    /// Clears the scrape-time review gauges (every age bucket stays, at 0).
    pub fn review_reset_gauges(&self, age_labels: &[String]) {
        self.reviews.reset_gauges(age_labels);
    }

    /// One pending ticket in `state` (unassigned, assigned) on `queue`.
    pub fn review_backlog(&self, state: &str, queue: &str) {
        self.reviews.backlog(state, self.queue_label(queue));
    }

    /// One pending ticket in age bucket `label`.
    pub fn review_backlog_age(&self, label: &str) {
        self.reviews.backlog_age(label);
    }

    /// One pending ticket claimed by or assigned to `reviewer`.
    pub fn review_wip(&self, reviewer: &str) {
        self.reviews.wip(reviewer);
    }

    /// The age of the oldest pending ticket in `state`, in seconds.
    pub fn review_oldest(&self, state: &str, secs: f64) {
        self.reviews.oldest(state, secs);
    }

    /// A lease ran out before its worker finished.
    pub fn lease_expired(&self, queue: &str) {
        self.queues.lease_expired(queue);
    }

    /// A worker call refused because its lease had ended or its token was stale.
    pub fn stale_ack(&self, queue: &str) {
        self.queues.stale_ack(queue);
    }

    /// One finished verification step, `duration_ms` long.
    pub fn observe_verification(&self, step: &str, outcome: &str, duration_ms: u64) {
        self.outcomes
            .observe_verification(step, outcome, duration_ms);
    }

    /// A task reached a terminal state (`outcome`: completed, failed, dead,
    /// cancelled) at `now` (ms); `run` is its last run, if any.
    pub fn observe_task_end(
        &self,
        task: &TaskRecord,
        run: Option<&RunRecord>,
        outcome: &str,
        now: u64,
    ) {
        let queue = self.queue_label(task.queue.as_str());
        if outcome == "completed" {
            self.recent.record(queue, now);
        }
        self.outcomes
            .observe_task_end(queue, task, run, outcome, now);
    }

    /// A finished retention pass at `now` (ms): records and bytes removed
    /// per kind, and how overdue the most overdue removal was.
    pub fn retention_pass(
        &self,
        removed: &std::collections::BTreeMap<&'static str, (u64, u64)>,
        now: u64,
        lag_ms: u64,
    ) {
        self.store.pass(removed, now, lag_ms);
    }

    /// Records and bytes by kind from a statistics pass.
    pub fn store_stats(&self, by_kind: &std::collections::BTreeMap<&'static str, (u64, u64)>) {
        self.store.stats(by_kind);
    }

    /// The data directory's file system: free and total bytes.
    pub fn store_disk(&self, free: u64, size: u64) {
        self.store.disk_free.set(free.min(i64::MAX as u64) as i64);
        self.store.disk_size.set(size.min(i64::MAX as u64) as i64);
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let families = self.registry.gather();
        if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}
