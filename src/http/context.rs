//! The per-request context: request id, start time, peer, and (with the
//! security layer) the principal. The middleware creates it; handlers extract
//! it after their path matched.

use std::net::SocketAddr;
use std::time::Instant;

use warp::Filter;

/// Longest client-supplied `X-Request-ID` we keep.
pub const MAX_REQUEST_ID_LEN: usize = 64;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// What every handler knows about its request.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The client's `X-Request-ID` if well-formed, else a fresh 16-hex id.
    pub request_id: String,
    /// When the request arrived.
    pub started: Instant,
    /// The peer.
    pub remote: Option<SocketAddr>,
    /// Who is calling (`anonymous` until authentication is configured).
    pub principal: String,
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

/// Runs `fut` with `id` as the current request id (read by error rendering).
pub async fn with_request_id<F: std::future::Future>(id: String, fut: F) -> F::Output {
    REQUEST_ID.scope(id, fut).await
}

/// The request id of the request being handled ("" outside one).
pub fn current_request_id() -> String {
    REQUEST_ID.try_with(|id| id.clone()).unwrap_or_default()
}

/// Extracts the context (put there by the middleware).
pub fn context(
) -> impl Filter<Extract = (RequestContext,), Error = std::convert::Infallible> + Clone {
    warp::ext::optional::<RequestContext>().map(|c: Option<RequestContext>| {
        c.unwrap_or_else(|| RequestContext {
            request_id: request_id_from(None),
            started: Instant::now(),
            remote: None,
            principal: "anonymous".into(),
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
