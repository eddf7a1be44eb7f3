//! `GET /api/v1/events`: the firehose.

use std::sync::Arc;

use warp::reply::Response;
use warp::Filter;

use super::tasks::{resume_point, sse_response, stream_limits};
use crate::auth::matrix::EVENTS;
use crate::events::{Scope, StreamSpec};
use crate::http::{endpoint, serve, Api, ApiError, Call};
use crate::model::EventKind;

/// The firehose route.
pub fn routes(
    api: &Arc<Api>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "events")
        .and(warp::get())
        .and(endpoint(api, &EVENTS))
        .then(|c| serve(&EVENTS, c, |c| async move { firehose(&c) }))
}

fn firehose(c: &Call) -> Result<Response, ApiError> {
    let q = c.query();
    q.only(&[
        "queue",
        "type",
        "max_events",
        "idle_timeout",
        "last_event_id",
    ])?;
    let (max_events, idle_timeout) = stream_limits(&q)?;
    // `type=a,b` and `type=a&type=b` both work.
    let names: Vec<&str> = q
        .all("type")
        .into_iter()
        .flat_map(|t| t.split(','))
        .collect();
    let types = if names.is_empty() {
        None
    } else {
        let kinds = names
            .into_iter()
            .map(|name| {
                EventKind::parse(name.trim())
                    .ok_or_else(|| ApiError::bad_request(format!("unknown event type {name:?}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Some(kinds)
    };
    let last = c.headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let spec = StreamSpec {
        scope: Scope::All {
            queue: q.get("queue").map(str::to_string),
            types,
        },
        after: resume_point(c.p(), last.or(q.get("last_event_id")))?,
        max_events,
        idle_timeout,
        viewer: c.viewer(),
    };
    Ok(sse_response(c.p().clone(), spec, None))
}
