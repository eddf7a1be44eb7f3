//! Review routes: list, metrics, one ticket, claim, release, assign, decision.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Filter;

use super::views::{run_json, task_json};
use super::views::{task_brief, ticket_json};
use crate::auth::matrix::{
    ASSIGN_REVIEW, CLAIM_REVIEW, DECIDE_REVIEW, GET_REVIEW, LIST_REVIEWS, RELEASE_REVIEW,
    REVIEW_METRICS,
};
use crate::auth::Role;
use crate::http::body::{parse_json, parse_json_or_default};
use crate::http::context::note;
use crate::http::query::Query;
use crate::http::{endpoint, json_reply, serve, Api, ApiError, Call};
use crate::model::{Outcome, Ticket, TicketId, TicketState};
use crate::reviews::MAX_COMMENT_LEN;
use crate::store::keys;

/// Longest metrics window.
pub const MAX_WINDOW: Duration = Duration::from_secs(90 * 24 * 3600);

/// Every review route.
pub fn routes(
    api: &Arc<Api>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let list = warp::path!("api" / "v1" / "reviews")
        .and(warp::get())
        .and(endpoint(api, &LIST_REVIEWS))
        .then(|c| serve(&LIST_REVIEWS, c, |c| async move { list(&c) }));
    let metrics = warp::path!("api" / "v1" / "reviews" / "metrics")
        .and(warp::get())
        .and(endpoint(api, &REVIEW_METRICS))
        .then(|c| serve(&REVIEW_METRICS, c, |c| async move { metrics(&c) }));
    let get = warp::path!("api" / "v1" / "reviews" / String)
        .and(warp::get())
        .and(endpoint(api, &GET_REVIEW))
        .then(|id: String, c| serve(&GET_REVIEW, c, move |c| async move { get(&c, &id) }));
    let claim = warp::path!("api" / "v1" / "reviews" / String / "claim")
        .and(warp::post())
        .and(endpoint(api, &CLAIM_REVIEW))
        .then(|id: String, c| serve(&CLAIM_REVIEW, c, move |c| claim(c, id)));
    let release = warp::path!("api" / "v1" / "reviews" / String / "release")
        .and(warp::post())
        .and(endpoint(api, &RELEASE_REVIEW))
        .then(|id: String, c| serve(&RELEASE_REVIEW, c, move |c| release(c, id)));
    let assign = warp::path!("api" / "v1" / "reviews" / String / "assign")
        .and(warp::post())
        .and(endpoint(api, &ASSIGN_REVIEW))
        .then(|id: String, c| serve(&ASSIGN_REVIEW, c, move |c| assign(c, id)));
    let decide = warp::path!("api" / "v1" / "reviews" / String / "decision")
        .and(warp::post())
        .and(endpoint(api, &DECIDE_REVIEW))
        .then(|id: String, c| serve(&DECIDE_REVIEW, c, move |c| decide(c, id)));
    // `metrics` before `{id}`: both are one segment after /reviews.
    list.or(metrics)
        .unify()
        .or(get)
        .unify()
        .or(claim)
        .unify()
        .or(release)
        .unify()
        .or(assign)
        .unify()
        .or(decide)
        .unify()
}

fn ticket_id(id: &str) -> Result<TicketId, ApiError> {
    super::path_id(id, TicketId::parse)
}

/// `min_age`, `window`: a duration such as `30m`.
fn duration_param(
    q: &Query,
    key: &str,
    default: Option<Duration>,
) -> Result<Option<Duration>, ApiError> {
    Ok(q.duration(key, MAX_WINDOW)?.or(default))
}

/// The `state` values `GET /api/v1/reviews` accepts: `pending` (open,
/// claimed or assigned) and each ticket state.
const STATES: [&str; 7] = [
    "pending",
    "open",
    "claimed",
    "assigned",
    "decided",
    "expired",
    "cancelled",
];

/// The checked query of `GET /api/v1/reviews`.
struct ListFilter<'q> {
    /// Page size, at most `tasks.max_page_size`.
    limit: usize,
    /// One of [`STATES`].
    state: Option<&'q str>,
    queue: Option<&'q str>,
    /// Tickets this reviewer holds or has voted on.
    reviewer: Option<&'q str>,
    /// Tickets the caller holds.
    mine: bool,
    /// Open tickets only.
    unassigned: bool,
    /// Tickets opened at least this long ago.
    min_age: Option<Duration>,
    /// Tickets after this one (ids grow with time).
    cursor: Option<TicketId>,
}

