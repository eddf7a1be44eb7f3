//! OTLP traces: one trace per task.
//!
//! Configured by the standard `OTEL_*` variables. With no endpoint there is no
//! exporter: requests still get a span context (so the task's `traceparent`,
//! the lease's `traceparent` and every log line carry ids that line up with a
//! caller's trace), but nothing is recorded or sent.
//!
//! The trace of a task: the submit request's server span (a child of the
//! caller's W3C `traceparent`, when one came) parents `queue_wait` (one per
//! attempt), `run` (one per attempt) and `review`; `run` parents each
//! verification `step` and the worker's `invoke_agent`/`execute_tool` spans
//! (named by the OpenTelemetry GenAI conventions). A run's span id is derived
//! from the run id, so the lease can hand the worker its `traceparent` before
//! the run ends, and the span can be emitted when it does — even by a process
//! restarted in between.
//!
//! Spans are built here as finished [`SpanData`] (start and end are known from
//! the stored events) and handed to the SDK's batch processor, which exports
//! them from its own thread.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{
    Event, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, SamplingDecision, ShouldSample, SpanData, SpanEvents, SpanExporter as _,
    SpanLinks, SpanProcessor,
};
use opentelemetry_sdk::Resource;
use sha2::{Digest, Sha256};

use crate::clock::Millis;
use crate::model::{EventKind, EventRecord, RunOutcome, RunRecord, TaskRecord};

/// Entries kept for open agent and review spans before the oldest are dropped.
const MAX_OPEN_SPANS: usize = 10_000;

/// A span's identity as propagated in a W3C `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanCtx {
    /// The trace.
    pub trace_id: TraceId,
    /// The span.
    pub span_id: SpanId,
    /// Whether the trace is sampled (exported).
    pub sampled: bool,
}

impl SpanCtx {
    /// Parses a W3C `traceparent` (version 00; ids non-zero, lowercase hex).
    pub fn parse(traceparent: &str) -> Option<SpanCtx> {
        let mut parts = traceparent.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, n: usize| {
            s.len() == n
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        // Version ff is invalid; later versions may append fields.
        if !hex(version, 2) || version == "ff" || (version == "00" && parts.next().is_some()) {
            return None;
        }
        if !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
            return None;
        }
        let trace_id = TraceId::from_hex(trace).ok()?;
        let span_id = SpanId::from_hex(span).ok()?;
        if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
            return None;
        }
        let flags = u8::from_str_radix(flags, 16).ok()?;
        Some(SpanCtx {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    /// The W3C `traceparent` of this span.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            self.trace_id,
            self.span_id,
            u8::from(self.sampled)
        )
    }

    /// A child of this span with a fresh random id.
    pub fn child(&self) -> SpanCtx {
        SpanCtx {
            span_id: random_span_id(),
            ..*self
        }
    }

    /// A child whose id is derived from `parts` (the same parts, the same id).
    pub fn derived(&self, parts: &[&[u8]]) -> SpanCtx {
        SpanCtx {
            span_id: derived_span_id(self.trace_id, parts),
            ..*self
        }
    }

    fn otel(&self, remote: bool) -> SpanContext {
        let flags = if self.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        SpanContext::new(
            self.trace_id,
            self.span_id,
            flags,
            remote,
            TraceState::default(),
        )
    }
}

fn random_span_id() -> SpanId {
    loop {
        let id = rand::random::<u64>();
        if id != 0 {
            return SpanId::from(id);
        }
    }
}

fn derived_span_id(trace: TraceId, parts: &[&[u8]]) -> SpanId {
    let mut h = Sha256::new();
    h.update(trace.to_bytes());
    for p in parts {
        h.update((p.len() as u32).to_be_bytes());
        h.update(p);
    }
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    if b == [0; 8] {
        b[7] = 1;
    }
    SpanId::from_bytes(b)
}

/// The span id of a run (the parent of its steps and agent spans).
pub fn run_span(task: &SpanCtx, run_id: &crate::model::RunId) -> SpanCtx {
    task.derived(&[b"run", &run_id.to_bytes()])
}

fn agent_span(run: &SpanCtx, agent: &str) -> SpanCtx {
    run.derived(&[b"agent", &run.span_id.to_bytes(), agent.as_bytes()])
}

