//! Task routes: submit (and submit-and-stream), read, list, cancel, dossier,
//! runs.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use warp::http::{HeaderMap, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::{Filter, Reply};

use super::service::{Submission, Submitted, TaskFilter};
use super::submit::{validate, SubmitRequest};
use super::view::{run_json, task_json, task_summary};
use super::{RunId, StateKind, TaskId, TaskRecord};
use crate::events::stream::{self, Scope, StreamSpec};
use crate::http::body::{limited_body, parse_json, parse_json_or_default, raw_query, BodyResult};
use crate::http::context::{context, RequestContext};
use crate::http::query::{no_query, Query};
use crate::http::{json_reply, respond, with_pipeline, ApiError};
use crate::pipeline::Pipeline;

/// Longest accepted `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;
/// Most events a dossier includes.
pub const DOSSIER_MAX_EVENTS: usize = 100_000;

/// Every task route.
pub fn routes(
    p: Arc<Pipeline>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let limit = p.config().server.max_body_bytes;
    let submit = warp::path!("api" / "v1" / "tasks")
        .and(warp::post())
        .and(with_pipeline(p.clone()))
        .and(context())
        .and(warp::header::headers_cloned())
        .and(limited_body(limit))
        .then(|p, ctx, headers, body| async move {
            respond("/api/v1/tasks", submit_task(p, ctx, headers, body).await)
        });
    let submit_stream = warp::path!("api" / "v1" / "tasks" / "stream")
        .and(warp::post())
        .and(with_pipeline(p.clone()))
        .and(context())
        .and(warp::header::headers_cloned())
        .and(raw_query())
        .and(limited_body(limit))
        .then(|p, ctx, headers, q: String, body| async move {
            respond(
                "/api/v1/tasks/stream",
                submit_and_stream(p, ctx, headers, q, body).await,
            )
        });
    let list = warp::path!("api" / "v1" / "tasks")
        .and(warp::get())
        .and(with_pipeline(p.clone()))
        .and(raw_query())
        .map(|p: Arc<Pipeline>, q: String| respond("/api/v1/tasks", list_tasks(&p, &q)));
    let get = warp::path!("api" / "v1" / "tasks" / String)
        .and(warp::get())
        .and(with_pipeline(p.clone()))
        .and(raw_query())
        .map(|id: String, p: Arc<Pipeline>, q: String| {
            respond("/api/v1/tasks/{id}", get_task(&p, &id, &q))
        });
    let events = warp::path!("api" / "v1" / "tasks" / String / "events")
        .and(warp::get())
        .and(with_pipeline(p.clone()))
        .and(warp::header::optional::<String>("last-event-id"))
        .and(raw_query())
        .map(
            |id: String, p: Arc<Pipeline>, last: Option<String>, q: String| {
                respond("/api/v1/tasks/{id}/events", task_events(p, &id, last, &q))
            },
        );
    let dossier = warp::path!("api" / "v1" / "tasks" / String / "dossier")
        .and(warp::get())
        .and(with_pipeline(p.clone()))
        .and(no_query())
        .map(|id: String, p: Arc<Pipeline>, nq: Result<(), ApiError>| {
            respond(
                "/api/v1/tasks/{id}/dossier",
                nq.and_then(|()| dossier(&p, &id)),
            )
        });
    let cancel = warp::path!("api" / "v1" / "tasks" / String / "cancel")
        .and(warp::post())
        .and(with_pipeline(p.clone()))
        .and(context())
        .and(limited_body(limit))
        .then(|id: String, p, ctx, body| async move {
            respond(
                "/api/v1/tasks/{id}/cancel",
                cancel_task(p, ctx, id, body).await,
            )
        });
    let run = warp::path!("api" / "v1" / "runs" / String)
        .and(warp::get())
        .and(with_pipeline(p))
        .and(no_query())
        .map(|id: String, p: Arc<Pipeline>, nq: Result<(), ApiError>| {
            respond("/api/v1/runs/{run_id}", nq.and_then(|()| get_run(&p, &id)))
        });
    submit
        .or(submit_stream)
        .unify()
        .or(list)
        .unify()
        .or(get)
        .unify()
        .or(events)
        .unify()
        .or(dossier)
        .unify()
        .or(cancel)
        .unify()
        .or(run)
        .unify()
}

fn task_id(id: &str) -> Result<TaskId, ApiError> {
    TaskId::parse(id).map_err(|e| ApiError::new(StatusCode::NOT_FOUND, "not_found", e.0))
}

