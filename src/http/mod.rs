//! HTTP: the accept loop and request middleware, admission (authentication,
//! authorisation, rate limits), the router, bodies and query strings, the one
//! error mapping, and the health probes. Domain handlers live in their
//! domains (`tasks::routes`, `queue::routes`, `workers::routes`,
//! `events::routes`, `audit::routes`); this module assembles them.

pub mod body;
pub mod context;
pub mod endpoint;
pub mod error;
pub mod health;
pub mod query;
pub mod server;

use std::sync::Arc;

use warp::reply::Response;
use warp::Reply;

pub use context::RequestContext;
pub use endpoint::{endpoint, serve, Call};
pub use error::ApiError;
pub use health::Health;

use crate::auth::{Authenticator, Route};
use crate::pipeline::Pipeline;
use crate::ratelimit::RateLimiter;

/// Everything the routes need: the pipeline and the security layer.
pub struct Api {
    /// The shared core every handler reads and writes through.
    pub pipeline: Arc<Pipeline>,
    /// Verifies bearer tokens at admission, before any handler runs.
    pub auth: Authenticator,
    /// Token buckets per (principal, rate class), checked after authorisation.
    pub limiter: RateLimiter,
    /// The flags the health probes read (shared with the app, which sets them).
    pub health: Arc<Health>,
    /// The bearer token `/metrics` requires (`metrics.access = "token"`).
    pub metrics_token: Option<String>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").field("auth", &self.auth).finish()
    }
}

/// The route a response answered, for metrics, logs and the audit log (a
/// bounded label: templates, never raw paths).
#[derive(Debug, Clone, Copy)]
pub struct RouteTag(pub &'static Route);

/// Turns a handler's result into a response tagged with its route.
pub fn respond<R: Reply>(route: &'static Route, result: Result<R, ApiError>) -> Response {
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
