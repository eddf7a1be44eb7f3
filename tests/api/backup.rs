//! Online backup and restore on the real binary: a backup taken while
//! clients submit holds every task acknowledged before it began, restores
//! into a consistent store whose audit chain verifies, and a server starts
//! on it; a damaged file, a non-empty directory and a second concurrent
//! backup are refused.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use forgeline::model::{TaskId, TaskRecord};
use forgeline::store::{keys, Durability, Store};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::spawn_app;
use crate::process::ServerProcess;

fn forgeline(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_forgeline"))
        .args(args)
        .env_remove("FORGELINE_CONFIG")
        .env_remove("FORGELINE_TOKEN")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_every_acknowledged_task_and_a_verifying_chain() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server =
        ServerProcess::start_with_env(&data, &[], &[("FORGELINE_RATELIMIT__ENABLED", "false")]);
    let token = server.admin_token.clone();
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..4 {
        let (api, acked, stop) = (server.api().clone(), acked.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let v = api
                    .submit(json!({"queue": "bq", "payload": {"c": c, "i": i}}))
                    .await
                    .expect(StatusCode::CREATED);
                acked
                    .lock()
                    .unwrap()
                    .push(v["id"].as_str().unwrap().to_string());
                i += 1;
            }
        }));
    }
    crate::helpers::wait_until(
        "some tasks are in",
        std::time::Duration::from_secs(20),
        async || acked.lock().unwrap().len() >= 300,
    )
    .await;
    // Everything acknowledged before the backup begins must be in it.
    let before: Vec<String> = acked.lock().unwrap().clone();
    let file = dir.path().join("under-load.backup");
    let url = server.api().url("");
    let out = tokio::task::spawn_blocking({
        let file = file.clone();
        move || {
            forgeline(&[
                "backup",
                "--out",
                path(&file),
                "--url",
                &url,
                "--token",
                &token,
            ])
        }
    })
    .await
    .unwrap();
    let during = acked.lock().unwrap().len() - before.len();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        during > 0,
        "the clients kept submitting while the backup ran"
    );

    let restored = dir.path().join("restored");
    let out = forgeline(&[
        "restore",
        "--from",
        path(&file),
        "--data-dir",
        path(&restored),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["consistent"], true, "{report}");
    assert_eq!(report["audit"]["ok"], true, "{report}");
    assert_eq!(report["files"], json!(["audit-key"]));
    {
        let store = Store::open(&restored, Durability::Sync).unwrap();
        for id in &before {
            let tid: TaskId = id.parse().unwrap();
            let t = store
                .get::<TaskRecord>(&keys::task(&tid.to_bytes()))
                .unwrap();
            assert!(
                t.is_some(),
                "task {id}, acknowledged before the backup, is missing"
            );
        }
        store.close().unwrap();
    }
    // A server starts on the restored directory (with its audit key).
    drop(server);
    let again =
        ServerProcess::start_with_env(&restored, &[], &[("FORGELINE_RATELIMIT__ENABLED", "false")]);
    again.api().task(&before[0]).await.expect(StatusCode::OK);
    assert!(again.terminate().success());

    // Restore refuses a directory that is not empty.
    let out = forgeline(&[
        "restore",
        "--from",
        path(&file),
        "--data-dir",
        path(&restored),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("not empty"), "{}", text(&out));
    // A damaged file is refused and leaves nothing behind.
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    let damaged = dir.path().join("damaged.backup");
    std::fs::write(&damaged, &bytes).unwrap();
    let target = dir.path().join("from-damaged");
    let out = forgeline(&[
        "restore",
        "--from",
        path(&damaged),
        "--data-dir",
        path(&target),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(!target.exists(), "a failed restore leaves no directory");
    // A cut file too.
    std::fs::write(&damaged, &bytes[..mid]).unwrap();
    let out = forgeline(&[
        "restore",
        "--from",
        path(&damaged),
        "--data-dir",
        path(&target),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(!target.exists());
    // The file is not overwritten by a second backup.
    let out = forgeline(&[
        "backup",
        "--out",
        path(&file),
        "--data-dir",
        path(&restored),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[tokio::test]
async fn an_offline_backup_and_a_second_online_backup_at_once() {
    let app = spawn_app().await;
    app.submit(json!({"queue": "q"})).await;
    // While one backup holds the snapshot, another is refused with 409.
    let held = app.pipeline.store().snapshot().unwrap();
    let r = app.api().backup().await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.code(), "backup_running");
    drop(held);
    let r = app.api().backup().await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.headers.get("content-type").unwrap(),
        "application/octet-stream"
    );
    // Only review_admin may take one.
    let observer = app.api_as("olga", &[forgeline::auth::Role::Observer]);
    assert_eq!(observer.backup().await.status, StatusCode::FORBIDDEN);
    // A stopped server's store, read directly.
    let dir = app.stop().await;
    let file = dir.path().join("offline.backup");
    let data = dir.path().join("data");
    let out = forgeline(&["backup", "--out", path(&file), "--data-dir", path(&data)]);
    assert!(out.status.success(), "{}", text(&out));
    let restored = dir.path().join("restored");
    let out = forgeline(&[
        "restore",
        "--from",
        path(&file),
        "--data-dir",
        path(&restored),
    ]);
    assert!(out.status.success(), "{}", text(&out));
}