impl ListFilter<'_> {
    /// Whether only pending tickets can match: then the pending index is
    /// read instead of scanning every ticket.
    fn pending_only(&self) -> bool {
        self.mine
            || self.unassigned
            || matches!(
                self.state,
                None | Some("pending" | "open" | "claimed" | "assigned")
            )
    }

    /// Whether `t` passes every filter, for caller `me` at `now` (Unix ms).
    fn admits(&self, t: &Ticket, me: &str, now: u64) -> bool {
        let pending_only = self.pending_only();
        self.cursor.is_none_or(|cur| t.id > cur)
            && match self.state {
                None | Some("pending") => t.state.pending() || !pending_only,
                Some(s) => t.state.as_str() == s,
            }
            && self.queue.is_none_or(|qn| t.queue.as_str() == qn)
            && self
                .reviewer
                .is_none_or(|r| t.state.holder() == Some(r) || t.votes.iter().any(|v| v.by == r))
            && (!self.mine || t.state.holder() == Some(me))
            && (!self.unassigned || t.state == TicketState::Open)
            && self
                .min_age
                .is_none_or(|m| now.saturating_sub(t.created_at) >= m.as_millis() as u64)
    }
}

/// Checks the list query; errors name the first bad parameter.
fn list_filter<'q>(c: &Call, q: &'q Query) -> Result<ListFilter<'q>, ApiError> {
    q.only(&[
        "state",
        "queue",
        "reviewer",
        "mine",
        "unassigned",
        "min_age",
        "cursor",
        "limit",
    ])?;
    let max = c.p().config().tasks.max_page_size;
    let limit = q.bounded("limit", 50.min(max), max)?;
    let flag = |k: &str| -> Result<bool, ApiError> {
        match q.get(k) {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(v) => Err(ApiError::bad_request(format!(
                "{k} must be true or false, got {v:?}"
            ))),
        }
    };
    let (mine, unassigned) = (flag("mine")?, flag("unassigned")?);
    let state = q.get("state");
    if let Some(s) = state {
        if !STATES.contains(&s) {
            return Err(ApiError::bad_request(format!(
                "unknown state {s:?}; expected one of {}",
                STATES.join(", ")
            )));
        }
    }
    let min_age = duration_param(q, "min_age", None)?;
    let cursor = match q.get("cursor") {
        None => None,
        Some(v) => Some(
            TicketId::parse(v)
                .map_err(|_| ApiError::bad_request(format!("invalid cursor {v:?}")))?,
        ),
    };
    Ok(ListFilter {
        limit,
        state,
        queue: q.get("queue"),
        reviewer: q.get("reviewer"),
        mine,
        unassigned,
        min_age,
        cursor,
    })
}

/// The tickets `f` admits, in id order (at most one past the page, so the
/// caller can tell whether there is more).
fn select(c: &Call, f: &ListFilter<'_>, now: u64) -> Result<Vec<Ticket>, ApiError> {
    let candidates: Vec<Ticket> = if f.pending_only() {
        c.p().pending_tickets()?
    } else {
        let after = f.cursor.map(|id| keys::ticket(&id.to_bytes()));
        c.p()
            .store()
            .scan::<Ticket>(
                &[keys::TICKET],
                after.as_deref(),
                crate::tasks::service::LIST_SCAN_BUDGET,
            )?
            .into_iter()
            .map(|(_, t)| t)
            .collect()
    };
    let me = c.who.principal.as_str();
    let mut tickets: Vec<Ticket> = candidates
        .into_iter()
        .filter(|t| f.admits(t, me, now))
        .collect();
    tickets.sort_by_key(|t| t.id);
    Ok(tickets)
}

/// One page of `tickets` (already in id order) and its `next_cursor`.
fn render(mut tickets: Vec<Ticket>, limit: usize, now: u64) -> Response {
    let more = tickets.len() > limit;
    tickets.truncate(limit);
    let next = if more {
        tickets.last().map(|t| t.id.to_string())
    } else {
        None
    };
    json_reply(
        StatusCode::OK,
        &json!({
            "reviews": tickets.iter().map(|t| ticket_json(t, now)).collect::<Vec<_>>(),
            "next_cursor": next,
        }),
    )
}

fn list(c: &Call) -> Result<Response, ApiError> {
    let q = c.query();
    let f = list_filter(c, &q)?;
    let now = c.p().now();
    let tickets = select(c, &f, now)?;
    Ok(render(tickets, f.limit, now))
}

