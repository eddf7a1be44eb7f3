//! Worker payloads in the shapes agents send today, normalised to one form.
//!
//! Accepted: snake_case keys (`tool_name`), camelCase keys (`toolName`), and
//! either of those nested under `event_data`/`eventData` beside the type. The
//! type may be spelled `tool_invoked`, `toolInvoked` or `tool-invoked`, under
//! `type`, `event`, `event_type` or `eventType`. Anything else is a 422 that
//! says what was wrong; nothing is guessed.

use serde_json::{Map, Value};

use crate::clock::{parse_rfc3339, Millis};
use crate::model::{StepName, TaskId, WorkerStatus};

/// A normalisation failure (422), naming the offending key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ShapeError {
    /// The canonical key at fault, when one is.
    pub field: Option<String>,
    /// What was wrong.
    pub message: String,
}

fn err(field: &str, message: impl Into<String>) -> ShapeError {
    ShapeError {
        field: Some(field.to_string()),
        message: message.into(),
    }
}

/// Agent and verification event types a worker may report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentEventKind {
    /// `agent_started`
    AgentStarted,
    /// `tool_invoked`
    ToolInvoked,
    /// `agent_finished`
    AgentFinished,
    /// `verification_started`
    VerificationStarted,
    /// `verification_finished`
    VerificationFinished,
}

impl AgentEventKind {
    const ALL: [(&'static str, AgentEventKind); 5] = [
        ("agent_started", AgentEventKind::AgentStarted),
        ("tool_invoked", AgentEventKind::ToolInvoked),
        ("agent_finished", AgentEventKind::AgentFinished),
        ("verification_started", AgentEventKind::VerificationStarted),
        (
            "verification_finished",
            AgentEventKind::VerificationFinished,
        ),
    ];

    /// The canonical name.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, k)| *k == self)
            .map(|(n, _)| *n)
            .unwrap_or("")
    }
}

/// Longest output tail a worker may attach to a step.
pub const MAX_OUTPUT_TAIL: usize = 16 * 1024;
/// Most extra attributes kept on one event.
pub const MAX_ATTRIBUTES: usize = 32;
/// Longest string accepted in a named field.
pub const MAX_FIELD_LEN: usize = 512;

/// Outcomes of a verification step.
pub const STEP_OUTCOMES: [&str; 4] = ["passed", "failed", "timed_out", "error"];

/// An agent or verification event in canonical form.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentEvent {
    /// Type.
    pub kind: AgentEventKind,
    /// `agent_name`
    pub agent_name: Option<String>,
    /// `tool_name`
    pub tool_name: Option<String>,
    /// `tool_call_id`
    pub tool_call_id: Option<String>,
    /// `step`
    pub step: Option<String>,
    /// `duration_ms`
    pub duration_ms: Option<u64>,
    /// `outcome` (steps: passed, failed, timed_out, error)
    pub outcome: Option<String>,
    /// `exit_code`
    pub exit_code: Option<i64>,
    /// `error`
    pub error: Option<String>,
    /// `output_tail`
    pub output_tail: Option<String>,
    /// `timestamp` as reported by the worker.
    pub timestamp: Option<Millis>,
    /// Everything else, keys in snake_case.
    pub attributes: Map<String, Value>,
}

impl AgentEvent {
    /// A verification event about `step` with every other field empty.
    pub fn for_step(kind: AgentEventKind, step: &str) -> AgentEvent {
        AgentEvent {
            kind,
            agent_name: None,
            tool_name: None,
            tool_call_id: None,
            step: Some(step.to_string()),
            duration_ms: None,
            outcome: None,
            exit_code: None,
            error: None,
            output_tail: None,
            timestamp: None,
            attributes: Map::new(),
        }
    }

    /// The event with secrets removed from every free-text field (errors,
    /// output, attributes) — what is stored.
    pub fn redacted(mut self) -> AgentEvent {
        use crate::redact::{redact, redact_json};
        for s in [&mut self.error, &mut self.output_tail]
            .into_iter()
            .flatten()
        {
            if let std::borrow::Cow::Owned(r) = redact(s) {
                *s = r;
            }
        }
        let mut attrs = Value::Object(std::mem::take(&mut self.attributes));
        redact_json(&mut attrs);
        if let Value::Object(m) = attrs {
            self.attributes = m;
        }
        self
    }

