//! The submit request: its wire shape and the checks it must pass.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::clock::{after, parse_rfc3339, Millis};
use crate::config::{is_contained_relative, Config, TaskLimits};
use crate::model::{QueueName, ReviewRequest, StepName, StepSpec};
use crate::pipeline::PipelineError;

/// Queue used when a submission names none.
pub const DEFAULT_QUEUE: &str = "default";
/// Priority used when a submission gives none (0 lowest, 9 highest).
pub const DEFAULT_PRIORITY: u8 = 5;
/// Longest `workdir`.
pub const MAX_WORKDIR_LEN: usize = 256;
/// Longest inline command line (arguments, summed).
pub const MAX_INLINE_ARGV_BYTES: usize = 8 * 1024;

/// `POST /api/v1/tasks` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    /// Queue (default `default`).
    pub queue: Option<String>,
    /// 0–9 (default 5).
    pub priority: Option<u8>,
    /// RFC 3339 time before which the task is not leased.
    pub run_at: Option<String>,
    /// Alternative to `run_at`: a duration such as `"90s"` or `"10m"`.
    pub delay: Option<String>,
    /// Free key/values.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Any JSON value.
    #[serde(default)]
    pub payload: Value,
    /// Step names, or `{"name", "argv"}` when inline commands are enabled.
    #[serde(default)]
    pub steps: Vec<StepRequest>,
    /// Attempts before dead-letter.
    pub max_attempts: Option<u32>,
    /// Review gate request.
    pub review: Option<ReviewBody>,
    /// Directory under the executor's workspace root.
    pub workdir: Option<String>,
}

/// One entry of `steps`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum StepRequest {
    /// A recipe or worker-known step name.
    Name(String),
    /// An inline command.
    Inline {
        /// The step's name (it need not name a recipe).
        name: String,
        /// Program and arguments.
        argv: Vec<String>,
    },
}

/// `review` in a submission.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewBody {
    /// Hold for review.
    #[serde(default)]
    pub required: bool,
    /// N of M approvals.
    pub required_approvals: Option<u8>,
}

/// A validated submission.
#[derive(Debug, Clone)]
pub struct NewTask {
    /// The queue (`default` when the request named none).
    pub queue: QueueName,
    /// 0–9, higher leased first ([`DEFAULT_PRIORITY`] when absent).
    pub priority: u8,
    /// When it may first run (None: now).
    pub eligible_at: Option<Millis>,
    /// Labels, within `tasks.max_labels` and the key and value size limits.
    pub labels: BTreeMap<String, String>,
    /// Payload as JSON text.
    pub payload: String,
    /// Steps, in order; on an executor queue each named step is a recipe.
    pub steps: Vec<StepSpec>,
    /// Attempts before dead-letter: 1 to `tasks.max_attempts_limit`.
    pub max_attempts: u32,
    /// The review gate request (asking for approvals implies `required`).
    pub review: ReviewRequest,
    /// Where the built-in executor runs the steps: a relative path without
    /// `..`, joined to the workspace root.
    pub workdir: Option<String>,
}

/// Checks a submission against the limits and the step recipes. Fields are
/// checked in a fixed order (queue, priority, run_at/delay, labels, payload,
/// steps, max_attempts, review, workdir) and the first bad one is named.
pub fn validate(
    req: SubmitRequest,
    config: &Config,
    now: Millis,
) -> Result<NewTask, PipelineError> {
    let limits = &config.tasks;
    let queue = queue_of(req.queue.as_deref())?;
    let priority = priority_of(req.priority)?;
    let eligible_at = eligible_at(req.run_at.as_deref(), req.delay.as_deref(), now)?;
    check_labels(&req.labels, limits)?;
    let payload = payload_of(&req.payload, limits)?;
    let steps = steps_of(req.steps, &queue, config)?;
    let max_attempts = max_attempts_of(req.max_attempts, limits)?;
    let review = review_of(req.review)?;
    check_workdir(req.workdir.as_deref())?;
    Ok(NewTask {
        queue,
        priority,
        eligible_at,
        labels: req.labels,
        payload,
        steps,
        max_attempts,
        review,
        workdir: req.workdir,
    })
}

/// `queue`: a valid queue name, `default` when absent.
fn queue_of(queue: Option<&str>) -> Result<QueueName, PipelineError> {
    QueueName::parse(queue.unwrap_or(DEFAULT_QUEUE))
        .map_err(|e| PipelineError::invalid("queue", e.0))
}

/// `priority`: 0–9, [`DEFAULT_PRIORITY`] when absent.
fn priority_of(priority: Option<u8>) -> Result<u8, PipelineError> {
    let priority = priority.unwrap_or(DEFAULT_PRIORITY);
    if priority > 9 {
        return Err(PipelineError::invalid(
            "priority",
            format!("priority must be 0-9 (9 is leased first), got {priority}"),
        ));
    }
    Ok(priority)
}

