//! How work ends: task durations from submit to a terminal state, and
//! verification step durations by step and outcome. Step names come from
//! users, so at most [`MAX_STEP_LABELS`] get their own series.

use std::collections::HashMap;
use std::sync::RwLock;

use prometheus::{Histogram, HistogramVec, Registry};

use super::register::{histogram_vec, OTHER_LABEL};
use crate::model::{RunRecord, TaskRecord};

/// Distinct step label values before new steps share `_other`.
pub const MAX_STEP_LABELS: usize = 200;

/// Step and task duration buckets: 10 ms to 24 h.
pub const DURATION_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
    3600.0, 7200.0, 14400.0, 43200.0, 86400.0,
];

/// The outcome family's handles.
pub(super) struct OutcomeMetrics {
    /// `forgeline_task_duration_seconds{queue,outcome,agents}`
    task_duration: HistogramVec,
    /// `forgeline_verification_duration_seconds{step,outcome}`
    verification: HistogramVec,
    /// Step label → its outcome children (outcomes are a small fixed set, so
    /// a list beats a second map).
    steps: RwLock<HashMap<String, Vec<(String, Histogram)>>>,
}

impl OutcomeMetrics {
    /// Registers the family.
    pub(super) fn new(r: &Registry) -> OutcomeMetrics {
        OutcomeMetrics {
            task_duration: histogram_vec(
                r,
                "forgeline_task_duration_seconds",
                "Time from submit to a terminal state.",
                &["queue", "outcome", "agents"],
                DURATION_BUCKETS,
            ),
            verification: histogram_vec(
                r,
                "forgeline_verification_duration_seconds",
                "Verification step durations.",
                &["step", "outcome"],
                DURATION_BUCKETS,
            ),
            steps: RwLock::new(HashMap::new()),
        }
    }

    /// One finished step, `duration_ms` long (exported in seconds).
    pub(super) fn observe_verification(&self, step: &str, outcome: &str, duration_ms: u64) {
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

    /// A task ended with `outcome` at `now` (ms); `queue` is already its
    /// capped label, and the last run's agents give the `agents` label.
    pub(super) fn observe_task_end(
        &self,
        queue: &str,
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
        self.task_duration
            .with_label_values(&[queue, outcome, agents])
            .observe(now.saturating_sub(task.created_at) as f64 / 1000.0);
    }
}