/// A valid W3C traceparent from the request, or a new root context.
fn traceparent(headers: &HeaderMap) -> String {
    let given = headers.get("traceparent").and_then(|v| v.to_str().ok());
    if let Some(tp) = given {
        let parts: Vec<&str> = tp.split('-').collect();
        let hex = |s: &str, n: usize| {
            s.len() == n
                && s.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        };
        if parts.len() == 4
            && hex(parts[0], 2)
            && parts[0] != "ff"
            && hex(parts[1], 32)
            && parts[1] != "0".repeat(32)
            && hex(parts[2], 16)
            && parts[2] != "0".repeat(16)
            && hex(parts[3], 2)
        {
            return tp.to_string();
        }
    }
    format!(
        "00-{:032x}-{:016x}-01",
        rand::random::<u128>() | 1,
        rand::random::<u64>() | 1
    )
}

async fn prepare(
    p: &Pipeline,
    ctx: &RequestContext,
    headers: &HeaderMap,
    body: BodyResult,
) -> Result<Submission, ApiError> {
    let body = body?;
    let idempotency = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let key = v
                .to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY_LEN && k.bytes().all(|b| (0x21..0x7f).contains(&b)))
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_LEN} printable ASCII characters without spaces"
                    ))
                })?;
            Some((key.to_string(), Sha256::digest(&body).into()))
        }
    };
    let req: SubmitRequest = parse_json(&body)?;
    let task = validate(req, p.config(), p.now())?;
    Ok(Submission {
        principal: ctx.principal.clone(),
        idempotency,
        traceparent: Some(traceparent(headers)),
        task,
    })
}

async fn submit_task(
    p: Arc<Pipeline>,
    ctx: RequestContext,
    headers: HeaderMap,
    body: BodyResult,
) -> Result<Response, ApiError> {
    let submission = prepare(&p, &ctx, &headers, body).await?;
    let (status, task, replay) = match p.submit(submission).await? {
        Submitted::Created(t) => (StatusCode::CREATED, t, false),
        Submitted::Replayed(t) => (StatusCode::OK, t, true),
    };
    let mut resp = json_reply(status, &task_json(&task));
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("/api/v1/tasks/{}", task.id)) {
        h.insert("location", v);
    }
    if replay {
        h.insert("idempotent-replay", HeaderValue::from_static("true"));
    }
    Ok(resp)
}

async fn submit_and_stream(
    p: Arc<Pipeline>,
    ctx: RequestContext,
    headers: HeaderMap,
    raw_q: String,
    body: BodyResult,
) -> Result<Response, ApiError> {
    let q = Query::parse(&raw_q);
    q.only(&["max_events", "idle_timeout"])?;
    let spec_limits = stream_limits(&q)?;
    let submission = prepare(&p, &ctx, &headers, body).await?;
    let task = match p.submit(submission).await? {
        Submitted::Created(t) | Submitted::Replayed(t) => t,
    };
    let spec = StreamSpec {
        scope: Scope::Task(task.id),
        after: 0,
        max_events: spec_limits.0,
        idle_timeout: spec_limits.1,
    };
    Ok(sse_response(p, spec, Some(task.id)))
}

/// `max_events` and `idle_timeout` of a stream request.
pub fn stream_limits(q: &Query) -> Result<(Option<usize>, Option<std::time::Duration>), ApiError> {
    Ok((
        q.optional_bounded("max_events", 1_000_000)?,
        q.duration("idle_timeout", std::time::Duration::from_secs(24 * 3600))?,
    ))
}

/// An SSE response over `spec`.
pub fn sse_response(p: Arc<Pipeline>, spec: StreamSpec, task: Option<TaskId>) -> Response {
    let keepalive = p.config().events.keepalive;
    let s = stream::open(p, spec);
    let mut resp =
        warp::sse::reply(warp::sse::keep_alive().interval(keepalive).stream(s)).into_response();
    if let Some(id) = task {
        if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
            resp.headers_mut().insert("x-task-id", v);
        }
    }
    resp.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-cache"));
    resp
}

