//! The server a bench run measures: one it starts itself in a temporary
//! directory (the default), or one already running at `--url`.
//!
//! A spawned server is this same executable running `serve` on
//! 127.0.0.1:0, with a fresh store, rate limits off (the bench is one
//! principal sending thousands of requests a second), the executor off (the
//! bench is the worker) except on the steps measurement's own queue, and no
//! configuration from the caller's environment: `FORGELINE_*` variables are
//! removed and it runs in the temporary directory, whose only
//! `forgeline.toml` is the steps measurement's (see `steps`). `OTEL_*` variables pass
//! through, to measure with an exporter on.

use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::app::App;
use crate::config::Config;
use crate::store::Durability;
use crate::tasks::submit::{validate, SubmitRequest};
use crate::tasks::Submission;

use super::client::{BenchClient, BenchError};

/// How long a spawned server may take to listen and turn ready. Generous:
/// a store with a million tasks is opened and reconciled first.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a spawned server may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(40);
/// Queue the preloaded tasks wait on (nobody leases it).
pub const BACKLOG_QUEUE: &str = "bench-backlog";
/// Concurrent in-process submitters while preloading.
const PRELOAD_CONCURRENCY: usize = 16;

/// What server to measure.
#[derive(Debug, Clone)]
pub struct TargetOptions {
    /// An already running server; `None` starts one.
    pub url: Option<String>,
    /// Bearer token for `url` (a spawned server's admin token is used otherwise).
    pub token: Option<String>,
    /// Durability of a spawned server.
    pub durability: Durability,
    /// Tasks to load into a spawned server's store before it starts.
    pub stored: u64,
    /// Keep a spawned server's directory (store and `server.log`).
    pub keep_dir: bool,
    /// Run a spawned server's executor on the steps measurement's queue.
    pub steps_executor: bool,
}

/// A server being measured.
#[derive(Debug)]
pub struct Target {
    /// Client for it.
    pub client: BenchClient,
    /// Present when the bench started the server.
    pub spawned: Option<Spawned>,
}

/// A server the bench started, and what it measured while starting it.
#[derive(Debug)]
pub struct Spawned {
    child: Child,
    /// The temporary directory holding its store and log; removed on drop
    /// unless `stop` was asked to keep it.
    dir: Option<tempfile::TempDir>,
    /// Keep `dir` even when the run ends early.
    keep: bool,
    /// From spawn to the first 200 on `/health/ready`.
    pub start_to_ready: Duration,
    /// Resident memory once ready.
    pub idle_rss: Option<u64>,
}

