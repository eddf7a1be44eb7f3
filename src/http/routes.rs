//! The router: every route of the API, then the rejection mapping.

use std::sync::Arc;

use warp::http::{HeaderValue, StatusCode};
use warp::reply::Response;
use warp::{Filter, Reply};

use super::error::recover;
use super::health::{self, Health};
use super::{respond, with_pipeline, ApiError};
use crate::pipeline::Pipeline;

/// The whole filter tree.
pub fn router(
    p: Arc<Pipeline>,
    h: Arc<Health>,
) -> impl Filter<Extract = (impl Reply,), Error = std::convert::Infallible> + Clone + Send + Sync + 'static
{
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(with_pipeline(p.clone()))
        .map(|p: Arc<Pipeline>| respond("/metrics", Ok::<_, ApiError>(render_metrics(&p))));
    health::routes(p.clone(), h)
        .or(metrics)
        .unify()
        .or(crate::tasks::routes::routes(p.clone()))
        .unify()
        .or(crate::queue::routes::routes(p.clone()))
        .unify()
        .or(crate::workers::routes::routes(p.clone()))
        .unify()
        .or(crate::events::routes::routes(p))
        .unify()
        .recover(recover)
}

fn render_metrics(p: &Pipeline) -> Response {
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
