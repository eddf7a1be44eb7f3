//! The exporter: [`Traces`] read from the `OTEL_*` variables, the SDK batch
//! processor it feeds, and `Exporting::emit`, the one place a finished span
//! is handed over.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{Event, SpanId, SpanKind, Status};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, ShouldSample, SpanData, SpanEvents, SpanExporter as _, SpanLinks,
    SpanProcessor,
};
use opentelemetry_sdk::Resource;

use super::context::SpanCtx;
use crate::clock::Millis;

/// Open agent (or review) spans remembered at most: past it the map is
/// cleared, so ends that never come (a lost worker) cannot grow it forever.
pub(super) const MAX_OPEN_SPANS: usize = 10_000;

/// The live exporter and the spans still open across writes.
pub(super) struct Exporting {
    /// Exports finished spans from its own thread.
    pub(super) processor: BatchSpanProcessor,
    /// `OTEL_TRACES_SAMPLER`'s decision for new traces.
    pub(super) sampler: Box<dyn ShouldSample>,
    /// This crate, as every span's instrumentation scope.
    pub(super) scope: InstrumentationScope,
    /// Open agent spans: (run span id, agent) → started at.
    pub(super) agents: Mutex<HashMap<(SpanId, String), Millis>>,
    /// Open review spans: task span id → (started at, votes as span events).
    pub(super) reviews: Mutex<HashMap<SpanId, (Millis, Vec<Event>)>>,
}

/// The trace exporter (or its absence).
pub struct Traces {
    /// `None`: span contexts only, nothing recorded.
    pub(super) exporting: Option<Exporting>,
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

/// A variable's value, with unset and blank alike (the spec treats an empty
/// value as unset).
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
        // The builder reads the protocol itself; checked here so that a typo
        // fails start-up instead of silently falling back.
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
        // An explicit OTEL_SERVICE_NAME wins over our default name. Every
        // span carries the build's version and this process's instance id
        // (a ULID per start), so spans of two servers or two restarts part.
        let builder = if env("OTEL_SERVICE_NAME").is_some() {
            Resource::builder()
        } else {
            Resource::builder().with_service_name("forgeline")
        };
        let resource = builder
            .with_attributes([
                opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
                opentelemetry::KeyValue::new("service.instance.id", ulid::Ulid::new().to_string()),
            ])
            .build();
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

/// A stored time (ms since the Unix epoch) as the SDK's time.
pub(super) fn at(ms: Millis) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

impl Exporting {
    /// Hands one finished span to the batch processor. `parent` is the parent
    /// span id and whether it is remote (a caller's). `end` is clamped to
    /// `start`: wall clocks can step back, and stored times come from
    /// whichever process wrote them.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn emit(
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
}
