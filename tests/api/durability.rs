//! Crashes and restarts of the real binary: every acknowledged task survives
//! `kill -9`, exactly once; SIGTERM exits cleanly; start-up reconciliation
//! requeues tasks whose lease died with the process.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::process::ServerProcess;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_task_survives_kill_9_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    let client = server.client();
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..24 {
        let (client, url, acked) = (client.clone(), server.url("/api/v1/tasks"), acked.clone());
        writers.push(tokio::spawn(async move {
            for n in 0.. {
                let seq = format!("{w}-{n}");
                let r = client
                    .post(&url)
                    .json(&json!({"queue": "crash", "labels": {"seq": seq}}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 201 => {
                        let v: Value = match r.json().await {
                            Ok(v) => v,
                            Err(_) => return, // the process died mid-body
                        };
                        acked
                            .lock()
                            .unwrap()
                            .push((v["id"].as_str().unwrap().to_string(), seq));
                    }
                    _ => return, // connection refused or reset: the server is gone
                }
            }
        }));
    }
    // Let the writers get going, then pull the plug mid-load.
    while acked.lock().unwrap().len() < 300 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill9();
    for w in writers {
        let _ = w.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 300);

    let server = ServerProcess::start(dir.path(), &[]);
    let mut stored_seqs = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = server.url("/api/v1/tasks?queue=crash&limit=500");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = client.get(url).send().await.unwrap().json().await.unwrap();
        for t in page["tasks"].as_array().unwrap() {
            stored_seqs.push(t["labels"]["seq"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let unique: HashSet<&String> = stored_seqs.iter().collect();
    assert_eq!(
        unique.len(),
        stored_seqs.len(),
        "no submission is stored twice"
    );
    for (id, seq) in &acked {
        let r = client
            .get(server.url(&format!("/api/v1/tasks/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "acknowledged task {id} ({seq}) was lost");
        let t: Value = r.json().await.unwrap();
        assert_eq!(t["labels"]["seq"], seq.as_str());
        assert_eq!(t["state"], "queued");
    }
    // The event log is intact too: two events per stored task, ids 1..=n.
    let r = client
        .get(server.url("/api/v1/events?idle_timeout=500ms"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events = crate::helpers::parse_sse(&r);
    assert_eq!(events.len(), stored_seqs.len() * 2);
    let ids: Vec<u64> = events
        .iter()
        .map(|e| u64::from_str_radix(&e.id, 16).unwrap())
        .collect();
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>());
    assert!(server.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_requeues_tasks_whose_lease_expired_while_the_server_was_down() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    let client = server.client();
    let t: Value = client
        .post(server.url("/api/v1/tasks"))
        .json(&json!({"queue": "r"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let lease: Value = client
        .post(server.url("/api/v1/queues/r/lease"))
        .json(&json!({"worker_id": "w", "lease_ms": 200}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(lease["leases"].as_array().unwrap().len(), 1);
    server.kill9();
    tokio::time::sleep(Duration::from_millis(300)).await; // the lease runs out while nobody watches
    let server = ServerProcess::start(dir.path(), &[]);
    let task: Value = client
        .get(server.url(&format!("/api/v1/tasks/{}", t["id"].as_str().unwrap())))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(task["state"], "queued");
    assert_eq!(task["runs"][0]["outcome"], "lease_expired");
    assert!(server.terminate().success(), "SIGTERM exits 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_finishes_accepted_requests_and_exits_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    let pid = server.child.id() as libc::pid_t;
    let client = server.client();
    let url = server.url("/api/v1/tasks");
    let signalled = std::sync::Arc::new(std::sync::OnceLock::<std::time::Instant>::new());
    let mut clients = Vec::new();
    for c in 0..16 {
        let (client, url, signalled) = (client.clone(), url.clone(), signalled.clone());
        clients.push(tokio::spawn(async move {
            let (mut acked, mut refused_after) = (Vec::new(), 0u32);
            for i in 0..10_000 {
                match client
                    .post(&url)
                    .json(&json!({"queue": "load", "labels": {"c": c.to_string(), "i": i.to_string()}}))
                    .send()
                    .await
                {
                    Ok(r) => {
                        let status = r.status();
                        assert_eq!(status, reqwest::StatusCode::CREATED, "an answered request failed");
                        let body: Value = r.json().await.expect("a complete body");
                        acked.push(body["id"].as_str().unwrap().to_string());
                    }
                    Err(e) => {
                        // Unanswered requests only once shutdown began (the
                        // listener closed, or an idle keep-alive connection was
                        // closed as the client reused it: HTTP/1's close race).
                        assert!(
                            signalled.get().is_some(),
                            "a request failed before SIGTERM: {e:?}"
                        );
                        refused_after += 1;
                        if refused_after > 3 {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = signalled.set(std::time::Instant::now());
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let started = std::time::Instant::now();
    let mut acked = Vec::new();
    for c in clients {
        acked.extend(c.await.unwrap());
    }
    let status = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert!(status.success(), "exit code 0: {status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "exited within the shutdown timeout"
    );
    assert!(acked.len() > 10, "the load ran: {}", acked.len());
    // Every acknowledged task is there after a restart.
    let server = ServerProcess::start(dir.path(), &[]);
    let client = server.client();
    for id in &acked {
        let r = client
            .get(server.url(&format!("/api/v1/tasks/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::OK, "task {id} lost");
    }
    assert!(server.terminate().success());
}
