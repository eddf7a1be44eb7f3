//! Worker status routes.

use std::sync::Arc;

use serde_json::{json, Value};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Filter;

use super::normalize_status;
use super::service::worker_json;
use crate::http::body::{limited_body, parse_json, BodyResult};
use crate::http::query::no_query;
use crate::http::{json_reply, respond, with_pipeline, ApiError};
use crate::pipeline::Pipeline;
use crate::tasks::WorkerId;

/// Most workers listed.
pub const MAX_WORKERS_LISTED: usize = 1000;

/// `GET /api/v1/workers`, `POST /api/v1/workers/{worker_id}/status`.
pub fn routes(
    p: Arc<Pipeline>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let limit = p.config().server.max_body_bytes;
    let list = warp::path!("api" / "v1" / "workers")
        .and(warp::get())
        .and(with_pipeline(p.clone()))
        .and(no_query())
        .map(|p: Arc<Pipeline>, nq: Result<(), ApiError>| {
            respond(
                "/api/v1/workers",
                (|| {
                    nq?;
                    let ws = p.workers(MAX_WORKERS_LISTED)?;
                    Ok::<_, ApiError>(json_reply(
                        StatusCode::OK,
                        &json!({"workers": ws.iter().map(worker_json).collect::<Vec<_>>()}),
                    ))
                })(),
            )
        });
    let status = warp::path!("api" / "v1" / "workers" / String / "status")
        .and(warp::post())
        .and(with_pipeline(p))
        .and(limited_body(limit))
        .then(|id: String, p, body| async move {
            respond(
                "/api/v1/workers/{worker_id}/status",
                report(p, id, body).await,
            )
        });
    list.or(status).unify()
}

async fn report(p: Arc<Pipeline>, id: String, body: BodyResult) -> Result<Response, ApiError> {
    let worker = WorkerId::parse(&id).map_err(|e| ApiError::invalid("worker_id", e.0))?;
    let v: Value = parse_json(&body?)?;
    let report = normalize_status(&v)
        .map_err(|e| ApiError::invalid(e.field.as_deref().unwrap_or("body"), e.message))?;
    let rec = p.report_status(&worker, report).await?;
    Ok(json_reply(StatusCode::OK, &worker_json(&rec)))
}
