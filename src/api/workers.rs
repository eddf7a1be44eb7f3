//! Worker status routes.

use std::sync::Arc;

use serde_json::{json, Value};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Filter;

use super::views::worker_json;
use crate::auth::matrix::{LIST_WORKERS, WORKER_STATUS};
use crate::http::body::parse_json;
use crate::http::{endpoint, json_reply, serve, Api, ApiError, Call};
use crate::model::WorkerId;
use crate::workers::normalize_status;

/// Most workers listed.
pub const MAX_WORKERS_LISTED: usize = 1000;

/// `GET /api/v1/workers`, `POST /api/v1/workers/{worker_id}/status`.
pub fn routes(
    api: &Arc<Api>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let list = warp::path!("api" / "v1" / "workers")
        .and(warp::get())
        .and(endpoint(api, &LIST_WORKERS))
        .then(|c| serve(&LIST_WORKERS, c, |c| async move { list(&c) }));
    let status = warp::path!("api" / "v1" / "workers" / String / "status")
        .and(warp::post())
        .and(endpoint(api, &WORKER_STATUS))
        .then(|id: String, c| serve(&WORKER_STATUS, c, move |c| report(c, id)));
    list.or(status).unify()
}

fn list(c: &Call) -> Result<Response, ApiError> {
    c.query().only(&[])?;
    let ws = c.p().workers(MAX_WORKERS_LISTED)?;
    Ok(json_reply(
        StatusCode::OK,
        &json!({"workers": ws.iter().map(worker_json).collect::<Vec<_>>()}),
    ))
}

async fn report(mut c: Call, id: String) -> Result<Response, ApiError> {
    c.query().only(&[])?;
    let worker = external_worker_id(&id)?;
    let v: Value = parse_json(&c.body().await?)?;
    let report = normalize_status(&v)
        .map_err(|e| ApiError::invalid(e.field.as_deref().unwrap_or("body"), e.message))?;
    let rec = c
        .p()
        .report_status(&worker, &c.who.principal, report)
        .await?;
    Ok(json_reply(StatusCode::OK, &worker_json(&rec)))
}

/// A worker id given by an API caller: valid, and not one of the built-in
/// executor's (`builtin-N`), which no external worker may take over.
pub(crate) fn external_worker_id(id: &str) -> Result<WorkerId, ApiError> {
    let worker = WorkerId::parse(id).map_err(|e| ApiError::invalid("worker_id", e.0))?;
    if worker.as_str().starts_with("builtin-") {
        return Err(ApiError::invalid(
            "worker_id",
            "worker ids starting with builtin- are reserved for the built-in executor",
        ));
    }
    Ok(worker)
}
