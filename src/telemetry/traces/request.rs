//! HTTP request spans: a [`ServerSpan`] opened when a request arrives (a child
//! of the caller's `traceparent`, or a new trace) and ended with the
//! [`RequestFacts`] the middleware knows at the response.

use std::time::SystemTime;

use opentelemetry::trace::{SpanKind, Status, TraceContextExt, TraceId};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::SamplingDecision;

use super::context::{random_span_id, SpanCtx};
use super::export::Traces;

/// A request's server span, from its start to the response.
#[derive(Debug, Clone)]
pub struct ServerSpan {
    /// This span: the caller's trace id (or a new one) and a fresh span id.
    pub ctx: SpanCtx,
    /// The caller's span, when a valid `traceparent` came in.
    pub parent: Option<SpanCtx>,
    /// When the request arrived (wall clock, as the span's start).
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

impl Traces {
    /// Starts a request's span: a child of `traceparent` when it is valid,
    /// else a new trace (sampled by `OTEL_TRACES_SAMPLER`).
    pub fn start_server(&self, traceparent: Option<&str>) -> ServerSpan {
        let parent = traceparent.and_then(SpanCtx::parse);
        // `max(1)`: an all-zero trace id is invalid.
        let trace_id = parent
            .map(|p| p.trace_id)
            .unwrap_or_else(|| TraceId::from_bytes(rand::random::<u128>().max(1).to_be_bytes()));
        let span_id = random_span_id();
        let sampled = match &self.exporting {
            // Nothing is exported, but the caller's decision travels on.
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
        // By the conventions, only 5xx marks a server span as an error (a 4xx
        // is the client's).
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
