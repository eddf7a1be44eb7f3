//! `spawn_app()` and the `TestApp` handle every test talks through.

use std::sync::Arc;
use std::time::Duration;

use forgeline::app::App;
use forgeline::auth::{Authenticator, Role, RoleSet};
use forgeline::clock::{Clock, ManualClock, SystemClock};
use forgeline::config::Config;
use forgeline::pipeline::Pipeline;
use forgeline::store::Durability;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::client::{Id, Resp, TestClient};

/// The HS256 secret test servers use.
pub const TEST_SECRET: &str = "test-secret-0123456789-abcdefghijklmnopqrstuvwxyz";

/// A server running in this process on 127.0.0.1 with a fresh store.
/// `api()` sends a token for principal `tester` with every role.
pub struct TestApp {
    api: TestClient,
    pub auth: Authenticator,
    pub clock: Arc<ManualClock>,
    pub pipeline: Arc<Pipeline>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
    pub dir: tempfile::TempDir,
}

/// One server-sent event.
#[derive(Debug, Clone)]
pub struct Sse {
    pub id: String,
    pub event: String,
    pub data: Value,
}

/// A config for tests: temp data dir, relaxed nothing, executor off unless asked.
pub fn test_config(dir: &std::path::Path) -> Config {
    let mut c = Config::default();
    c.server.port = 0;
    c.store.data_dir = dir.join("data");
    c.store.durability = Durability::Sync;
    c.executor.enabled = false;
    c.server.shutdown_timeout = Duration::from_secs(5);
    let secret = dir.join("jwt-secret.test");
    if !secret.exists() {
        std::fs::write(&secret, TEST_SECRET).unwrap();
    }
    c.auth.secret_file = secret;
    c
}

/// Starts a server with the default test config and a manual clock.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts a server after `tweak` adjusts the config.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = test_config(dir.path());
    tweak(&mut config);
    start(config, dir).await
}

/// Starts a server on an existing directory (restart tests).
pub async fn start(config: Config, dir: tempfile::TempDir) -> TestApp {
    start_with(config, dir, false).await
}

/// Starts a server on the system clock (for tests about real rates;
/// `advance` does nothing there).
pub async fn spawn_real_time_app(tweak: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = test_config(dir.path());
    tweak(&mut config);
    start_with(config, dir, true).await
}

/// Starts a server; with `real_time`, on the system clock.
pub async fn start_with(config: Config, dir: tempfile::TempDir, real_time: bool) -> TestApp {
    let clock = Arc::new(ManualClock::new(SystemClock.now_ms()));
    let app_clock: Arc<dyn Clock> = if real_time {
        Arc::new(SystemClock)
    } else {
        clock.clone()
    };
    let (auth, _) = Authenticator::from_config(&config, false).expect("test keys");
    let app = App::build_with_clock(config, app_clock)
        .await
        .expect("app builds");
    let pipeline = app.pipeline().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(app.run(listener, async {
        let _ = rx.await;
    }));
    let token = auth
        .issue("tester", RoleSet::all(), Duration::from_secs(3600))
        .unwrap();
    TestApp {
        api: TestClient::new(addr, Some(&token)),
        auth,
        clock,
        pipeline,
        shutdown: Some(tx),
        handle: Some(handle),
        dir,
    }
}

impl TestApp {
    /// The client acting as `tester` with every role.
    pub fn api(&self) -> &TestClient {
        &self.api
    }

    /// A client acting as `sub` with `roles`.
    pub fn api_as(&self, sub: &str, roles: &[Role]) -> TestClient {
        self.api.with_token(Some(&self.token(sub, roles)))
    }

    /// A token for `sub` with `roles`, valid for an hour.
    pub fn token(&self, sub: &str, roles: &[Role]) -> String {
        self.auth
            .issue(sub, RoleSet::from_roles(roles), Duration::from_secs(3600))
            .unwrap()
    }

    /// The `/metrics` exposition, scraped without credentials.
    pub async fn metrics(&self) -> String {
        self.api.with_token(None).metrics().await.text
    }

    /// Submits a task and asserts 201.
    pub async fn submit(&self, body: Value) -> Value {
        self.api.submit(body).await.expect(StatusCode::CREATED)
    }

    /// Reads a task and asserts 200.
    pub async fn task(&self, id: &(impl Id + ?Sized)) -> Value {
        self.api.task(id).await.expect(StatusCode::OK)
    }

    /// Leases from `queue` as `worker` (no waiting).
    pub async fn lease(&self, queue: &str, worker: &str, max: usize) -> Vec<Value> {
        self.lease_wait(queue, worker, max, 0).await
    }

    pub async fn lease_wait(
        &self,
        queue: &str,
        worker: &str,
        max: usize,
        wait_ms: u64,
    ) -> Vec<Value> {
        let r = self.api.lease(queue, worker, max, wait_ms).await;
        r.expect(StatusCode::OK)["leases"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// Calls a lease action with the lease's token merged into `body`.
    pub async fn lease_call(&self, lease: &Value, action: &str, body: Value) -> Resp {
        self.api.lease_call(lease, action, body).await
    }

    /// Moves the clock and runs the timers once (reaper, scheduler).
    pub async fn advance(&self, by: Duration) {
        self.clock.advance(by);
        let now = self.clock.now_ms();
        self.pipeline.reap_expired(now).await.unwrap();
        self.pipeline.promote_due(now).await.unwrap();
        self.pipeline.review_clock(now).await.unwrap();
    }

    /// Reads an SSE response to its end (use max_events/idle_timeout).
    pub async fn sse(&self, path: &str, last_event_id: Option<&str>) -> Vec<Sse> {
        let r = self.api.stream(path).last_event_id(last_event_id).await;
        assert_eq!(r.status, StatusCode::OK);
        r.sse()
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            tokio::time::timeout(Duration::from_secs(30), h)
                .await
                .expect("server stops within 30 s")
                .unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Parses an SSE body into events (comments and keep-alives skipped).
pub fn parse_sse(text: &str) -> Vec<Sse> {
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let (mut id, mut event, mut data) = (String::new(), String::new(), String::new());
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id:") {
                id = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("event:") {
                event = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
        if !event.is_empty() {
            out.push(Sse {
                id,
                event,
                data: serde_json::from_str(&data).unwrap_or(Value::Null),
            });
        }
    }
    out
}

/// The `type`s of a list of events.
pub fn kinds(events: &[Sse]) -> Vec<String> {
    events.iter().map(|e| e.event.clone()).collect()
}

/// The value of `series` (name and labels, exactly as exported) in a
/// Prometheus text exposition.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

/// Polls `condition` every 10 ms until it holds; panics naming `what` if it
/// still does not after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A guardrail policy with no queue filter, limit, pattern or tool list.
pub fn policy(
    id: &str,
    kind: forgeline::model::CheckKind,
    stages: &[forgeline::model::Stage],
    verdict: forgeline::model::Verdict,
) -> forgeline::guardrails::PolicyConfig {
    forgeline::guardrails::PolicyConfig {
        id: id.into(),
        kind,
        stages: stages.to_vec(),
        verdict,
        queues: vec![],
        max_bytes: None,
        pattern: None,
        tools: vec![],
    }
}
