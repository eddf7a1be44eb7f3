//! Task routes: submit (and submit-and-stream), read, list, cancel, dossier,
//! runs.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use warp::http::{HeaderValue, StatusCode};
use warp::reply::Response;
use warp::{Filter, Reply};

use super::views::{event_json, run_json, task_json, task_summary, withhold_content};
use crate::auth::matrix::{
    CANCEL_TASK, DOSSIER, GET_RUN, GET_TASK, LIST_TASKS, SUBMIT_AND_STREAM, SUBMIT_TASK,
    TASK_EVENTS,
};
use crate::auth::{Role, Sight};
use crate::events::{self, Scope, StreamSpec};
use crate::http::body::{parse_json, parse_json_or_default};
use crate::http::query::Query;
use crate::http::{endpoint, json_reply, serve, Api, ApiError, Call};
use crate::model::{RunId, StateKind, TaskId, TaskRecord};
use crate::pipeline::{Pipeline, PipelineError};
use crate::tasks::service::{Submission, Submitted, TaskFilter};
use crate::tasks::submit::{validate, SubmitRequest};

/// Longest accepted `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;
/// Most events a dossier includes.
pub const DOSSIER_MAX_EVENTS: usize = 100_000;

/// Every task route.
pub fn routes(
    api: &Arc<Api>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let submit = warp::path!("api" / "v1" / "tasks")
        .and(warp::post())
        .and(endpoint(api, &SUBMIT_TASK))
        .then(|c| serve(&SUBMIT_TASK, c, submit_task));
    let submit_stream = warp::path!("api" / "v1" / "tasks" / "stream")
        .and(warp::post())
        .and(endpoint(api, &SUBMIT_AND_STREAM))
        .then(|c| serve(&SUBMIT_AND_STREAM, c, submit_and_stream));
    let list = warp::path!("api" / "v1" / "tasks")
        .and(warp::get())
        .and(endpoint(api, &LIST_TASKS))
        .then(|c| serve(&LIST_TASKS, c, |c| async move { list_tasks(&c) }));
    // `/api/v1/tasks/stream` is a route of its own (POST): its path is no
    // task id, so a GET of it is 405 (with `Allow: POST`), not a 404 for a
    // malformed id.
    let get = warp::path!("api" / "v1" / "tasks" / String)
        .and_then(|id: String| async move {
            match id.as_str() {
                "stream" => Err(warp::reject::not_found()),
                _ => Ok(id),
            }
        })
        .and(warp::get())
        .and(endpoint(api, &GET_TASK))
        .then(|id: String, c| serve(&GET_TASK, c, move |c| async move { get_task(&c, &id) }));
    let events = warp::path!("api" / "v1" / "tasks" / String / "events")
        .and(warp::get())
        .and(endpoint(api, &TASK_EVENTS))
        .then(|id: String, c| {
            serve(
                &TASK_EVENTS,
                c,
                move |c| async move { task_events(&c, &id) },
            )
        });
    let dossier = warp::path!("api" / "v1" / "tasks" / String / "dossier")
        .and(warp::get())
        .and(endpoint(api, &DOSSIER))
        .then(|id: String, c| serve(&DOSSIER, c, move |c| async move { dossier(&c, &id) }));
    let cancel = warp::path!("api" / "v1" / "tasks" / String / "cancel")
        .and(warp::post())
        .and(endpoint(api, &CANCEL_TASK))
        .then(|id: String, c| serve(&CANCEL_TASK, c, move |c| cancel_task(c, id)));
    let run = warp::path!("api" / "v1" / "runs" / String)
        .and(warp::get())
        .and(endpoint(api, &GET_RUN))
        .then(|id: String, c| serve(&GET_RUN, c, move |c| async move { get_run(&c, &id) }));
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

/// Parses a task id from a path (a malformed one names no task: 404).
pub fn task_id(id: &str) -> Result<TaskId, ApiError> {
    super::path_id(id, TaskId::parse)
}

async fn prepare(c: &mut Call) -> Result<Submission, ApiError> {
    let body = c.body().await?;
    let idempotency = match c.headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let key = v
                .to_str()
                .ok()
                .filter(|k| {
                    !k.is_empty()
                        && k.len() <= MAX_IDEMPOTENCY_KEY_LEN
                        && k.bytes().all(|b| (0x21..0x7f).contains(&b))
                })
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_LEN} printable ASCII characters without spaces"
                    ))
                })?;
            Some((key.to_string(), Sha256::digest(&body).into()))
        }
    };
    let req: SubmitRequest = parse_json(&body)?;
    let task = validate(req, c.p().config(), c.p().now())?;
    Ok(Submission {
        principal: c.who.principal.clone(),
        idempotency,
        traceparent: Some(c.ctx.trace.traceparent()),
        task,
    })
}

