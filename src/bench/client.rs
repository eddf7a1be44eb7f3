//! The bench's HTTP client: the few API calls it drives, with errors that
//! name the call and carry the server's answer.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

/// Why a bench run stopped.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A request could not be sent or its answer not read.
    #[error("{what}: {source}")]
    Http {
        /// Which call failed (`POST /api/v1/tasks`…), for the message.
        what: String,
        /// The transport error.
        source: reqwest::Error,
    },
    /// The server answered with an unexpected status.
    #[error("{what}: HTTP {status}: {body}")]
    Status {
        /// Which call failed, for the message.
        what: String,
        /// The status the server answered instead of the expected one.
        status: StatusCode,
        /// The start of the body (the server's JSON error).
        body: String,
    },
    /// An answer did not have the expected shape.
    #[error("{0}")]
    Protocol(String),
    /// The server to measure could not be started or prepared.
    #[error("{0}")]
    Target(String),
}

/// Longest part of an error body kept in a `BenchError::Status`.
const ERROR_BODY_CHARS: usize = 300;
/// Connections kept open per host: the largest client count, so that no
/// measured request has to open one.
const POOL_PER_HOST: usize = super::MAX_CLIENTS;

/// One leased task, as the bench's workers see it.
#[derive(Debug, Clone)]
pub struct Leased {
    /// `lease_id`.
    pub lease_id: String,
    /// The lease's fencing token, sent back with the completion.
    pub token: u64,
    /// The task's payload (the bench puts its submit time there).
    pub payload: Value,
}

/// A client for one server, with its bearer token.
#[derive(Debug, Clone)]
pub struct BenchClient {
    http: reqwest::Client,
    base: String,
    auth: Option<String>,
}

impl BenchClient {
    /// A client for `base` (e.g. `http://127.0.0.1:7878`).
    pub fn new(base: &str, token: Option<&str>) -> Result<BenchClient, BenchError> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(POOL_PER_HOST)
            .tcp_nodelay(true)
            // Above the longest long-poll the bench asks for.
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|source| BenchError::Http {
                what: "building the HTTP client".into(),
                source,
            })?;
        Ok(BenchClient {
            http,
            base: base.trim_end_matches('/').to_string(),
            auth: token.map(|t| format!("Bearer {t}")),
        })
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let rb = self.http.request(method, format!("{}{path}", self.base));
        match &self.auth {
            Some(a) => rb.header(reqwest::header::AUTHORIZATION, a),
            None => rb,
        }
    }

    async fn send(
        &self,
        what: &str,
        rb: reqwest::RequestBuilder,
        expect: StatusCode,
    ) -> Result<bytes::Bytes, BenchError> {
        let http = |source| BenchError::Http {
            what: what.to_string(),
            source,
        };
        let resp = rb.send().await.map_err(http)?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(http)?;
        if status != expect {
            let text = String::from_utf8_lossy(&body);
            return Err(BenchError::Status {
                what: what.to_string(),
                status,
                body: text.chars().take(ERROR_BODY_CHARS).collect(),
            });
        }
        Ok(body)
    }

    fn parse(what: &str, body: &[u8]) -> Result<Value, BenchError> {
        serde_json::from_slice(body)
            .map_err(|e| BenchError::Protocol(format!("{what}: the answer is not JSON: {e}")))
    }

    /// `POST /api/v1/tasks`; returns the task id.
    pub async fn submit(&self, queue: &str, payload: Value) -> Result<String, BenchError> {
        self.submit_body(json!({"queue": queue, "payload": payload}))
            .await
    }

    /// `POST /api/v1/tasks` with this body; returns the task id.
    pub async fn submit_body(&self, body: Value) -> Result<String, BenchError> {
        let what = "POST /api/v1/tasks";
        let rb = self
            .request(reqwest::Method::POST, "/api/v1/tasks")
            .json(&body);
        let v = Self::parse(what, &self.send(what, rb, StatusCode::CREATED).await?)?;
        v["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| BenchError::Protocol(format!("{what}: no `id` in the answer")))
    }

    /// `POST /api/v1/queues/{queue}/lease`.
    pub async fn lease(
        &self,
        queue: &str,
        worker: &str,
        max: usize,
        wait_ms: u64,
    ) -> Result<Vec<Leased>, BenchError> {
        let what = "POST /api/v1/queues/{queue}/lease";
        let rb = self
            .request(
                reqwest::Method::POST,
                &format!("/api/v1/queues/{queue}/lease"),
            )
            .json(&json!({"worker_id": worker, "max": max, "wait_ms": wait_ms}));
        let v = Self::parse(what, &self.send(what, rb, StatusCode::OK).await?)?;
        let leases = v["leases"]
            .as_array()
            .ok_or_else(|| BenchError::Protocol(format!("{what}: no `leases` array")))?;
        leases
            .iter()
            .map(|l| {
                Some(Leased {
                    lease_id: l["lease_id"].as_str()?.to_string(),
                    token: l["token"].as_u64()?,
                    payload: l["task"]["payload"].clone(),
                })
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                BenchError::Protocol(format!("{what}: a lease without lease_id or token"))
            })
    }

    /// `POST /api/v1/leases/{lease_id}/complete`.
    pub async fn complete(&self, lease: &Leased) -> Result<(), BenchError> {
        let what = "POST /api/v1/leases/{lease_id}/complete";
        let rb = self
            .request(
                reqwest::Method::POST,
                &format!("/api/v1/leases/{}/complete", lease.lease_id),
            )
            .json(&json!({"token": lease.token}));
        self.send(what, rb, StatusCode::OK).await.map(drop)
    }

    /// `POST /api/v1/leases/complete`: every lease of a batch in one call;
    /// each item must have completed.
    pub async fn complete_many(&self, leases: &[Leased]) -> Result<(), BenchError> {
        let what = "POST /api/v1/leases/complete";
        let items: Vec<Value> = leases
            .iter()
            .map(|l| json!({"lease_id": l.lease_id, "token": l.token}))
            .collect();
        let rb = self
            .request(reqwest::Method::POST, "/api/v1/leases/complete")
            .json(&json!({ "items": items }));
        let body = self.send(what, rb, StatusCode::OK).await?;
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| BenchError::Protocol(format!("{what}: {e}")))?;
        let results = v["results"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        if results.len() != leases.len() || results.iter().any(|r| r["status"] != 200) {
            return Err(BenchError::Protocol(format!(
                "{what}: not every item completed: {v}"
            )));
        }
        Ok(())
    }

    /// A `GET` that must answer 200; returns the body.
    pub async fn get(&self, path: &str) -> Result<bytes::Bytes, BenchError> {
        let rb = self.request(reqwest::Method::GET, path);
        self.send(&format!("GET {path}"), rb, StatusCode::OK).await
    }

    /// A `GET` whose JSON answer is wanted whatever the status (health probes).
    pub async fn get_json_any(&self, path: &str) -> Result<(StatusCode, Value), BenchError> {
        let what = format!("GET {path}");
        let resp = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .map_err(|source| BenchError::Http {
                what: what.clone(),
                source,
            })?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|source| BenchError::Http {
            what: what.clone(),
            source,
        })?;
        Ok((status, Self::parse(&what, &body)?))
    }

    /// The value of one unlabelled sample in the server's `/metrics`, and the
    /// `version` label of `forgeline_build_info`.
    pub async fn scrape(&self) -> Result<Scrape, BenchError> {
        let body = self.get("/metrics").await?;
        Ok(Scrape::parse(&String::from_utf8_lossy(&body)))
    }
}

