//! The Prometheus registry and the handles the hot paths hold.
//!
//! Names, types and labels are a contract (docs/metrics.md). Labels are
//! bounded: queue names come from users, so at most `MAX_QUEUE_LABELS`
//! distinct queues get their own series and the rest share `_other`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::model::{EventKind, EventRecord, RunRecord, TaskRecord};

/// Distinct queue label values before new queues share `_other`.
pub const MAX_QUEUE_LABELS: usize = 200;
/// Distinct step label values before new steps share `_other`.
pub const MAX_STEP_LABELS: usize = 200;
/// The label value for queues or steps past the cap.
pub const OTHER_LABEL: &str = "_other";

/// Queue wait buckets: 1 ms to 24 h, with boundaries at the SLO thresholds
/// (1 s, 30 s, 5 min).
pub const QUEUE_WAIT_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0, 86400.0,
];
/// HTTP latency buckets (SLO threshold: 250 ms).
pub const HTTP_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Review latency buckets: 1 min to 7 days, with the SLA defaults (30 min, 4 h).
pub const REVIEW_BUCKETS: &[f64] = &[
    60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0, 172800.0, 604800.0,
];
/// Step and task duration buckets: 10 ms to 24 h.
pub const DURATION_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
    3600.0, 7200.0, 14400.0, 43200.0, 86400.0,
];

/// Addresses of the static route, method and status strings.
type HttpKey = (usize, usize, usize);

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

