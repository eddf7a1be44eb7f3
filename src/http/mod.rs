//! HTTP: the router, the request middleware, the error mapping, bodies and
//! query strings, and the health probes. Domain handlers live in their
//! domains (`tasks::routes`, `queue::routes`, `workers::routes`,
//! `events::routes`); this module assembles them.

pub mod body;
pub mod context;
pub mod error;
pub mod health;
pub mod query;
mod routes;
pub mod server;

use std::sync::Arc;

use warp::reply::Response;
use warp::{Filter, Reply};

pub use context::RequestContext;
pub use error::ApiError;
pub use health::Health;
pub use routes::router;

use crate::pipeline::Pipeline;

/// The route template a response answered, for metrics and logs (a bounded
/// label: templates, never raw paths).
#[derive(Debug, Clone, Copy)]
pub struct RouteTag(pub &'static str);

/// Turns a handler's result into a response tagged with its route.
pub fn respond<R: Reply>(route: &'static str, result: Result<R, ApiError>) -> Response {
    let mut resp = match result {
        Ok(r) => r.into_response(),
        Err(e) => e.into_response(),
    };
    resp.extensions_mut().insert(RouteTag(route));
    resp
}

/// A JSON reply with a status.
pub fn json_reply(status: warp::http::StatusCode, body: &serde_json::Value) -> Response {
    warp::reply::with_status(warp::reply::json(body), status).into_response()
}

/// Hands a clone of the pipeline to a handler.
pub fn with_pipeline(
    p: Arc<Pipeline>,
) -> impl Filter<Extract = (Arc<Pipeline>,), Error = std::convert::Infallible> + Clone {
    warp::any().map(move || p.clone())
}