async fn submit_task(mut c: Call) -> Result<Response, ApiError> {
    c.query().only(&[])?;
    let submission = prepare(&mut c).await?;
    let (status, task, replay) = match c.p().submit(submission).await? {
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

async fn submit_and_stream(mut c: Call) -> Result<Response, ApiError> {
    let q = c.query();
    q.only(&["max_events", "idle_timeout"])?;
    let (max_events, idle_timeout) = stream_limits(&q)?;
    let submission = prepare(&mut c).await?;
    let task = match c.p().submit(submission).await? {
        Submitted::Created(t) | Submitted::Replayed(t) => t,
    };
    let spec = StreamSpec {
        scope: Scope::Task(task.id),
        after: 0,
        max_events,
        idle_timeout,
        viewer: c.viewer(),
    };
    Ok(sse_response(c.p().clone(), spec, Some(task.id)))
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
    let s = events::open(p, spec);
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

fn list_tasks(c: &Call) -> Result<Response, ApiError> {
    let q = c.query();
    q.only(&["state", "queue", "label", "cursor", "limit"])?;
    let limits = &c.p().config().tasks;
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
    let viewer = c.viewer();
    let filter = TaskFilter {
        state,
        queue: q.get("queue").map(str::to_string),
        labels,
        submitted_by: (!viewer.sees_others()).then(|| viewer.principal().to_string()),
    };
    let page = c.p().list_tasks(&filter, cursor(&q)?, limit)?;
    Ok(json_reply(
        StatusCode::OK,
        &json!({
            "tasks": page.items.iter().map(task_summary).collect::<Vec<_>>(),
            "next_cursor": page.next_cursor,
        }),
    ))
}

/// The `cursor` query parameter (a task id).
pub fn cursor(q: &Query) -> Result<Option<TaskId>, ApiError> {
    match q.get("cursor") {
        None => Ok(None),
        Some(c) => TaskId::parse(c)
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("invalid cursor {c:?}"))),
    }
}

/// A task with its runs and its last `n` events, as `sight` shows it.
pub fn task_with_history(
    p: &Pipeline,
    task: &TaskRecord,
    n: usize,
    sight: Sight,
) -> Result<Value, ApiError> {
    let (events, truncated) = p.recent_events(task.id, n)?;
    let runs = p.runs_of(task)?;
    let mut v = task_json(task);
    v["runs"] = runs.iter().map(run_json).collect::<Vec<_>>().into();
    v["events"] = events
        .iter()
        .map(|e| event_json(e, sight))
        .collect::<Vec<_>>()
        .into();
    v["events_truncated"] = truncated.into();
    v["guardrails"] = p
        .guardrail_decisions(task.id)?
        .iter()
        .map(|d| json!({"run_id": d.run_id.map(|r| r.to_string()), "at": crate::clock::format_rfc3339(d.at), "decision": d.decision}))
        .collect::<Vec<_>>()
        .into();
    let now = p.now();
    v["reviews"] = p
        .tickets_of(task.id)?
        .iter()
        .map(|t| super::views::ticket_json(t, now))
        .collect::<Vec<_>>()
        .into();
    if sight == Sight::Metadata {
        withhold_content(&mut v);
    }
    Ok(v)
}

fn get_task(c: &Call, id: &str) -> Result<Response, ApiError> {
    let q = c.query();
    q.only(&["events"])?;
    let limits = &c.p().config().tasks;
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
    let (task, sight) = c.visible_task(task_id(id)?)?;
    Ok(json_reply(
        StatusCode::OK,
        &task_with_history(c.p(), &task, n, sight)?,
    ))
}

fn task_events(c: &Call, id: &str) -> Result<Response, ApiError> {
    let q = c.query();
    q.only(&["max_events", "idle_timeout", "last_event_id"])?;
    let id = task_id(id)?;
    c.visible_task(id)?;
    let (max_events, idle_timeout) = stream_limits(&q)?;
    let last = c.headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let spec = StreamSpec {
        scope: Scope::Task(id),
        after: resume_point(c.p(), last.or(q.get("last_event_id")))?,
        max_events,
        idle_timeout,
        viewer: c.viewer(),
    };
    Ok(sse_response(c.p().clone(), spec, Some(id)))
}

/// Parses `Last-Event-ID` (16 hex digits, or decimal; `now`: after the
/// newest durable event, so the stream carries only what happens next).
pub fn resume_point(p: &Pipeline, last: Option<&str>) -> Result<u64, ApiError> {
    match last {
        None => Ok(0),
        Some(s) if s.trim() == "now" => Ok(p.store().durable().borrow().event_id),
        Some(s) => crate::model::parse_event_id(s).ok_or_else(|| {
            ApiError::bad_request(format!(
                "Last-Event-ID {s:?} is not an event id (16 hex digits) or `now`"
            ))
        }),
    }
}

fn dossier(c: &Call, id: &str) -> Result<Response, ApiError> {
    c.query().only(&[])?;
    let (task, sight) = c.visible_task(task_id(id)?)?;
    let mut v = task_with_history(c.p(), &task, DOSSIER_MAX_EVENTS, sight)?;
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

async fn cancel_task(mut c: Call, id: String) -> Result<Response, ApiError> {
    c.query().only(&[])?;
    let id = task_id(&id)?;
    let body: CancelBody = parse_json_or_default(&c.body().await?)?;
    if body.reason.as_ref().is_some_and(|r| r.len() > 1024) {
        return Err(ApiError::invalid("reason", "reason is at most 1024 bytes"));
    }
    let (task, _) = c.visible_task(id)?;
    if !c.has(Role::ReviewAdmin) && task.submitted_by != c.who.principal {
        return Err(PipelineError::Forbidden {
            message: format!(
                "task {id} was submitted by someone else; only review_admin may cancel it"
            ),
        }
        .into());
    }
    let task = c.p().cancel(id, &c.who.principal, body.reason).await?;
    Ok(json_reply(StatusCode::OK, &task_json(&task)))
}

fn get_run(c: &Call, id: &str) -> Result<Response, ApiError> {
    c.query().only(&[])?;
    let run_id =
        RunId::parse(id).map_err(|e| ApiError::new(StatusCode::NOT_FOUND, "not_found", e.0))?;
    let run = c.p().run(run_id)?;
    let sight = match c.visible_task(run.task_id) {
        Ok((_, sight)) => sight,
        Err(_) => return Err(PipelineError::not_found("run", run_id).into()),
    };
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let batch = c.p().task_events_after(run.task_id, after, 1000)?;
        let Some(last) = batch.last() else { break };
        after = last.id;
        events.extend(
            batch
                .into_iter()
                .filter(|e| e.run_id == Some(run_id))
                .map(|e| event_json(&e, sight)),
        );
        if events.len() >= DOSSIER_MAX_EVENTS {
            break;
        }
    }
    let mut v = run_json(&run);
    v["events"] = events.into();
    v["guardrails"] = c
        .p()
        .guardrail_decisions(run.task_id)?
        .iter()
        .filter(|d| d.run_id == Some(run_id))
        .map(|d| json!(d.decision))
        .collect::<Vec<_>>()
        .into();
    if sight == Sight::Metadata {
        withhold_content(&mut v);
    }
    Ok(json_reply(StatusCode::OK, &v))
}
