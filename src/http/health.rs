//! Health probes: live (the process answers), startup (store open and
//! reconciled), ready (store writable, executor alive, pool utilisation
//! below `executor.ready_max_utilization`, not draining).
//! No authentication and no rate limits apply to them.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Filter;

use super::{json_reply, respond, Api, ApiError};
use crate::auth::matrix::{HEALTH_LIVE, HEALTH_READY, HEALTH_STARTUP};

/// How long the readiness store probe may take before it counts as failed.
pub const STORE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Flags the probes read; set by the app as it starts and stops.
#[derive(Debug, Default)]
pub struct Health {
    /// Store opened and reconciliation done.
    pub started: AtomicBool,
    /// Shutdown has begun.
    pub draining: AtomicBool,
    /// Executor workers alive (0 when the executor is disabled).
    pub executor_workers: AtomicUsize,
    /// Whether the executor is expected to run.
    pub executor_enabled: AtomicBool,
    /// Executor workers running a task right now (shared with the pool).
    pub executor_busy: Arc<AtomicUsize>,
}

impl Health {
    /// Busy executor workers over live ones (0 when none run).
    pub fn pool_utilization(&self) -> f64 {
        let workers = self.executor_workers.load(Ordering::Acquire);
        if workers == 0 {
            return 0.0;
        }
        self.executor_busy.load(Ordering::Relaxed) as f64 / workers as f64
    }
}

fn check(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "fail"
    }
}

fn status(ok: bool) -> StatusCode {
    if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// `/health/live`, `/health/startup`, `/health/ready`.
pub fn routes(
    api: &Arc<Api>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let live = warp::path!("health" / "live").and(warp::get()).map(|| {
        let body = json!({"status": "ok"});
        respond(
            &HEALTH_LIVE,
            Ok::<_, ApiError>(json_reply(StatusCode::OK, &body)),
        )
    });
    let h = api.health.clone();
    let startup = warp::path!("health" / "startup")
        .and(warp::get())
        .map(move || {
            let ok = h.started.load(Ordering::Acquire);
            let body = json!({
                "status": check(ok),
                "checks": {"store_open": check(ok), "reconciliation": check(ok)},
            });
            respond(
                &HEALTH_STARTUP,
                Ok::<_, ApiError>(json_reply(status(ok), &body)),
            )
        });
    let api = api.clone();
    let ready = warp::path!("health" / "ready")
        .and(warp::get())
        .then(move || {
            let api = api.clone();
            async move {
                let (p, h) = (&api.pipeline, &api.health);
                let started = h.started.load(Ordering::Acquire);
                let draining = h.draining.load(Ordering::Acquire);
                let store_ok = matches!(
                    tokio::time::timeout(STORE_PROBE_TIMEOUT, p.store().probe_write()).await,
                    Ok(Ok(()))
                );
                let exec_enabled = h.executor_enabled.load(Ordering::Acquire);
                let exec_ok = !exec_enabled || h.executor_workers.load(Ordering::Acquire) > 0;
                let utilization = h.pool_utilization();
                let max_utilization = p.config().executor.ready_max_utilization;
                let pool_ok = !exec_enabled || utilization < max_utilization;
                let ok = started && !draining && store_ok && exec_ok && pool_ok;
                let body = json!({
                    "status": check(ok),
                    "durability": p.store().durability().as_str(),
                    "checks": {
                        "started": check(started),
                        "not_draining": check(!draining),
                        "store_writable": check(store_ok),
                        "executor": if exec_enabled { check(exec_ok) } else { "disabled" },
                        "pool_utilization": if exec_enabled { check(pool_ok) } else { "disabled" },
                    },
                    "pool": {
                        "utilization": utilization,
                        "max_utilization": max_utilization,
                        "busy": h.executor_busy.load(Ordering::Relaxed),
                        "workers": h.executor_workers.load(Ordering::Acquire),
                    },
                });
                respond(
                    &HEALTH_READY,
                    Ok::<_, ApiError>(json_reply(status(ok), &body)),
                )
            }
        });
    live.or(startup).unify().or(ready).unify()
}
