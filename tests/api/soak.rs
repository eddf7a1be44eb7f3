//! A bounded soak of the real binary: many concurrent submitters, lessees and
//! readers. It fails if any request stalls (sled 0.34.7 has open deadlock
//! reports under concurrent load; this is where we would see one).
//!
//! Length: `FORGELINE_SOAK_SECS` (the README's test command sets 60).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::process::ServerProcess;

/// A request taking longer than this counts as a stall.
const STALL: Duration = Duration::from_secs(15);

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    stalls: AtomicU64,
    errors: AtomicU64,
}

async fn call(tally: &Tally, what: &str, req: reqwest::RequestBuilder) -> Option<Value> {
    match tokio::time::timeout(STALL, async {
        req.send().await?.error_for_status()?.json::<Value>().await
    })
    .await
    {
        Err(_) => {
            eprintln!("STALL: {what} took longer than {STALL:?}");
            tally.stalls.fetch_add(1, Ordering::Relaxed);
            None
        }
        Ok(Err(e)) => {
            // 409s are expected (a lease that expired under an abandoning worker).
            if e.status() != Some(reqwest::StatusCode::CONFLICT) {
                eprintln!("error: {what}: {e}");
                tally.errors.fetch_add(1, Ordering::Relaxed);
            }
            None
        }
        Ok(Ok(v)) => {
            tally.ok.fetch_add(1, Ordering::Relaxed);
            Some(v)
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
    let client = server.client();
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut jobs = Vec::new();

    for w in 0..16 {
        let (c, s, t, stop) = (client.clone(), server.clone(), tally.clone(), stop.clone());
        jobs.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let mut body = json!({"queue": format!("soak-{}", w % 4), "priority": n % 10, "labels": {"w": w.to_string()}, "payload": {"n": n}});
                if n % 10 == 0 {
                    body["delay"] = json!("300ms");
                }
                call(&t, "submit", c.post(s.url("/api/v1/tasks")).json(&body)).await;
            }
        }));
    }
    for w in 0..8 {
        let (c, s, t, stop) = (client.clone(), server.clone(), tally.clone(), stop.clone());
        jobs.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let q = format!("soak-{}", w % 4);
                let body = json!({"worker_id": format!("soak-worker-{w}"), "max": 4, "wait_ms": 300, "lease_ms": 1500});
                let Some(v) = call(&t, "lease", c.post(s.url(&format!("/api/v1/queues/{q}/lease"))).json(&body)).await else { continue };
                for l in v["leases"].as_array().cloned().unwrap_or_default() {
                    n += 1;
                    let base = format!("/api/v1/leases/{}", l["lease_id"].as_str().unwrap());
                    let token = l["token"].clone();
                    let evs = json!({"token": token, "events": [{"type": "agent_started", "agent_name": "soak"}, {"type": "toolInvoked", "toolName": "bash"}]});
                    call(&t, "events", c.post(s.url(&format!("{base}/events"))).json(&evs)).await;
                    match n % 20 {
                        0 => {} // abandon: the lease expires and the task is redelivered
                        1..=3 => {
                            let body = json!({"token": token, "error": "soak failure", "retryable": true});
                            call(&t, "fail", c.post(s.url(&format!("{base}/fail"))).json(&body)).await;
                        }
                        4 => {
                            call(&t, "heartbeat", c.post(s.url(&format!("{base}/heartbeat"))).json(&json!({"token": token}))).await;
                            call(&t, "complete", c.post(s.url(&format!("{base}/complete"))).json(&json!({"token": token}))).await;
                        }
                        _ => {
                            call(&t, "complete", c.post(s.url(&format!("{base}/complete"))).json(&json!({"token": token, "result": {"n": n}}))).await;
                        }
                    }
                }
            }
        }));
    }
    for r in 0..4 {
        let (c, s, t, stop) = (client.clone(), server.clone(), tally.clone(), stop.clone());
        jobs.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let Some(list) = call(
                    &t,
                    "list",
                    c.get(s.url(&format!("/api/v1/tasks?limit=20&queue=soak-{r}"))),
                )
                .await
                else {
                    continue;
                };
                if let Some(id) = list["tasks"][0]["id"].as_str() {
                    call(
                        &t,
                        "get",
                        c.get(s.url(&format!("/api/v1/tasks/{id}?events=50"))),
                    )
                    .await;
                    if r == 0 {
                        call(
                            &t,
                            "cancel",
                            c.post(s.url(&format!("/api/v1/tasks/{id}/cancel")))
                                .json(&json!({})),
                        )
                        .await;
                    }
                }
                let sse = c.get(s.url("/api/v1/events?max_events=100&idle_timeout=2s"));
                match tokio::time::timeout(STALL, async { sse.send().await?.text().await }).await {
                    Err(_) => {
                        eprintln!("STALL: event stream");
                        t.stalls.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Ok(text)) if text.contains("event:") => {
                        t.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(other) => {
                        eprintln!("error: event stream: {other:?}");
                        t.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                call(&t, "metrics-free health", c.get(s.url("/health/ready"))).await;
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
