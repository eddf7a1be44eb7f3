//! Group commit versus a flush per request, at 1, 16 and 64 concurrent
//! clients. Each client submits tasks through the pipeline (task record,
//! indexes, counters and two events per submit) and waits until its submit is
//! on stable storage before sending the next, as the HTTP handler does.
//!
//!     cargo run --release --example commit_bench -- [SECONDS_PER_CASE]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use forgeline::app::App;
use forgeline::config::Config;
use forgeline::store::Durability;
use forgeline::tasks::submit::{validate, SubmitRequest};
use forgeline::tasks::Submission;

#[derive(Clone, Copy, Debug)]
enum Mode {
    FlushPerRequest,
    GroupCommit,
}

async fn run(mode: Mode, clients: usize, secs: u64) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.store.data_dir = dir.path().join("data");
    config.executor.enabled = false;
    // Per-request mode: skip the committer, then pay for a flush + fdatasync
    // after every submit.
    config.store.durability = match mode {
        Mode::GroupCommit => Durability::Sync,
        Mode::FlushPerRequest => Durability::Relaxed,
    };
    let app = App::build(config.clone()).await.unwrap();
    let p = app.pipeline().clone();
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(secs);
    let mut handles = Vec::new();
    for c in 0..clients {
        let (p, done, config) = (p.clone(), done.clone(), config.clone());
        handles.push(tokio::spawn(async move {
            while Instant::now() < until {
                let body = serde_json::json!({"queue": "bench", "labels": {"client": c.to_string()}, "payload": {"goal": "x".repeat(200)}});
                let req: SubmitRequest = serde_json::from_value(body).unwrap();
                let task = validate(req, &config, p.now()).unwrap();
                let s = Submission { principal: "bench".into(), idempotency: None, traceparent: None, task };
                p.submit(s).await.unwrap();
                if let Mode::FlushPerRequest = mode {
                    let store = p.store().clone();
                    tokio::task::spawn_blocking(move || store.sync_now()).await.unwrap().unwrap();
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let started = Instant::now();
    for h in handles {
        h.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    println!("| clients | flush per request (tasks/s) | group commit (tasks/s) | ratio |");
    println!("|--------:|----------------------------:|-----------------------:|------:|");
    for clients in [1, 16, 64] {
        let per = run(Mode::FlushPerRequest, clients, secs).await;
        let group = run(Mode::GroupCommit, clients, secs).await;
        println!(
            "| {clients} | {per:.0} | {group:.0} | {:.1}x |",
            group / per
        );
    }
}
