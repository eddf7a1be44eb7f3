//! `forgeline bench`: the real binary, against a server it starts and
//! against one at `--url`, with small counts (what is measured here is that
//! the bench measures, not how fast this machine is).

use std::process::Command;

use forgeline::auth::Role;
use serde_json::Value;

use crate::helpers::spawn_real_time_app;

/// The smallest run that still goes through every measurement.
const SMALL: &[&str] = &[
    "--steps",
    "30",
    "--tasks",
    "120",
    "--clients",
    "1,4",
    "--e2e-clients",
    "4",
    "--e2e-workers",
    "2",
    "--lease-batch",
    "10",
    "--pickup-samples",
    "15",
    "--health-clients",
    "4",
    "--health-duration",
    "300ms",
    "--json",
];

fn bench(args: &[&str]) -> std::process::Output {
    bench_with_env(args, &[])
}

fn bench_with_env(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_forgeline"))
        .arg("bench")
        .args(args)
        .env_remove("FORGELINE_TOKEN")
        .envs(env.iter().copied())
        .output()
        .expect("forgeline bench runs")
}

fn measurement<'a>(report: &'a Value, name: &str, clients: u64) -> &'a Value {
    report["measurements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name && m["clients"] == clients)
        .unwrap_or_else(|| panic!("no {name} measurement with {clients} clients in {report:#}"))
}

