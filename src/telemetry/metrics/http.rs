//! The HTTP edge: request counts and latencies by route template, and the
//! requests refused before a handler ran (401 by reason, 429 by route class).

use std::collections::HashMap;
use std::sync::RwLock;

use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec, Registry};

use super::register::{counter_vec, histogram_vec};
use crate::auth::{AuthFailure, RateClass};

/// HTTP latency buckets (SLO threshold: 250 ms).
pub const HTTP_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Addresses of the static route, method and status strings.
type HttpKey = (usize, usize, usize);

/// The HTTP family's handles.
pub(super) struct HttpMetrics {
    /// `forgeline_http_requests_total{route,method,status}`
    pub(super) requests: IntCounterVec,
    /// `forgeline_http_request_duration_seconds{route,method}`
    pub(super) duration: HistogramVec,
    /// (route, method, status) → children, keyed by the static strings'
    /// addresses: a lookup hashes three words, never the label text.
    children: RwLock<HashMap<HttpKey, (IntCounter, Histogram)>>,
    /// `forgeline_auth_failures_total{reason}`
    auth_failures: IntCounterVec,
    /// `forgeline_rate_limited_total{class}`
    rate_limited: IntCounterVec,
}

impl HttpMetrics {
    /// Registers the family, every refusal reason and class at zero.
    pub(super) fn new(r: &Registry) -> HttpMetrics {
        let requests = counter_vec(
            r,
            "forgeline_http_requests_total",
            "HTTP requests by route template, method and status.",
            &["route", "method", "status"],
        );
        let duration = histogram_vec(
            r,
            "forgeline_http_request_duration_seconds",
            "HTTP request latency by route template and method.",
            &["route", "method"],
            HTTP_BUCKETS,
        );
        let auth_failures = counter_vec(
            r,
            "forgeline_auth_failures_total",
            "Requests refused with 401, by reason.",
            &["reason"],
        );
        let rate_limited = counter_vec(
            r,
            "forgeline_rate_limited_total",
            "Requests refused with 429, by route class.",
            &["class"],
        );
        // Every bounded label value exists from the start, so rate() works
        // before the first failure.
        for reason in AuthFailure::ALL {
            auth_failures.with_label_values(&[reason.as_str()]);
        }
        for class in RateClass::ALL {
            rate_limited.with_label_values(&[class.as_str()]);
        }
        HttpMetrics {
            requests,
            duration,
            children: RwLock::new(HashMap::new()),
            auth_failures,
            rate_limited,
        }
    }

    /// Counts and times one request (`secs`: its latency).
    pub(super) fn observe(
        &self,
        route: &'static str,
        method: &'static str,
        status: &'static str,
        secs: f64,
    ) {
        // The labels are static strings, so their addresses identify them.
        let key = (
            route.as_ptr() as usize,
            method.as_ptr() as usize,
            status.as_ptr() as usize,
        );
        if let Some((c, h)) = self
            .children
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            c.inc();
            h.observe(secs);
            return;
        }
        let c = self.requests.with_label_values(&[route, method, status]);
        let h = self.duration.with_label_values(&[route, method]);
        c.inc();
        h.observe(secs);
        self.children
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, (c, h));
    }

    /// Counts one 401.
    pub(super) fn auth_failure(&self, reason: AuthFailure) {
        self.auth_failures
            .with_label_values(&[reason.as_str()])
            .inc();
    }

    /// Counts one 429.
    pub(super) fn rate_limited(&self, class: RateClass) {
        self.rate_limited.with_label_values(&[class.as_str()]).inc();
    }
}