fn at(ms: Millis) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// A request's server span, from its start to the response.
#[derive(Debug, Clone)]
pub struct ServerSpan {
    /// This span.
    pub ctx: SpanCtx,
    /// The caller's span, when a valid `traceparent` came in.
    pub parent: Option<SpanCtx>,
    /// When the request arrived.
    pub start: SystemTime,
}

/// What the middleware knows about a request when its span ends.
#[derive(Debug)]
pub struct RequestFacts<'a> {
    /// `GET`, `POST`… (or `_OTHER`).
    pub method: &'a str,
    /// The route template, when one matched.
    pub route: Option<&'a str>,
    /// The request path (no query).
    pub path: &'a str,
    /// The response status.
    pub status: u16,
    /// The peer's address.
    pub client: Option<std::net::SocketAddr>,
    /// The request id.
    pub request_id: &'a str,
    /// `User-Agent`, when sent.
    pub user_agent: Option<&'a str>,
}

struct Exporting {
    processor: BatchSpanProcessor,
    sampler: Box<dyn ShouldSample>,
    scope: InstrumentationScope,
    /// Open agent spans: (run span id, agent) → started at.
    agents: Mutex<HashMap<(SpanId, String), Millis>>,
    /// Open review spans: task span id → (started at, votes as span events).
    reviews: Mutex<HashMap<SpanId, (Millis, Vec<Event>)>>,
}

/// The trace exporter (or its absence).
pub struct Traces {
    exporting: Option<Exporting>,
}

impl std::fmt::Debug for Traces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Traces")
            .field("exporting", &self.exporting.is_some())
            .finish()
    }
}

