//! Building the server from a `Config`, and running it until a shutdown
//! future resolves.
//!
//! `App::build` opens the store and reconciles it; `App::run` takes a bound
//! listener (tests bind 127.0.0.1:0) and a shutdown future, so the same code
//! path serves `forgeline serve` and every integration test.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::audit::AuditKeys;
use crate::auth::{Authenticator, KeyError};
use crate::clock::{Clock, SystemClock};
use crate::config::{AuthMode, Config, MetricsAccess};
use crate::exec::Executor;
use crate::http::{self, Api, Health};
use crate::pipeline::{Pipeline, PipelineError};
use crate::ratelimit::RateLimiter;
use crate::store::{Store, StoreError};
use crate::telemetry::Metrics;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The store would not open.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Start-up reconciliation failed.
    #[error("reconciliation failed: {0}")]
    Reconcile(#[from] PipelineError),
    /// The JWT keys could not be loaded or created.
    #[error("authentication keys: {0}")]
    Keys(#[from] KeyError),
    /// An `OTEL_*` variable is invalid.
    #[error(transparent)]
    Traces(#[from] crate::telemetry::traces::TraceError),
    /// The workspace root could not be created.
    #[error("cannot create the workspace root {path}: {source}")]
    Workspace {
        /// The resolved root (`executor.workspace_root`, or `<data_dir>/workspace`).
        path: std::path::PathBuf,
        /// The error from creating it (only attempted when the executor is enabled).
        source: std::io::Error,
    },
}

/// Creates the built-in executor's workspace root when the executor runs.
fn make_workspace(config: &Config) -> Result<(), AppError> {
    if config.executor.enabled {
        let root = config.workspace_root();
        std::fs::create_dir_all(&root)
            .map_err(|source| AppError::Workspace { path: root, source })?;
    }
    Ok(())
}

/// Loads the audit MAC keys (generating them on the first start) and seals a
/// log that had none yet.
async fn open_audit_keys(config: &Config, store: &Store) -> Result<AuditKeys, AppError> {
    let path = crate::audit::key_path(config);
    // A sealed log whose key file is gone: a new key would make every signed
    // record look forged. Refuse, and say what to restore.
    let sealed = store.get::<crate::audit::Seal>(crate::store::keys::AUDIT_SEAL)?;
    if let (Some(seal), None) = (sealed, AuditKeys::load(&path)?) {
        return Err(KeyError::Invalid(format!(
            "the audit log is signed with key {} but the key file {} is missing; restore it              (or point audit.key_file at it) — a new key would leave every signed record unverifiable",
            seal.key_id,
            path.display()
        ))
        .into());
    }
    let (keys, created) = AuditKeys::load_or_create(&path)?;
    if created {
        tracing::warn!(path = %path.display(), "first start with an audit key: generated one; keep a copy of it (and of the chain head the log prints) outside the data dir");
    }
    if let Some((seal, commit)) = crate::audit::seal(store, &keys)? {
        store.wait_durable(commit).await?;
        tracing::info!(
            seq = seal.seq,
            key_id = seal.key_id,
            "audit log sealed: records from here on are signed"
        );
    }
    Ok(keys)
}

/// A built server, ready to run.
pub struct App {
    pipeline: Arc<Pipeline>,
    api: Arc<Api>,
    health: Arc<Health>,
    stop: CancellationToken,
    kill: CancellationToken,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("pipeline", &self.pipeline)
            .finish()
    }
}

impl App {
    /// Opens the store, reconciles leases left by a previous process, and
    /// prepares the pipeline (nothing is served yet).
    pub async fn build(config: Config) -> Result<App, AppError> {
        Self::build_with_clock(config, Arc::new(SystemClock)).await
    }

    /// `build` with a chosen clock (tests).
    pub async fn build_with_clock(config: Config, clock: Arc<dyn Clock>) -> Result<App, AppError> {
        let started = Instant::now();
        let config = Arc::new(config);
        let store = Store::open_with(&config.store.data_dir, config.store.options())?;
        make_workspace(&config)?;
        let audit_keys = open_audit_keys(&config, &store).await?;
        let stop = CancellationToken::new();
        let pipeline = Arc::new(
            Pipeline::new(
                store,
                clock,
                config.clone(),
                Metrics::new(),
                stop.clone(),
                audit_keys,
            )
            .with_traces(crate::telemetry::Traces::from_env()?),
        );
        let requeued = match pipeline.reconcile(pipeline.now()).await {
            // Starting below the free-space reserve: serve reads and probes
            // (readiness says not ready) rather than refuse to start; tasks
            // whose lease has a deadline are still requeued by the reaper once
            // writes are accepted, and the rest at the next start.
            Err(PipelineError::Store(e @ StoreError::NoSpace { .. })) => {
                tracing::error!(error = %e, "started without reconciling: below the free-space reserve");
                0
            }
            r => r?,
        };
        tracing::info!(
            requeued,
            data_dir = %config.store.data_dir.display(),
            durability = config.store.durability.as_str(),
            startup_ms = started.elapsed().as_millis() as u64,
            "store opened and reconciled; {requeued} task(s) left running without a live lease were requeued"
        );
        let health = Arc::new(Health::default());
        health
            .executor_enabled
            .store(config.executor.enabled, Ordering::Release);
        let (auth, admin_token) = Authenticator::from_config(&config, true)?;
        if let Some(path) = admin_token {
            // The path, never the token: logs get shipped to places tokens must not go.
            tracing::warn!(path = %path.display(), "first start: generated a JWT secret and wrote an admin token (all roles) to this file; use `forgeline token issue` to mint narrower tokens");
        }
        if config.auth.mode == AuthMode::None {
            tracing::warn!("auth.mode = \"none\": every request is accepted as `anonymous` with every role; this mode is for loopback development only");
        }
        let metrics_token = match config.metrics.access {
            MetricsAccess::Token => Some(
                std::fs::read_to_string(&config.metrics.token_file)
                    .map_err(|source| KeyError::Io {
                        path: config.metrics.token_file.clone(),
                        source,
                    })?
                    .trim()
                    .to_string(),
            ),
            _ => None,
        };
        let limiter = RateLimiter::new(
            pipeline.store().clone(),
            config.ratelimit.clone(),
            pipeline.clock.clone(),
        );
        let api = Arc::new(Api {
            pipeline: pipeline.clone(),
            auth,
            limiter,
            health: health.clone(),
            metrics_token,
        });
        Ok(App {
            pipeline,
            api,
            health,
            stop,
            kill: CancellationToken::new(),
        })
    }

    /// The pipeline (tests drive timers through it).
    pub fn pipeline(&self) -> &Arc<Pipeline> {
        &self.pipeline
    }

    /// Serves until `shutdown` resolves, then drains: readiness turns false,
    /// the listener closes, streams and long-polls end, open requests finish,
    /// running steps get until `server.shutdown_timeout` and are then killed
    /// (their leases go back to the queue), and the store is flushed.
    pub async fn run(self, listener: TcpListener, shutdown: impl Future<Output = ()> + Send) {
        let p = self.pipeline.clone();
        let cfg = p.config().clone();
        let timers = tokio::spawn(p.clone().run_timers());
        let pruner = tokio::spawn(p.clone().run_audit_pruning());
        let retention = tokio::spawn(p.clone().run_retention());
        let store_stats = tokio::spawn(p.clone().run_store_stats());
        let head_log = tokio::spawn(p.clone().run_audit_head_log());
        let executor_handles = if cfg.executor.enabled {
            let ex = Executor::new(
                p.clone(),
                self.stop.clone(),
                self.kill.clone(),
                self.health.executor_busy.clone(),
            );
            let hs = ex.spawn();
            self.health
                .executor_workers
                .store(hs.len(), Ordering::Release);
            hs
        } else {
            Vec::new()
        };
        self.health.started.store(true, Ordering::Release);
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "forgeline listening");
        }
        let health = self.health.clone();
        let stop = self.stop.clone();
        let signal = async move {
            shutdown.await;
            tracing::info!("shutdown: draining");
            health.draining.store(true, Ordering::Release);
            // Ends event streams and long-polls (so connections can close) and
            // stops the executor from taking new work.
            stop.cancel();
        };
        let drain = cfg.server.shutdown_timeout;
        let deadline = tokio::time::Instant::now() + drain;
        let service = warp::service(crate::api::router(self.api.clone()));
        http::server::serve(listener, service, p.clone(), signal, drain).await;
        let mut workers = futures_util::future::join_all(executor_handles);
        if tokio::time::timeout_at(deadline, &mut workers)
            .await
            .is_err()
        {
            tracing::warn!("steps still running at the shutdown timeout; killing them and releasing their leases");
            self.kill.cancel();
            workers.await;
        }
        self.health.executor_workers.store(0, Ordering::Release);
        let _ = timers.await;
        let _ = pruner.await;
        let _ = retention.await;
        // A statistics walk is read-only: it is not waited for.
        store_stats.abort();
        let _ = head_log.await;
        // The last commit round may be stuck on a disk that does not answer:
        // wait for it no longer than what is left of the drain time (at least
        // a second), then exit; what it held was never acknowledged.
        let left = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .max(std::time::Duration::from_secs(1));
        let store = p.store().clone();
        match tokio::task::spawn_blocking(move || store.close_within(left)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "final store flush failed"),
            Err(e) => tracing::error!(error = %e, "final store flush panicked"),
        }
        let exporter = p.clone();
        // The exporter's flush blocks (HTTP or gRPC round trips).
        let _ = tokio::task::spawn_blocking(move || exporter.traces().shutdown()).await;
        tracing::info!("shutdown complete");
    }
}
