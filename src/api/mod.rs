//! The API: the router, one file of filters and handlers per domain, and the
//! JSON views. Handlers parse and authorise through `http` (admission, bodies,
//! queries, the one error mapping) and call the domains' operations on the
//! pipeline; the domains never see warp, HTTP or JSON views.

mod audit;
mod backup;
mod batch;
mod console;
mod events;
pub mod openapi;
mod overview;
mod queue;
mod reviews;
mod store;
mod tasks;
pub mod views;
mod workers;

use std::net::SocketAddr;
use std::sync::Arc;

use subtle::ConstantTimeEq;
use warp::http::{HeaderMap, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::{Filter, Reply};

use crate::auth::matrix::METRICS;
use crate::config::MetricsAccess;
use crate::http::endpoint::unauthorized;
use crate::http::error::recover;
use crate::http::{health, respond, Api, ApiError};

/// Parses an id taken from a path with `parse` (`TaskId::parse`…). A
/// malformed id names nothing, so it is answered like an unknown one: 404
/// `not_found`, never 400, and the message says what the id should look like.
pub(crate) fn path_id<T>(
    raw: &str,
    parse: impl FnOnce(&str) -> Result<T, crate::model::InvalidName>,
) -> Result<T, ApiError> {
    parse(raw).map_err(|e| ApiError::new(StatusCode::NOT_FOUND, "not_found", e.0))
}

/// The whole filter tree.
pub fn router(
    api: Arc<Api>,
) -> impl Filter<Extract = (impl Reply,), Error = std::convert::Infallible> + Clone + Send + Sync + 'static
{
    let a = api.clone();
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(crate::http::context::context())
        .and(warp::header::headers_cloned())
        .map(
            move |ctx: crate::http::RequestContext, headers: HeaderMap| {
                let allowed = metrics_allowed(&a, ctx.remote, &headers);
                respond(&METRICS, allowed.map(|()| render_metrics(&a)))
            },
        );
    health::routes(&api)
        .or(metrics)
        .unify()
        .or(openapi::routes())
        .unify()
        .or(tasks::routes(&api))
        .unify()
        .or(batch::routes(&api))
        .unify()
        .or(queue::routes(&api))
        .unify()
        .or(workers::routes(&api))
        .unify()
        .or(overview::routes(&api))
        .unify()
        .or(events::routes(&api))
        .unify()
        .or(audit::routes(&api))
        .unify()
        .or(reviews::routes(&api))
        .unify()
        .or(store::routes(&api))
        .unify()
        .or(backup::routes(&api))
        .unify()
        .or(console::routes(&api))
        .unify()
        .recover(recover)
}

/// Applies `metrics.access`.
fn metrics_allowed(
    api: &Api,
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    match api.pipeline.config().metrics.access {
        MetricsAccess::Open => Ok(()),
        MetricsAccess::Loopback => match peer {
            Some(p) if p.ip().is_loopback() => Ok(()),
            _ => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "/metrics is served to loopback peers only",
            )),
        },
        MetricsAccess::Token => {
            let want = api.metrics_token.as_deref().unwrap_or_default().as_bytes();
            let got = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or_default()
                .as_bytes();
            if !want.is_empty() && bool::from(got.ct_eq(want)) {
                Ok(())
            } else {
                Err(unauthorized(got.is_empty()))
            }
        }
    }
}

fn render_metrics(api: &Api) -> Response {
    let p = &api.pipeline;
    if let Err(e) = crate::pipeline::refresh_gauges(p) {
        tracing::warn!(error = %e, "could not refresh scrape-time gauges");
    }
    let mut resp = warp::reply::with_status(p.metrics().render(), StatusCode::OK).into_response();
    resp.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}