    /// The canonical JSON (stored as the event's `data`).
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                m.insert(k.to_string(), v);
            }
        };
        put("agent_name", self.agent_name.clone().map(Value::from));
        put("tool_name", self.tool_name.clone().map(Value::from));
        put("tool_call_id", self.tool_call_id.clone().map(Value::from));
        put("step", self.step.clone().map(Value::from));
        put("duration_ms", self.duration_ms.map(Value::from));
        put("outcome", self.outcome.clone().map(Value::from));
        put("exit_code", self.exit_code.map(Value::from));
        put("error", self.error.clone().map(Value::from));
        put("output_tail", self.output_tail.clone().map(Value::from));
        put(
            "reported_at",
            self.timestamp
                .map(|t| crate::clock::format_rfc3339(t).into()),
        );
        if !self.attributes.is_empty() {
            m.insert("attributes".into(), Value::Object(self.attributes.clone()));
        }
        Value::Object(m)
    }
}

/// `fooBar` → `foo_bar`; `foo-bar` → `foo_bar`; snake_case is unchanged.
pub fn snake_case(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for (i, c) in s.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 && !out.ends_with('_') {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else if c == '-' {
            out.push('_');
        } else {
            out.push(c);
        }
    }
    out
}

/// Flattens the accepted shapes into one map with snake_case keys.
fn flatten(value: &Value) -> Result<Map<String, Value>, ShapeError> {
    let Value::Object(top) = value else {
        return Err(ShapeError {
            field: None,
            message: "expected a JSON object".into(),
        });
    };
    let mut out = Map::new();
    let add = |k: &str, v: &Value, out: &mut Map<String, Value>| -> Result<(), ShapeError> {
        let key = snake_case(k);
        match out.get(&key) {
            Some(prev) if prev != v => Err(err(
                &key,
                format!(
                    "{key:?} is given twice with different values (as {k:?} and another spelling)"
                ),
            )),
            _ => {
                out.insert(key, v.clone());
                Ok(())
            }
        }
    };
    for (k, v) in top {
        if k == "event_data" || k == "eventData" {
            continue;
        }
        add(k, v, &mut out)?;
    }
    let nested = match (top.get("event_data"), top.get("eventData")) {
        (Some(_), Some(_)) => {
            return Err(err("event_data", "give event_data or eventData, not both"))
        }
        (Some(n), None) | (None, Some(n)) => Some(n),
        (None, None) => None,
    };
    if let Some(n) = nested {
        let Value::Object(inner) = n else {
            return Err(err("event_data", "event_data must be a JSON object"));
        };
        for (k, v) in inner {
            add(k, v, &mut out)?;
        }
    }
    Ok(out)
}

fn take_str(m: &mut Map<String, Value>, names: &[&str]) -> Result<Option<String>, ShapeError> {
    let mut found: Option<(String, String)> = None;
    for n in names {
        match m.remove(*n) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => {
                if s.len() > MAX_FIELD_LEN && *n != "output_tail" && *n != "output" {
                    return Err(err(n, format!("{n} is longer than {MAX_FIELD_LEN} bytes")));
                }
                if let Some((prev_name, prev)) = &found {
                    if prev != &s {
                        return Err(err(n, format!("{n} and {prev_name} disagree")));
                    }
                }
                found = Some((n.to_string(), s));
            }
            Some(_) => return Err(err(n, format!("{n} must be a string"))),
        }
    }
    Ok(found.map(|(_, s)| s))
}

fn take_u64(m: &mut Map<String, Value>, name: &str) -> Result<Option<u64>, ShapeError> {
    match m.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| *f >= 0.0 && f.fract() == 0.0)
                    .map(|f| f as u64)
            })
            .map(Some)
            .ok_or_else(|| err(name, format!("{name} must be a non-negative integer"))),
        Some(_) => Err(err(name, format!("{name} must be a non-negative integer"))),
    }
}