/// `run_at` or `delay` (not both) as Unix ms; `None` when neither is given
/// or the time is not in the future (the task is eligible at once).
fn eligible_at(
    run_at: Option<&str>,
    delay: Option<&str>,
    now: Millis,
) -> Result<Option<Millis>, PipelineError> {
    let at = match (run_at, delay) {
        (Some(_), Some(_)) => {
            return Err(PipelineError::invalid(
                "run_at",
                "give run_at or delay, not both",
            ))
        }
        (Some(t), None) => Some(parse_rfc3339(t).ok_or_else(|| {
            PipelineError::invalid(
                "run_at",
                format!("{t:?} is not an RFC 3339 time between 1970 and 9999-12-31T23:59:59.999Z"),
            )
        })?),
        (None, Some(d)) => {
            let d = humantime::parse_duration(d).map_err(|_| {
                PipelineError::invalid(
                    "delay",
                    format!("{d:?} is not a duration such as \"90s\" or \"10m\""),
                )
            })?;
            Some(after(now, d).ok_or_else(|| {
                PipelineError::invalid(
                    "delay",
                    "the delay ends after 9999-12-31T23:59:59.999Z, the latest time forgeline keeps",
                )
            })?)
        }
        (None, None) => None,
    };
    Ok(at.filter(|&t| t > now))
}

/// `labels`: how many, and each key's and value's shape and size.
fn check_labels(
    labels: &BTreeMap<String, String>,
    limits: &TaskLimits,
) -> Result<(), PipelineError> {
    if labels.len() > limits.max_labels {
        return Err(PipelineError::invalid(
            "labels",
            format!("at most {} labels, got {}", limits.max_labels, labels.len()),
        ));
    }
    for (k, v) in labels {
        let key_ok = !k.is_empty()
            && k.len() <= limits.max_label_key_bytes
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-/".contains(c));
        if !key_ok {
            return Err(PipelineError::invalid(
                format!("labels.{k}"),
                format!(
                    "label keys use 1-{} characters from [A-Za-z0-9_.-/]",
                    limits.max_label_key_bytes
                ),
            ));
        }
        if v.len() > limits.max_label_value_bytes || v.chars().any(char::is_control) {
            return Err(PipelineError::invalid(
                format!("labels.{k}"),
                format!(
                    "label values are at most {} bytes without control characters",
                    limits.max_label_value_bytes
                ),
            ));
        }
    }
    Ok(())
}

/// `payload` as JSON text, at most `tasks.max_payload_bytes` (413 beyond).
fn payload_of(payload: &Value, limits: &TaskLimits) -> Result<String, PipelineError> {
    let payload = payload.to_string();
    if payload.len() > limits.max_payload_bytes {
        return Err(PipelineError::TooLarge {
            message: format!(
                "payload is {} bytes; the limit is {} (tasks.max_payload_bytes)",
                payload.len(),
                limits.max_payload_bytes
            ),
        });
    }
    Ok(payload)
}

/// `steps`: how many, then each one. On a queue the built-in executor runs,
/// a named step must be a configured recipe (nothing else could run it).
fn steps_of(
    steps: Vec<StepRequest>,
    queue: &QueueName,
    config: &Config,
) -> Result<Vec<StepSpec>, PipelineError> {
    let limits = &config.tasks;
    if steps.len() > limits.max_steps {
        return Err(PipelineError::invalid(
            "steps",
            format!("at most {} steps, got {}", limits.max_steps, steps.len()),
        ));
    }
    let executor_queue =
        config.executor.enabled && config.executor.queues.iter().any(|q| q == queue.as_str());
    let mut out = Vec::with_capacity(steps.len());
    for (i, s) in steps.into_iter().enumerate() {
        let field = format!("steps[{i}]");
        let spec = match s {
            StepRequest::Name(n) => named_step(&field, n, executor_queue, queue, config)?,
            StepRequest::Inline { name, argv } => inline_step(&field, name, argv, config)?,
        };
        out.push(spec);
    }
    Ok(out)
}

/// One named step (`field` is `steps[i]`, for errors).
fn named_step(
    field: &str,
    n: String,
    executor_queue: bool,
    queue: &QueueName,
    config: &Config,
) -> Result<StepSpec, PipelineError> {
    let name = StepName::parse(&n).map_err(|e| PipelineError::invalid(field, e.0))?;
    if executor_queue && !config.steps.contains_key(name.as_str()) {
        let known: Vec<&str> = config.steps.keys().map(String::as_str).collect();
        return Err(PipelineError::invalid(
            field,
            format!(
                "no step recipe named {n:?} on queue {queue}, which the built-in executor runs; configured recipes: [{}]",
                known.join(", ")
            ),
        ));
    }
    Ok(StepSpec::Named(name))
}

/// One inline command (`field` is `steps[i]`, for errors): only when
/// `executor.allow_inline_commands` is on, and bounded in size.
fn inline_step(
    field: &str,
    name: String,
    argv: Vec<String>,
    config: &Config,
) -> Result<StepSpec, PipelineError> {
    if !config.executor.allow_inline_commands {
        return Err(PipelineError::invalid(
            field,
            "inline commands are disabled (executor.allow_inline_commands = false); name a configured step instead",
        ));
    }
    let name = StepName::parse(&name).map_err(|e| PipelineError::invalid(field, e.0))?;
    let total: usize = argv.iter().map(String::len).sum();
    if argv.is_empty() || argv[0].is_empty() || total > MAX_INLINE_ARGV_BYTES {
        return Err(PipelineError::invalid(
            format!("{field}.argv"),
            format!("argv must name a program and stay under {MAX_INLINE_ARGV_BYTES} bytes"),
        ));
    }
    Ok(StepSpec::Inline { name, argv })
}

