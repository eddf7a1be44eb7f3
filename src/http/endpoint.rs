//! Admission: the one place every `/api/v1` route is authenticated,
//! authorised against the permission matrix, and rate-limited — after its path
//! matched, before its body is read.
//!
//! A route is `path.and(method).and(endpoint(&api, &ROUTE))`, handled with
//! [`serve`]: the handler only runs when admission succeeded, and gets a
//! [`Call`] with the caller's identity and a lazily read body.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use warp::http::{HeaderMap, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::Filter;

use super::body::{read_limited, BodyResult};
use super::context::{context, note, RequestContext};
use super::error::ApiError;
use super::query::Query;
use super::{respond, Api};
use crate::auth::{AuthFailure, Identity, Role, Route, Sight, Viewer};
use crate::model::{TaskId, TaskRecord};
use crate::pipeline::Pipeline;

type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, warp::Error>> + Send>>;

/// An admitted request.
pub struct Call {
    /// The API (pipeline, security).
    pub api: Arc<Api>,
    /// Request id, start, peer.
    pub ctx: RequestContext,
    /// Who is calling.
    pub who: Identity,
    /// The request headers as received (`Idempotency-Key`, `Last-Event-ID`…).
    pub headers: HeaderMap,
    /// The raw query string.
    pub raw_query: String,
    content_length: Option<u64>,
    body: Option<BodyStream>,
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("request_id", &self.ctx.request_id)
            .field("principal", &self.who.principal)
            .finish()
    }
}

impl Call {
    /// Shorthand for `self.api.pipeline`.
    pub fn p(&self) -> &Arc<Pipeline> {
        &self.api.pipeline
    }

    /// The query parameters.
    pub fn query(&self) -> Query {
        Query::parse(&self.raw_query)
    }

    /// Has `role`.
    pub fn has(&self, role: Role) -> bool {
        self.who.roles.has(role)
    }

    /// The caller under the read model (`auth.visibility`).
    pub fn viewer(&self) -> Viewer {
        Viewer::new(&self.who, self.p().config().auth.visibility)
    }

    /// A task the caller may read, and how much of it. A task it may not see
    /// is a 404, exactly as an unknown one (its existence is not revealed).
    pub fn visible_task(&self, id: TaskId) -> Result<(TaskRecord, Sight), ApiError> {
        let task = self.p().task(id)?;
        match self.viewer().sight(&task.submitted_by) {
            Some(sight) => Ok((task, sight)),
            None => Err(crate::pipeline::PipelineError::not_found("task", id).into()),
        }
    }

    /// Reads the body (once) within `server.max_body_bytes`, noting its
    /// SHA-256 for the audit log.
    pub async fn body(&mut self) -> BodyResult {
        let limit = self.api.pipeline.config().server.max_body_bytes;
        let stream = self
            .body
            .take()
            .ok_or_else(|| ApiError::bad_request("the body was already read"))?;
        let bytes = read_limited(self.content_length, stream, limit).await?;
        let hash: [u8; 32] = Sha256::digest(&bytes).into();
        note(|n| n.body_sha256 = Some(hash));
        Ok(bytes)
    }
}

/// The generic 401: no hint which check failed (that goes to the log, the
/// audit record and `forgeline_auth_failures_total{reason}`).
pub fn unauthorized(missing: bool) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "missing or invalid bearer token",
    );
    e.www_authenticate = Some(if missing {
        HeaderValue::from_static("Bearer realm=\"forgeline\"")
    } else {
        HeaderValue::from_static("Bearer realm=\"forgeline\", error=\"invalid_token\"")
    });
    e
}

fn admit(
    api: &Api,
    route: &'static Route,
    headers: &HeaderMap,
    ctx: &RequestContext,
) -> Result<Identity, ApiError> {
    let authz = headers.get("authorization").and_then(|v| v.to_str().ok());
    let who = match api.auth.verify(authz) {
        Ok(who) => who,
        Err(reason) => {
            api.pipeline.metrics().auth_failure(reason);
            tracing::warn!(request_id = %ctx.request_id, route = route.path, reason = reason.as_str(), "authentication failed");
            note(|n| n.detail = Some(format!("auth failure: {}", reason.as_str())));
            return Err(unauthorized(reason == AuthFailure::Missing));
        }
    };
    note(|n| {
        n.principal = Some(who.principal.clone());
        n.roles = who.roles;
    });
    if !who.roles.intersects(route.allowed()) {
        tracing::warn!(request_id = %ctx.request_id, principal = %who.principal, route = route.path, "forbidden by role");
        note(|n| n.detail = Some("forbidden: role".into()));
        let allowed: Vec<&str> = route.allowed().roles().iter().map(|r| r.as_str()).collect();
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "{} {} needs one of the roles: {}",
                route.method,
                route.path,
                allowed.join(", ")
            ),
        ));
    }
    if let (Some(class), true) = (route.class, api.limiter.enabled()) {
        let d = api
            .limiter
            .check(&who.principal, class)
            .map_err(crate::pipeline::PipelineError::from)?;
        note(|n| n.rate = Some(d));
        if !d.allowed {
            api.pipeline.metrics().rate_limited(class);
            note(|n| n.detail = Some(format!("rate limited: {}", class.as_str())));
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "too many {} requests; retry after {} s",
                    class.as_str(),
                    d.retry_after_secs
                ),
            ));
        }
    }
    Ok(who)
}

fn bytes_of<B: Buf>(r: Result<B, warp::Error>) -> Result<Bytes, warp::Error> {
    r.map(|mut b| b.copy_to_bytes(b.remaining()))
}

/// Extracts and admits the request for `route`.
pub fn endpoint(
    api: &Arc<Api>,
    route: &'static Route,
) -> impl Filter<Extract = (Result<Call, ApiError>,), Error = warp::Rejection> + Clone {
    let api = api.clone();
    context()
        .and(warp::header::headers_cloned())
        .and(super::body::raw_query())
        .and(warp::body::stream())
        .map(
            move |ctx: RequestContext, headers: HeaderMap, raw_query: String, stream| {
                let who = admit(&api, route, &headers, &ctx)?;
                let content_length = headers
                    .get("content-length")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok());
                let body: BodyStream = Box::pin(StreamExt::map(stream, bytes_of));
                Ok(Call {
                    api: api.clone(),
                    ctx,
                    who,
                    headers,
                    raw_query,
                    content_length,
                    body: Some(body),
                })
            },
        )
}

/// Runs `handler` for an admitted call and tags the response with `route`.
pub async fn serve<H, Fut>(
    route: &'static Route,
    call: Result<Call, ApiError>,
    handler: H,
) -> Response
where
    H: FnOnce(Call) -> Fut,
    Fut: Future<Output = Result<Response, ApiError>>,
{
    let result = match call {
        Ok(c) => handler(c).await,
        Err(e) => Err(e),
    };
    respond(route, result)
}
