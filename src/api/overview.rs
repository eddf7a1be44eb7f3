//! `GET /api/v1/queues`: each known queue's depth, oldest waiting task, task
//! counts by state, completions per minute over the last five minutes, and
//! its leases and pickup latency since start — the
//! console's queues page, and the same figures `/metrics` exports.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Filter;

use crate::auth::matrix::LIST_QUEUES;
use crate::http::{endpoint, json_reply, serve, Api, ApiError, Call};
use crate::model::StateKind;

/// The route.
pub fn routes(
    api: &Arc<Api>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "queues")
        .and(warp::get())
        .and(endpoint(api, &LIST_QUEUES))
        .then(|c| serve(&LIST_QUEUES, c, |c| async move { list(&c) }))
}

fn list(c: &Call) -> Result<Response, ApiError> {
    c.query().only(&[])?;
    let p = c.p();
    let mut by_queue: BTreeMap<String, BTreeMap<&'static str, u64>> = BTreeMap::new();
    let zero = || StateKind::ALL.iter().map(|s| (s.as_str(), 0)).collect();
    if p.config().executor.enabled {
        for q in &p.config().executor.queues {
            by_queue.entry(q.to_string()).or_insert_with(zero);
        }
    }
    for ((state, queue), n) in p.task_counts()? {
        *by_queue
            .entry(queue)
            .or_insert_with(zero)
            .entry(state.as_str())
            .or_default() += n;
    }
    let oldest: BTreeMap<String, u64> = p.oldest_ready()?.into_iter().collect();
    let now = p.now();
    let queues: Vec<_> = by_queue
        .into_iter()
        .map(|(name, tasks)| {
            let (leases, wait_s) = p.metrics().queue_wait_summary(&name);
            json!({
                "name": name,
                "depth": tasks.get(StateKind::Queued.as_str()).copied().unwrap_or(0),
                "oldest_age_seconds": oldest.get(&name).map(|at| now.saturating_sub(*at) as f64 / 1000.0),
                "tasks": tasks,
                "completed_per_minute": p.metrics().completed_per_minute(&name, now),
                "leases_since_start": leases,
                "pickup_mean_ms": (leases > 0).then(|| wait_s * 1000.0 / leases as f64),
            })
        })
        .collect();
    Ok(json_reply(StatusCode::OK, &json!({ "queues": queues })))
}
