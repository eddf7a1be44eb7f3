//! Agent and verification events (`agent_started`, `tool_invoked`,
//! `agent_finished`, `verification_started`, `verification_finished`): their
//! canonical form, and normalising a reported payload into it step by step
//! (type, named fields, attributes, what each type needs, the step outcome).

use serde_json::{Map, Value};

use crate::clock::{parse_rfc3339, Millis};
use crate::model::StepName;

use super::normalize::{err, flatten, snake_case, take_str, take_u64, ShapeError};

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

/// Outcomes of a verification step.
pub const STEP_OUTCOMES: [&str; 4] = ["passed", "failed", "timed_out", "error"];

/// An agent or verification event in canonical form.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentEvent {
    /// Which event this is.
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

/// Normalises one agent/verification event.
pub fn normalize_event(value: &Value) -> Result<AgentEvent, ShapeError> {
    let mut m = flatten(value)?;
    let kind = take_kind(&mut m)?;
    let mut event = take_fields(kind, &mut m)?;
    // A worker may echo its lease token inside the event; it must not be
    // stored as an attribute.
    m.remove("token");
    if m.len() > MAX_ATTRIBUTES {
        return Err(err(
            "attributes",
            format!("at most {MAX_ATTRIBUTES} extra attributes per event"),
        ));
    }
    check_required(&event)?;
    if kind == AgentEventKind::VerificationFinished {
        event.outcome = Some(step_outcome(event.outcome.take(), event.exit_code)?);
    }
    event.attributes = m;
    Ok(event)
}

/// Takes the event type (any accepted spelling) and resolves it.
fn take_kind(m: &mut Map<String, Value>) -> Result<AgentEventKind, ShapeError> {
    let type_name = take_str(m, &["type", "event", "event_type"])?
        .ok_or_else(|| err("type", "missing event type (type, event or eventType)"))?;
    let canonical = snake_case(&type_name);
    AgentEventKind::ALL
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
        })
}

/// Takes the named fields, in a fixed order (the first bad one is reported),
/// leaving only the extra attributes in `m`. `attributes` is left empty.
fn take_fields(kind: AgentEventKind, m: &mut Map<String, Value>) -> Result<AgentEvent, ShapeError> {
    let agent_name = take_str(m, &["agent_name", "agent"])?;
    let tool_name = take_str(m, &["tool_name", "tool"])?;
    let tool_call_id = take_str(m, &["tool_call_id", "call_id"])?;
    let step = take_str(m, &["step", "step_name"])?;
    let duration_ms = take_u64(m, "duration_ms")?;
    let outcome = take_str(m, &["outcome", "status"])?;
    let exit_code = take_exit_code(m)?;
    let error = take_str(m, &["error", "error_message"])?;
    let output_tail = take_str(m, &["output_tail", "output"])?.map(keep_tail);
    let timestamp = take_timestamp(m)?;
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
        attributes: Map::new(),
    })
}

/// Takes `exit_code`, a signed integer (some runners report a signal as a
/// negative code). Null counts as absent.
fn take_exit_code(m: &mut Map<String, Value>) -> Result<Option<i64>, ShapeError> {
    match m.remove("exit_code") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            Ok(Some(n.as_i64().ok_or_else(|| {
                err("exit_code", "exit_code must be an integer")
            })?))
        }
        Some(_) => Err(err("exit_code", "exit_code must be an integer")),
    }
}

/// Takes the worker's own timestamp (RFC 3339) as stored time.
fn take_timestamp(m: &mut Map<String, Value>) -> Result<Option<Millis>, ShapeError> {
    match take_str(m, &["timestamp", "time", "ts"])? {
        None => Ok(None),
        Some(t) => Ok(Some(parse_rfc3339(&t).ok_or_else(|| {
            err(
                "timestamp",
                format!("{t:?} is not an RFC 3339 time between 1970 and 9999-12-31T23:59:59.999Z"),
            )
        })?)),
    }
}

/// The last [`MAX_OUTPUT_TAIL`] bytes of `t` (moved forward to a character
/// boundary, so slightly fewer when the cut falls inside a character).
fn keep_tail(mut t: String) -> String {
    if t.len() > MAX_OUTPUT_TAIL {
        let mut cut = t.len() - MAX_OUTPUT_TAIL;
        while !t.is_char_boundary(cut) {
            cut += 1;
        }
        t = t[cut..].to_string();
    }
    t
}

/// Checks the field each type cannot do without (and that a step name is
/// valid for the verification types).
fn check_required(e: &AgentEvent) -> Result<(), ShapeError> {
    let need = |v: &Option<String>, f: &str| -> Result<(), ShapeError> {
        if v.as_deref().is_none_or(str::is_empty) {
            return Err(err(f, format!("{} needs {f}", e.kind.as_str())));
        }
        Ok(())
    };
    match e.kind {
        AgentEventKind::AgentStarted | AgentEventKind::AgentFinished => {
            need(&e.agent_name, "agent_name")?
        }
        AgentEventKind::ToolInvoked => need(&e.tool_name, "tool_name")?,
        AgentEventKind::VerificationStarted | AgentEventKind::VerificationFinished => {
            need(&e.step, "step")?;
            let s = e.step.as_deref().unwrap_or_default();
            StepName::parse(s).map_err(|bad| err("step", bad.0))?;
        }
    }
    Ok(())
}

/// The outcome of a finished step: the reported one in canonical spelling,
/// else derived from the exit code (0 passed, anything else failed).
fn step_outcome(outcome: Option<String>, exit_code: Option<i64>) -> Result<String, ShapeError> {
    let outcome =
        outcome.or_else(|| exit_code.map(|c| if c == 0 { "passed" } else { "failed" }.to_string()));
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
    Ok(o)
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
}