fn metrics(c: &Call) -> Result<Response, ApiError> {
    let q = c.query();
    q.only(&["window"])?;
    let window =
        duration_param(&q, "window", Some(Duration::from_secs(24 * 3600)))?.unwrap_or_default();
    if window < Duration::from_secs(60) {
        return Err(ApiError::bad_request("window must be at least 1m"));
    }
    Ok(json_reply(StatusCode::OK, &c.p().review_metrics(window)?))
}

fn get(c: &Call, id: &str) -> Result<Response, ApiError> {
    c.query().only(&[])?;
    let t = c.p().ticket(ticket_id(id)?)?;
    let task = c.p().task(t.task_id)?;
    let run = c.p().run(t.run_id)?;
    let decisions = c.p().guardrail_decisions(task.id)?;
    let hash = c.p().current_dossier_hash(&t)?;
    let mut v = ticket_json(&t, c.p().now());
    v["task"] = task_brief(&task);
    v["dossier"] = json!({
        "dossier_hash": hex::encode(hash),
        "changed_since_opened": hash != t.dossier_hash,
        "task": task_json(&task),
        "run": run_json(&run),
        "guardrails": decisions.iter().map(|d| json!(d.decision)).collect::<Vec<_>>(),
    });
    Ok(json_reply(StatusCode::OK, &v))
}

async fn claim(mut c: Call, id: String) -> Result<Response, ApiError> {
    c.query().only(&[])?;
    let _: serde_json::Value = parse_json_or_default(&c.body().await?)?;
    let t = c.p().claim(ticket_id(&id)?, &c.who.principal).await?;
    Ok(json_reply(StatusCode::OK, &ticket_json(&t, c.p().now())))
}

async fn release(mut c: Call, id: String) -> Result<Response, ApiError> {
    c.query().only(&[])?;
    let _: serde_json::Value = parse_json_or_default(&c.body().await?)?;
    let admin = c.has(Role::ReviewAdmin);
    let t = c
        .p()
        .release_ticket(ticket_id(&id)?, &c.who.principal, admin)
        .await?;
    Ok(json_reply(StatusCode::OK, &ticket_json(&t, c.p().now())))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AssignBody {
    reviewer: String,
}

async fn assign(mut c: Call, id: String) -> Result<Response, ApiError> {
    c.query().only(&[])?;
    let b: AssignBody = parse_json(&c.body().await?)?;
    if b.reviewer.is_empty() || b.reviewer.len() > crate::auth::jwt::MAX_PRINCIPAL_LEN {
        return Err(ApiError::invalid(
            "reviewer",
            "reviewer must be a principal (1-256 characters)",
        ));
    }
    let t = c
        .p()
        .assign(ticket_id(&id)?, &b.reviewer, &c.who.principal)
        .await?;
    Ok(json_reply(StatusCode::OK, &ticket_json(&t, c.p().now())))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    outcome: String,
    #[serde(default)]
    comment: Option<String>,
    dossier_hash: String,
}

async fn decide(mut c: Call, id: String) -> Result<Response, ApiError> {
    c.query().only(&[])?;
    let b: DecisionBody = parse_json(&c.body().await?)?;
    let outcome = Outcome::parse(&b.outcome).ok_or_else(|| {
        ApiError::invalid(
            "outcome",
            "outcome must be approved, rejected or changes_requested",
        )
    })?;
    if b.comment
        .as_ref()
        .is_some_and(|c| c.len() > MAX_COMMENT_LEN)
    {
        return Err(ApiError::invalid(
            "comment",
            format!("comment is at most {MAX_COMMENT_LEN} bytes"),
        ));
    }
    if outcome == Outcome::ChangesRequested
        && b.comment.as_deref().is_none_or(|c| c.trim().is_empty())
    {
        return Err(ApiError::invalid(
            "comment",
            "changes_requested needs a comment saying what to change",
        ));
    }
    let seen: [u8; 32] = hex::decode(&b.dossier_hash)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| {
            ApiError::invalid(
                "dossier_hash",
                "dossier_hash is the 64 hex digits of the dossier you reviewed",
            )
        })?;
    let id = ticket_id(&id)?;
    let admin = c.has(Role::ReviewAdmin);
    note(|n| n.detail = Some(format!("review {id} {}", outcome.as_str())));
    let t = c
        .p()
        .decide(id, &c.who.principal, admin, outcome, b.comment, seen)
        .await?;
    Ok(json_reply(StatusCode::OK, &ticket_json(&t, c.p().now())))
}
