//! `spawn_app()` and the `TestApp` handle every test talks through.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use forgeline::app::App;
use forgeline::auth::{Authenticator, Role, RoleSet};
use forgeline::clock::{Clock, ManualClock, SystemClock};
use forgeline::config::Config;
use forgeline::pipeline::Pipeline;
use forgeline::store::Durability;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::sync::oneshot;

/// The HS256 secret test servers use.
pub const TEST_SECRET: &str = "test-secret-0123456789-abcdefghijklmnopqrstuvwxyz";

/// A server running in this process on 127.0.0.1 with a fresh store.
/// `client` sends a token for principal `tester` with every role.
pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub auth: Authenticator,
    pub clock: Arc<ManualClock>,
    pub pipeline: Arc<Pipeline>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
    pub dir: tempfile::TempDir,
}

/// A response: status, headers and the body parsed as JSON (Null if not JSON).
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub body: Value,
}

impl Resp {
    /// The error code of an error body.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
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
        addr,
        client: client_with(Some(&token)),
        auth,
        clock,
        pipeline,
        shutdown: Some(tx),
        handle: Some(handle),
        dir,
    }
}

/// A client that sends `token` on every request (none: no Authorization).
pub fn client_with(token: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(t) = token {
        headers.insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .default_headers(headers)
        .build()
        .unwrap()
}

async fn to_resp(r: reqwest::Response) -> Resp {
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    Resp {
        status,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
    }
}

impl TestApp {
    /// A token for `sub` with `roles`, valid for an hour.
    pub fn token(&self, sub: &str, roles: &[Role]) -> String {
        self.auth
            .issue(sub, RoleSet::from_roles(roles), Duration::from_secs(3600))
            .unwrap()
    }

    /// A client acting as `sub` with `roles`.
    pub fn client_as(&self, sub: &str, roles: &[Role]) -> reqwest::Client {
        client_with(Some(&self.token(sub, roles)))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The `/metrics` exposition, scraped without credentials.
    pub async fn metrics(&self) -> String {
        client_with(None)
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> Resp {
        to_resp(self.client.get(self.url(path)).send().await.expect("GET")).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Resp {
        to_resp(
            self.client
                .post(self.url(path))
                .json(&body)
                .send()
                .await
                .expect("POST"),
        )
        .await
    }

    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> Resp {
        let r = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("POST");
        to_resp(r).await
    }

    /// Submits a task and asserts 201.
    pub async fn submit(&self, body: Value) -> Value {
        let r = self.post("/api/v1/tasks", body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        r.body
    }

    pub async fn task(&self, id: &str) -> Value {
        let r = self.get(&format!("/api/v1/tasks/{id}")).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        r.body
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
        let r = self
            .post(
                &format!("/api/v1/queues/{queue}/lease"),
                json!({"worker_id": worker, "max": max, "wait_ms": wait_ms}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        r.body["leases"].as_array().unwrap().clone()
    }

    /// Calls a lease action with the lease's token merged into `body`.
    pub async fn lease_call(&self, lease: &Value, action: &str, mut body: Value) -> Resp {
        body["token"] = lease["token"].clone();
        self.post(
            &format!(
                "/api/v1/leases/{}/{action}",
                lease["lease_id"].as_str().unwrap()
            ),
            body,
        )
        .await
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
        let mut req = self.client.get(self.url(path));
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let r = req.send().await.expect("GET stream");
        assert_eq!(r.status(), StatusCode::OK);
        parse_sse(&r.text().await.unwrap())
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
