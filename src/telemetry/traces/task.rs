//! Task and run spans, built from a committed write's stored events:
//! [`Traces::observe`] routes each event to its family — `queue_wait`, the
//! worker's `invoke_agent` and `execute_tool`, verification `step`s, and the
//! `run` span when a run ends (review spans are in `review.rs`).

use std::collections::HashMap;

use opentelemetry::trace::{SpanKind, Status};
use opentelemetry::KeyValue;

use super::context::{agent_span, run_span, SpanCtx};
use super::export::{at, Exporting, Traces, MAX_OPEN_SPANS};
use crate::model::{EventKind, EventRecord, RunOutcome, RunRecord, TaskId, TaskRecord};

/// An event's `data` object, parsed.
pub(super) type Data = serde_json::Map<String, serde_json::Value>;

impl Traces {
    /// Emits the spans that a committed write's events and ended runs close.
    /// `task_of` loads a task (the events carry only its id).
    pub fn observe(
        &self,
        events: &[EventRecord],
        ended_runs: &[RunRecord],
        task_of: impl Fn(&TaskId) -> Option<TaskRecord>,
    ) {
        let Some(x) = &self.exporting else { return };
        if events.is_empty() && ended_runs.is_empty() {
            return;
        }
        // One load per task per write; `None` (no task, no traceparent, or
        // not sampled) is cached too, so such tasks cost one lookup.
        let mut tasks: HashMap<TaskId, Option<(SpanCtx, TaskRecord)>> = HashMap::new();
        let mut task_ctx = |id: &TaskId| {
            tasks
                .entry(*id)
                .or_insert_with(|| {
                    let t = task_of(id)?;
                    let ctx = SpanCtx::parse(t.traceparent.as_deref()?)?;
                    ctx.sampled.then_some((ctx, t))
                })
                .clone()
        };
        for e in events {
            // Checked before loading the task: most events open or close no span.
            if !matches!(
                e.kind,
                EventKind::TaskLeased
                    | EventKind::AgentStarted
                    | EventKind::AgentFinished
                    | EventKind::ToolInvoked
                    | EventKind::VerificationFinished
                    | EventKind::ReviewRequested
                    | EventKind::ReviewDecided
                    | EventKind::ReviewExpired
                    | EventKind::TaskCompleted
                    | EventKind::TaskFailed
                    | EventKind::TaskQueued
                    | EventKind::TaskCancelled
            ) {
                continue;
            }
            let Some((task, record)) = task_ctx(&e.task_id) else {
                continue;
            };
            x.on_event(&task, &record, e);
        }
        for run in ended_runs {
            let Some((task, record)) = task_ctx(&run.task_id) else {
                continue;
            };
            x.on_run_end(&task, &record, run);
        }
    }
}

/// The event's `data` (empty when it is not a JSON object).
fn data(e: &EventRecord) -> Data {
    match serde_json::from_str(&e.data) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    }
}

/// A string field of an event's data.
pub(super) fn text<'a>(m: &'a Data, key: &str) -> Option<&'a str> {
    m.get(key).and_then(|v| v.as_str())
}

/// A millisecond count of an event's data (as the worker reported it).
fn millis(m: &Data, key: &str) -> Option<u64> {
    m.get(key).and_then(|v| v.as_u64())
}

/// The attributes every task span carries; `attempt` is the event's (or the
/// run's), not the task's current one.
pub(super) fn task_attrs(t: &TaskRecord, attempt: u32) -> Vec<KeyValue> {
    let mut v = vec![
        KeyValue::new("forgeline.task.id", t.id.to_string()),
        KeyValue::new("forgeline.queue", t.queue.to_string()),
        KeyValue::new("forgeline.attempt", i64::from(attempt)),
    ];
    if let Some(c) = t.labels.get("correlation_id") {
        v.push(KeyValue::new("forgeline.correlation_id", c.clone()));
    }
    v
}

impl Exporting {
    /// Routes one event of a sampled task to the span family it opens or closes.
    fn on_event(&self, task: &SpanCtx, t: &TaskRecord, e: &EventRecord) {
        let d = data(e);
        match e.kind {
            EventKind::TaskLeased => self.queue_wait(task, t, e, &d),
            EventKind::AgentStarted => self.agent_started(task, e, &d),
            EventKind::AgentFinished => self.agent_finished(task, t, e, &d),
            EventKind::ToolInvoked => self.tool_invoked(task, t, e, &d),
            EventKind::VerificationFinished => self.step_finished(task, t, e, &d),
            EventKind::ReviewRequested => self.review_opened(task, e),
            EventKind::ReviewDecided | EventKind::ReviewExpired => self.review_vote(task, e, &d),
            EventKind::TaskCompleted
            | EventKind::TaskFailed
            | EventKind::TaskQueued
            | EventKind::TaskCancelled => self.review_closed(task, t, e),
            _ => {}
        }
    }