/// Normalises one agent/verification event.
pub fn normalize_event(value: &Value) -> Result<AgentEvent, ShapeError> {
    let mut m = flatten(value)?;
    let type_name = take_str(&mut m, &["type", "event", "event_type"])?
        .ok_or_else(|| err("type", "missing event type (type, event or eventType)"))?;
    let canonical = snake_case(&type_name);
    let kind = AgentEventKind::ALL
        .iter()
        .find(|(n, _)| *n == canonical)
        .map(|(_, k)| *k)
        .ok_or_else(|| {
            let names: Vec<&str> = AgentEventKind::ALL.iter().map(|(n, _)| *n).collect();
            err(
                "type",
                format!(
                    "unknown event type {type_name:?}; expected one of {}",
                    names.join(", ")
                ),
            )
        })?;
    let agent_name = take_str(&mut m, &["agent_name", "agent"])?;
    let tool_name = take_str(&mut m, &["tool_name", "tool"])?;
    let tool_call_id = take_str(&mut m, &["tool_call_id", "call_id"])?;
    let step = take_str(&mut m, &["step", "step_name"])?;
    let duration_ms = take_u64(&mut m, "duration_ms")?;
    let mut outcome = take_str(&mut m, &["outcome", "status"])?;
    let exit_code = match m.remove("exit_code") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(
            n.as_i64()
                .ok_or_else(|| err("exit_code", "exit_code must be an integer"))?,
        ),
        Some(_) => return Err(err("exit_code", "exit_code must be an integer")),
    };
    let error = take_str(&mut m, &["error", "error_message"])?;
    let mut output_tail = take_str(&mut m, &["output_tail", "output"])?;
    let timestamp = match take_str(&mut m, &["timestamp", "time", "ts"])? {
        None => None,
        Some(t) => Some(
            parse_rfc3339(&t)
                .ok_or_else(|| err("timestamp", format!("{t:?} is not an RFC 3339 time")))?,
        ),
    };
    if let Some(t) = &mut output_tail {
        if t.len() > MAX_OUTPUT_TAIL {
            let mut cut = t.len() - MAX_OUTPUT_TAIL;
            while !t.is_char_boundary(cut) {
                cut += 1;
            }
            *t = t[cut..].to_string();
        }
    }
    m.remove("token");
    if m.len() > MAX_ATTRIBUTES {
        return Err(err(
            "attributes",
            format!("at most {MAX_ATTRIBUTES} extra attributes per event"),
        ));
    }
    let need = |v: &Option<String>, f: &str| -> Result<(), ShapeError> {
        if v.as_deref().is_none_or(str::is_empty) {
            return Err(err(f, format!("{} needs {f}", canonical)));
        }
        Ok(())
    };
    match kind {
        AgentEventKind::AgentStarted | AgentEventKind::AgentFinished => {
            need(&agent_name, "agent_name")?
        }
        AgentEventKind::ToolInvoked => need(&tool_name, "tool_name")?,
        AgentEventKind::VerificationStarted | AgentEventKind::VerificationFinished => {
            need(&step, "step")?;
            let s = step.as_deref().unwrap_or_default();
            StepName::parse(s).map_err(|e| err("step", e.0))?;
        }
    }
    if kind == AgentEventKind::VerificationFinished {
        if outcome.is_none() {
            outcome = exit_code.map(|c| if c == 0 { "passed" } else { "failed" }.to_string());
        }
        let o = outcome.as_deref().ok_or_else(|| {
            err(
                "outcome",
                "verification_finished needs outcome or exit_code",
            )
        })?;
        let o = snake_case(o);
        let o = match o.as_str() {
            "success" | "succeeded" | "ok" | "pass" => "passed".to_string(),
            "failure" | "fail" => "failed".to_string(),
            "timeout" => "timed_out".to_string(),
            other => other.to_string(),
        };
        if !STEP_OUTCOMES.contains(&o.as_str()) {
            return Err(err(
                "outcome",
                format!("outcome must be one of {}", STEP_OUTCOMES.join(", ")),
            ));
        }
        outcome = Some(o);
    }
    Ok(AgentEvent {
        kind,
        agent_name,
        tool_name,
        tool_call_id,
        step,
        duration_ms,
        outcome,
        exit_code,
        error,
        output_tail,
        timestamp,
        attributes: m,
    })
}

/// A normalised status report.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusReport {
    /// The status.
    pub status: WorkerStatus,
    /// The task it works on.
    pub current_task: Option<TaskId>,
    /// Free text.
    pub detail: Option<String>,
}

