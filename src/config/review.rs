//! `[review]`: the review gate's clock, approvals and per-queue policy.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A duration written like `"30m"` (a map value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Span(#[serde(with = "humantime_serde")] pub Duration);

/// `[review]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReviewConfig {
    /// How long a claim reserves a ticket before it returns to `open`.
    #[serde(with = "humantime_serde")]
    pub claim_ttl: Duration,
    /// Approvals needed when neither the task nor its queue says.
    pub required_approvals: u8,
    /// SLA targets: `default`, and `priority_0` … `priority_9` overrides.
    pub sla: BTreeMap<String, Span>,
    /// Upper bounds of the aging buckets (the last bucket is open-ended).
    pub aging_buckets: Vec<Span>,
    /// Distinct `reviewer` label values before new reviewers share `_other`.
    pub max_reviewer_labels: usize,
    /// Per-queue policy, `[review.queues.NAME]`.
    pub queues: BTreeMap<String, QueueReview>,
    /// Whether a principal may claim, be assigned or decide a review of a
    /// task it submitted (four eyes: refused by default; without auth every
    /// caller is `anonymous` and the rule does not apply).
    pub allow_self_review: bool,
}

impl Default for ReviewConfig {
    fn default() -> Self {
        let mut sla = BTreeMap::new();
        sla.insert("default".to_string(), Span(Duration::from_secs(4 * 3600)));
        ReviewConfig {
            claim_ttl: Duration::from_secs(30 * 60),
            required_approvals: 1,
            sla,
            aging_buckets: [15 * 60, 3600, 4 * 3600, 24 * 3600]
                .iter()
                .map(|s| Span(Duration::from_secs(*s)))
                .collect(),
            max_reviewer_labels: 50,
            queues: BTreeMap::new(),
            allow_self_review: false,
        }
    }
}

/// What the SLA clock does when a ticket passes its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TimeoutAction {
    /// Mark it escalated (event, metric) and assign it to `escalate_to`.
    #[default]
    Escalate,
    /// Reject it (the task fails, or is requeued per `on_reject`).
    AutoReject,
    /// Expire the ticket and put the task back on its queue.
    Requeue,
}

/// What a rejection does to the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RejectAction {
    /// The task fails.
    #[default]
    Fail,
    /// The task goes back to its queue.
    Requeue,
}

/// `[review.queues.NAME]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct QueueReview {
    /// SLA target for this queue (over the priority targets).
    #[serde(with = "humantime_serde")]
    pub sla: Option<Duration>,
    /// Approvals needed on this queue.
    pub required_approvals: Option<u8>,
    /// What the SLA clock does once a ticket on this queue passes its target.
    pub on_timeout: TimeoutAction,
    /// What a rejection (a reviewer's or the clock's) does to the task.
    pub on_reject: RejectAction,
    /// A review_admin principal that escalated tickets are assigned to.
    pub escalate_to: Option<String>,
}

impl ReviewConfig {
    /// Checks the keys and values.
    pub fn validate(&self) -> Result<(), String> {
        if self.claim_ttl.is_zero() {
            return Err("review.claim_ttl must be above 0".into());
        }
        if self.required_approvals == 0 || self.required_approvals > 16 {
            return Err("review.required_approvals must be 1-16".into());
        }
        if !self.sla.contains_key("default") {
            return Err("review.sla needs a default".into());
        }
        for (k, v) in &self.sla {
            let ok = k == "default"
                || k.strip_prefix("priority_")
                    .and_then(|p| p.parse::<u8>().ok())
                    .is_some_and(|p| p <= 9);
            if !ok {
                return Err(format!(
                    "review.sla.{k}: keys are default and priority_0 … priority_9"
                ));
            }
            if v.0.is_zero() {
                return Err(format!("review.sla.{k} must be above 0"));
            }
        }
        if self.aging_buckets.is_empty() || self.aging_buckets.windows(2).any(|w| w[0].0 >= w[1].0)
        {
            return Err("review.aging_buckets must be increasing and not empty".into());
        }
        for (q, r) in &self.queues {
            if r.required_approvals.is_some_and(|n| n == 0 || n > 16) {
                return Err(format!("review.queues.{q}.required_approvals must be 1-16"));
            }
            if r.sla.is_some_and(|d| d.is_zero()) {
                return Err(format!("review.queues.{q}.sla must be above 0"));
            }
        }
        Ok(())
    }

    /// The SLA target of a ticket on `queue` with `priority`.
    pub fn sla_for(&self, queue: &str, priority: u8) -> Duration {
        if let Some(d) = self.queues.get(queue).and_then(|q| q.sla) {
            return d;
        }
        self.sla
            .get(&format!("priority_{priority}"))
            .or_else(|| self.sla.get("default"))
            .map(|s| s.0)
            .unwrap_or(Duration::from_secs(4 * 3600))
    }

    /// The policy of `queue` (defaults when unset).
    pub fn queue(&self, queue: &str) -> QueueReview {
        self.queues.get(queue).cloned().unwrap_or_default()
    }

    /// Approvals needed for a task that asked for `requested` (0: default).
    pub fn approvals_for(&self, queue: &str, requested: u8) -> u8 {
        if requested > 0 {
            return requested;
        }
        self.queues
            .get(queue)
            .and_then(|q| q.required_approvals)
            .unwrap_or(self.required_approvals)
    }
}