    /// A lease: the `queue_wait` span, from the task becoming eligible
    /// (`queue_wait_ms` before the lease) to the lease.
    fn queue_wait(&self, task: &SpanCtx, t: &TaskRecord, e: &EventRecord, d: &Data) {
        let Some(run_id) = e.run_id else { return };
        let wait = millis(d, "queue_wait_ms").unwrap_or(0);
        let mut attrs = task_attrs(t, e.attempt);
        attrs.push(KeyValue::new("forgeline.run.id", run_id.to_string()));
        attrs.push(KeyValue::new("forgeline.queue_wait_ms", wait as i64));
        self.emit(
            task.derived(&[b"queue_wait", &run_id.to_bytes()]),
            Some((task.span_id, false)),
            SpanKind::Internal,
            format!("queue_wait {}", t.queue),
            at(e.at.saturating_sub(wait)),
            at(e.at),
            attrs,
            Vec::new(),
            Status::Unset,
        );
    }

    /// An agent started: remembered until it finishes (its span is emitted then).
    fn agent_started(&self, task: &SpanCtx, e: &EventRecord, d: &Data) {
        let (Some(run_id), Some(agent)) = (e.run_id, text(d, "agent_name")) else {
            return;
        };
        let run = run_span(task, &run_id);
        let mut open = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        if open.len() >= MAX_OPEN_SPANS {
            open.clear();
        }
        open.insert((run.span_id, agent.to_string()), e.at);
    }

