//! The one place errors become HTTP responses:
//! `{"error": {"code", "message", "request_id", "details"?}}`.

use std::convert::Infallible;

use serde_json::{json, Value};
use warp::http::{HeaderValue, StatusCode};
use warp::reply::Response;
use warp::Reply;

use super::context::current_request_id;
use crate::pipeline::PipelineError;
use crate::store::StoreError;

/// An error response.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status (the `code` below says why, in more detail).
    pub status: StatusCode,
    /// Machine-readable code.
    pub code: &'static str,
    /// Human-readable message (never internals).
    pub message: String,
    /// Extra structured detail.
    pub details: Option<Value>,
    /// `WWW-Authenticate` for 401s.
    pub www_authenticate: Option<HeaderValue>,
}

impl ApiError {
    /// An error with no details.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: None,
            www_authenticate: None,
        }
    }

    /// Adds the `details` object (the field, policy or hash the error is about).
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// 400 for a query string or header that does not parse.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 422 on one field.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
            .with_details(json!({"field": field}))
    }

    /// Renders the response, stamped with the current request id. The
    /// message is redacted: parse errors can quote what the client sent.
    pub fn into_response(self) -> Response {
        let mut body = json!({
            "code": self.code,
            "message": crate::redact::redact(&self.message),
            "request_id": current_request_id(),
        });
        if let Some(d) = self.details {
            body["details"] = d;
        }
        let mut resp =
            warp::reply::with_status(warp::reply::json(&json!({"error": body})), self.status)
                .into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert("retry-after", HeaderValue::from_static("1"));
        }
        if let Some(v) = self.www_authenticate {
            resp.headers_mut().insert("www-authenticate", v);
        }
        resp
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        PipelineError::from(e).into()
    }
}

impl From<PipelineError> for ApiError {
    fn from(e: PipelineError) -> Self {
        match e {
            PipelineError::NotFound { what, id } => ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no {what} with id {id:?}"),
            ),
            PipelineError::Gone { id } => ApiError::new(
                StatusCode::NOT_FOUND,
                "gone",
                format!(
                    "task {id:?} is not in the store: it finished and was removed by retention \
                     (see [retention] in the server's configuration)"
                ),
            )
            .with_details(json!({"reason": "gone", "id": id})),
            PipelineError::Invalid { field, message } => {
                let err = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message);
                match field {
                    Some(f) => err.with_details(json!({"field": f})),
                    None => err,
                }
            }
            PipelineError::TooLarge { message } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
            }
            PipelineError::Blocked {
                policy,
                stage,
                message,
            } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "guardrail_blocked",
                message,
            )
            .with_details(json!({"policy": policy, "stage": stage})),
            PipelineError::Forbidden { message } => {
                ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
            }
            PipelineError::Conflict { code, message } => {
                ApiError::new(StatusCode::CONFLICT, code, message)
            }
            PipelineError::StaleDossier {
                message,
                current_hash,
            } => ApiError::new(StatusCode::CONFLICT, "stale_dossier", message)
                .with_details(json!({"current_hash": current_hash})),
            PipelineError::StaleLease { message } => {
                ApiError::new(StatusCode::CONFLICT, "stale_lease", message)
            }
            PipelineError::Store(e @ (StoreError::NoSpace { .. } | StoreError::Stalled { .. })) => {
                // Logged by the store (a reserve crossing, a stalled round),
                // not per request.
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    e.to_string(),
                )
            }
            PipelineError::Store(e) => {
                tracing::error!(error = %e, "store error");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the store could not complete the request; retry",
                )
            }
        }
    }
}

/// Turns warp's own rejections (no route, wrong method, bad header) into the
/// same JSON errors.
pub async fn recover(r: warp::Rejection) -> Result<Response, Infallible> {
    let err = if r.is_not_found() {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
    } else if r.find::<warp::reject::MethodNotAllowed>().is_some() {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this route does not accept that method",
        )
    } else if let Some(e) = r.find::<warp::reject::InvalidHeader>() {
        ApiError::bad_request(e.to_string())
    } else if let Some(e) = r.find::<warp::reject::MissingHeader>() {
        ApiError::bad_request(e.to_string())
    } else if r.find::<warp::reject::PayloadTooLarge>().is_some() {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "request body too large",
        )
    } else {
        tracing::warn!(rejection = ?r, "unhandled rejection");
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the request could not be handled",
        )
    };
    Ok(err.into_response())
}
