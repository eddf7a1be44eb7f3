//! Recent throughput per queue: tasks completed in the last five minutes, in
//! 60 buckets of 5 s per queue label (fixed memory whatever the rate). Not
//! exported to Prometheus, which computes rates itself; `GET /api/v1/queues`
//! and the console show it.

use std::collections::HashMap;
use std::sync::Mutex;

/// Width of one bucket, in ms.
const BUCKET_MS: u64 = 5_000;
/// Buckets kept: 60 × 5 s = the last 5 minutes.
const BUCKETS: usize = 60;
/// The window, in minutes.
pub const WINDOW_MINUTES: f64 = (BUCKETS as u64 * BUCKET_MS) as f64 / 60_000.0;

/// Completions per queue label, bucketed by time.
#[derive(Default)]
pub(super) struct Recent {
    queues: Mutex<HashMap<String, [(u64, u32); BUCKETS]>>,
}

impl Recent {
    /// Counts one completion on `queue` at `now` (ms).
    pub(super) fn record(&self, queue: &str, now: u64) {
        let slot = now / BUCKET_MS;
        let mut map = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        let ring = map.entry(queue.to_string()).or_insert([(0, 0); BUCKETS]);
        let b = &mut ring[(slot % BUCKETS as u64) as usize];
        if b.0 != slot {
            *b = (slot, 0);
        }
        b.1 += 1;
    }

    /// Completions on `queue` per minute over the window ending at `now`.
    pub(super) fn per_minute(&self, queue: &str, now: u64) -> f64 {
        let slot = now / BUCKET_MS;
        let map = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        let Some(ring) = map.get(queue) else {
            return 0.0;
        };
        let n: u64 = ring
            .iter()
            .filter(|(s, _)| *s + BUCKETS as u64 > slot && *s <= slot)
            .map(|(_, c)| u64::from(*c))
            .sum();
        n as f64 / WINDOW_MINUTES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_the_last_five_minutes() {
        let r = Recent::default();
        for i in 0..30 {
            r.record("q", 1_000_000 + i * 1_000);
        }
        assert_eq!(r.per_minute("q", 1_030_000), 30.0 / 5.0);
        // Five minutes after the last one, all have aged out.
        assert_eq!(r.per_minute("q", 1_030_000 + 300_000), 0.0);
        assert_eq!(r.per_minute("other", 1_030_000), 0.0);
    }
}
