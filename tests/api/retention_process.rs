//! Retention on the real binary: a kill -9 in the middle of a pass leaves a
//! consistent store (every removal is one atomic write) that the next start
//! finishes, and a steady workload with a short retention keeps the store's
//! size bounded instead of growing with every task processed.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::wait_until;
use crate::process::ServerProcess;

fn start(data: &Path, completed: &str, batch: &str) -> ServerProcess {
    ServerProcess::start_with_env(
        data,
        &[],
        &[
            ("FORGELINE_RATELIMIT__ENABLED", "false"),
            ("FORGELINE_RETENTION__COMPLETED", completed),
            ("FORGELINE_RETENTION__INTERVAL", "200ms"),
            ("FORGELINE_RETENTION__BATCH", batch),
            ("FORGELINE_STORE__STATS_INTERVAL", "1s"),
            ("FORGELINE_AUDIT__MAX_RECORDS", "3000"),
            ("FORGELINE_AUDIT__PRUNE_INTERVAL", "1s"),
        ],
    )
}

/// `forgeline store check` on a stopped server's data dir: (exit code, output).
fn check(data: &Path) -> (i32, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_forgeline"))
        .args(["store", "check", "--data-dir"])
        .arg(data)
        .env_remove("FORGELINE_CONFIG")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.code().unwrap_or(-1), text)
}

/// Submits `n` tasks to `queue`, then leases and completes them 100 at a time.
async fn run_tasks(server: &ServerProcess, queue: &str, n: usize) {
    let api = server.api();
    for i in 0..n {
        api.submit(json!({"queue": queue, "payload": {"i": i}}))
            .header("Idempotency-Key", &format!("{queue}-{i}"))
            .await
            .expect(StatusCode::CREATED);
    }
    let mut done = 0;
    while done < n {
        let leases = api.lease(queue, "w", 100, 0).await.expect(StatusCode::OK)["leases"]
            .as_array()
            .unwrap()
            .clone();
        assert!(!leases.is_empty(), "leased {done} of {n}");
        let items: Vec<Value> = leases
            .iter()
            .map(
                |l| json!({"lease_id": l["lease_id"], "token": l["token"], "result": {"ok": true}}),
            )
            .collect();
        let body = json!({ "items": items }).to_string();
        let r = api.send("POST", "/api/v1/leases/complete", body).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        done += leases.len();
    }
}

async fn completed(server: &ServerProcess, queue: &str) -> f64 {
    let series = format!("forgeline_tasks{{queue=\"{queue}\",state=\"completed\"}}");
    server.api().metric(&series).await.unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_during_a_retention_pass_leaves_a_consistent_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Kept for 2 s, removed 2 tasks per write: a pass over 1,200 tasks
    // takes hundreds of writes, long enough to be cut.
    let server = start(&data, "2s", "2");
    run_tasks(&server, "kq", 1200).await;
    let mut peak = 0.0;
    let mut cut_at = None;
    for _ in 0..3000 {
        let n = completed(&server, "kq").await;
        peak = f64::max(peak, n);
        if n < peak && n > 100.0 {
            cut_at = Some(n);
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let cut_at = cut_at.expect("retention started removing within 15 s");
    server.kill9();
    let (code, out) = check(&data);
    assert_eq!(code, 0, "after kill -9 with {cut_at} tasks left: {out}");
    // The next start finishes the job.
    let server = start(&data, "2s", "64");
    wait_until("the rest is removed", Duration::from_secs(30), async || {
        completed(&server, "kq").await == 0.0
    })
    .await;
    assert!(server.terminate().success());
    let (code, out) = check(&data);
    assert_eq!(code, 0, "{out}");
}

/// The store's size on disk after each round of a steady workload.
async fn sizes_over_rounds(server: &ServerProcess, rounds: usize, per_round: usize) -> Vec<f64> {
    let mut sizes = Vec::new();
    for r in 0..rounds {
        run_tasks(server, &format!("b{r}"), per_round).await;
        // Let the pass after the retention time remove the round.
        let q = format!("b{r}");
        wait_until(
            "the round is removed",
            Duration::from_secs(30),
            async || completed(server, &q).await == 0.0,
        )
        .await;
        let size = server
            .api()
            .metric("forgeline_store_size_bytes")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let m = server.api().metrics().await.text;
        let logical: Vec<String> = m
            .lines()
            .filter(|l| l.starts_with("forgeline_store_bytes{"))
            .map(|l| l.replace("forgeline_store_bytes", ""))
            .collect();
        eprintln!("round {r}: on disk {size}, by kind {logical:?}");
        sizes.push(size);
    }
    sizes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_workload_with_short_retention_keeps_the_store_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start(&data, "500ms", "32");
    let sizes = sizes_over_rounds(&server, 12, 1000).await;
    eprintln!("store size after each round of 1,000 tasks: {sizes:?}");
    // Bounded: once sled's segment cleaning has caught up (a few rounds),
    // the last four rounds are no bigger than the four before them. Without
    // retention every round adds about 3 MB here (each task leaves ~10 keys),
    // which would make the late peak 1.6x the middle one.
    let peak = |r: std::ops::Range<usize>| sizes[r].iter().copied().fold(0.0, f64::max);
    let (middle, late) = (peak(4..8), peak(8..12));
    assert!(
        late < middle * 1.25,
        "the store grew with the work done: {sizes:?}"
    );
    assert!(server.terminate().success());
    let (code, out) = check(&data);
    assert_eq!(code, 0, "{out}");
}