/// Normalises a status report, enforcing the projection's rules.
pub fn normalize_status(value: &Value) -> Result<StatusReport, ShapeError> {
    let mut m = flatten(value)?;
    let status =
        take_str(&mut m, &["status", "state"])?.ok_or_else(|| err("status", "missing status"))?;
    let status = match snake_case(&status).as_str() {
        "idle" => WorkerStatus::Idle,
        "busy" | "working" => WorkerStatus::Busy,
        "draining" => WorkerStatus::Draining,
        "offline" => WorkerStatus::Offline,
        _ => {
            return Err(err(
                "status",
                format!("unknown status {status:?}; expected idle, busy, draining or offline"),
            ))
        }
    };
    let current_task = match take_str(&mut m, &["current_task", "current_task_id", "task_id"])? {
        None => None,
        Some(t) => Some(TaskId::parse(&t).map_err(|e| err("current_task", e.0))?),
    };
    let detail = take_str(&mut m, &["detail", "message"])?;
    m.remove("type");
    if let Some(k) = m.keys().next() {
        return Err(err(k, format!("unknown field {k:?} in a status report")));
    }
    if status == WorkerStatus::Idle && current_task.is_some() {
        return Err(err(
            "current_task",
            "an idle worker cannot have a current_task",
        ));
    }
    Ok(StatusReport {
        status,
        current_task,
        detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_three_shapes_normalise_to_the_same_event() {
        let canonical = json!({"tool_name": "bash", "agent_name": "coder", "tool_call_id": "c1", "duration_ms": 12});
        let shapes = [
            json!({"type": "tool_invoked", "tool_name": "bash", "agent_name": "coder", "tool_call_id": "c1", "duration_ms": 12}),
            json!({"type": "toolInvoked", "toolName": "bash", "agentName": "coder", "toolCallId": "c1", "durationMs": 12}),
            json!({"event": "tool_invoked", "event_data": {"tool_name": "bash", "agent_name": "coder", "tool_call_id": "c1", "duration_ms": 12}}),
            json!({"eventType": "tool-invoked", "eventData": {"toolName": "bash", "agentName": "coder", "toolCallId": "c1", "durationMs": 12}}),
        ];
        for s in shapes {
            let e = normalize_event(&s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(e.kind, AgentEventKind::ToolInvoked);
            assert_eq!(e.to_json(), canonical, "{s}");
        }
    }

    #[test]
    fn bad_events_say_what_is_wrong() {
        let cases = [
            (json!([1]), None),
            (json!({"tool_name": "x"}), Some("type")),
            (json!({"type": "teleported"}), Some("type")),
            (json!({"type": "tool_invoked"}), Some("tool_name")),
            (
                json!({"type": "tool_invoked", "tool_name": 3}),
                Some("tool_name"),
            ),
            (
                json!({"type": "tool_invoked", "tool_name": "a", "toolName": "b"}),
                Some("tool_name"),
            ),
            (
                json!({"type": "verification_finished", "step": "build"}),
                Some("outcome"),
            ),
            (
                json!({"type": "verification_finished", "step": "build", "outcome": "meh"}),
                Some("outcome"),
            ),
            (
                json!({"type": "verification_started", "step": "bad step"}),
                Some("step"),
            ),
            (
                json!({"type": "agent_started", "agent_name": "a", "duration_ms": -1}),
                Some("duration_ms"),
            ),
            (
                json!({"type": "agent_started", "event_data": 5}),
                Some("event_data"),
            ),
        ];
        for (v, field) in cases {
            let e = normalize_event(&v).expect_err(&v.to_string());
            assert_eq!(e.field.as_deref(), field, "{v}: {}", e.message);
        }
    }

    #[test]
    fn exit_code_implies_an_outcome() {
        let e = normalize_event(
            &json!({"type": "verification_finished", "step": "test", "exitCode": 2}),
        )
        .unwrap();
        assert_eq!(e.outcome.as_deref(), Some("failed"));
        let e = normalize_event(
            &json!({"type": "verificationFinished", "step": "test", "status": "success"}),
        )
        .unwrap();
        assert_eq!(e.outcome.as_deref(), Some("passed"));
    }

    #[test]
    fn idle_with_a_current_task_is_refused() {
        let id = TaskId::from_ulid(ulid::Ulid::new()).to_string();
        let e = normalize_status(&json!({"status": "idle", "currentTask": id})).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("current_task"));
        let ok = normalize_status(&json!({"event_data": {"status": "busy", "current_task": id}}))
            .unwrap();
        assert_eq!(ok.status, WorkerStatus::Busy);
        assert!(normalize_status(&json!({"status": "idle", "mood": "ok"})).is_err());
    }
}
