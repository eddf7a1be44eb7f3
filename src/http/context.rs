//! The per-request context and notes.
//!
//! The middleware creates a [`RequestContext`] (request id, start, peer) and a
//! task-local [`Notes`] that the layers below fill in as they learn things —
//! the caller's identity, the SHA-256 of the body, the rate-limit decision, an
//! auth-failure reason — and that the middleware reads back to write the audit
//! record and the response headers.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::Instant;

use warp::Filter;

use crate::auth::RoleSet;
use crate::ratelimit::Decision;

/// Longest client-supplied `X-Request-ID` we keep.
pub const MAX_REQUEST_ID_LEN: usize = 64;

/// What every handler knows about its request.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The client's `X-Request-ID` if well-formed, else a fresh 16-hex id.
    pub request_id: String,
    /// When the request arrived.
    pub started: Instant,
    /// The TCP peer (no forwarding header is trusted); `None` outside the
    /// middleware.
    pub remote: Option<SocketAddr>,
    /// The request's server span (a child of the caller's `traceparent`).
    pub trace: crate::telemetry::SpanCtx,
}

/// What the layers under the middleware learned about the request.
#[derive(Debug, Clone, Default)]
pub struct Notes {
    /// The request id.
    pub request_id: String,
    /// The authenticated principal, once known.
    pub principal: Option<String>,
    /// Its roles (empty until authenticated), for the audit record.
    pub roles: RoleSet,
    /// SHA-256 of the body, when it was read.
    pub body_sha256: Option<[u8; 32]>,
    /// The rate-limit decision, on limited routes.
    pub rate: Option<Decision>,
    /// Extra audit context (an auth-failure reason…).
    pub detail: Option<String>,
}

tokio::task_local! {
    static NOTES: RefCell<Notes>;
}

/// Keeps a client's id when it is 1–64 of `[A-Za-z0-9._:-]`; else makes one.
pub fn request_id_from(header: Option<&str>) -> String {
    match header {
        Some(h)
            if !h.is_empty()
                && h.len() <= MAX_REQUEST_ID_LEN
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b)) =>
        {
            h.to_string()
        }
        _ => format!("{:016x}", rand::random::<u64>()),
    }
}

/// Runs `fut` with fresh notes for request `id`; returns its output and the notes.
pub async fn with_notes<F: std::future::Future>(id: String, fut: F) -> (F::Output, Notes) {
    let notes = Notes {
        request_id: id,
        ..Notes::default()
    };
    NOTES
        .scope(RefCell::new(notes), async {
            let out = fut.await;
            (out, NOTES.with(|n| n.take()))
        })
        .await
}

/// Updates the current request's notes (no-op outside a request).
pub fn note(f: impl FnOnce(&mut Notes)) {
    let _ = NOTES.try_with(|n| f(&mut n.borrow_mut()));
}

/// The request id of the request being handled ("" outside one).
pub fn current_request_id() -> String {
    NOTES
        .try_with(|n| n.borrow().request_id.clone())
        .unwrap_or_default()
}

/// Extracts the context (put there by the middleware).
pub fn context(
) -> impl Filter<Extract = (RequestContext,), Error = std::convert::Infallible> + Clone {
    warp::ext::optional::<RequestContext>().map(|c: Option<RequestContext>| {
        c.unwrap_or_else(|| RequestContext {
            request_id: request_id_from(None),
            started: Instant::now(),
            remote: None,
            trace: crate::telemetry::Traces::disabled().start_server(None).ctx,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_ids_are_kept_and_others_replaced() {
        assert_eq!(request_id_from(Some("abc-123.x:y_z")), "abc-123.x:y_z");
        for bad in ["", "has space", "<script>", &"a".repeat(65)] {
            let id = request_id_from(Some(bad));
            assert_eq!(id.len(), 16, "{bad:?}");
            assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        }
    }
}
