//! `GET /api/v1/events`: the firehose.

use std::sync::Arc;

use warp::reply::Response;
use warp::Filter;

use super::stream::{Scope, StreamSpec};
use super::EventKind;
use crate::http::body::raw_query;
use crate::http::query::Query;
use crate::http::{respond, with_pipeline, ApiError};
use crate::pipeline::Pipeline;
use crate::tasks::routes::{resume_point, sse_response, stream_limits};

/// The firehose route.
pub fn routes(
    p: Arc<Pipeline>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "events")
        .and(warp::get())
        .and(with_pipeline(p))
        .and(warp::header::optional::<String>("last-event-id"))
        .and(raw_query())
        .map(|p: Arc<Pipeline>, last: Option<String>, q: String| {
            respond("/api/v1/events", firehose(p, last, &q))
        })
}

fn firehose(p: Arc<Pipeline>, last: Option<String>, raw: &str) -> Result<Response, ApiError> {
    let q = Query::parse(raw);
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
    let spec = StreamSpec {
        scope: Scope::All {
            queue: q.get("queue").map(str::to_string),
            types,
        },
        after: resume_point(last.as_deref().or(q.get("last_event_id")))?,
        max_events,
        idle_timeout,
    };
    Ok(sse_response(p, spec, None))
}
