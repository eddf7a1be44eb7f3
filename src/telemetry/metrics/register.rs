//! Registering a metric with the one registry, and the label value every
//! capped label (queue, step, reviewer) falls back to.
//!
//! A name registered twice or an invalid name is a bug in this module, not a
//! runtime condition, so these panic.

use prometheus::core::Collector;
use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry,
};

/// The label value for queues, steps or reviewers past their cap.
pub const OTHER_LABEL: &str = "_other";

/// Registers `m` and hands back the handle (a clone shares the metric).
pub(super) fn register<M: Collector + Clone + 'static>(r: &Registry, m: M) -> M {
    r.register(Box::new(m.clone())).expect("unique metric");
    m
}

/// A registered counter family.
pub(super) fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    register(r, c)
}

/// A registered histogram family with these bucket bounds (seconds).
pub(super) fn histogram_vec(
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
    register(r, h)
}

/// A registered unlabelled histogram with these bucket bounds (seconds).
pub(super) fn histogram(r: &Registry, name: &str, help: &str, buckets: &[f64]) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
        .expect("valid metric");
    register(r, h)
}

/// A registered integer gauge family.
pub(super) fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    register(r, g)
}

/// A registered float gauge family (for ages in seconds and ratios).
pub(super) fn float_gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    register(r, g)
}

/// A registered unlabelled integer gauge.
pub(super) fn int_gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    register(r, IntGauge::new(name, help).expect("valid metric"))
}

/// A registered unlabelled float gauge.
pub(super) fn float_gauge(r: &Registry, name: &str, help: &str) -> Gauge {
    register(r, Gauge::new(name, help).expect("valid metric"))
}
