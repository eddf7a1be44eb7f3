//! Rate limits (real clock, concurrent clients, restarts) and the audit log
//! (what is recorded, verification online and with the CLI).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use forgeline::auth::Role;
use forgeline::config::Bucket;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::client::TestClient;
use crate::helpers::{spawn_app, spawn_app_with, spawn_real_time_app, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_of_one_principal_get_rate_times_time_plus_burst() {
    let (rate, burst) = (40.0, 20);
    let app = spawn_real_time_app(|c| c.ratelimit.read = Bucket { rate, burst }).await;
    let greedy = app.api_as("greedy", &[Role::Observer]);
    let accepted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let until = started + Duration::from_secs(3);
    let mut jobs = Vec::new();
    for _ in 0..16 {
        let (c, a, r) = (greedy.clone(), accepted.clone(), refused.clone());
        jobs.push(tokio::spawn(async move {
            while Instant::now() < until {
                let resp = c.tasks("limit=1").await;
                assert!(resp.headers.contains_key("x-ratelimit-limit"));
                assert!(resp.headers.contains_key("x-ratelimit-remaining"));
                assert!(resp.headers.contains_key("x-ratelimit-reset"));
                match resp.status {
                    StatusCode::OK => a.fetch_add(1, Ordering::Relaxed),
                    StatusCode::TOO_MANY_REQUESTS => {
                        assert!(
                            resp.headers["retry-after"]
                                .to_str()
                                .unwrap()
                                .parse::<u64>()
                                .unwrap()
                                >= 1
                        );
                        r.fetch_add(1, Ordering::Relaxed)
                    }
                    other => panic!("unexpected {other}"),
                };
            }
        }));
    }
    for j in jobs {
        j.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let expected = rate * elapsed + burst as f64;
    let got = accepted.load(Ordering::Relaxed) as f64;
    assert!(
        refused.load(Ordering::Relaxed) > 0,
        "the clients outran the bucket"
    );
    assert!(
        (got - expected).abs() <= 0.1 * expected,
        "accepted {got}, expected {expected:.1} ± 10 %"
    );
    let metrics = app.metrics().await;
    let refused_metric = metrics
        .lines()
        .find(|l| l.starts_with("forgeline_rate_limited_total{class=\"read\"}"))
        .unwrap();
    assert!(
        refused_metric.ends_with(&format!(" {}", refused.load(Ordering::Relaxed))),
        "{refused_metric}"
    );
}

#[tokio::test]
async fn buckets_are_per_principal_and_per_class_and_survive_a_restart() {
    let tweak = |c: &mut forgeline::config::Config| {
        c.ratelimit.submit = Bucket {
            rate: 0.001,
            burst: 3,
        };
    };
    let app = spawn_app_with(tweak).await;
    let alice = app.api_as("alice", &[Role::Submitter, Role::Observer]);
    let bob = app.api_as("bob", &[Role::Submitter]);
    let submit = |c: &TestClient| c.submit(json!({"queue": "q"}));
    for _ in 0..3 {
        assert_eq!(submit(&alice).await.status, StatusCode::CREATED);
    }
    let r = submit(&alice).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers["x-ratelimit-remaining"], "0");
    assert_eq!(
        submit(&bob).await.status,
        StatusCode::CREATED,
        "bob has his own bucket"
    );
    assert_eq!(
        alice.tasks("").await.status,
        StatusCode::OK,
        "reads are another class"
    );

    let config = app.pipeline.config().clone();
    let dir = app.stop().await;
    let app = start(config, dir).await;
    let alice = app.api_as("alice", &[Role::Submitter]);
    let r = alice.submit(json!({"queue": "q"})).await;
    assert_eq!(
        r.status,
        StatusCode::TOO_MANY_REQUESTS,
        "a restart does not hand out a fresh burst"
    );
    let anon = app.api().with_token(None);
    for _ in 0..5 {
        assert_eq!(anon.health("live").await.status, StatusCode::OK);
        assert_eq!(anon.health("ready").await.status, StatusCode::OK);
        assert_eq!(anon.metrics().await.status, StatusCode::OK);
    }
}

#[tokio::test]
async fn mutating_requests_and_auth_failures_are_audited_with_their_context() {
    let app = spawn_app().await;
    let alice = app.api_as("alice", &[Role::Submitter]);
    // The exact bytes, as the audit record hashes them.
    let body = r#"{"queue":"audited","labels":{"k":"v"}}"#;
    let r = alice
        .send("POST", "/api/v1/tasks", body)
        .header("x-request-id", "req-audit-1")
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let t = r.body;
    alice.dead_letter().await; // 403
    app.api().with_token(Some("garbage")).tasks("").await; // 401
    alice.send("POST", "/api/v1/tasks", "{").await; // 400, still a mutating request
    app.api().tasks("").await; // a plain read: not audited
    alice.cancel(&t, Some("r")).await;

    let page: Value = app.api().audit("").await.body;
    let records = page["records"].as_array().unwrap();
    let summary: Vec<(String, String, u64)> = records
        .iter()
        .map(|r| {
            (
                r["method"].as_str().unwrap().into(),
                r["route"].as_str().unwrap().into(),
                r["status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "POST".to_string(),
                "/api/v1/tasks/{id}/cancel".to_string(),
                200
            ),
            ("POST".into(), "/api/v1/tasks".into(), 400),
            ("GET".into(), "/api/v1/tasks".into(), 401),
            ("GET".into(), "/api/v1/dead-letter".into(), 403),
            ("POST".into(), "/api/v1/tasks".into(), 201),
        ],
        "newest first; the plain read is not there"
    );
    let submit = &records[4];
    assert_eq!(submit["principal"], "alice");
    assert_eq!(submit["roles"], json!(["submitter"]));
    assert_eq!(submit["request_id"], "req-audit-1");
    assert_eq!(
        submit["body_sha256"],
        hex::encode(Sha256::digest(body.as_bytes()))
    );
    assert!(submit["latency_us"].as_u64().unwrap() > 0);
    assert_eq!(records[2]["principal"], "anonymous");
    assert_eq!(records[2]["detail"], "auth failure: malformed");
    assert_eq!(
        records[0]["prev_hash"], records[1]["hash"],
        "each record links to the one before"
    );

    let only_alice: Value = app
        .api()
        .audit("principal=alice&route=/api/v1/tasks")
        .await
        .body;
    assert_eq!(only_alice["records"].as_array().unwrap().len(), 2);
    let paged: Value = app.api().audit("limit=2").await.body;
    let next = paged["next_cursor"].as_str().unwrap();
    let rest: Value = app
        .api()
        .audit(&format!("limit=10&cursor={next}"))
        .await
        .body;
    assert_eq!(rest["records"].as_array().unwrap().len(), 3);

    let v: Value = app.api().audit_verify().await.body;
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["checked"], 5);
}

#[tokio::test]
async fn the_cli_finds_a_tampered_record_in_a_stopped_servers_store() {
    let app = spawn_app().await;
    for i in 0..4 {
        app.submit(json!({"queue": "q", "labels": {"i": i.to_string()}}))
            .await;
    }
    let data_dir = app.pipeline.config().store.data_dir.clone();
    let dir = app.stop().await;
    let verify = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_forgeline"))
            .args(["audit", "verify", "--data-dir"])
            .arg(&data_dir)
            .output()
            .unwrap()
    };
    let ok = verify();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let report: Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(report["checked"], 4);

    {
        let store =
            forgeline::store::Store::open(&data_dir, forgeline::store::Durability::Sync).unwrap();
        let _ = store
            .write(|t| {
                let key = forgeline::store::keys::audit(2);
                let mut r: forgeline::audit::AuditRecord = t.get(&key)?.unwrap();
                r.principal = "someone-else".into();
                t.put(key, &r)
            })
            .unwrap();
        store.close().unwrap();
    }
    let bad = verify();
    assert_eq!(
        bad.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let report: Value = serde_json::from_slice(&bad.stdout).unwrap();
    assert_eq!(report["broken"]["seq"], 2);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("BROKEN at record 2"));
    drop(dir);
}
