//! Batched worker results: `POST /api/v1/leases/complete` and
//! `POST /api/v1/leases/fail` finish many leases in one request.
//!
//! Each item is checked and written on its own (its lease, its fencing token,
//! its guardrails), exactly as the single-lease route would, and gets its own
//! status in the answer; one item's refusal does not undo another's result.
//! The answer is sent once every item's write is durable; if that last wait
//! fails, the whole call is a 503 and no item counts as acknowledged.
//! What the batch saves is per-request work: one authentication, one rate
//! limit token, one audit record, and one commit round (one sled batch, one
//! `fdatasync`) for every item, since the items' writes share the request's
//! write group (see `store/layers.rs`).

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Filter;

use super::views::task_json;
use crate::auth::matrix::{COMPLETE_MANY, FAIL_MANY};
use crate::http::body::parse_json;
use crate::http::{endpoint, json_reply, serve, Api, ApiError, Call};
use crate::model::LeaseId;
use crate::queue::Failure;

/// Most items in one batched call.
pub const MAX_BATCH_ITEMS: usize = 100;

/// The two batch routes.
pub fn routes(
    api: &Arc<Api>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let complete = warp::path!("api" / "v1" / "leases" / "complete")
        .and(warp::post())
        .and(endpoint(api, &COMPLETE_MANY))
        .then(|c| serve(&COMPLETE_MANY, c, complete_many));
    let fail = warp::path!("api" / "v1" / "leases" / "fail")
        .and(warp::post())
        .and(endpoint(api, &FAIL_MANY))
        .then(|c| serve(&FAIL_MANY, c, fail_many));
    complete.or(fail).unify()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CompleteItem {
    lease_id: String,
    token: u64,
    #[serde(default)]
    result: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FailItem {
    lease_id: String,
    token: u64,
    #[serde(default = "super::queue::yes")]
    retryable: bool,
    error: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch<T> {
    items: Vec<T>,
}

/// Parses the body and checks the item count.
async fn items<T: serde::de::DeserializeOwned>(c: &mut Call) -> Result<Vec<T>, ApiError> {
    c.query().only(&[])?;
    let b: Batch<T> = parse_json(&c.body().await?)?;
    if b.items.is_empty() || b.items.len() > MAX_BATCH_ITEMS {
        return Err(ApiError::invalid(
            "items",
            format!("send 1-{MAX_BATCH_ITEMS} items per call"),
        ));
    }
    Ok(b.items)
}

/// One item's answer: the task as the single-lease route returns it, or the
/// error it would have answered, with its status.
fn item_result(lease_id: &str, r: Result<crate::model::TaskRecord, ApiError>) -> Value {
    match r {
        Ok(task) => json!({"lease_id": lease_id, "status": 200, "task": task_json(&task)}),
        Err(e) => {
            let mut error = json!({"code": e.code, "message": crate::redact::redact(&e.message)});
            if let Some(d) = e.details {
                error["details"] = d;
            }
            json!({"lease_id": lease_id, "status": e.status.as_u16(), "error": error})
        }
    }
}

fn lease_id(raw: &str) -> Result<LeaseId, ApiError> {
    super::path_id(raw, LeaseId::parse)
}

async fn complete_many(mut c: Call) -> Result<Response, ApiError> {
    let items: Vec<CompleteItem> = items(&mut c).await?;
    let p = c.p().clone();
    let holder = Some(c.who.principal.as_str());
    let mut results = Vec::with_capacity(items.len());
    for item in items {
        let r = match lease_id(&item.lease_id) {
            Ok(id) => p
                .complete(id, item.token, holder, item.result)
                .await
                .map_err(ApiError::from),
            Err(e) => Err(e),
        };
        results.push(item_result(&item.lease_id, r));
    }
    Ok(json_reply(StatusCode::OK, &json!({"results": results})))
}

async fn fail_many(mut c: Call) -> Result<Response, ApiError> {
    let items: Vec<FailItem> = items(&mut c).await?;
    let p = c.p().clone();
    let holder = Some(c.who.principal.as_str());
    // A malformed item refuses the whole call, before anything is written.
    for (i, item) in items.iter().enumerate() {
        if item.error.is_empty() || item.error.len() > super::queue::MAX_ERROR_LEN {
            return Err(ApiError::invalid(
                &format!("items[{i}].error"),
                format!(
                    "items[{i}].error must be 1-{} bytes",
                    super::queue::MAX_ERROR_LEN
                ),
            ));
        }
    }
    let mut results = Vec::with_capacity(items.len());
    for item in items {
        let failure = Failure {
            retryable: item.retryable,
            error: item.error,
        };
        let r = match lease_id(&item.lease_id) {
            Ok(id) => p
                .fail(id, item.token, holder, failure)
                .await
                .map_err(ApiError::from),
            Err(e) => Err(e),
        };
        results.push(item_result(&item.lease_id, r));
    }
    Ok(json_reply(StatusCode::OK, &json!({"results": results})))
}