/// Every metric forgeline exports.
pub struct Metrics {
    registry: Registry,
    /// `forgeline_http_requests_total{route,method,status}`
    pub http_requests: IntCounterVec,
    /// `forgeline_http_request_duration_seconds{route,method}`
    pub http_duration: HistogramVec,
    submitted: IntCounterVec,
    queue_wait: HistogramVec,
    leases_expired: IntCounterVec,
    stale_acks: IntCounterVec,
    retries: IntCounterVec,
    dead_letter: IntCounterVec,
    task_duration: HistogramVec,
    verification: HistogramVec,
    /// `forgeline_tasks{state,queue}` (set at scrape time)
    pub tasks: IntGaugeVec,
    /// `forgeline_queue_depth{queue}` (set at scrape time)
    pub queue_depth: IntGaugeVec,
    /// `forgeline_sse_subscribers`
    pub sse_subscribers: IntGauge,
    /// `forgeline_store_size_bytes` (set at scrape time)
    pub store_size: IntGauge,
    /// `forgeline_queue_oldest_age_seconds{queue}` (set at scrape time)
    pub queue_oldest_age: prometheus::GaugeVec,
    /// `forgeline_worker_pool_utilization_ratio` (set by the executor)
    pub pool_utilization: prometheus::Gauge,
    auth_failures: IntCounterVec,
    rate_limited: IntCounterVec,
    guardrail_decisions: IntCounterVec,
    review_backlog: IntGaugeVec,
    review_oldest: prometheus::GaugeVec,
    review_by_age: IntGaugeVec,
    review_wip: IntGaugeVec,
    review_assignments: IntCounterVec,
    review_time_to_assign: Histogram,
    review_latency: HistogramVec,
    review_decisions: IntCounterVec,
    review_sla_breaches: IntCounterVec,
    reviewers: RwLock<HashMap<String, ()>>,
    max_reviewer_labels: std::sync::atomic::AtomicUsize,
    queues: RwLock<HashMap<String, QueueHandles>>,
    /// (route, method, status) → children, keyed by the static strings'
    /// addresses: a lookup hashes three words, never the label text.
    http_children: RwLock<HashMap<HttpKey, (IntCounter, Histogram)>>,
    /// Step label → its outcome children (outcomes are a small fixed set).
    steps: RwLock<HashMap<String, Vec<(String, Histogram)>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn histogram_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
    .expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

impl Metrics {
    /// A fresh registry with every metric registered (and the process collector).
    pub fn new() -> Arc<Metrics> {
        let r = Registry::new();
        let m = Metrics {
            http_requests: counter_vec(
                &r,
                "forgeline_http_requests_total",
                "HTTP requests by route template, method and status.",
                &["route", "method", "status"],
            ),
            http_duration: histogram_vec(
                &r,
                "forgeline_http_request_duration_seconds",
                "HTTP request latency by route template and method.",
                &["route", "method"],
                HTTP_BUCKETS,
            ),
            submitted: counter_vec(
                &r,
                "forgeline_tasks_submitted_total",
                "Tasks accepted by the API.",
                &["queue"],
            ),
            queue_wait: histogram_vec(
                &r,
                "forgeline_queue_wait_seconds",
                "Time from a task becoming eligible to its lease.",
                &["queue"],
                QUEUE_WAIT_BUCKETS,
            ),
            leases_expired: counter_vec(
                &r,
                "forgeline_leases_expired_total",
                "Leases that ran out before the worker finished.",
                &["queue"],
            ),
            stale_acks: counter_vec(
                &r,
                "forgeline_stale_acks_total",
                "Worker calls refused because their lease had ended or their token was stale.",
                &["queue"],
            ),
            retries: counter_vec(
                &r,
                "forgeline_retries_total",
                "Failed runs scheduled for another attempt.",
                &["queue"],
            ),
            dead_letter: counter_vec(
                &r,
                "forgeline_dead_letter_total",
                "Tasks moved to dead-letter after exhausting their attempts.",
                &["queue"],
            ),
            task_duration: histogram_vec(
                &r,
                "forgeline_task_duration_seconds",
                "Time from submit to a terminal state.",
                &["queue", "outcome", "agents"],
                DURATION_BUCKETS,
            ),
            verification: histogram_vec(
                &r,
                "forgeline_verification_duration_seconds",
                "Verification step durations.",
                &["step", "outcome"],
                DURATION_BUCKETS,
            ),
            tasks: gauge_vec(
                &r,
                "forgeline_tasks",
                "Tasks by state and queue.",
                &["state", "queue"],
            ),
            queue_depth: gauge_vec(
                &r,
                "forgeline_queue_depth",
                "Tasks eligible and waiting for a lease.",
                &["queue"],
            ),
            sse_subscribers: {
                let g = IntGauge::new("forgeline_sse_subscribers", "Open event streams.")
                    .expect("valid metric");
                r.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            store_size: {
                let g = IntGauge::new(
                    "forgeline_store_size_bytes",
                    "Bytes the sled store occupies on disk.",
                )
                .expect("valid metric");
                r.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            queue_oldest_age: {
                let g = prometheus::GaugeVec::new(
                    Opts::new(
                        "forgeline_queue_oldest_age_seconds",
                        "Age of the oldest eligible task waiting in each queue.",
                    ),
                    &["queue"],
                )
                .expect("valid metric");
                r.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            pool_utilization: {
                let g = prometheus::Gauge::new(
                    "forgeline_worker_pool_utilization_ratio",
                    "Share of the built-in executor's workers running a task (0 to 1).",
                )
                .expect("valid metric");
                r.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            auth_failures: counter_vec(
                &r,
                "forgeline_auth_failures_total",
                "Requests refused with 401, by reason.",
                &["reason"],
            ),
            rate_limited: counter_vec(
                &r,
                "forgeline_rate_limited_total",
                "Requests refused with 429, by route class.",
                &["class"],
            ),
            guardrail_decisions: counter_vec(
                &r,
                "forgeline_guardrail_decisions_total",
                "Guardrail policy decisions by policy, stage, verdict and enforced action.",
                &["policy", "stage", "verdict", "action"],
            ),
            review_backlog: gauge_vec(
                &r,
                "forgeline_review_backlog",
                "Review tickets waiting for a decision, by state (unassigned, assigned) and queue.",
                &["state", "queue"],
            ),
            review_oldest: {
                let g = prometheus::GaugeVec::new(
                    Opts::new(
                        "forgeline_review_oldest_age_seconds",
                        "Age of the oldest pending review ticket, by state (unassigned, assigned).",
                    ),
                    &["state"],
                )
                .expect("valid metric");
                r.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            review_by_age: gauge_vec(
                &r,
                "forgeline_review_backlog_by_age",
                "Pending review tickets by age range.",
                &["age"],
            ),
            review_wip: gauge_vec(
                &r,
                "forgeline_review_wip",
                "Pending review tickets claimed by or assigned to each reviewer.",
                &["reviewer"],
            ),
            review_assignments: counter_vec(
                &r,
                "forgeline_review_assignments_total",
                "Review claims and assignments, first or reassignment.",
                &["kind"],
            ),
            review_time_to_assign: {
                let h = Histogram::with_opts(
                    HistogramOpts::new(
                        "forgeline_review_time_to_first_assignment_seconds",
                        "Time from a ticket opening to its first claim or assignment.",
                    )
                    .buckets(REVIEW_BUCKETS.to_vec()),
                )
                .expect("valid metric");
                r.register(Box::new(h.clone())).expect("unique metric");
                h
            },
            review_latency: histogram_vec(
                &r,
                "forgeline_review_decision_latency_seconds",
                "Time from a ticket opening to its final decision, by outcome.",
                &["outcome"],
                REVIEW_BUCKETS,
            ),
            review_decisions: counter_vec(
                &r,
                "forgeline_review_decisions_total",
                "Review verdicts by reviewer and outcome (each vote of an N-of-M approval counts).",
                &["reviewer", "outcome"],
            ),
            review_sla_breaches: counter_vec(
                &r,
                "forgeline_review_sla_breaches_total",
                "Review tickets that passed their SLA target, by queue.",
                &["queue"],
            ),
            reviewers: RwLock::new(HashMap::new()),
            max_reviewer_labels: std::sync::atomic::AtomicUsize::new(50),
            queues: RwLock::new(HashMap::new()),
            http_children: RwLock::new(HashMap::new()),
            steps: RwLock::new(HashMap::new()),
            registry: r,
        };
        let build = IntGaugeVec::new(
            Opts::new("forgeline_build_info", "Build information; always 1."),
            &["version", "commit", "profile"],
        )
        .expect("valid metric");
        build
            .with_label_values(&[
                crate::build_info::VERSION,
                crate::build_info::COMMIT,
                crate::build_info::PROFILE,
            ])
            .set(1);
        m.registry.register(Box::new(build)).expect("unique metric");
        // Every bounded label value exists from the start, so rate() works
        // before the first failure.
        for reason in crate::auth::AuthFailure::ALL {
            m.auth_failures.with_label_values(&[reason.as_str()]);
        }
        for class in crate::auth::RateClass::ALL {
            m.rate_limited.with_label_values(&[class.as_str()]);
        }
        for kind in ["first", "reassign"] {
            m.review_assignments.with_label_values(&[kind]);
        }
        for o in crate::model::Outcome::ALL {
            m.review_latency.with_label_values(&[o.as_str()]);
        }
        #[cfg(target_os = "linux")]
        m.registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("unique metric");
        Arc::new(m)
    }

    /// Runs `f` on the queue's cached handles (created on first use).
    fn queue<R>(&self, queue: &str, f: impl FnOnce(&QueueHandles) -> R) -> R {
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

    /// One HTTP request: counted and timed under its route template.
    pub fn observe_http(
        &self,
        route: &'static str,
        method: &'static str,
        status: &'static str,
        secs: f64,
    ) {
        let key = (
            route.as_ptr() as usize,
            method.as_ptr() as usize,
            status.as_ptr() as usize,
        );
        if let Some((c, h)) = self
            .http_children
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            c.inc();
            h.observe(secs);
            return;
        }
        let c = self
            .http_requests
            .with_label_values(&[route, method, status]);
        let h = self.http_duration.with_label_values(&[route, method]);
        c.inc();
        h.observe(secs);
        self.http_children
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, (c, h));
    }

    /// The label value a queue is exported under.
    pub fn queue_label<'a>(&self, queue: &'a str) -> &'a str {
        if self.queue(queue, |h| h.overflow) {
            OTHER_LABEL
        } else {
            queue
        }
    }

    /// Counts what a committed write's events say happened.
    pub fn observe_events(&self, events: &[EventRecord]) {
        for e in events {
            match e.kind {
                EventKind::TaskSubmitted => self.queue(e.queue.as_str(), |h| h.submitted.inc()),
                EventKind::TaskDeadLettered => self.queue(e.queue.as_str(), |h| h.dead.inc()),
                EventKind::TaskScheduled if e.data.contains("\"reason\":\"retry\"") => {
                    self.queue(e.queue.as_str(), |h| h.retries.inc())
                }
                _ => {}
            }
        }
    }

    /// One queue-wait observation.
    pub fn observe_queue_wait(&self, queue: &str, wait_ms: u64) {
        self.queue(queue, |h| h.wait.observe(wait_ms as f64 / 1000.0));
    }

    /// A request refused with 401.
    pub fn auth_failure(&self, reason: crate::auth::AuthFailure) {
        self.auth_failures
            .with_label_values(&[reason.as_str()])
            .inc();
    }

    /// A request refused with 429.
    pub fn rate_limited(&self, class: crate::auth::RateClass) {
        self.rate_limited.with_label_values(&[class.as_str()]).inc();
    }

    /// Caps the `reviewer` label (`review.max_reviewer_labels`).
    pub fn set_max_reviewer_labels(&self, n: usize) {
        self.max_reviewer_labels
            .store(n, std::sync::atomic::Ordering::Relaxed);
    }

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
        if map.len()
            < self
                .max_reviewer_labels
                .load(std::sync::atomic::Ordering::Relaxed)
        {
            map.insert(reviewer.to_string(), ());
            reviewer
        } else {
            OTHER_LABEL
        }
    }

    /// Pre-registers a policy's series (so rates exist before its first hit).
    pub fn guardrail_policy(&self, policy: &str, stage: &str) {
        self.guardrail_decisions
            .with_label_values(&[policy, stage, "allow", "allowed"]);
    }

    /// One guardrail decision.
    pub fn guardrail_decision(&self, d: &crate::model::Decision) {
        self.guardrail_decisions
            .with_label_values(&[
                &d.policy,
                d.stage.as_str(),
                d.verdict.as_str(),
                d.action.as_str(),
            ])
            .inc();
    }

    /// A claim or assignment.
    pub fn review_assignment(&self, first: bool) {
        self.review_assignments
            .with_label_values(&[if first { "first" } else { "reassign" }])
            .inc();
    }

    /// A ticket's first assignment, `ms` after it opened.
    pub fn review_first_assignment(&self, ms: u64) {
        self.review_time_to_assign.observe(ms as f64 / 1000.0);
    }

    /// One reviewer's verdict.
    pub fn review_vote(&self, reviewer: &str, outcome: crate::model::Outcome) {
        let r = self.reviewer_label(reviewer);
        self.review_decisions
            .with_label_values(&[r, outcome.as_str()])
            .inc();
    }

    /// A ticket decided `ms` after it opened.
    pub fn review_decided(&self, outcome: crate::model::Outcome, ms: u64) {
        self.review_latency
            .with_label_values(&[outcome.as_str()])
            .observe(ms as f64 / 1000.0);
    }

    /// A ticket past its SLA target.
    pub fn review_sla_breach(&self, queue: &str) {
        let q = self.queue_label(queue);
        self.review_sla_breaches.with_label_values(&[q]).inc();
    }

    /// Clears the scrape-time review gauges (every age bucket stays, at 0).
    pub fn review_reset_gauges(&self, age_labels: &[String]) {
        self.review_backlog.reset();
        self.review_oldest.reset();
        self.review_by_age.reset();
        self.review_wip.reset();
        for l in age_labels {
            self.review_by_age.with_label_values(&[l]);
        }
        for s in ["unassigned", "assigned"] {
            self.review_oldest.with_label_values(&[s]);
        }
    }

    /// One pending ticket in `state` on `queue`.
    pub fn review_backlog(&self, state: &str, queue: &str) {
        let q = self.queue_label(queue);
        self.review_backlog.with_label_values(&[state, q]).inc();
    }

    /// One pending ticket in age bucket `label`.
    pub fn review_backlog_age(&self, label: &str) {
        self.review_by_age.with_label_values(&[label]).inc();
    }

    /// One pending ticket held by `reviewer`.
    pub fn review_wip(&self, reviewer: &str) {
        let r = self.reviewer_label(reviewer);
        self.review_wip.with_label_values(&[r]).inc();
    }

    /// The oldest pending ticket in `state`.
    pub fn review_oldest(&self, state: &str, secs: f64) {
        self.review_oldest.with_label_values(&[state]).set(secs);
    }

    /// A lease expiry.
    pub fn lease_expired(&self, queue: &str) {
        self.queue(queue, |h| h.expired.inc());
    }

    /// A refused stale worker call.
    pub fn stale_ack(&self, queue: &str) {
        self.queue(queue, |h| h.stale.inc());
    }

    /// One finished verification step.
    pub fn observe_verification(&self, step: &str, outcome: &str, duration_ms: u64) {
        let secs = duration_ms as f64 / 1000.0;
        {
            let map = self.steps.read().unwrap_or_else(|e| e.into_inner());
            if let Some(h) = map
                .get(step)
                .and_then(|outcomes| outcomes.iter().find(|(o, _)| o == outcome))
            {
                h.1.observe(secs);
                return;
            }
        }
        let mut map = self.steps.write().unwrap_or_else(|e| e.into_inner());
        let label = if map.len() >= MAX_STEP_LABELS && !map.contains_key(step) {
            OTHER_LABEL
        } else {
            step
        };
        let outcomes = map.entry(label.to_string()).or_default();
        let h = match outcomes.iter().find(|(o, _)| o == outcome) {
            Some((_, h)) => h.clone(),
            None => {
                let h = self.verification.with_label_values(&[label, outcome]);
                outcomes.push((outcome.to_string(), h.clone()));
                h
            }
        };
        h.observe(secs);
    }

    /// A task reached a terminal state (`outcome`: completed, failed, dead, cancelled).
    pub fn observe_task_end(
        &self,
        task: &TaskRecord,
        run: Option<&RunRecord>,
        outcome: &str,
        now: u64,
    ) {
        let agents = match run.map(|r| r.agents.len()).unwrap_or(0) {
            0 => "none",
            1 => "single",
            _ => "multi",
        };
        let queue = self.queue_label(task.queue.as_str());
        self.task_duration
            .with_label_values(&[queue, outcome, agents])
            .observe(now.saturating_sub(task.created_at) as f64 / 1000.0);
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
