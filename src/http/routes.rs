//! The router: every route of the API, then the rejection mapping.

use std::net::SocketAddr;
use std::sync::Arc;

use subtle::ConstantTimeEq;
use warp::http::{HeaderMap, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::{Filter, Reply};

use super::endpoint::unauthorized;
use super::error::recover;
use super::{health, respond, Api, ApiError};
use crate::auth::matrix::METRICS;
use crate::config::MetricsAccess;

/// The whole filter tree.
pub fn router(
    api: Arc<Api>,
) -> impl Filter<Extract = (impl Reply,), Error = std::convert::Infallible> + Clone + Send + Sync + 'static
{
    let a = api.clone();
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(super::context::context())
        .and(warp::header::headers_cloned())
        .map(move |ctx: super::RequestContext, headers: HeaderMap| {
            let allowed = metrics_allowed(&a, ctx.remote, &headers);
            respond(&METRICS, allowed.map(|()| render_metrics(&a)))
        });
    health::routes(&api)
        .or(metrics)
        .unify()
        .or(super::openapi::routes())
        .unify()
        .or(crate::tasks::routes::routes(&api))
        .unify()
        .or(crate::queue::routes::routes(&api))
        .unify()
        .or(crate::workers::routes::routes(&api))
        .unify()
        .or(crate::events::routes::routes(&api))
        .unify()
        .or(crate::audit::routes::routes(&api))
        .unify()
        .or(crate::reviews::routes::routes(&api))
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
    if let Err(e) = crate::telemetry::refresh_gauges(p) {
        tracing::warn!(error = %e, "could not refresh scrape-time gauges");
    }
    let mut resp = warp::reply::with_status(p.metrics().render(), StatusCode::OK).into_response();
    resp.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}
