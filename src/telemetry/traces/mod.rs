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
//! Spans are built here as finished `SpanData` (start and end are known from
//! the stored events) and handed to the SDK's batch processor, which exports
//! them from its own thread.
//!
//! - `context`: [`SpanCtx`] and the derived span ids.
//! - `export`: [`Traces`] set-up from `OTEL_*`, and the one `emit`.
//! - `request`: HTTP server spans ([`ServerSpan`], [`RequestFacts`]).
//! - `task`: [`Traces::observe`], and the queue-wait, agent, tool, step and
//!   run spans.
//! - `review`: review spans, with votes as span events.

mod context;
mod export;
mod request;
mod review;
mod task;

pub use context::{run_span, SpanCtx};
pub use export::{TraceError, Traces};
pub use request::{RequestFacts, ServerSpan};