fn assert_throughput(m: &Value, count: u64) {
    assert_eq!(m["count"], count, "{m:#}");
    assert!(m["per_second"].as_f64().unwrap() > 0.0, "{m:#}");
    let (p50, p99, max) = (
        m["latency"]["p50_ms"].as_f64().unwrap(),
        m["latency"]["p99_ms"].as_f64().unwrap(),
        m["latency"]["max_ms"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{m:#}");
}

#[test]
fn bench_starts_its_own_server_measures_every_phase_and_stops_it() {
    // The bench's temporary directory goes under `tmp`, so the test sees
    // what it leaves behind; a FORGELINE_TOKEN meant for --url is ignored.
    let tmp = tempfile::tempdir().unwrap();
    let out = bench_with_env(
        &[
            SMALL,
            &["--durability", "relaxed", "--stored", "300", "--keep-dir"],
        ]
        .concat(),
        &[
            ("TMPDIR", tmp.path().to_str().unwrap()),
            ("FORGELINE_TOKEN", "not-a-token"),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    let report: Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    assert_eq!(report["schema"], "forgeline.bench.v1");
    assert_eq!(report["target"]["spawned"], true);
    assert_eq!(report["target"]["durability"], "relaxed");
    // Counted by the server's own /metrics, not echoed from the flag.
    assert_eq!(report["target"]["stored_tasks"], 300);
    let title = report["measurements"][0]["title"].as_str().unwrap();
    assert!(title.contains("relaxed"), "{title}");
    assert_eq!(report["target"]["version"], env!("CARGO_PKG_VERSION"));
    for clients in [1, 4] {
        assert_throughput(measurement(&report, "submit", clients), 120);
    }
    for name in ["e2e", "e2e_batched"] {
        let e2e = measurement(&report, name, 4);
        assert_eq!(e2e["workers"], 2);
        assert_throughput(e2e, 120);
    }
    // Steps through the spawned server's executor (pool 2).
    let steps = measurement(&report, "steps", 8);
    assert_eq!(steps["workers"], 2);
    assert_eq!(steps["count"], 30);
    assert!(steps["per_second"].as_f64().unwrap() > 0.0, "{steps:#}");
    let pickup = measurement(&report, "pickup", 1);
    assert_eq!(pickup["count"], 15);
    assert!(pickup.get("per_second").is_none(), "{pickup:#}");
    assert!(pickup["latency"]["p99_ms"].as_f64().unwrap() > 0.0);
    for name in ["health_live", "bare_warp"] {
        let m = measurement(&report, name, 4);
        assert!(m["count"].as_u64().unwrap() > 0, "{m:#}");
    }
    assert!(report["health_vs_bare_warp"].as_f64().unwrap() > 0.0);
    assert!(report["start_to_ready_ms"].as_f64().unwrap() > 0.0);
    let (idle, peak) = (
        report["idle_rss_bytes"].as_u64().unwrap(),
        report["peak_rss_bytes"].as_u64().unwrap(),
    );
    assert!(0 < idle && idle <= peak, "idle {idle} peak {peak}");
    assert_eq!(report["peak_rss_source"], "VmHWM");

    // --keep-dir kept exactly the server's directory, and the server in it
    // shut down cleanly on the bench's SIGTERM.
    let kept: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(stderr.contains(kept[0].to_str().unwrap()), "{stderr}");
    assert!(kept[0].join("data").join("db").exists());
    let log = std::fs::read_to_string(kept[0].join("server.log")).unwrap();
    assert!(log.contains("shutdown complete"), "{log}");
}

#[test]
fn bench_without_keep_dir_leaves_nothing_behind_and_prints_a_table() {
    let tmp = tempfile::tempdir().unwrap();
    let args = [
        "--tasks",
        "20",
        "--clients",
        "2",
        "--pickup-samples",
        "2",
        "--health-duration",
        "100ms",
        "--no-bare-warp",
    ];
    let out = bench_with_env(&args, &[("TMPDIR", tmp.path().to_str().unwrap())]);
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8_lossy(&out.stdout);
    for row in [
        "durable submits/s",
        "submit → lease → complete",
        "enqueue → pickup",
        "peak RSS",
    ] {
        assert!(table.contains(row), "{row}: {table}");
    }
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

#[test]
fn bench_refuses_flags_that_do_not_apply_with_a_usage_error() {
    for args in [
        &["--url", "http://127.0.0.1:9", "--durability", "sync"][..],
        &["--url", "http://127.0.0.1:9", "--stored", "10"],
        &["--token", "abc"],
        &["--tasks", "0"],
        &["--clients", "0"],
        &["--lease-batch", "101"],
        &["--url", "https://127.0.0.1:9"],
        &["--url", "http://127.0.0.1:9", "--keep-dir"],
        &["--token-file", "/nonexistent"],
    ] {
        let out = bench(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("forgeline bench:"), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_against_a_url_measures_that_server_and_leaves_no_task_queued() {
    let app = spawn_real_time_app(|c| c.ratelimit.enabled = false).await;
    let token = app.token("bench", &[Role::Submitter, Role::Worker]);
    let url = app.api().url("");
    let out = tokio::task::spawn_blocking(move || {
        bench(&[SMALL, &["--url", &url, "--token", &token, "--no-bare-warp"]].concat())
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["target"]["spawned"], false);
    assert_eq!(report["target"]["stored_tasks"], 0);
    assert_eq!(report["target"]["durability"], "sync");
    assert_throughput(measurement(&report, "submit", 4), 120);
    assert_throughput(measurement(&report, "e2e", 4), 120);
    assert_throughput(measurement(&report, "e2e_batched", 4), 120);
    assert!(report["peak_rss_bytes"].as_u64().unwrap() > 0);
    assert_eq!(report["peak_rss_source"], "scraped");
    assert!(report["start_to_ready_ms"].is_null());
    assert!(report["health_vs_bare_warp"].is_null());

    // What the bench submitted reached the server, and nothing is left queued.
    let metrics = app.metrics().await;
    let submitted = |queue: &str| {
        let prefix = format!("forgeline_tasks_submitted_total{{queue=\"{queue}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no submissions on {queue}"))
            .parse::<u64>()
            .unwrap()
    };
    assert_eq!(submitted("bench-submit"), 240);
    // One end-to-end phase with a complete per lease, one with batches.
    assert_eq!(submitted("bench-e2e"), 240);
    // 15 measured pickup rounds and 10 warm-up ones.
    assert_eq!(submitted("bench-pickup"), 25);
    for queue in ["bench-submit", "bench-e2e", "bench-pickup"] {
        for state in ["queued", "running"] {
            let r = app
                .api()
                .tasks(&format!("queue={queue}&state={state}"))
                .await;
            let left = r.body["tasks"].as_array().unwrap().len();
            assert_eq!(left, 0, "{queue} {state}: {:#}", r.body);
        }
        let r = app
            .api()
            .tasks(&format!("queue={queue}&state=completed&limit=500"))
            .await;
        assert!(!r.body["tasks"].as_array().unwrap().is_empty(), "{queue}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_against_a_url_without_the_worker_role_fails_and_names_the_call() {
    let app = spawn_real_time_app(|c| c.ratelimit.enabled = false).await;
    let token = app.token("bench", &[Role::Submitter]);
    let url = app.api().url("");
    let out = tokio::task::spawn_blocking(move || {
        bench(&[SMALL, &["--url", &url, "--token", &token, "--no-bare-warp"]].concat())
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/lease") && stderr.contains("403"),
        "{stderr}"
    );
}
