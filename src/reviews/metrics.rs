//! Reviewer metrics: the REST figures (`GET /api/v1/reviews/metrics`) and the
//! scrape-time Prometheus gauges, computed from the same tickets so the two
//! agree. docs/reviews.md gives every formula.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use super::clock::SYSTEM;
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

/// The span the flow figures count: `start..=now`, Unix ms.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Millis,
    now: Millis,
}

impl Window {
    fn holds(self, t: Millis) -> bool {
        t >= self.start && t <= self.now
    }
}

/// The pending tickets as they are now.
struct Backlog {
    /// Counts by ticket state (`open`, `claimed`, `assigned` always present).
    by_state: BTreeMap<&'static str, u64>,
    by_queue: BTreeMap<String, u64>,
    /// Counts per aging bucket (by age since the ticket opened).
    aging: Vec<u64>,
    /// Tickets held (claimed or assigned) per reviewer.
    wip: BTreeMap<String, u64>,
    /// Age in seconds of the oldest pending ticket.
    oldest_open: Option<f64>,
    /// Age in seconds of the oldest ticket nobody holds.
    oldest_unassigned: Option<f64>,
}

fn backlog(pending: &[Ticket], now: Millis, buckets: &[Duration]) -> Backlog {
    let mut by_state: BTreeMap<&'static str, u64> = [("open", 0), ("claimed", 0), ("assigned", 0)]
        .into_iter()
        .collect();
    let mut by_queue: BTreeMap<String, u64> = BTreeMap::new();
    let mut aging = vec![0u64; buckets.len() + 1];
    let mut wip: BTreeMap<String, u64> = BTreeMap::new();
    for t in pending {
        *by_state.entry(t.state.as_str()).or_default() += 1;
        *by_queue.entry(t.queue.to_string()).or_default() += 1;
        aging[bucket_of(
            Duration::from_millis(now.saturating_sub(t.created_at)),
            buckets,
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
    Backlog {
        by_state,
        by_queue,
        aging,
        wip,
        oldest_open: age_of(&|_| true),
        oldest_unassigned: age_of(&|t| t.state == TicketState::Open),
    }
}

/// First assignments and reassignments made within the window.
fn assignment_counts(all: &[&Ticket], w: Window) -> (u64, u64) {
    let (mut first, mut reassign) = (0u64, 0u64);
    for t in all {
        for a in t.assignments.iter().filter(|a| w.holds(a.at)) {
            if a.first {
                first += 1;
            } else {
                reassign += 1;
            }
        }
    }
    (first, reassign)
}

/// Seconds from opening to first assignment, for first assignments within
/// the window.
fn time_to_first_assignment(all: &[&Ticket], w: Window) -> Vec<f64> {
    all.iter()
        .filter_map(|t| {
            t.first_assigned_at
                .filter(|f| w.holds(*f))
                .map(|f| secs(f.saturating_sub(t.created_at)))
        })
        .collect()
}

/// Per outcome: the decision latency summary (seconds from opening to
/// closing) and decisions per hour.
fn decision_figures(
    decided: &[&Ticket],
    now: Millis,
    hours: f64,
) -> (
    serde_json::Map<String, Value>,
    serde_json::Map<String, Value>,
) {
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
    (latency, per_hour)
}

/// One row per reviewer who decided within the window or holds tickets now:
/// decisions (the clock's own votes left out), their rate, and wip.
fn reviewer_rows(
    all: &[&Ticket],
    wip: &BTreeMap<String, u64>,
    w: Window,
    hours: f64,
) -> Vec<Value> {
    let mut throughput: BTreeMap<String, u64> = BTreeMap::new();
    for t in all {
        for v in t.votes.iter().filter(|v| w.holds(v.at) && v.by != SYSTEM) {
            *throughput.entry(v.by.clone()).or_default() += 1;
        }
    }
    let mut reviewers: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (r, n) in &throughput {
        reviewers.entry(r.clone()).or_default().0 = *n;
    }
    for (r, n) in wip {
        reviewers.entry(r.clone()).or_default().1 = *n;
    }
    reviewers
        .iter()
        .map(|(r, (n, w))| {
            json!({
                "reviewer": r, "decisions": n, "decisions_per_hour": *n as f64 / hours, "wip": w,
            })
        })
        .collect()
}

/// SLA attainment of the tickets decided within the window, and the
/// breaches: tickets due within the window and not closed by then.
fn sla_figures(decided: &[&Ticket], all: &[&Ticket], w: Window) -> Value {
    let within = decided
        .iter()
        .filter(|t| t.closed_at.is_some_and(|c| c <= t.due_at))
        .count();
    let breaches = all
        .iter()
        .filter(|t| w.holds(t.due_at) && t.closed_at.is_none_or(|c| c > t.due_at))
        .count();
    json!({
        "decided": decided.len(),
        "within_target": within,
        "attainment": (!decided.is_empty()).then(|| within as f64 / decided.len() as f64),
        "breaches": breaches,
    })
}

/// Per guardrail policy: decided tickets it flagged, and how many of those
/// reviewers approved anyway.
fn override_rows(decided: &[&Ticket]) -> Vec<Value> {
    let mut overrides: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for t in decided {
        for p in &t.flagged_by {
            let e = overrides.entry(p.clone()).or_default();
            e.0 += 1;
            if t.outcome() == Some(Outcome::Approved) {
                e.1 += 1;
            }
        }
    }
    overrides
        .iter()
        .map(|(p, (n, a))| {
            json!({
                "policy": p, "flagged_decided": n, "approved": a, "rate": *a as f64 / *n as f64,
            })
        })
        .collect()
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

    /// The reviewer metrics over `window` ending now: the backlog as it is
    /// now, and the flow (arrivals, assignments, decisions, SLA) within the
    /// window. Rates are per hour of the window.
    pub fn review_metrics(&self, window: Duration) -> Result<Value, PipelineError> {
        let now = self.now();
        let cfg = &self.config().review;
        let buckets: Vec<Duration> = cfg.aging_buckets.iter().map(|s| s.0).collect();
        let w = Window {
            start: now.saturating_sub(window.as_millis() as u64),
            now,
        };
        let hours = window.as_secs_f64() / 3600.0;
        let pending = self.pending_tickets()?;
        let closed = self.tickets_closed_since(w.start)?;
        let all: Vec<&Ticket> = pending.iter().chain(closed.iter()).collect();
        let backlog = backlog(&pending, now, &buckets);
        let arrivals = all.iter().filter(|t| w.holds(t.created_at)).count();
        let (first, reassign) = assignment_counts(&all, w);
        let decided: Vec<&Ticket> = closed
            .iter()
            .filter(|t| t.outcome().is_some() && t.closed_at.is_some_and(|c| w.holds(c)))
            .collect();
        let (latency, per_hour) = decision_figures(&decided, now, hours);
        let labels = bucket_labels(&buckets);
        Ok(json!({
            "window": short(window),
            "window_seconds": window.as_secs(),
            "now": format_rfc3339(now),
            "backlog": {"total": pending.len(), "by_state": backlog.by_state, "by_queue": backlog.by_queue},
            "unassigned": backlog.by_state["open"],
            "oldest_open_age_seconds": backlog.oldest_open,
            "oldest_unassigned_age_seconds": backlog.oldest_unassigned,
            "aging": labels.iter().zip(&backlog.aging).map(|(l, n)| json!({"bucket": l, "count": n})).collect::<Vec<_>>(),
            "arrivals": arrivals,
            "arrival_rate_per_hour": arrivals as f64 / hours,
            "assignments": {"first": first, "reassign": reassign},
            "assignment_velocity_per_hour": {
                "first": first as f64 / hours,
                "reassign": reassign as f64 / hours,
                "total": (first + reassign) as f64 / hours,
            },
            "time_to_first_assignment_seconds": summary(time_to_first_assignment(&all, w)),
            "decision_latency_seconds": latency,
            "decisions_per_hour": per_hour,
            "reviewers": reviewer_rows(&all, &backlog.wip, w, hours),
            "sla": sla_figures(&decided, &all, w),
            "guardrail_override_rate": override_rows(&decided),
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