/// The series that counts the preloaded tasks (`--stored`), with its space.
const BACKLOG_SERIES: &str = "forgeline_queue_depth{queue=\"bench-backlog\"} ";

/// The few figures the bench reads from `/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape {
    /// `process_resident_memory_bytes`.
    pub rss_bytes: Option<u64>,
    /// `forgeline_build_info{version}`.
    pub version: Option<String>,
    /// `forgeline_queue_depth{queue="bench-backlog"}`: the preloaded tasks.
    pub backlog: Option<u64>,
}

impl Scrape {
    /// Reads them from the text exposition format.
    pub fn parse(text: &str) -> Scrape {
        let mut s = Scrape::default();
        for line in text.lines() {
            if let Some(v) = line.strip_prefix(BACKLOG_SERIES) {
                s.backlog = v.trim().parse::<f64>().ok().map(|f| f as u64);
            } else if let Some(v) = line.strip_prefix("process_resident_memory_bytes ") {
                s.rss_bytes = v.trim().parse::<f64>().ok().map(|f| f as u64);
            } else if let Some(rest) = line.strip_prefix("forgeline_build_info{") {
                s.version = rest
                    .split("version=\"")
                    .nth(1)
                    .and_then(|v| v.split('"').next())
                    .map(str::to_string);
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scrape_yields_rss_and_version() {
        let text = "# HELP x\nforgeline_build_info{commit=\"abc\",version=\"0.1.0\"} 1\nprocess_resident_memory_bytes 2.4576e+07\nforgeline_queue_depth{queue=\"bench-backlog\"} 300\nforgeline_queue_depth{queue=\"other\"} 7\n";
        let s = Scrape::parse(text);
        assert_eq!(s.rss_bytes, Some(24_576_000));
        assert_eq!(s.backlog, Some(300));
        assert_eq!(s.version.as_deref(), Some("0.1.0"));
        assert_eq!(Scrape::parse(""), Scrape::default());
    }
}
