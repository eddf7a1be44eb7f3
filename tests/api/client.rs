//! `TestClient`: one typed client for every route the tests call, handed out
//! by the in-process `TestApp` (`app.api()`, `app.api_as(..)`) and by the
//! spawned `ServerProcess` (`server.api()`) alike.
//!
//! Every route method returns a `Call`: `.await` it for a `Resp` (it panics
//! only if no response arrives), or `.try_send()` it where the server may be
//! gone (crash and soak tests). `send` is the raw escape hatch for tests that
//! send malformed requests on purpose.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{metric, parse_sse, wait_until, Sse};

/// A response: status, headers, the raw body and the body parsed as JSON
/// (Null if it is not JSON, e.g. an event stream or `/metrics`).
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Resp {
    /// The error code of an error body.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    /// The JSON body, after asserting the status.
    #[track_caller]
    pub fn expect(self, status: StatusCode) -> Value {
        assert_eq!(self.status, status, "{}", self.text);
        self.body
    }

    /// The body read as server-sent events.
    pub fn sse(&self) -> Vec<Sse> {
        parse_sse(&self.text)
    }
}

/// What names an object in a path: a string, a JSON string, or a JSON object
/// with a string `id` (a task or a review ticket as the API returns it).
pub trait Id {
    fn id(&self) -> &str;
}

impl Id for str {
    fn id(&self) -> &str {
        self
    }
}

impl Id for String {
    fn id(&self) -> &str {
        self
    }
}

impl Id for Value {
    fn id(&self) -> &str {
        match self {
            Value::String(s) => s,
            Value::Object(o) => o
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("no string `id` in {self}")),
            other => panic!("not an id: {other}"),
        }
    }
}