fn list_tasks(p: &Pipeline, raw: &str) -> Result<Response, ApiError> {
    let q = Query::parse(raw);
    q.only(&["state", "queue", "label", "cursor", "limit"])?;
    let limits = &p.config().tasks;
    let limit = q.bounded("limit", 50.min(limits.max_page_size), limits.max_page_size)?;
    let state = match q.get("state") {
        None => None,
        Some(s) => Some(StateKind::parse(s).ok_or_else(|| {
            let all: Vec<&str> = StateKind::ALL.iter().map(|k| k.as_str()).collect();
            ApiError::bad_request(format!(
                "unknown state {s:?}; expected one of {}",
                all.join(", ")
            ))
        })?),
    };
    let labels = q
        .all("label")
        .into_iter()
        .map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| {
                    ApiError::bad_request(format!("label filters are key:value, got {l:?}"))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let cursor = match q.get("cursor") {
        None => None,
        Some(c) => Some(
            TaskId::parse(c).map_err(|_| ApiError::bad_request(format!("invalid cursor {c:?}")))?,
        ),
    };
    let filter = TaskFilter {
        state,
        queue: q.get("queue").map(str::to_string),
        labels,
    };
    let page = p.list_tasks(&filter, cursor, limit)?;
    Ok(json_reply(
        StatusCode::OK,
        &json!({
            "tasks": page.items.iter().map(task_summary).collect::<Vec<_>>(),
            "next_cursor": page.next_cursor,
        }),
    ))
}

/// A task with its runs and its last `n` events.
pub fn task_with_history(p: &Pipeline, task: &TaskRecord, n: usize) -> Result<Value, ApiError> {
    let (events, truncated) = p.recent_events(task.id, n)?;
    let runs = p.runs_of(task)?;
    let mut v = task_json(task);
    v["runs"] = runs.iter().map(run_json).collect::<Vec<_>>().into();
    v["events"] = events
        .iter()
        .map(|e| json!(e.envelope()))
        .collect::<Vec<_>>()
        .into();
    v["events_truncated"] = truncated.into();
    Ok(v)
}

fn get_task(p: &Pipeline, id: &str, raw: &str) -> Result<Response, ApiError> {
    let q = Query::parse(raw);
    q.only(&["events"])?;
    let limits = &p.config().tasks;
    let n = match q.get("events") {
        None => limits.default_event_history,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n <= limits.max_event_history => n,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "events must be an integer from 0 to {}, got {v:?}",
                    limits.max_event_history
                )))
            }
        },
    };
    let task = p.task(task_id(id)?)?;
    Ok(json_reply(StatusCode::OK, &task_with_history(p, &task, n)?))
}

fn task_events(
    p: Arc<Pipeline>,
    id: &str,
    last: Option<String>,
    raw: &str,
) -> Result<Response, ApiError> {
    let q = Query::parse(raw);
    q.only(&["max_events", "idle_timeout", "last_event_id"])?;
    let id = task_id(id)?;
    p.task(id)?;
    let (max_events, idle_timeout) = stream_limits(&q)?;
    let after = resume_point(last.as_deref().or(q.get("last_event_id")))?;
    let spec = StreamSpec {
        scope: Scope::Task(id),
        after,
        max_events,
        idle_timeout,
    };
    Ok(sse_response(p, spec, Some(id)))
}

/// Parses `Last-Event-ID` (16 hex digits, or decimal).
pub fn resume_point(last: Option<&str>) -> Result<u64, ApiError> {
    match last {
        None => Ok(0),
        Some(s) => crate::events::parse_event_id(s).ok_or_else(|| {
            ApiError::bad_request(format!(
                "Last-Event-ID {s:?} is not an event id (16 hex digits)"
            ))
        }),
    }
}

fn dossier(p: &Pipeline, id: &str) -> Result<Response, ApiError> {
    let task = p.task(task_id(id)?)?;
    let mut v = task_with_history(p, &task, DOSSIER_MAX_EVENTS)?;
    v["schema"] = "forgeline.dossier.v1".into();
    let mut resp = json_reply(StatusCode::OK, &v);
    if let Ok(h) = HeaderValue::from_str(&format!("attachment; filename=\"task-{}.json\"", task.id))
    {
        resp.headers_mut().insert("content-disposition", h);
    }
    Ok(resp)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelBody {
    reason: Option<String>,
}

async fn cancel_task(
    p: Arc<Pipeline>,
    ctx: RequestContext,
    id: String,
    body: BodyResult,
) -> Result<Response, ApiError> {
    let id = task_id(&id)?;
    let body: CancelBody = parse_json_or_default(&body?)?;
    if body.reason.as_ref().is_some_and(|r| r.len() > 1024) {
        return Err(ApiError::invalid("reason", "reason is at most 1024 bytes"));
    }
    let task = p.cancel(id, &ctx.principal, body.reason).await?;
    Ok(json_reply(StatusCode::OK, &task_json(&task)))
}

fn get_run(p: &Pipeline, id: &str) -> Result<Response, ApiError> {
    let run_id =
        RunId::parse(id).map_err(|e| ApiError::new(StatusCode::NOT_FOUND, "not_found", e.0))?;
    let run = p.run(run_id)?;
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let batch = p.task_events_after(run.task_id, after, 1000)?;
        let Some(last) = batch.last() else { break };
        after = last.id;
        events.extend(
            batch
                .into_iter()
                .filter(|e| e.run_id == Some(run_id))
                .map(|e| json!(e.envelope())),
        );
        if events.len() >= DOSSIER_MAX_EVENTS {
            break;
        }
    }
    let mut v = run_json(&run);
    v["events"] = events.into();
    Ok(json_reply(StatusCode::OK, &v))
}
