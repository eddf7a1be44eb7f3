//! Crashes and restarts of the real binary: every acknowledged task survives
//! `kill -9`, exactly once; SIGTERM exits cleanly; start-up reconciliation
//! requeues tasks whose lease died with the process.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::helpers::wait_until;
use crate::process::ServerProcess;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_task_survives_kill_9_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..24 {
        let (api, acked) = (server.api().clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            for n in 0.. {
                let seq = format!("{w}-{n}");
                let r = api
                    .submit(json!({"queue": "crash", "labels": {"seq": seq}}))
                    .try_send()
                    .await;
                match r {
                    Ok(r) if r.status == 201 => {
                        let Some(id) = r.body["id"].as_str() else {
                            return; // the process died mid-body
                        };
                        acked.lock().unwrap().push((id.to_string(), seq));
                    }
                    _ => return, // connection refused or reset: the server is gone
                }
            }
        }));
    }
    // Let the writers get going, then pull the plug mid-load.
    wait_until(
        "300 submissions are acknowledged",
        Duration::from_secs(60),
        async || acked.lock().unwrap().len() >= 300,
    )
    .await;
    server.kill9();
    for w in writers {
        let _ = w.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 300);

    let server = ServerProcess::start(dir.path(), &[]);
    let api = server.api();
    let mut stored_seqs = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut query = "queue=crash&limit=500".to_string();
        if let Some(c) = &cursor {
            query.push_str(&format!("&cursor={c}"));
        }
        let page = api.tasks(&query).await.body;
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
        let r = api.task(id).await;
        assert_eq!(r.status, 200, "acknowledged task {id} ({seq}) was lost");
        let t = r.body;
        assert_eq!(t["labels"]["seq"], seq.as_str());
        assert_eq!(t["state"], "queued");
    }
    // The event log is intact too: two events per stored task, ids 1..=n.
    let events = api.events("idle_timeout=500ms").await.sse();
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
    let t = server.api().submit(json!({"queue": "r"})).await.body;
    let lease = server.api().lease_for("r", "w", 1, 0, 200).await.body;
    assert_eq!(lease["leases"].as_array().unwrap().len(), 1);
    server.kill9();
    tokio::time::sleep(Duration::from_millis(300)).await; // the lease runs out while nobody watches
    let server = ServerProcess::start(dir.path(), &[]);
    let task = server.api().task(&t).await.body;
    assert_eq!(task["state"], "queued");
    assert_eq!(task["runs"][0]["outcome"], "lease_expired");
    assert!(server.terminate().success(), "SIGTERM exits 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_finishes_accepted_requests_and_exits_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    let pid = server.child.id() as libc::pid_t;
    let signalled = std::sync::Arc::new(std::sync::OnceLock::<std::time::Instant>::new());
    let mut clients = Vec::new();
    for c in 0..16 {
        let (api, signalled) = (server.api().clone(), signalled.clone());
        clients.push(tokio::spawn(async move {
            let (mut acked, mut refused_after) = (Vec::new(), 0u32);
            for i in 0..10_000 {
                match api
                    .submit(json!({"queue": "load", "labels": {"c": c.to_string(), "i": i.to_string()}}))
                    .try_send()
                    .await
                {
                    Ok(r) => {
                        assert_eq!(r.status, reqwest::StatusCode::CREATED, "an answered request failed");
                        assert!(!r.body.is_null(), "a complete body: {:?}", r.text);
                        acked.push(r.body["id"].as_str().unwrap().to_string());
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
    // SIGTERM once the load is running.
    wait_until(
        "100 submissions under load have committed",
        Duration::from_secs(30),
        async || {
            server
                .api()
                .metric(r#"forgeline_tasks_submitted_total{queue="load"}"#)
                .await
                .is_some_and(|n| n >= 100.0)
        },
    )
    .await;
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
    for id in &acked {
        let r = server.api().task(id).await;
        assert_eq!(r.status, reqwest::StatusCode::OK, "task {id} lost");
    }
    assert!(server.terminate().success());
}
