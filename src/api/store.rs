//! `GET /api/v1/store`: what the store holds, by kind (see
//! `retention::store_report`), for a running server; `forgeline store stats`
//! prints the same for a stopped one.

use std::sync::Arc;

use warp::http::StatusCode;
use warp::reply::Response;
use warp::Filter;

use crate::auth::matrix::STORE_STATS;
use crate::http::{endpoint, json_reply, serve, Api, ApiError, Call};

/// The store route.
pub fn routes(
    api: &Arc<Api>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "store")
        .and(warp::get())
        .and(endpoint(api, &STORE_STATS))
        .then(|c| serve(&STORE_STATS, c, report))
}

async fn report(c: Call) -> Result<Response, ApiError> {
    c.query().only(&[])?;
    let p = c.p().clone();
    // One walk of the whole store: on a blocking thread, not a runtime worker.
    let report =
        tokio::task::spawn_blocking(move || crate::retention::store_report(p.store(), p.config()))
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    format!("counting the store failed: {e}"),
                )
            })??;
    Ok(json_reply(StatusCode::OK, &report))
}