/// A client that sends `token` on every request (none: no Authorization).
fn client_with(token: Option<&str>) -> reqwest::Client {
    let mut headers = HeaderMap::new();
    if let Some(t) = token {
        headers.insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .default_headers(headers)
        .build()
        .unwrap()
}

/// `path` with `query` (`a=1&b=2`, may be empty) appended.
fn with_query(path: &str, query: &str) -> String {
    match (query.is_empty(), path.contains('?')) {
        (true, _) => path.to_string(),
        (false, true) => format!("{path}&{query}"),
        (false, false) => format!("{path}?{query}"),
    }
}

/// One request, built but not sent.
#[must_use = "a Call does nothing until it is awaited or sent"]
pub struct Call {
    http: reqwest::Client,
    method: Method,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<reqwest::Body>,
}

impl Call {
    /// Adds a request header.
    pub fn header(mut self, name: &str, value: &str) -> Call {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Appends query parameters (`a=1&b=2`).
    pub fn query(mut self, query: &str) -> Call {
        self.url = with_query(&self.url, query);
        self
    }

    /// Resumes an event stream after `id` (`Last-Event-ID`), if given.
    pub fn last_event_id(self, id: Option<&str>) -> Call {
        match id {
            Some(id) => self.header("last-event-id", id),
            None => self,
        }
    }

    /// Sends the request. `Err` only when no response arrived (refused,
    /// reset, timed out); a body that breaks off reads as empty (`body` Null).
    pub async fn try_send(self) -> Result<Resp, reqwest::Error> {
        let mut req = self.http.request(self.method, &self.url);
        for (name, value) in &self.headers {
            req = req.header(name.as_str(), value.as_str());
        }
        if let Some(body) = self.body {
            req = req.header("content-type", "application/json").body(body);
        }
        let r = req.send().await?;
        let status = r.status();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap_or_default();
        Ok(Resp {
            status,
            headers,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
        })
    }
}

impl IntoFuture for Call {
    type Output = Resp;
    type IntoFuture = Pin<Box<dyn Future<Output = Resp> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        let what = format!("{} {}", self.method, self.url);
        Box::pin(async move {
            self.try_send()
                .await
                .unwrap_or_else(|e| panic!("{what}: no response: {e}"))
        })
    }
}

/// A client of one server: its base URL and a reqwest client that sends a
/// bearer token (or none).
#[derive(Clone)]
pub struct TestClient {
    base: String,
    http: reqwest::Client,
}

impl TestClient {
    /// A client of the server at `addr` sending `token` (none: anonymous).
    pub fn new(addr: SocketAddr, token: Option<&str>) -> TestClient {
        TestClient {
            base: format!("http://{addr}"),
            http: client_with(token),
        }
    }

    /// The same server with another token (none: anonymous).
    pub fn with_token(&self, token: Option<&str>) -> TestClient {
        TestClient {
            base: self.base.clone(),
            http: client_with(token),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn call(&self, method: Method, path: &str, body: Option<reqwest::Body>) -> Call {
        Call {
            http: self.http.clone(),
            method,
            url: self.url(path),
            headers: Vec::new(),
            body,
        }
    }

    fn get(&self, path: &str) -> Call {
        self.call(Method::GET, path, None)
    }

    fn post(&self, path: &str, body: Value) -> Call {
        self.call(Method::POST, path, Some(body.to_string().into()))
    }

    /// The raw escape hatch: any method, any path, these body bytes (sent as
    /// `application/json`, whatever they are).
    pub fn send(&self, method: &str, path: &str, body: impl Into<reqwest::Body>) -> Call {
        let method = Method::from_bytes(method.as_bytes()).expect("an HTTP method");
        self.call(method, path, Some(body.into()))
    }

    // Tasks.

    /// `POST /api/v1/tasks` (headers such as `Idempotency-Key` via `.header`).
    pub fn submit(&self, body: Value) -> Call {
        self.post("/api/v1/tasks", body)
    }

    /// `POST /api/v1/tasks/stream`: submit, then the task's event stream.
    pub fn submit_stream(&self, body: Value) -> Call {
        self.post("/api/v1/tasks/stream", body)
    }

    /// `GET /api/v1/tasks?{query}`.
    pub fn tasks(&self, query: &str) -> Call {
        self.get(&with_query("/api/v1/tasks", query))
    }

    /// `GET /api/v1/tasks/{id}` (`?events=` via `.query`).
    pub fn task(&self, id: &(impl Id + ?Sized)) -> Call {
        self.get(&format!("/api/v1/tasks/{}", id.id()))
    }

    /// `GET /api/v1/tasks/{id}/dossier`.
    pub fn dossier(&self, id: &(impl Id + ?Sized)) -> Call {
        self.get(&format!("/api/v1/tasks/{}/dossier", id.id()))
    }

    /// `POST /api/v1/tasks/{id}/cancel`, with a reason or `{}`.
    pub fn cancel(&self, id: &(impl Id + ?Sized), reason: Option<&str>) -> Call {
        let body = match reason {
            Some(r) => json!({ "reason": r }),
            None => json!({}),
        };
        self.post(&format!("/api/v1/tasks/{}/cancel", id.id()), body)
    }

    /// `GET /api/v1/runs/{run_id}`.
    pub fn run(&self, run_id: &(impl Id + ?Sized)) -> Call {
        self.get(&format!("/api/v1/runs/{}", run_id.id()))
    }

    /// `GET /api/v1/tasks/{id}/events?{query}`: one task's event stream.
    pub fn task_events(&self, id: &(impl Id + ?Sized), query: &str) -> Call {
        self.stream(&with_query(
            &format!("/api/v1/tasks/{}/events", id.id()),
            query,
        ))
    }

    /// `GET /api/v1/events?{query}`: the firehose.
    pub fn events(&self, query: &str) -> Call {
        self.stream(&with_query("/api/v1/events", query))
    }

    /// `GET` of an event stream by its full path (with query).
    pub fn stream(&self, path: &str) -> Call {
        self.get(path)
    }

    // The worker protocol.

    /// `POST /api/v1/queues/{queue}/lease` with the default lease length.
    pub fn lease(&self, queue: &str, worker: &str, max: usize, wait_ms: u64) -> Call {
        self.post(
            &format!("/api/v1/queues/{queue}/lease"),
            json!({"worker_id": worker, "max": max, "wait_ms": wait_ms}),
        )
    }

    /// `lease`, asking for leases of `lease_ms`.
    pub fn lease_for(
        &self,
        queue: &str,
        worker: &str,
        max: usize,
        wait_ms: u64,
        lease_ms: u64,
    ) -> Call {
        self.post(
            &format!("/api/v1/queues/{queue}/lease"),
            json!({"worker_id": worker, "max": max, "wait_ms": wait_ms, "lease_ms": lease_ms}),
        )
    }

    /// `POST /api/v1/leases/{lease_id}/{action}` for a lease as granted (its
    /// `lease_id`), with the lease's `token` merged into `body`.
    pub fn lease_call(&self, lease: &Value, action: &str, mut body: Value) -> Call {
        body["token"] = lease["token"].clone();
        let id = lease["lease_id"]
            .as_str()
            .unwrap_or_else(|| panic!("not a lease: {lease}"));
        self.post(&format!("/api/v1/leases/{id}/{action}"), body)
    }

    /// `POST /api/v1/leases/{lease_id}/heartbeat`.
    pub fn heartbeat(&self, lease: &Value) -> Call {
        self.lease_call(lease, "heartbeat", json!({}))
    }

    /// `POST /api/v1/leases/{lease_id}/events` with these worker events.
    pub fn lease_events(&self, lease: &Value, events: Value) -> Call {
        self.lease_call(lease, "events", json!({ "events": events }))
    }

    /// `POST /api/v1/leases/{lease_id}/complete`, with a result or without.
    pub fn complete(&self, lease: &Value, result: Option<Value>) -> Call {
        let body = match result {
            Some(r) => json!({ "result": r }),
            None => json!({}),
        };
        self.lease_call(lease, "complete", body)
    }

    /// `POST /api/v1/leases/{lease_id}/fail` (`retryable` left out if None).
    pub fn fail(&self, lease: &Value, error: &str, retryable: Option<bool>) -> Call {
        let mut body = json!({ "error": error });
        if let Some(r) = retryable {
            body["retryable"] = json!(r);
        }
        self.lease_call(lease, "fail", body)
    }

    /// `POST /api/v1/leases/{lease_id}/release`.
    pub fn release_lease(&self, lease: &Value) -> Call {
        self.lease_call(lease, "release", json!({}))
    }

    /// `POST /api/v1/workers/{worker_id}/status` with a status report.
    pub fn worker_status(&self, worker: &str, report: Value) -> Call {
        self.post(&format!("/api/v1/workers/{worker}/status"), report)
    }

    /// `GET /api/v1/workers`.
    pub fn workers(&self) -> Call {
        self.get("/api/v1/workers")
    }

    /// `GET /api/v1/dead-letter`.
    pub fn dead_letter(&self) -> Call {
        self.get("/api/v1/dead-letter")
    }

    /// `POST /api/v1/dead-letter/{id}/requeue`.
    pub fn requeue(&self, id: &(impl Id + ?Sized)) -> Call {
        self.post(
            &format!("/api/v1/dead-letter/{}/requeue", id.id()),
            json!({}),
        )
    }

    // Reviews.

    /// `GET /api/v1/reviews?{query}`.
    pub fn reviews(&self, query: &str) -> Call {
        self.get(&with_query("/api/v1/reviews", query))
    }

    /// `GET /api/v1/reviews/metrics?{query}`.
    pub fn review_metrics(&self, query: &str) -> Call {
        self.get(&with_query("/api/v1/reviews/metrics", query))
    }

    /// `GET /api/v1/reviews/{id}`: the ticket with its dossier.
    pub fn review(&self, id: &(impl Id + ?Sized)) -> Call {
        self.get(&format!("/api/v1/reviews/{}", id.id()))
    }

    /// `POST /api/v1/reviews/{id}/claim`.
    pub fn claim(&self, id: &(impl Id + ?Sized)) -> Call {
        self.post(&format!("/api/v1/reviews/{}/claim", id.id()), json!({}))
    }

    /// `POST /api/v1/reviews/{id}/release`.
    pub fn release_review(&self, id: &(impl Id + ?Sized)) -> Call {
        self.post(&format!("/api/v1/reviews/{}/release", id.id()), json!({}))
    }

    /// `POST /api/v1/reviews/{id}/assign` to `reviewer`.
    pub fn assign(&self, id: &(impl Id + ?Sized), reviewer: &str) -> Call {
        self.post(
            &format!("/api/v1/reviews/{}/assign", id.id()),
            json!({ "reviewer": reviewer }),
        )
    }

    /// `POST /api/v1/reviews/{id}/decision` bound to `dossier_hash`.
    pub fn decide(
        &self,
        id: &(impl Id + ?Sized),
        outcome: &str,
        comment: Option<&str>,
        dossier_hash: &Value,
    ) -> Call {
        self.post(
            &format!("/api/v1/reviews/{}/decision", id.id()),
            json!({"outcome": outcome, "comment": comment, "dossier_hash": dossier_hash}),
        )
    }

    /// A verdict on `ticket` (as `review` returns it) bound to the dossier
    /// hash the ticket carries.
    pub fn vote(&self, ticket: &Value, outcome: &str, comment: Option<&str>) -> Call {
        self.decide(ticket, outcome, comment, &ticket["dossier"]["dossier_hash"])
    }

    // Audit, probes, metrics, the API description.

    /// `GET /api/v1/audit?{query}`.
    pub fn audit(&self, query: &str) -> Call {
        self.get(&with_query("/api/v1/audit", query))
    }

    /// `GET /api/v1/backup`.
    pub fn backup(&self) -> Call {
        self.get("/api/v1/backup")
    }

    /// `GET /api/v1/store`.
    pub fn store_report(&self) -> Call {
        self.get("/api/v1/store")
    }

    /// `GET /api/v1/audit/verify`.
    pub fn audit_verify(&self) -> Call {
        self.get("/api/v1/audit/verify")
    }

    /// `GET /health/{probe}` (`live`, `startup`, `ready`).
    pub fn health(&self, probe: &str) -> Call {
        self.get(&format!("/health/{probe}"))
    }

    /// `GET /metrics` (the exposition is in `text`).
    pub fn metrics(&self) -> Call {
        self.get("/metrics")
    }

    /// `GET /api/v1/openapi.json`.
    pub fn openapi(&self) -> Call {
        self.get("/api/v1/openapi.json")
    }

    // Waiting on conditions.

    /// The value of one series in a fresh `/metrics` scrape (None if absent).
    pub async fn metric(&self, series: &str) -> Option<f64> {
        metric(&self.metrics().await.text, series)
    }

    /// Waits until at least `n` event streams are open on the server
    /// (`forgeline_sse_subscribers`), so what a test does next happens
    /// while they listen.
    pub async fn wait_for_streams(&self, n: u32) {
        wait_until(
            &format!("{n} event stream(s) are open"),
            Duration::from_secs(10),
            async || {
                self.metric("forgeline_sse_subscribers")
                    .await
                    .is_some_and(|v| v >= f64::from(n))
            },
        )
        .await
    }
}
