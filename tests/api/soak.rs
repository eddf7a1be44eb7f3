//! A bounded soak of the real binary: many concurrent submitters, lessees and
//! readers. It fails if any request stalls (sled 0.34.7 has open deadlock
//! reports under concurrent load; this is where we would see one).
//!
//! Length: `FORGELINE_SOAK_SECS` (the README's test command sets 60).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::client::Call;
use crate::process::ServerProcess;

/// A request taking longer than this counts as a stall.
const STALL: Duration = Duration::from_secs(15);

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    stalls: AtomicU64,
    errors: AtomicU64,
}

async fn call(tally: &Tally, what: &str, req: Call) -> Option<Value> {
    match tokio::time::timeout(STALL, req.try_send()).await {
        Err(_) => {
            eprintln!("STALL: {what} took longer than {STALL:?}");
            tally.stalls.fetch_add(1, Ordering::Relaxed);
            None
        }
        Ok(Err(e)) => {
            eprintln!("error: {what}: {e}");
            tally.errors.fetch_add(1, Ordering::Relaxed);
            None
        }
        // 409s are expected (a lease that expired under an abandoning worker).
        Ok(Ok(r)) if r.status == StatusCode::CONFLICT => None,
        Ok(Ok(r)) if r.status.is_client_error() || r.status.is_server_error() => {
            eprintln!("error: {what}: {}: {}", r.status, r.text);
            tally.errors.fetch_add(1, Ordering::Relaxed);
            None
        }
        Ok(Ok(r)) if r.body.is_null() => {
            eprintln!("error: {what}: not JSON: {:?}", r.text);
            tally.errors.fetch_add(1, Ordering::Relaxed);
            None
        }
        Ok(Ok(r)) => {
            tally.ok.fetch_add(1, Ordering::Relaxed);
            Some(r.body)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submitters_lessees_and_readers_never_stall() {
    let secs: u64 = std::env::var("FORGELINE_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let dir = tempfile::tempdir().unwrap();
    let server = Arc::new(ServerProcess::start(dir.path(), &[]));
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut jobs = Vec::new();

    for w in 0..16 {
        let (c, t, stop) = (server.api().clone(), tally.clone(), stop.clone());
        jobs.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let mut body = json!({"queue": format!("soak-{}", w % 4), "priority": n % 10, "labels": {"w": w.to_string()}, "payload": {"n": n}});
                if n % 10 == 0 {
                    body["delay"] = json!("300ms");
                }
                call(&t, "submit", c.submit(body)).await;
            }
        }));
    }
    for w in 0..8 {
        let (c, t, stop) = (server.api().clone(), tally.clone(), stop.clone());
        jobs.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let (q, worker) = (format!("soak-{}", w % 4), format!("soak-worker-{w}"));
                let Some(v) = call(&t, "lease", c.lease_for(&q, &worker, 4, 300, 1500)).await else { continue };
                for l in v["leases"].as_array().cloned().unwrap_or_default() {
                    n += 1;
                    let evs = json!([{"type": "agent_started", "agent_name": "soak"}, {"type": "toolInvoked", "toolName": "bash"}]);
                    call(&t, "events", c.lease_events(&l, evs)).await;
                    match n % 20 {
                        0 => {} // abandon: the lease expires and the task is redelivered
                        1..=3 => {
                            call(&t, "fail", c.fail(&l, "soak failure", Some(true))).await;
                        }
                        4 => {
                            call(&t, "heartbeat", c.heartbeat(&l)).await;
                            call(&t, "complete", c.complete(&l, None)).await;
                        }
                        _ => {
                            call(&t, "complete", c.complete(&l, Some(json!({"n": n})))).await;
                        }
                    }
                }
            }
        }));
    }
    for r in 0..4 {
        let (c, t, stop) = (server.api().clone(), tally.clone(), stop.clone());
        jobs.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let Some(list) =
                    call(&t, "list", c.tasks(&format!("limit=20&queue=soak-{r}"))).await
                else {
                    continue;
                };
                if let Some(id) = list["tasks"][0]["id"].as_str() {
                    call(&t, "get", c.task(id).query("events=50")).await;
                    if r == 0 {
                        call(&t, "cancel", c.cancel(id, None)).await;
                    }
                }
                let sse = c.events("max_events=100&idle_timeout=2s");
                match tokio::time::timeout(STALL, sse.try_send()).await {
                    Err(_) => {
                        eprintln!("STALL: event stream");
                        t.stalls.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Ok(r)) if r.text.contains("event:") => {
                        t.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(other) => {
                        eprintln!("error: event stream: {other:?}");
                        t.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                call(&t, "metrics-free health", c.health("ready")).await;
            }
        }));
    }

    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(secs) && tally.stalls.load(Ordering::Relaxed) == 0
    {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for j in jobs {
        tokio::time::timeout(STALL * 2, j)
            .await
            .expect("a soak job did not finish")
            .unwrap();
    }
    let (ok, stalls, errors) = (
        tally.ok.load(Ordering::Relaxed),
        tally.stalls.load(Ordering::Relaxed),
        tally.errors.load(Ordering::Relaxed),
    );
    eprintln!("soak: {secs} s, {ok} requests ok, {errors} errors, {stalls} stalls");
    assert_eq!(stalls, 0, "requests stalled");
    assert_eq!(errors, 0, "requests failed");
    assert!(ok > secs * 100, "too little work got through: {ok}");
    let server = Arc::try_unwrap(server).ok().expect("jobs have finished");
    assert!(
        server.terminate().success(),
        "the server exits cleanly after the soak"
    );
}
