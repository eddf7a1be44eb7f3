//! The HTTP server: hyper connections around the warp filter tree, with one
//! middleware for every request (request id, server span, timing headers,
//! metrics, log line), and a graceful shutdown bounded by a drain timeout.
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

use super::context::{request_id_from, with_notes, Notes, RequestContext};
use super::{ApiError, RouteTag};
use crate::audit::AuditDraft;
use crate::pipeline::{deferring_durability, Pipeline};
use crate::store::Commit;
use crate::telemetry::traces::RequestFacts;

/// Methods that get their own label value; anything else is `other`.
const METHODS: [&str; 7] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];

/// Wraps the warp service with the per-request middleware.
#[derive(Clone)]
pub struct Middleware<S> {
    inner: S,
    pipeline: Arc<Pipeline>,
    remote: Option<SocketAddr>,
}

impl<S> Middleware<S> {
    /// Wraps `inner` (a connection from `remote`).
    pub fn new(inner: S, pipeline: Arc<Pipeline>, remote: Option<SocketAddr>) -> Middleware<S> {
        Middleware {
            inner,
            pipeline,
            remote,
        }
    }
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
        let uri = req.uri().to_string();

        let span = self.pipeline.traces().start_server(
            req.headers()
                .get("traceparent")
                .and_then(|v| v.to_str().ok()),
        );
        // What the span's attributes need, only when spans are exported.
        let span_facts = self.pipeline.traces().enabled().then(|| span_facts(&req));
        let method = method_label(req.method().as_str());
        req.extensions_mut().insert(RequestContext {
            request_id: request_id.clone(),
            started,
            remote: self.remote,
            trace: span.ctx,
        });
        let trace_id = span.ctx.trace_id.to_string();
        let log_span = tracing::info_span!(
            "request",
            request_id = %request_id,
            trace_id = %trace_id,
            task_id = tracing::field::Empty,
        );
        let fut = tracing::Instrument::instrument(self.inner.call(req), log_span);
        let remote = self.remote;
        let p = self.pipeline.clone();
        Box::pin(async move {
            let ((result, deferred), notes) =
                with_notes(request_id.clone(), deferring_durability(fut)).await;
            let mut resp = match result {
                Ok(r) => r,
                Err(never) => match never {},
            };
            let route = resp.extensions().get::<RouteTag>().map(|r| r.0);
            let path = route.map(|r| r.path).unwrap_or("unmatched");
            let status = resp.status().as_u16();
            let facts = Facts {
                request_id: &request_id,
                method,
                path,
                status,
                started,
            };
            if let Some(err) = make_durable(&p, deferred, &notes, &facts).await {
                resp = with_notes(request_id.clone(), async { err.into_response() })
                    .await
                    .0;
            }
            let path_405 = (status == 405).then(|| uri.split('?').next().unwrap_or_default());
            finish(&mut resp, &request_id, notes.rate, started, path_405);
            if let Some((url_path, user_agent)) = &span_facts {
                let facts = RequestFacts {
                    method,
                    route: route.map(|r| r.path),
                    path: url_path,
                    status,
                    client: remote,
                    request_id: &request_id,
                    user_agent: user_agent.as_deref(),
                };
                p.traces().end_server(&span, facts);
            }
            let elapsed = started.elapsed();
            // Scrapes are not counted, so that an idle server's metrics stay idle.
            if path != "/metrics" {
                p.metrics()
                    .observe_http(path, method, status_label(status), elapsed.as_secs_f64());
            }
            let principal = notes.principal.as_deref().unwrap_or("-");
            log_request(&facts, &trace_id, &uri, principal, elapsed);
            Ok(resp)
        })
    }
}

/// The method as a bounded label: anything unusual is `other`.
fn method_label(method: &str) -> &'static str {
    METHODS
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("other")
}

/// The URL path and user agent the server span records.
fn span_facts<B>(req: &Request<B>) -> (String, Option<String>) {
    let ua = req
        .headers()
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (req.uri().path().to_string(), ua)
}

/// What the middleware knows about a request once the handler has answered.
struct Facts<'a> {
    request_id: &'a str,
    method: &'static str,
    /// The route template (`unmatched` when no route matched).
    path: &'static str,
    status: u16,
    started: Instant,
}