impl Target {
    /// Connects to `--url`, or starts a server (preloading `stored` tasks).
    pub async fn open(opts: &TargetOptions, progress: &dyn Fn(&str)) -> Result<Target, BenchError> {
        if let Some(url) = &opts.url {
            let client = BenchClient::new(url, opts.token.as_deref())?;
            return Ok(Target {
                client,
                spawned: None,
            });
        }
        let dir = tempfile::Builder::new()
            .prefix("forgeline-bench-")
            .tempdir()
            .map_err(|e| BenchError::Target(format!("cannot create a temporary directory: {e}")))?;
        let data = dir.path().join("data");
        if opts.stored > 0 {
            preload(&data, opts.stored, progress).await?;
        }
        progress("starting the server");
        let log_path = dir.path().join("server.log");
        let log = std::fs::File::create(&log_path).map_err(|e| {
            BenchError::Target(format!("cannot create {}: {e}", log_path.display()))
        })?;
        let mut cmd = server_command(opts, &data, dir.path(), log)?;
        let started = Instant::now();
        let child = cmd
            .spawn()
            .map_err(|e| BenchError::Target(format!("cannot start `forgeline serve`: {e}")))?;
        let mut spawned = Spawned {
            child,
            dir: Some(dir),
            keep: opts.keep_dir,
            start_to_ready: Duration::ZERO,
            idle_rss: None,
        };
        let addr = spawned.wait_for_address(&log_path, started).await?;
        let token = std::fs::read_to_string(data.join("admin-token"))
            .map_err(|e| BenchError::Target(format!("the server wrote no admin token: {e}")))?;
        let client = BenchClient::new(&format!("http://{addr}"), Some(token.trim()))?;
        loop {
            if let Ok((s, _)) = client.get_json_any("/health/ready").await {
                if s.is_success() {
                    break;
                }
            }
            spawned.check_alive(&log_path)?;
            if started.elapsed() > START_TIMEOUT {
                return Err(BenchError::Target(format!(
                    "the server did not turn ready within {START_TIMEOUT:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        spawned.start_to_ready = started.elapsed();
        spawned.idle_rss = spawned.rss("VmRSS");
        Ok(Target {
            client,
            spawned: Some(spawned),
        })
    }
}

/// `forgeline serve` on port 0 over `data`, in a clean environment: no
/// `FORGELINE_*` setting of the caller leaks in, the executor and rate limits
/// are off (the bench measures the pipeline, not the limits), and the server
/// dies with the bench.
fn server_command(
    opts: &TargetOptions,
    data: &Path,
    dir: &Path,
    log: std::fs::File,
) -> Result<Command, BenchError> {
    let exe = std::env::current_exe()
        .map_err(|e| BenchError::Target(format!("cannot find this executable: {e}")))?;
    let mut cmd = Command::new(exe);
    cmd.args(["serve", "--port", "0", "--data-dir"])
        .arg(data)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("FORGELINE_JWT_SECRET");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("FORGELINE_") {
            cmd.env_remove(k);
        }
    }
    if opts.steps_executor {
        // The steps measurement's executor and recipe (see `steps`).
        let file = dir.join("forgeline.toml");
        std::fs::write(&file, super::steps_config::server_config())
            .map_err(|e| BenchError::Target(format!("cannot write {}: {e}", file.display())))?;
    } else {
        cmd.env("FORGELINE_EXECUTOR__ENABLED", "false");
    }
    cmd.env("FORGELINE_LOG__FORMAT", "json")
        .env("FORGELINE_RATELIMIT__ENABLED", "false")
        .env("FORGELINE_STORE__DURABILITY", opts.durability.as_str())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    // SAFETY: prctl(2) only, between fork and exec. If the bench dies
    // without stopping it (SIGKILL), the kernel sends the server SIGTERM.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(cmd)
}

impl Spawned {
    async fn wait_for_address(
        &mut self,
        log_path: &Path,
        started: Instant,
    ) -> Result<SocketAddr, BenchError> {
        loop {
            let text = std::fs::read_to_string(log_path).unwrap_or_default();
            for line in text.lines() {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                if v["message"] == "forgeline listening" {
                    if let Some(addr) = v["addr"].as_str().and_then(|a| a.parse().ok()) {
                        return Ok(addr);
                    }
                }
            }
            self.check_alive(log_path)?;
            if started.elapsed() > START_TIMEOUT {
                return Err(BenchError::Target(format!(
                    "the server did not listen within {START_TIMEOUT:?}; its log:\n{}",
                    tail(log_path)
                )));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn check_alive(&mut self, log_path: &Path) -> Result<(), BenchError> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(BenchError::Target(format!(
                "the server exited ({status}); its log:\n{}",
                tail(log_path)
            ))),
            Err(e) => Err(BenchError::Target(format!("cannot watch the server: {e}"))),
        }
    }

    /// A memory figure of the live server from `/proc/<pid>/status`, in bytes
    /// (`VmRSS` now, `VmHWM` the peak). `None` off Linux.
    pub fn rss(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status.lines().find_map(|l| {
            let kb = l
                .strip_prefix(field)?
                .strip_prefix(':')?
                .trim()
                .strip_suffix("kB")?;
            kb.trim().parse::<u64>().ok().map(|k| k * 1024)
        })
    }

    /// SIGTERM, then waits for a clean exit (SIGKILL after `STOP_TIMEOUT`).
    /// With `keep`, the directory stays and its path is returned (also
    /// alongside the error when the server did not stop cleanly). Blocks.
    #[allow(clippy::result_large_err)]
    pub fn stop(mut self, keep: bool) -> Result<Option<PathBuf>, (Option<PathBuf>, BenchError)> {
        let stopped = self.terminate();
        let kept = match self.dir.take() {
            Some(d) if keep => Some(d.keep()),
            _ => None,
        };
        match stopped {
            Ok(()) => Ok(kept),
            Err(e) => Err((kept, e)),
        }
    }

    /// `error`, with the server's exit status and last log lines when the
    /// server is what went away.
    pub fn explain(&mut self, error: BenchError) -> BenchError {
        let log = self.log_path();
        match self.child.try_wait() {
            Ok(Some(status)) => BenchError::Target(format!(
                "{error}\nthe server exited ({status}); its log:\n{}",
                log.as_deref().map(tail).unwrap_or_default()
            )),
            _ => error,
        }
    }

    fn log_path(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.path().join("server.log"))
    }

    fn terminate(&mut self) -> Result<(), BenchError> {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on our own child's pid, which we have not reaped.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match self.child.try_wait() {
                Ok(Some(s)) if s.success() => return Ok(()),
                Ok(Some(s)) => {
                    return Err(BenchError::Target(format!(
                        "the server exited with {s} after SIGTERM; its log:\n{}",
                        self.log_path().as_deref().map(tail).unwrap_or_default()
                    )))
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Err(BenchError::Target(format!(
                        "the server did not exit within {STOP_TIMEOUT:?} of SIGTERM"
                    )));
                }
            }
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        // Not stopped (the run was interrupted): never leave a server behind.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(d) = self.dir.take() {
            if self.keep {
                eprintln!(
                    "forgeline bench: kept the server's directory (store and server.log): {}",
                    d.keep().display()
                );
            }
        }
    }
}

/// The last lines of a log file, for error messages.
fn tail(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Loads `n` queued tasks (on [`BACKLOG_QUEUE`], which nobody leases) into
/// the store at `data_dir`, in-process and with relaxed durability, then
/// flushes it: how cost changes with the number of stored tasks is measured
/// on a store this size. Each task goes through the same submit path as the
/// API (record, indexes, counters, events).
pub async fn preload(data_dir: &Path, n: u64, progress: &dyn Fn(&str)) -> Result<(), BenchError> {
    let mut config = Config::default();
    config.store.data_dir = PathBuf::from(data_dir);
    config.store.durability = Durability::Relaxed;
    config.executor.enabled = false;
    let app = App::build(config.clone())
        .await
        .map_err(|e| BenchError::Target(format!("cannot open the store to preload it: {e}")))?;
    let p = app.pipeline().clone();
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let config = Arc::new(config);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..PRELOAD_CONCURRENCY {
        let (p, next, config) = (p.clone(), next.clone(), config.clone());
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return Ok::<(), BenchError>(());
                }
                let body = serde_json::json!({
                    "queue": BACKLOG_QUEUE,
                    "labels": {"bench": "backlog"},
                    "payload": {"n": i, "goal": "a stored task the bench never leases"},
                });
                let req: SubmitRequest = serde_json::from_value(body)
                    .map_err(|e| BenchError::Target(format!("preload: {e}")))?;
                let task = validate(req, &config, p.now())
                    .map_err(|e| BenchError::Target(format!("preload: {e}")))?;
                let s = Submission {
                    principal: "bench".into(),
                    idempotency: None,
                    traceparent: None,
                    task,
                };
                p.submit(s)
                    .await
                    .map_err(|e| BenchError::Target(format!("preload: {e}")))?;
            }
        });
    }
    let started = Instant::now();
    let mut last = Instant::now();
    loop {
        tokio::select! {
            joined = workers.join_next() => match joined {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => return Err(e),
                Some(Err(e)) => return Err(BenchError::Target(format!("preload: {e}"))),
            },
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
        if last.elapsed() >= Duration::from_millis(250) {
            let done = next.load(std::sync::atomic::Ordering::Relaxed).min(n);
            progress(&format!("preloading stored tasks {done}/{n}"));
            last = Instant::now();
        }
    }
    p.store()
        .close()
        .map_err(|e| BenchError::Target(format!("preload: flushing the store: {e}")))?;
    drop(p);
    drop(app);
    progress(&format!(
        "preloaded {n} tasks in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}