/// Trace set-up failed (a bad `OTEL_*` value).
#[derive(Debug, thiserror::Error)]
#[error("OTLP trace export: {0}")]
pub struct TraceError(String);

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Traces {
    /// No exporter: span contexts only.
    pub fn disabled() -> Traces {
        Traces { exporting: None }
    }

    /// Reads the standard variables: `OTEL_EXPORTER_OTLP_ENDPOINT` or
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (none: no exporter),
    /// `OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL` (`http/protobuf`, the default,
    /// or `grpc`), `OTEL_EXPORTER_OTLP_[TRACES_]HEADERS`, `OTEL_SERVICE_NAME`,
    /// `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER[_ARG]`, and
    /// `OTEL_TRACES_EXPORTER=none` (off). Call inside a tokio runtime (the
    /// gRPC client needs one).
    pub fn from_env() -> Result<Traces, TraceError> {
        if env("OTEL_TRACES_EXPORTER").is_some_and(|v| v == "none")
            || env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            return Ok(Traces::disabled());
        }
        if let Some(e) = env("OTEL_TRACES_EXPORTER") {
            if e != "otlp" {
                return Err(TraceError(format!(
                    "OTEL_TRACES_EXPORTER={e:?} is not supported (use \"otlp\" or \"none\")"
                )));
            }
        }
        if env("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
            && env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
        {
            return Ok(Traces::disabled());
        }
        for var in [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ] {
            if let Some(p) = env(var) {
                if p != "grpc" && p != "http/protobuf" {
                    return Err(TraceError(format!(
                        "{var}={p:?} is not supported (use \"http/protobuf\" or \"grpc\")"
                    )));
                }
            }
        }
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .build()
            .map_err(|e| TraceError(e.to_string()))?;
        let resource = if env("OTEL_SERVICE_NAME").is_some() {
            Resource::builder().build()
        } else {
            Resource::builder().with_service_name("forgeline").build()
        };
        exporter.set_resource(&resource);
        let processor = BatchSpanProcessor::builder(exporter).build();
        let sampler = opentelemetry_sdk::trace::Config::default().sampler;
        Ok(Traces {
            exporting: Some(Exporting {
                processor,
                sampler,
                scope: InstrumentationScope::builder("forgeline")
                    .with_version(env!("CARGO_PKG_VERSION"))
                    .build(),
                agents: Mutex::new(HashMap::new()),
                reviews: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Whether spans are exported.
    pub fn enabled(&self) -> bool {
        self.exporting.is_some()
    }

    /// Starts a request's span: a child of `traceparent` when it is valid,
    /// else a new trace (sampled by `OTEL_TRACES_SAMPLER`).
    pub fn start_server(&self, traceparent: Option<&str>) -> ServerSpan {
        let parent = traceparent.and_then(SpanCtx::parse);
        let trace_id = parent
            .map(|p| p.trace_id)
            .unwrap_or_else(|| TraceId::from_bytes(rand::random::<u128>().max(1).to_be_bytes()));
        let span_id = random_span_id();
        let sampled = match &self.exporting {
            None => parent.is_some_and(|p| p.sampled),
            Some(x) => {
                let cx = match parent {
                    Some(p) => Context::new().with_remote_span_context(p.otel(true)),
                    None => Context::new(),
                };
                let r = x.sampler.should_sample(
                    Some(&cx),
                    trace_id,
                    "request",
                    &SpanKind::Server,
                    &[],
                    &[],
                );
                r.decision == SamplingDecision::RecordAndSample
            }
        };
        ServerSpan {
            ctx: SpanCtx {
                trace_id,
                span_id,
                sampled,
            },
            parent,
            start: SystemTime::now(),
        }
    }

    /// Ends a request's span (exported when sampled), following the HTTP
    /// server semantic conventions.
    pub fn end_server(&self, span: &ServerSpan, facts: RequestFacts<'_>) {
        let Some(x) = &self.exporting else { return };
        if !span.ctx.sampled {
            return;
        }
        let name = match facts.route {
            Some(r) => format!("{} {r}", facts.method),
            None => facts.method.to_string(),
        };
        let mut attributes = vec![
            KeyValue::new("http.request.method", facts.method.to_string()),
            KeyValue::new("url.path", facts.path.to_string()),
            KeyValue::new("url.scheme", "http"),
            KeyValue::new("http.response.status_code", i64::from(facts.status)),
            KeyValue::new("network.protocol.name", "http"),
            KeyValue::new("forgeline.request_id", facts.request_id.to_string()),
        ];
        if let Some(r) = facts.route {
            attributes.push(KeyValue::new("http.route", r.to_string()));
        }
        if let Some(c) = facts.client {
            attributes.push(KeyValue::new("client.address", c.ip().to_string()));
            attributes.push(KeyValue::new("client.port", i64::from(c.port())));
        }
        if let Some(ua) = facts.user_agent {
            attributes.push(KeyValue::new("user_agent.original", ua.to_string()));
        }
        let status = if facts.status >= 500 {
            attributes.push(KeyValue::new("error.type", facts.status.to_string()));
            Status::error("")
        } else {
            Status::Unset
        };
        x.emit(
            span.ctx,
            span.parent.map(|p| (p.span_id, true)),
            SpanKind::Server,
            name,
            span.start,
            SystemTime::now(),
            attributes,
            Vec::new(),
            status,
        );
    }

    /// Emits the spans that a committed write's events and ended runs close.
    /// `task_of` loads a task (the events carry only its id).
    pub fn observe(
        &self,
        events: &[EventRecord],
        ended_runs: &[RunRecord],
        task_of: impl Fn(&crate::model::TaskId) -> Option<TaskRecord>,
    ) {
        let Some(x) = &self.exporting else { return };
        if events.is_empty() && ended_runs.is_empty() {
            return;
        }
        let mut tasks: HashMap<crate::model::TaskId, Option<(SpanCtx, TaskRecord)>> =
            HashMap::new();
        let mut task_ctx = |id: &crate::model::TaskId| {
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

    /// Exports what is buffered (call at shutdown; blocks up to the
    /// exporter's timeout).
    pub fn shutdown(&self) {
        if let Some(x) = &self.exporting {
            if let Err(e) = x.processor.force_flush() {
                tracing::warn!(error = %e, "flushing the trace exporter failed");
            }
            if let Err(e) = x.processor.shutdown() {
                tracing::warn!(error = %e, "shutting the trace exporter down failed");
            }
        }
    }
}

fn data(e: &EventRecord) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::from_str(&e.data) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    }
}

fn text<'a>(m: &'a serde_json::Map<String, serde_json::Value>, key: &str) -> Option<&'a str> {
    m.get(key).and_then(|v| v.as_str())
}

fn task_attrs(t: &TaskRecord, e_attempt: u32) -> Vec<KeyValue> {
    let mut v = vec![
        KeyValue::new("forgeline.task.id", t.id.to_string()),
        KeyValue::new("forgeline.queue", t.queue.to_string()),
        KeyValue::new("forgeline.attempt", i64::from(e_attempt)),
    ];
    if let Some(c) = t.labels.get("correlation_id") {
        v.push(KeyValue::new("forgeline.correlation_id", c.clone()));
    }
    v
}

impl Exporting {
    #[allow(clippy::too_many_arguments)]
    fn emit(
        &self,
        ctx: SpanCtx,
        parent: Option<(SpanId, bool)>,
        kind: SpanKind,
        name: String,
        start: SystemTime,
        end: SystemTime,
        attributes: Vec<KeyValue>,
        events: Vec<Event>,
        status: Status,
    ) {
        let mut span_events = SpanEvents::default();
        span_events.events = events;
        self.processor.on_end(SpanData {
            span_context: ctx.otel(false),
            parent_span_id: parent.map(|p| p.0).unwrap_or(SpanId::INVALID),
            parent_span_is_remote: parent.is_some_and(|p| p.1),
            span_kind: kind,
            name: Cow::Owned(name),
            start_time: start,
            end_time: end.max(start),
            attributes,
            dropped_attributes_count: 0,
            events: span_events,
            links: SpanLinks::default(),
            status,
            instrumentation_scope: self.scope.clone(),
        });
    }

    fn on_event(&self, task: &SpanCtx, t: &TaskRecord, e: &EventRecord) {
        let d = data(e);
        let parent_task = Some((task.span_id, false));
        match e.kind {
            EventKind::TaskLeased => {
                let Some(run_id) = e.run_id else { return };
                let wait = d.get("queue_wait_ms").and_then(|v| v.as_u64()).unwrap_or(0);
                let mut attrs = task_attrs(t, e.attempt);
                attrs.push(KeyValue::new("forgeline.run.id", run_id.to_string()));
                attrs.push(KeyValue::new("forgeline.queue_wait_ms", wait as i64));
                self.emit(
                    task.derived(&[b"queue_wait", &run_id.to_bytes()]),
                    parent_task,
                    SpanKind::Internal,
                    format!("queue_wait {}", t.queue),
                    at(e.at.saturating_sub(wait)),
                    at(e.at),
                    attrs,
                    Vec::new(),
                    Status::Unset,
                );
            }
            EventKind::AgentStarted => {
                let (Some(run_id), Some(agent)) = (e.run_id, text(&d, "agent_name")) else {
                    return;
                };
                let run = run_span(task, &run_id);
                let mut open = self.agents.lock().unwrap_or_else(|p| p.into_inner());
                if open.len() >= MAX_OPEN_SPANS {
                    open.clear();
                }
                open.insert((run.span_id, agent.to_string()), e.at);
            }
            EventKind::AgentFinished => {
                let (Some(run_id), Some(agent)) = (e.run_id, text(&d, "agent_name")) else {
                    return;
                };
                let run = run_span(task, &run_id);
                let started = self
                    .agents
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&(run.span_id, agent.to_string()));
                let start = match (started, d.get("duration_ms").and_then(|v| v.as_u64())) {
                    (Some(s), _) => s,
                    (None, Some(ms)) => e.at.saturating_sub(ms),
                    (None, None) => e.at,
                };
                let mut attrs = vec![
                    KeyValue::new("gen_ai.operation.name", "invoke_agent"),
                    KeyValue::new("gen_ai.agent.name", agent.to_string()),
                ];
                attrs.extend(task_attrs(t, e.attempt));
                let failed = text(&d, "error").is_some();
                if let Some(err) = text(&d, "error") {
                    attrs.push(KeyValue::new("error.type", "agent_error"));
                    attrs.push(KeyValue::new("forgeline.error", err.to_string()));
                }
                self.emit(
                    agent_span(&run, agent),
                    Some((run.span_id, false)),
                    SpanKind::Internal,
                    format!("invoke_agent {agent}"),
                    at(start),
                    at(e.at),
                    attrs,
                    Vec::new(),
                    if failed {
                        Status::error("")
                    } else {
                        Status::Unset
                    },
                );
            }
            EventKind::ToolInvoked => {
                let (Some(run_id), Some(tool)) = (e.run_id, text(&d, "tool_name")) else {
                    return;
                };
                let run = run_span(task, &run_id);
                // The tool's agent: the one named, else the only one running.
                let agent = text(&d, "agent_name").map(str::to_string).or_else(|| {
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
                let ms = d.get("duration_ms").and_then(|v| v.as_u64()).unwrap_or(0);
                let mut attrs = vec![
                    KeyValue::new("gen_ai.operation.name", "execute_tool"),
                    KeyValue::new("gen_ai.tool.name", tool.to_string()),
                ];
                if let Some(id) = text(&d, "tool_call_id") {
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
            EventKind::VerificationFinished => {
                let (Some(run_id), Some(step)) = (e.run_id, text(&d, "step")) else {
                    return;
                };
                let run = run_span(task, &run_id);
                let ms = d.get("duration_ms").and_then(|v| v.as_u64()).unwrap_or(0);
                let outcome = text(&d, "outcome").unwrap_or("unknown");
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
            EventKind::ReviewRequested => {
                let mut open = self.reviews.lock().unwrap_or_else(|p| p.into_inner());
                if open.len() >= MAX_OPEN_SPANS {
                    open.clear();
                }
                open.insert(task.span_id, (e.at, Vec::new()));
            }
            EventKind::ReviewDecided | EventKind::ReviewExpired => {
                let mut open = self.reviews.lock().unwrap_or_else(|p| p.into_inner());
                if let Some((_, votes)) = open.get_mut(&task.span_id) {
                    let mut attrs = Vec::new();
                    for (key, attr) in [
                        ("by", "forgeline.review.reviewer"),
                        ("outcome", "forgeline.review.outcome"),
                        ("action", "forgeline.review.action"),
                    ] {
                        if let Some(v) = text(&d, key) {
                            attrs.push(KeyValue::new(attr, v.to_string()));
                        }
                    }
                    if let Some(f) = d.get("final").and_then(|v| v.as_bool()) {
                        attrs.push(KeyValue::new("forgeline.review.final", f));
                    }
                    votes.push(Event::new(e.kind.as_str(), at(e.at), attrs, 0));
                }
            }
            EventKind::TaskCompleted
            | EventKind::TaskFailed
            | EventKind::TaskQueued
            | EventKind::TaskCancelled => {
                let Some((started, votes)) = self
                    .reviews
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&task.span_id)
                else {
                    return;
                };
                let mut attrs = task_attrs(t, e.attempt);
                attrs.push(KeyValue::new("forgeline.review.result", e.kind.as_str()));
                if let Some(run_id) = e.run_id {
                    attrs.push(KeyValue::new("forgeline.run.id", run_id.to_string()));
                }
                self.emit(
                    task.derived(&[b"review", &started.to_be_bytes()]),
                    parent_task,
                    SpanKind::Internal,
                    format!("review {}", t.queue),
                    at(started),
                    at(e.at),
                    attrs,
                    votes,
                    Status::Unset,
                );
            }
            _ => {}
        }
    }

    fn on_run_end(&self, task: &SpanCtx, t: &TaskRecord, run: &RunRecord) {
        let Some(ended) = run.ended_at else { return };
        let span = run_span(task, &run.id);
        self.agents
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(s, _), _| *s != span.span_id);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_parse_and_print_round_trip() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let c = SpanCtx::parse(tp).unwrap();
        assert!(c.sampled);
        assert_eq!(c.traceparent(), tp);
        let unsampled = SpanCtx::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
        assert!(!unsampled.unwrap().sampled);
    }

    #[test]
    fn malformed_traceparents_are_ignored() {
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert!(SpanCtx::parse(bad).is_none(), "{bad}");
        }
        // A later version may carry more fields.
        assert!(
            SpanCtx::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz").is_some()
        );
    }

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        let t = SpanCtx::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let a = t.derived(&[b"run", b"1"]);
        assert_eq!(a, t.derived(&[b"run", b"1"]));
        assert_ne!(a.span_id, t.derived(&[b"run", b"2"]).span_id);
        assert_ne!(a.span_id, t.derived(&[b"ru", b"n1"]).span_id);
        assert_eq!(a.trace_id, t.trace_id);
    }

    #[test]
    fn without_an_endpoint_requests_still_get_contexts() {
        let tr = Traces::disabled();
        let s = tr.start_server(None);
        assert_ne!(s.ctx.trace_id, TraceId::INVALID);
        assert!(!s.ctx.sampled);
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let s = tr.start_server(Some(parent));
        assert_eq!(
            s.ctx.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_ne!(s.ctx.span_id.to_string(), "00f067aa0ba902b7");
        assert!(s.ctx.sampled, "the caller's decision is kept");
    }
}
