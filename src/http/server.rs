//! The HTTP server: hyper connections around the warp filter tree, with one
//! middleware for every request (request id, timing headers, metrics, log
//! line), and a graceful shutdown bounded by a drain timeout.
//!
//! We run the accept loop ourselves (rather than `warp::serve`) to put the
//! middleware around warp's own rejections too, and to bound the drain.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower_service::Service;
use warp::http::{HeaderValue, Request};
use warp::reply::Response;

use super::context::{request_id_from, with_request_id, RequestContext};
use super::RouteTag;
use crate::telemetry::Metrics;

/// Methods that get their own label value; anything else is `other`.
const METHODS: [&str; 7] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];

/// Wraps the warp service with the per-request middleware.
#[derive(Clone)]
pub struct Middleware<S> {
    inner: S,
    metrics: Arc<Metrics>,
    remote: Option<SocketAddr>,
}

impl<S, B> Service<Request<B>> for Middleware<S>
where
    S: Service<Request<B>, Response = Response, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, std::convert::Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let started = Instant::now();
        let request_id = request_id_from(
            req.headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok()),
        );
        let method = req.method().as_str();
        let method: &'static str = METHODS
            .iter()
            .find(|m| **m == method)
            .copied()
            .unwrap_or("other");
        req.extensions_mut().insert(RequestContext {
            request_id: request_id.clone(),
            started,
            remote: self.remote,
            principal: "anonymous".into(),
        });
        let fut = self.inner.call(req);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let mut resp = match with_request_id(request_id.clone(), fut).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            let elapsed = started.elapsed();
            let route = resp
                .extensions()
                .get::<RouteTag>()
                .map(|r| r.0)
                .unwrap_or("unmatched");
            let status = resp.status().as_u16();
            let h = resp.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&request_id) {
                h.insert("x-request-id", v);
            }
            if let Ok(v) =
                HeaderValue::from_str(&format!("{:.3}ms", elapsed.as_secs_f64() * 1000.0))
            {
                h.insert("x-response-time", v);
            }
            // Scrapes are not counted, so that an idle server's metrics stay idle.
            if route != "/metrics" {
                let status_label = status_label(status);
                metrics
                    .http_requests
                    .with_label_values(&[route, method, status_label])
                    .inc();
                metrics
                    .http_duration
                    .with_label_values(&[route, method])
                    .observe(elapsed.as_secs_f64());
            }
            if route.starts_with("/health") || route == "/metrics" {
                tracing::debug!(
                    request_id,
                    method,
                    route,
                    status,
                    duration_ms = elapsed.as_secs_f64() * 1000.0,
                    "request"
                );
            } else {
                tracing::info!(
                    request_id,
                    method,
                    route,
                    status,
                    duration_ms = elapsed.as_secs_f64() * 1000.0,
                    "request"
                );
            }
            Ok(resp)
        })
    }
}

/// The status as a static label (no allocation on the hot path).
fn status_label(status: u16) -> &'static str {
    const KNOWN: [(u16, &str); 17] = [
        (200, "200"),
        (201, "201"),
        (204, "204"),
        (400, "400"),
        (401, "401"),
        (403, "403"),
        (404, "404"),
        (405, "405"),
        (409, "409"),
        (413, "413"),
        (422, "422"),
        (429, "429"),
        (500, "500"),
        (502, "502"),
        (503, "503"),
        (504, "504"),
        (304, "304"),
    ];
    KNOWN
        .iter()
        .find(|(c, _)| *c == status)
        .map(|(_, s)| *s)
        .unwrap_or(match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        })
}

/// Serves `service` (the warp router, see `warp::service`) on `listener`
/// until `shutdown` resolves, then stops accepting and lets open requests
/// finish for up to `drain`.
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) where
    S: Service<
            Request<hyper::body::Incoming>,
            Response = Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let svc = Middleware {
            inner: service.clone(),
            metrics: metrics.clone(),
            remote: Some(remote),
        };
        let conn = auto::Builder::new(TokioExecutor::new())
            .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(svc))
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?drain,
            "connections still open after the drain timeout; closing them"
        );
    }
}