/// The durable acknowledgement. Writes made while the handler ran were only
/// applied (see `deferring_durability`); the request's audit record (every
/// mutating request, every 401 and 403) joins them, and one commit round makes
/// all of it durable before the response leaves. A failed round turns the
/// answer into a 503: nothing is acknowledged that is not on stable storage.
/// The one exception is a request that wrote nothing while the store is
/// stalled: its audit record is not waited for (see below).
async fn make_durable(
    p: &Pipeline,
    deferred: Option<Commit>,
    notes: &Notes,
    f: &Facts<'_>,
) -> Option<ApiError> {
    let mut pending = deferred;
    let audited = matches!(f.method, "POST" | "PUT" | "DELETE" | "PATCH")
        || f.status == 401
        || f.status == 403;
    if audited {
        let draft = audit_draft(notes, f.method, f.path, f.status, f.started, p.now());
        match p.audit(draft) {
            // Commits become durable in order: waiting for the later one
            // covers the handler's writes and the audit record together.
            Ok(c) => pending = Some(pending.map_or(c, |d| d.max(c))),
            Err(e) => {
                let request_id = f.request_id;
                tracing::error!(error = %e, request_id, "audit record could not be written")
            }
        }
    }
    // A request that wrote nothing, answered while the disk is stalled (a
    // refusal, most likely), is not held until the disk answers again: its
    // audit record is applied and becomes durable with the next round.
    if deferred.is_none() && p.store().stalled() {
        return None;
    }
    let c = pending?;
    let e = p.store().wait_durable(c).await.err()?;
    let request_id = f.request_id;
    tracing::error!(error = %e, request_id, "commit failed; answering 503");
    Some(crate::pipeline::PipelineError::from(e).into())
}

/// The access log line: probes and scrapes at debug, so that they do not
/// drown the requests an operator is looking for.
fn log_request(f: &Facts<'_>, trace_id: &str, uri: &str, principal: &str, elapsed: Duration) {
    let duration_ms = elapsed.as_secs_f64() * 1000.0;
    let (request_id, method, route, status) = (f.request_id, f.method, f.path, f.status);
    if route.starts_with("/health") || route == "/metrics" {
        tracing::debug!(
            request_id,
            trace_id,
            method,
            route,
            uri,
            status,
            duration_ms,
            principal,
            "request"
        );
    } else {
        tracing::info!(
            request_id,
            trace_id,
            method,
            route,
            uri,
            status,
            duration_ms,
            principal,
            "request"
        );
    }
}

fn audit_draft(
    notes: &Notes,
    method: &str,
    route: &str,
    status: u16,
    started: Instant,
    now: u64,
) -> AuditDraft {
    AuditDraft {
        at: now,
        request_id: notes.request_id.clone(),
        principal: notes
            .principal
            .clone()
            .unwrap_or_else(|| "anonymous".into()),
        roles: notes.roles.names(),
        method: method.to_string(),
        route: route.to_string(),
        body_sha256: notes.body_sha256,
        status,
        latency_us: started.elapsed().as_micros() as u64,
        detail: notes.detail.clone(),
    }
}

/// RFC 9110 §15.5.6: a 405 lists the methods the resource does support, read
/// from the route table (the same table the permission matrix is).
fn allow(resp: &mut Response, path: &str) {
    let matching: Vec<_> = crate::auth::matrix::ROUTES
        .iter()
        .filter(|r| template_matches(r.path, path))
        .collect();
    // A literal segment beats a `{name}` one, as in the router:
    // `/api/v1/tasks/stream` is that route, not a task id.
    let literals = |t: &str| t.split('/').filter(|s| !s.starts_with('{')).count();
    let best = matching.iter().map(|r| literals(r.path)).max().unwrap_or(0);
    let mut methods: Vec<&str> = matching
        .iter()
        .filter(|r| literals(r.path) == best)
        .map(|r| r.method)
        .collect();
    methods.sort_unstable();
    methods.dedup();
    if let Ok(v) = HeaderValue::from_str(&methods.join(", ")) {
        resp.headers_mut().insert("allow", v);
    }
}

/// Whether `path` is an instance of the route template `template` (a
/// `{name}` segment stands for any one non-empty segment).
fn template_matches(template: &str, path: &str) -> bool {
    let (mut t, mut p) = (template.split('/'), path.split('/'));
    loop {
        match (t.next(), p.next()) {
            (None, None) => return true,
            (Some(ts), Some(ps)) if ts.starts_with('{') && !ps.is_empty() => {}
            (Some(ts), Some(ps)) if ts == ps => {}
            _ => return false,
        }
    }
}

/// Adds the request id, timing and rate-limit headers, and `Allow` to a 405
/// (`path_405` is the request's path then).
fn finish(
    resp: &mut Response,
    request_id: &str,
    rate: Option<crate::ratelimit::Decision>,
    started: Instant,
    path_405: Option<&str>,
) {
    if let Some(path) = path_405 {
        allow(resp, path);
    }
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-request-id", v);
    }
    if let Some(d) = rate {
        h.insert("x-ratelimit-limit", HeaderValue::from(d.limit));
        h.insert("x-ratelimit-remaining", HeaderValue::from(d.remaining));
        h.insert("x-ratelimit-reset", HeaderValue::from(d.reset_secs));
        if !d.allowed {
            h.insert("retry-after", HeaderValue::from(d.retry_after_secs));
        }
    }
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if let Ok(v) = HeaderValue::from_str(&format!("{ms:.3}ms")) {
        h.insert("x-response-time", v);
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
    pipeline: Arc<Pipeline>,
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
            pipeline: pipeline.clone(),
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
