//! The store's own metrics: what retention removed and when it last ran,
//! records and bytes by kind (from the last statistics pass), and the data
//! directory's file system (read at scrape time).

use std::collections::BTreeMap;

use prometheus::{Gauge, IntCounterVec, IntGauge, IntGaugeVec, Registry};

use super::register::{counter_vec, float_gauge, gauge_vec, int_gauge};
use crate::store::keys::KINDS;

/// The store family.
pub(super) struct StoreMetrics {
    removed: IntCounterVec,
    removed_bytes: IntCounterVec,
    last_run: Gauge,
    lag: Gauge,
    records: IntGaugeVec,
    bytes: IntGaugeVec,
    pub(super) disk_free: IntGauge,
    pub(super) disk_size: IntGauge,
}

impl StoreMetrics {
    /// Registers the family, every kind's series at 0.
    pub(super) fn new(r: &Registry) -> StoreMetrics {
        let m = StoreMetrics {
            removed: counter_vec(
                r,
                "forgeline_retention_removed_total",
                "Records removed by retention, by kind.",
                &["kind"],
            ),
            removed_bytes: counter_vec(
                r,
                "forgeline_retention_removed_bytes_total",
                "Bytes (keys and values, index entries included) removed by retention, by kind.",
                &["kind"],
            ),
            last_run: float_gauge(
                r,
                "forgeline_retention_last_run_timestamp_seconds",
                "When the last retention pass finished (Unix seconds; 0 before the first).",
            ),
            lag: float_gauge(
                r,
                "forgeline_retention_lag_seconds",
                "How long past its retention the most overdue item removed by the last pass had waited.",
            ),
            records: gauge_vec(
                r,
                "forgeline_store_records",
                "Records in the store by kind, at the last statistics pass.",
                &["kind"],
            ),
            bytes: gauge_vec(
                r,
                "forgeline_store_bytes",
                "Bytes of keys and values in the store by kind (before sled's own overhead), at the last statistics pass.",
                &["kind"],
            ),
            disk_free: int_gauge(
                r,
                "forgeline_store_disk_free_bytes",
                "Bytes available to forgeline on the data directory's file system.",
            ),
            disk_size: int_gauge(
                r,
                "forgeline_store_disk_size_bytes",
                "Size of the data directory's file system in bytes.",
            ),
        };
        for kind in KINDS {
            m.removed.with_label_values(&[kind]);
            m.removed_bytes.with_label_values(&[kind]);
            m.records.with_label_values(&[kind]);
            m.bytes.with_label_values(&[kind]);
        }
        m
    }

    /// A finished retention pass at `now` (ms).
    pub(super) fn pass(&self, removed: &BTreeMap<&'static str, (u64, u64)>, now: u64, lag_ms: u64) {
        for (kind, (n, b)) in removed {
            self.removed.with_label_values(&[kind]).inc_by(*n);
            self.removed_bytes.with_label_values(&[kind]).inc_by(*b);
        }
        self.last_run.set(now as f64 / 1000.0);
        self.lag.set(lag_ms as f64 / 1000.0);
    }

    /// The figures of a statistics pass: `kind → (records, bytes)`.
    pub(super) fn stats(&self, by_kind: &BTreeMap<&'static str, (u64, u64)>) {
        for kind in KINDS {
            let (n, b) = by_kind.get(kind).copied().unwrap_or_default();
            self.records.with_label_values(&[kind]).set(n as i64);
            self.bytes.with_label_values(&[kind]).set(b as i64);
        }
    }
}
