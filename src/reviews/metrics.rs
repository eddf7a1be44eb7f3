//! Reviewer metrics: the REST figures (`GET /api/v1/reviews/metrics`) and the
//! scrape-time Prometheus gauges, computed from the same tickets so the two
//! agree. docs/reviews.md gives every formula.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use super::service::SYSTEM;
use crate::clock::{format_rfc3339, Millis};
use crate::model::{Outcome, Ticket, TicketId, TicketState};
use crate::pipeline::{Pipeline, PipelineError};
use crate::store::keys;

/// A short label for a duration: `15m`, `1h`, `24h`, `90s`.
pub fn short(d: Duration) -> String {
    let s = d.as_secs();
    if s > 0 && s % 3600 == 0 {
        format!("{}h", s / 3600)
    } else if s > 0 && s % 60 == 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// The aging bucket labels for boundaries `b`: `0-15m`, …, `24h+`.
pub fn bucket_labels(b: &[Duration]) -> Vec<String> {
    let mut out = Vec::with_capacity(b.len() + 1);
    let mut lo = "0".to_string();
    for d in b {
        let hi = short(*d);
        out.push(format!("{lo}-{hi}"));
        lo = hi;
    }
    out.push(format!("{lo}+"));
    out
}

/// The index of the aging bucket `age` falls in.
pub fn bucket_of(age: Duration, b: &[Duration]) -> usize {
    b.iter().position(|d| age < *d).unwrap_or(b.len())
}

/// Nearest-rank percentile of sorted values (`p` in 0–100).
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

fn secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

fn summary(mut v: Vec<f64>) -> Value {
    v.sort_by(|a, b| a.total_cmp(b));
    let avg = (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    json!({"count": v.len(), "avg": avg, "p50": percentile(&v, 50.0), "p90": percentile(&v, 90.0)})
}

impl Pipeline {
    /// Tickets closed (decided, expired, cancelled) at or after `since`.
    pub fn tickets_closed_since(&self, since: Millis) -> Result<Vec<Ticket>, PipelineError> {
        let mut out = Vec::new();
        let mut after: Option<Vec<u8>> = since
            .checked_sub(1)
            .map(|s| keys::closed_ticket(s, &[0xff; 16]));
        loop {
            let ks = self
                .store
                .keys(&[keys::CLOSED_TICKET], after.as_deref(), 1000)?;
            for k in &ks {
                if let Some(b) = keys::trailing_id(k) {
                    out.push(self.ticket(TicketId::from_bytes(b))?);
                }
            }
            match ks.last() {
                Some(k) if ks.len() == 1000 => after = Some(k.to_vec()),
                _ => return Ok(out),
            }
        }
    }

    /// The reviewer metrics over `window` ending now.
    pub fn review_metrics(&self, window: Duration) -> Result<Value, PipelineError> {
        let now = self.now();
        let cfg = &self.config().review;
        let buckets: Vec<Duration> = cfg.aging_buckets.iter().map(|s| s.0).collect();
        let start = now.saturating_sub(window.as_millis() as u64);
        let in_window = |t: Millis| t >= start && t <= now;
        let hours = window.as_secs_f64() / 3600.0;
        let pending = self.pending_tickets()?;
        let closed = self.tickets_closed_since(start)?;
        let all: Vec<&Ticket> = pending.iter().chain(closed.iter()).collect();

        let mut by_state: BTreeMap<&str, u64> = [("open", 0), ("claimed", 0), ("assigned", 0)]
            .into_iter()
            .collect();
        let mut by_queue: BTreeMap<String, u64> = BTreeMap::new();
        let mut aging = vec![0u64; buckets.len() + 1];
        let mut wip: BTreeMap<String, u64> = BTreeMap::new();
        for t in &pending {
            *by_state.entry(t.state.as_str()).or_default() += 1;
            *by_queue.entry(t.queue.to_string()).or_default() += 1;
            aging[bucket_of(
                Duration::from_millis(now.saturating_sub(t.created_at)),
                &buckets,
            )] += 1;
            if let Some(h) = t.state.holder() {
                *wip.entry(h.to_string()).or_default() += 1;
            }
        }
        let age_of = |f: &dyn Fn(&Ticket) -> bool| {
            pending
                .iter()
                .filter(|t| f(t))
                .map(|t| now.saturating_sub(t.created_at))
                .max()
                .map(secs)
        };
        let oldest_open = age_of(&|_| true);
        let oldest_unassigned = age_of(&|t| t.state == TicketState::Open);

        let arrivals = all.iter().filter(|t| in_window(t.created_at)).count();
        let (mut first, mut reassign) = (0u64, 0u64);
        for t in &all {
            for a in t.assignments.iter().filter(|a| in_window(a.at)) {
                if a.first {
                    first += 1;
                } else {
                    reassign += 1;
                }
            }
        }
        let tta: Vec<f64> = all
            .iter()
            .filter_map(|t| {
                t.first_assigned_at
                    .filter(|f| in_window(*f))
                    .map(|f| secs(f.saturating_sub(t.created_at)))
            })
            .collect();
        let decided: Vec<&Ticket> = closed
            .iter()
            .filter(|t| t.outcome().is_some() && t.closed_at.is_some_and(in_window))
            .collect();
        let mut latency = serde_json::Map::new();
        let mut per_hour = serde_json::Map::new();
        for o in Outcome::ALL {
            let v: Vec<f64> = decided
                .iter()
                .filter(|t| t.outcome() == Some(o))
                .map(|t| secs(t.closed_at.unwrap_or(now).saturating_sub(t.created_at)))
                .collect();
            per_hour.insert(o.as_str().into(), json!(v.len() as f64 / hours));
            latency.insert(o.as_str().into(), summary(v));
        }
        let mut throughput: BTreeMap<String, u64> = BTreeMap::new();
        for t in &all {
            for v in t.votes.iter().filter(|v| in_window(v.at) && v.by != SYSTEM) {
                *throughput.entry(v.by.clone()).or_default() += 1;
            }
        }
        let mut reviewers: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for (r, n) in &throughput {
            reviewers.entry(r.clone()).or_default().0 = *n;
        }
        for (r, n) in &wip {
            reviewers.entry(r.clone()).or_default().1 = *n;
        }
        let within = decided
            .iter()
            .filter(|t| t.closed_at.is_some_and(|c| c <= t.due_at))
            .count();
        let breaches = all
            .iter()
            .filter(|t| in_window(t.due_at) && t.closed_at.is_none_or(|c| c > t.due_at))
            .count();
        let mut overrides: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for t in &decided {
            for p in &t.flagged_by {
                let e = overrides.entry(p.clone()).or_default();
                e.0 += 1;
                if t.outcome() == Some(Outcome::Approved) {
                    e.1 += 1;
                }
            }
        }
        let labels = bucket_labels(&buckets);
        Ok(json!({
            "window": short(window),
            "window_seconds": window.as_secs(),
            "now": format_rfc3339(now),
            "backlog": {"total": pending.len(), "by_state": by_state, "by_queue": by_queue},
            "unassigned": by_state["open"],
            "oldest_open_age_seconds": oldest_open,
            "oldest_unassigned_age_seconds": oldest_unassigned,
            "aging": labels.iter().zip(&aging).map(|(l, n)| json!({"bucket": l, "count": n})).collect::<Vec<_>>(),
            "arrivals": arrivals,
            "arrival_rate_per_hour": arrivals as f64 / hours,
            "assignments": {"first": first, "reassign": reassign},
            "assignment_velocity_per_hour": {
                "first": first as f64 / hours,
                "reassign": reassign as f64 / hours,
                "total": (first + reassign) as f64 / hours,
            },
            "time_to_first_assignment_seconds": summary(tta),
            "decision_latency_seconds": latency,
            "decisions_per_hour": per_hour,
            "reviewers": reviewers.iter().map(|(r, (n, w))| json!({
                "reviewer": r, "decisions": n, "decisions_per_hour": *n as f64 / hours, "wip": w,
            })).collect::<Vec<_>>(),
            "sla": {
                "decided": decided.len(),
                "within_target": within,
                "attainment": (!decided.is_empty()).then(|| within as f64 / decided.len() as f64),
                "breaches": breaches,
            },
            "guardrail_override_rate": overrides.iter().map(|(p, (n, a))| json!({
                "policy": p, "flagged_decided": n, "approved": a, "rate": *a as f64 / *n as f64,
            })).collect::<Vec<_>>(),
        }))
    }

    /// Sets the review gauges at scrape time.
    pub fn refresh_review_gauges(&self) -> Result<(), PipelineError> {
        let now = self.now();
        let buckets: Vec<Duration> = self
            .config()
            .review
            .aging_buckets
            .iter()
            .map(|s| s.0)
            .collect();
        let labels = bucket_labels(&buckets);
        let pending = self.pending_tickets()?;
        let m = &self.metrics;
        m.review_reset_gauges(&labels);
        let mut oldest: BTreeMap<&str, u64> = BTreeMap::new();
        for t in &pending {
            let state = if t.state.holder().is_some() {
                "assigned"
            } else {
                "unassigned"
            };
            m.review_backlog(state, t.queue.as_str());
            let age = now.saturating_sub(t.created_at);
            let o = oldest.entry(state).or_default();
            *o = (*o).max(age);
            m.review_backlog_age(&labels[bucket_of(Duration::from_millis(age), &buckets)]);
            if let Some(h) = t.state.holder() {
                m.review_wip(h);
            }
        }
        for (state, age) in oldest {
            m.review_oldest(state, secs(age));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0];
        assert_eq!(percentile(&v, 50.0), Some(5.0));
        assert_eq!(percentile(&v, 90.0), Some(9.0));
        assert_eq!(percentile(&[3.0], 90.0), Some(3.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn aging_buckets_are_labelled_and_found() {
        let b: Vec<Duration> = [900, 3600, 14400, 86400]
            .iter()
            .map(|s| Duration::from_secs(*s))
            .collect();
        assert_eq!(
            bucket_labels(&b),
            ["0-15m", "15m-1h", "1h-4h", "4h-24h", "24h+"]
        );
        assert_eq!(bucket_of(Duration::from_secs(0), &b), 0);
        assert_eq!(bucket_of(Duration::from_secs(900), &b), 1);
        assert_eq!(bucket_of(Duration::from_secs(100_000), &b), 4);
    }
}
