//! `GET /api/v1/audit` and `GET /api/v1/audit/verify`.

use std::sync::Arc;

use serde_json::json;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Filter;

use super::views::record_json;
use crate::audit::{list, verify, AuditFilter};
use crate::auth::matrix::{AUDIT, AUDIT_VERIFY};
use crate::clock::parse_rfc3339;
use crate::http::{endpoint, json_reply, serve, Api, ApiError, Call};

/// The audit routes.
pub fn routes(
    api: &Arc<Api>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let records = warp::path!("api" / "v1" / "audit")
        .and(warp::get())
        .and(endpoint(api, &AUDIT))
        .then(|c| serve(&AUDIT, c, |c| async move { list_records(&c) }));
    let check = warp::path!("api" / "v1" / "audit" / "verify")
        .and(warp::get())
        .and(endpoint(api, &AUDIT_VERIFY))
        .then(|c| serve(&AUDIT_VERIFY, c, |c| async move { verify_chain(&c) }));
    records.or(check).unify()
}

fn time_param(q: &crate::http::query::Query, key: &str) -> Result<Option<u64>, ApiError> {
    match q.get(key) {
        None => Ok(None),
        Some(t) => parse_rfc3339(t).map(Some).ok_or_else(|| {
            ApiError::bad_request(format!("{key} must be an RFC 3339 time, got {t:?}"))
        }),
    }
}

fn list_records(c: &Call) -> Result<Response, ApiError> {
    let q = c.query();
    q.only(&["principal", "route", "since", "until", "cursor", "limit"])?;
    let max = c.p().config().tasks.max_page_size;
    let limit = q.bounded("limit", 50.min(max), max)?;
    let cursor = match q.get("cursor") {
        None => None,
        Some(v) => Some(
            v.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid cursor {v:?}")))?,
        ),
    };
    let filter = AuditFilter {
        principal: q.get("principal").map(str::to_string),
        route: q.get("route").map(str::to_string),
        since: time_param(&q, "since")?,
        until: time_param(&q, "until")?,
    };
    let (records, next) = list(c.p().store(), &filter, cursor, limit)
        .map_err(crate::pipeline::PipelineError::from)?;
    Ok(json_reply(
        StatusCode::OK,
        &json!({
            "records": records.iter().map(record_json).collect::<Vec<_>>(),
            "next_cursor": next.map(|n| n.to_string()),
        }),
    ))
}

fn verify_chain(c: &Call) -> Result<Response, ApiError> {
    let q = c.query();
    q.only(&["expect_head"])?;
    let expect_head = match q.get("expect_head") {
        None => None,
        Some(h) => Some(
            crate::audit::parse_head(h)
                .map_err(|e| ApiError::bad_request(format!("expect_head: {e}")))?,
        ),
    };
    let with = crate::audit::VerifyWith {
        keys: Some(c.p().audit_keys()),
        expect_head,
        now: c.p().now(),
    };
    let report = verify(c.p().store(), with).map_err(crate::pipeline::PipelineError::from)?;
    Ok(json_reply(StatusCode::OK, &json!(report)))
}
