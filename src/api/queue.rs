//! Worker protocol and dead-letter routes.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Filter;

use super::tasks::{cursor, task_id};
use super::views::{task_json, task_summary};
use crate::auth::matrix::{
    COMPLETE, DEAD_LETTER, FAIL, HEARTBEAT, LEASE, LEASE_EVENTS, RELEASE_LEASE, REQUEUE,
};
use crate::auth::Route;
use crate::clock::format_rfc3339;
use crate::http::body::parse_json;
use crate::http::{endpoint, json_reply, serve, Api, ApiError, Call};
use crate::model::{step_spec_json, LeaseId, QueueName};
use crate::pipeline::Pipeline;
use crate::queue::{Failure, Grant, LeaseRequest};
use crate::workers::normalize_event;

/// Most events in one `/events` call.
pub const MAX_EVENTS_PER_CALL: usize = 100;
/// Longest error message kept from a `/fail` call.
pub const MAX_ERROR_LEN: usize = 4096;

/// Every worker-protocol and dead-letter route.
pub fn routes(
    api: &Arc<Api>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let lease = warp::path!("api" / "v1" / "queues" / String / "lease")
        .and(warp::post())
        .and(endpoint(api, &LEASE))
        .then(|q: String, c| serve(&LEASE, c, move |c| lease(c, q)));
    let action = |name: &'static str, route: &'static Route| {
        warp::path("api")
            .and(warp::path("v1"))
            .and(warp::path("leases"))
            .and(warp::path::param::<String>())
            .and(warp::path(name))
            .and(warp::path::end())
            .and(warp::post())
            .and(endpoint(api, route))
            .then(move |id: String, c| serve(route, c, move |c| lease_call(c, id, name)))
    };
    let lease_action = action("heartbeat", &HEARTBEAT)
        .or(action("events", &LEASE_EVENTS))
        .unify()
        .or(action("complete", &COMPLETE))
        .unify()
        .or(action("fail", &FAIL))
        .unify()
        .or(action("release", &RELEASE_LEASE))
        .unify();
    let dead = warp::path!("api" / "v1" / "dead-letter")
        .and(warp::get())
        .and(endpoint(api, &DEAD_LETTER))
        .then(|c| serve(&DEAD_LETTER, c, |c| async move { list_dead(&c) }));
    let requeue = warp::path!("api" / "v1" / "dead-letter" / String / "requeue")
        .and(warp::post())
        .and(endpoint(api, &REQUEUE))
        .then(|id: String, c| serve(&REQUEUE, c, move |c| requeue(c, id)));
    lease
        .or(lease_action)
        .unify()
        .or(dead)
        .unify()
        .or(requeue)
        .unify()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaseBody {
    worker_id: String,
    #[serde(default = "one")]
    max: usize,
    #[serde(default)]
    wait_ms: u64,
    lease_ms: Option<u64>,
}

fn one() -> usize {
    1
}

/// The lease length a worker asked for, within the configured bounds.
fn lease_length(p: &Pipeline, ms: Option<u64>) -> Result<Duration, ApiError> {
    let q = &p.config().queue;
    match ms {
        None => Ok(q.lease_timeout),
        Some(ms) => {
            let d = Duration::from_millis(ms);
            if d < q.min_lease || d > q.max_lease {
                return Err(ApiError::invalid(
                    "lease_ms",
                    format!(
                        "lease_ms must be {}-{}",
                        q.min_lease.as_millis(),
                        q.max_lease.as_millis()
                    ),
                ));
            }
            Ok(d)
        }
    }
}

/// The run's span context, handed to the worker so its own spans join the
/// task's trace under the run.
pub fn run_traceparent(g: &Grant) -> Option<String> {
    let task = crate::telemetry::SpanCtx::parse(g.task.traceparent.as_deref()?)?;
    Some(crate::telemetry::traces::run_span(&task, &g.run.id).traceparent())
}

/// The JSON a worker gets for one lease. `review_feedback` carries the
/// comment of a `changes_requested` review, for the run that answers it.
pub fn grant_json(p: &Pipeline, g: &Grant) -> Value {
    let feedback = p.review_feedback(g.task.id).unwrap_or(None);
    json!({
        "review_feedback": feedback,
        "lease_id": g.lease.id.to_string(),
        "token": g.lease.token,
        "deadline": format_rfc3339(g.lease.deadline),
        "run_id": g.run.id.to_string(),
        "attempt": g.run.attempt,
        "steps": g.task.steps.iter().map(step_spec_json).collect::<Vec<_>>(),
        "traceparent": run_traceparent(g),
        "task": task_json(&g.task),
    })
}

async fn lease(mut c: Call, queue: String) -> Result<Response, ApiError> {
    c.query().only(&[])?;
    let queue = QueueName::parse(&queue).map_err(|e| ApiError::invalid("queue", e.0))?;
    let b: LeaseBody = parse_json(&c.body().await?)?;
    let worker = crate::api::workers::external_worker_id(&b.worker_id)?;
    let cfg = &c.p().config().queue;
    if b.max == 0 || b.max > cfg.max_batch {
        return Err(ApiError::invalid(
            "max",
            format!("max must be 1-{}", cfg.max_batch),
        ));
    }
    let max_wait = cfg.max_wait.as_millis() as u64;
    if b.wait_ms > max_wait {
        return Err(ApiError::invalid(
            "wait_ms",
            format!("wait_ms must be 0-{max_wait}"),
        ));
    }
    let req = LeaseRequest {
        queues: vec![queue],
        worker,
        holder: c.who.principal.clone(),
        max: b.max,
        wait: Duration::from_millis(b.wait_ms),
        lease_for: lease_length(c.p(), b.lease_ms)?,
    };
    let grants = c.p().lease(&req).await?;
    Ok(json_reply(
        StatusCode::OK,
        &json!({"leases": grants.iter().map(|g| grant_json(c.p(), g)).collect::<Vec<_>>()}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeartbeatBody {
    token: u64,
    lease_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsBody {
    token: u64,
    events: Vec<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CompleteBody {
    token: u64,
    #[serde(default)]
    result: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseBody {
    token: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FailBody {
    token: u64,
    #[serde(default = "yes")]
    retryable: bool,
    error: String,
}

/// `retryable` unless the worker says otherwise.
pub(super) fn yes() -> bool {
    true
}

async fn lease_call(mut c: Call, id: String, action: &str) -> Result<Response, ApiError> {
    c.query().only(&[])?;
    let lease_id = super::path_id(&id, LeaseId::parse)?;
    let body = c.body().await?;
    let p = c.p().clone();
    let holder = Some(c.who.principal.as_str());
    match action {
        "heartbeat" => {
            let b: HeartbeatBody = parse_json(&body)?;
            let extend = lease_length(&p, b.lease_ms)?;
            let deadline = p.heartbeat(lease_id, b.token, holder, extend).await?;
            Ok(json_reply(
                StatusCode::OK,
                &json!({"lease_id": lease_id.to_string(), "deadline": format_rfc3339(deadline)}),
            ))
        }
        "events" => {
            let b: EventsBody = parse_json(&body)?;
            if b.events.is_empty() || b.events.len() > MAX_EVENTS_PER_CALL {
                return Err(ApiError::invalid(
                    "events",
                    format!("send 1-{MAX_EVENTS_PER_CALL} events per call"),
                ));
            }
            let mut events = Vec::with_capacity(b.events.len());
            for (i, v) in b.events.iter().enumerate() {
                let e = normalize_event(v).map_err(|e| {
                    let field = match &e.field {
                        Some(f) => format!("events[{i}].{f}"),
                        None => format!("events[{i}]"),
                    };
                    ApiError::invalid(&field, format!("events[{i}]: {}", e.message))
                })?;
                events.push(e);
            }
            let r = p.report_events(lease_id, b.token, holder, events).await?;
            Ok(json_reply(
                StatusCode::OK,
                &json!({
                    "accepted": r.event_ids.len(),
                    "event_ids": r.event_ids.iter().map(|i| crate::model::format_event_id(*i)).collect::<Vec<_>>(),
                    "guardrails": r.guardrails,
                }),
            ))
        }
        "complete" => {
            let b: CompleteBody = parse_json(&body)?;
            let task = p.complete(lease_id, b.token, holder, b.result).await?;
            Ok(json_reply(StatusCode::OK, &task_json(&task)))
        }
        // A worker that stops (SIGTERM) gives its task back at once, and the
        // attempt it had not finished is not counted against the task.
        "release" => {
            let b: ReleaseBody = parse_json(&body)?;
            let task = p.release(lease_id, b.token, holder).await?;
            Ok(json_reply(StatusCode::OK, &task_json(&task)))
        }
        _ => {
            let b: FailBody = parse_json(&body)?;
            if b.error.is_empty() || b.error.len() > MAX_ERROR_LEN {
                return Err(ApiError::invalid(
                    "error",
                    format!("error must be 1-{MAX_ERROR_LEN} bytes"),
                ));
            }
            let failure = Failure {
                retryable: b.retryable,
                error: b.error,
            };
            let task = p.fail(lease_id, b.token, holder, failure).await?;
            Ok(json_reply(StatusCode::OK, &task_json(&task)))
        }
    }
}

fn list_dead(c: &Call) -> Result<Response, ApiError> {
    let q = c.query();
    q.only(&["queue", "cursor", "limit"])?;
    let max = c.p().config().tasks.max_page_size;
    let limit = q.bounded("limit", 50.min(max), max)?;
    let page = c
        .p()
        .dead_letter(q.get("queue").map(str::to_string), cursor(&q)?, limit)?;
    let tasks: Vec<Value> = page
        .items
        .iter()
        .map(|t| {
            let mut v = task_summary(t);
            v["last_error"] = t.last_error.clone().into();
            v
        })
        .collect();
    Ok(json_reply(
        StatusCode::OK,
        &json!({"tasks": tasks, "next_cursor": page.next_cursor}),
    ))
}

async fn requeue(c: Call, id: String) -> Result<Response, ApiError> {
    c.query().only(&[])?;
    let task = c.p().requeue_dead(task_id(&id)?, &c.who.principal).await?;
    Ok(json_reply(StatusCode::OK, &task_json(&task)))
}
