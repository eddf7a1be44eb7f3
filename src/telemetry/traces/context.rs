//! Span identity: [`SpanCtx`] (a W3C `traceparent`'s trace id, span id and
//! sampled flag), and the span ids derived from stored ids, so that the run
//! and agent spans of a task get the same ids in every process.

use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
use sha2::{Digest, Sha256};

/// A span's identity as propagated in a W3C `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanCtx {
    /// The trace (16 bytes, never all zero).
    pub trace_id: TraceId,
    /// The span (8 bytes, never all zero).
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

    /// The SDK's form of this context; `remote` when it came from a caller.
    pub(super) fn otel(&self, remote: bool) -> SpanContext {
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

/// A random span id (zero is the invalid id, so it is drawn again).
pub(super) fn random_span_id() -> SpanId {
    loop {
        let id = rand::random::<u64>();
        if id != 0 {
            return SpanId::from(id);
        }
    }
}

/// The first 8 bytes of SHA-256 over the trace id and the length-prefixed
/// parts (the prefix keeps `["ru", "n1"]` apart from `["run", "1"]`).
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
    // All zero is the invalid span id.
    if b == [0; 8] {
        b[7] = 1;
    }
    SpanId::from_bytes(b)
}

/// The span id of a run (the parent of its steps and agent spans).
pub fn run_span(task: &SpanCtx, run_id: &crate::model::RunId) -> SpanCtx {
    task.derived(&[b"run", &run_id.to_bytes()])
}

/// The span of `agent` within `run`: derived, so that the agent's start and
/// finish events (and its tools) agree on it without shared state.
pub(super) fn agent_span(run: &SpanCtx, agent: &str) -> SpanCtx {
    run.derived(&[b"agent", &run.span_id.to_bytes(), agent.as_bytes()])
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
}