    /// An agent finished: its `invoke_agent` span, a child of the run.
    fn agent_finished(&self, task: &SpanCtx, t: &TaskRecord, e: &EventRecord, d: &Data) {
        let (Some(run_id), Some(agent)) = (e.run_id, text(d, "agent_name")) else {
            return;
        };
        let run = run_span(task, &run_id);
        let started = self
            .agents
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(run.span_id, agent.to_string()));
        // The start seen in this process, else the reported duration (the
        // start came before a restart), else a zero-length span.
        let start = match (started, millis(d, "duration_ms")) {
            (Some(s), _) => s,
            (None, Some(ms)) => e.at.saturating_sub(ms),
            (None, None) => e.at,
        };
        let mut attrs = task_attrs(t, e.attempt);
        if let Some(err) = text(d, "error") {
            attrs.push(KeyValue::new("error.type", "agent_error"));
            attrs.push(KeyValue::new("forgeline.error", err.to_string()));
        }
        self.emit_agent(&run, agent, (start, e.at), attrs);
    }

    /// An `invoke_agent` span, a child of the run; an error when `attrs`
    /// carry `error.type`.
    fn emit_agent(
        &self,
        run: &SpanCtx,
        agent: &str,
        (start, end): (u64, u64),
        mut attrs: Vec<KeyValue>,
    ) {
        let failed = attrs.iter().any(|kv| kv.key.as_str() == "error.type");
        attrs.splice(
            0..0,
            [
                KeyValue::new("gen_ai.operation.name", "invoke_agent"),
                KeyValue::new("gen_ai.agent.name", agent.to_string()),
            ],
        );
        self.emit(
            agent_span(run, agent),
            Some((run.span_id, false)),
            SpanKind::Internal,
            format!("invoke_agent {agent}"),
            at(start),
            at(end),
            attrs,
            Vec::new(),
            if failed {
                Status::error("")
            } else {
                Status::Unset
            },
        );
    }

    /// A tool call: its `execute_tool` span, a child of its agent's span (or
    /// of the run when the agent is unknown).
    fn tool_invoked(&self, task: &SpanCtx, t: &TaskRecord, e: &EventRecord, d: &Data) {
        let (Some(run_id), Some(tool)) = (e.run_id, text(d, "tool_name")) else {
            return;
        };
        let run = run_span(task, &run_id);
        // The tool's agent: the one named, else the only one running.
        let agent = text(d, "agent_name").map(str::to_string).or_else(|| {
            let open = self.agents.lock().unwrap_or_else(|p| p.into_inner());
            let mut names = open
                .keys()
                .filter(|(s, _)| *s == run.span_id)
                .map(|(_, a)| a.clone());
            match (names.next(), names.next()) {
                (Some(a), None) => Some(a),
                _ => None,
            }
        });
        let parent = match &agent {
            Some(a) => agent_span(&run, a).span_id,
            None => run.span_id,
        };
        let ms = millis(d, "duration_ms").unwrap_or(0);
        let mut attrs = vec![
            KeyValue::new("gen_ai.operation.name", "execute_tool"),
            KeyValue::new("gen_ai.tool.name", tool.to_string()),
        ];
        if let Some(id) = text(d, "tool_call_id") {
            attrs.push(KeyValue::new("gen_ai.tool.call.id", id.to_string()));
        }
        if let Some(a) = &agent {
            attrs.push(KeyValue::new("gen_ai.agent.name", a.clone()));
        }
        attrs.extend(task_attrs(t, e.attempt));
        self.emit(
            run.child(),
            Some((parent, false)),
            SpanKind::Internal,
            format!("execute_tool {tool}"),
            at(e.at.saturating_sub(ms)),
            at(e.at),
            attrs,
            Vec::new(),
            Status::Unset,
        );
    }

    /// A verification step finished: its `step` span, a child of the run; an
    /// error unless it passed.
    fn step_finished(&self, task: &SpanCtx, t: &TaskRecord, e: &EventRecord, d: &Data) {
        let (Some(run_id), Some(step)) = (e.run_id, text(d, "step")) else {
            return;
        };
        let run = run_span(task, &run_id);
        let ms = millis(d, "duration_ms").unwrap_or(0);
        let outcome = text(d, "outcome").unwrap_or("unknown");
        let mut attrs = vec![
            KeyValue::new("forgeline.step.name", step.to_string()),
            KeyValue::new("forgeline.step.outcome", outcome.to_string()),
        ];
        if let Some(code) = d.get("exit_code").and_then(|v| v.as_i64()) {
            attrs.push(KeyValue::new("process.exit.code", code));
        }
        attrs.extend(task_attrs(t, e.attempt));
        self.emit(
            run.child(),
            Some((run.span_id, false)),
            SpanKind::Internal,
            format!("step {step}"),
            at(e.at.saturating_sub(ms)),
            at(e.at),
            attrs,
            Vec::new(),
            if outcome == "passed" {
                Status::Unset
            } else {
                Status::error(outcome.to_string())
            },
        );
    }

    /// A run ended: its `run` span, a child of the task's. An agent of the
    /// run that started and never sent `agent_finished` ends with the run
    /// (`forgeline.agent.unfinished`), so its tool spans keep their parent.
    fn on_run_end(&self, task: &SpanCtx, t: &TaskRecord, run: &RunRecord) {
        let Some(ended) = run.ended_at else { return };
        let span = run_span(task, &run.id);
        let mut unfinished = Vec::new();
        self.agents
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(s, agent), started| {
                let mine = *s == span.span_id;
                if mine {
                    unfinished.push((agent.clone(), *started));
                }
                !mine
            });
        for (agent, started) in unfinished {
            let mut attrs = task_attrs(t, run.attempt);
            attrs.push(KeyValue::new("forgeline.agent.unfinished", true));
            self.emit_agent(&span, &agent, (started, ended), attrs);
        }
        let outcome = run.outcome.map(|o| match o {
            RunOutcome::Completed => "completed",
            RunOutcome::Retried => "retried",
            RunOutcome::Failed => "failed",
            RunOutcome::LeaseExpired => "lease_expired",
            RunOutcome::Cancelled => "cancelled",
            RunOutcome::Released => "released",
        });
        let mut attrs = task_attrs(t, run.attempt);
        attrs.push(KeyValue::new("forgeline.run.id", run.id.to_string()));
        attrs.push(KeyValue::new("forgeline.worker", run.worker.clone()));
        attrs.push(KeyValue::new(
            "forgeline.run.outcome",
            outcome.unwrap_or("unknown"),
        ));
        if !run.agents.is_empty() {
            attrs.push(KeyValue::new(
                "forgeline.agents",
                match run.agents.len() {
                    1 => "single",
                    _ => "multi",
                },
            ));
        }
        let failed = matches!(
            run.outcome,
            Some(RunOutcome::Failed | RunOutcome::Retried | RunOutcome::LeaseExpired)
        );
        let status = if failed {
            Status::error(run.error.clone().unwrap_or_default())
        } else {
            Status::Unset
        };
        self.emit(
            span,
            Some((task.span_id, false)),
            SpanKind::Internal,
            format!("run {}", t.queue),
            at(run.started_at),
            at(ended),
            attrs,
            Vec::new(),
            status,
        );
    }
}