/// `max_attempts`: 1 to `tasks.max_attempts_limit`, the configured default
/// when absent.
fn max_attempts_of(max_attempts: Option<u32>, limits: &TaskLimits) -> Result<u32, PipelineError> {
    let max_attempts = max_attempts.unwrap_or(limits.default_max_attempts);
    if max_attempts == 0 || max_attempts > limits.max_attempts_limit {
        return Err(PipelineError::invalid(
            "max_attempts",
            format!("max_attempts must be 1-{}", limits.max_attempts_limit),
        ));
    }
    Ok(max_attempts)
}

/// `review`: asking for approvals (1–16) implies `required`.
fn review_of(review: Option<ReviewBody>) -> Result<ReviewRequest, PipelineError> {
    let Some(r) = review else {
        return Ok(ReviewRequest::default());
    };
    let n = r.required_approvals.unwrap_or(0);
    if n > 16 {
        return Err(PipelineError::invalid(
            "review.required_approvals",
            "required_approvals must be 0-16 (0: the queue's default)",
        ));
    }
    Ok(ReviewRequest {
        required: r.required || n > 0,
        required_approvals: n,
    })
}

/// `workdir`: a relative path that cannot climb out of the workspace root.
fn check_workdir(workdir: Option<&str>) -> Result<(), PipelineError> {
    if let Some(w) = workdir {
        if w.is_empty() || w.len() > MAX_WORKDIR_LEN || !is_contained_relative(Path::new(w)) {
            return Err(PipelineError::invalid(
                "workdir",
                "workdir must be a relative path without '..' (at most 256 bytes)",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StepRecipe;

    fn config() -> Config {
        let mut c = Config::default();
        c.steps.insert(
            "test".into(),
            StepRecipe {
                argv: vec!["true".into()],
                timeout: std::time::Duration::from_secs(1),
                workdir: None,
                env_allow: vec![],
                env: Default::default(),
                retryable: false,
            },
        );
        c
    }

    fn req(json: Value) -> Result<NewTask, PipelineError> {
        let r: SubmitRequest = serde_json::from_value(json).unwrap();
        validate(r, &config(), 1_000)
    }

    fn invalid_field(r: Result<NewTask, PipelineError>) -> String {
        match r {
            Err(PipelineError::Invalid { field, .. }) => field.unwrap_or_default(),
            other => panic!("expected 422, got {other:?}"),
        }
    }

    #[test]
    fn defaults_fill_an_empty_submission() {
        let t = req(serde_json::json!({})).unwrap();
        assert_eq!(t.queue.as_str(), "default");
        assert_eq!(t.priority, 5);
        assert_eq!(t.max_attempts, 3);
        assert_eq!(t.eligible_at, None);
        assert_eq!(t.payload, "null");
    }

    #[test]
    fn bad_fields_are_named() {
        assert_eq!(
            invalid_field(req(serde_json::json!({"priority": 10}))),
            "priority"
        );
        assert_eq!(
            invalid_field(req(serde_json::json!({"queue": "a b"}))),
            "queue"
        );
        assert_eq!(
            invalid_field(req(serde_json::json!({"steps": ["nope"]}))),
            "steps[0]"
        );
        assert_eq!(
            invalid_field(req(
                serde_json::json!({"steps": [{"name": "x", "argv": ["sh"]}]})
            )),
            "steps[0]"
        );
        assert_eq!(
            invalid_field(req(serde_json::json!({"workdir": "../etc"}))),
            "workdir"
        );
        assert_eq!(
            invalid_field(req(serde_json::json!({"run_at": "soon"}))),
            "run_at"
        );
        assert_eq!(
            invalid_field(req(serde_json::json!({"max_attempts": 0}))),
            "max_attempts"
        );
        assert_eq!(
            invalid_field(req(serde_json::json!({"labels": {"bad key": "v"}}))),
            "labels.bad key"
        );
    }

    #[test]
    fn steps_on_external_queues_need_no_recipe() {
        let t = req(serde_json::json!({"queue": "agents", "steps": ["npm-ci", "test"]})).unwrap();
        assert_eq!(t.steps.len(), 2);
    }

    #[test]
    fn delay_schedules_in_the_future() {
        let t = req(serde_json::json!({"delay": "2s"})).unwrap();
        assert_eq!(t.eligible_at, Some(3_000));
        let t = req(serde_json::json!({"run_at": "1970-01-01T00:00:00Z"})).unwrap();
        assert_eq!(t.eligible_at, None, "a past run_at is eligible now");
    }

    #[test]
    fn oversized_payload_is_too_large() {
        let big = "x".repeat(300 * 1024);
        assert!(matches!(
            req(serde_json::json!({"payload": big})),
            Err(PipelineError::TooLarge { .. })
        ));
    }
}
