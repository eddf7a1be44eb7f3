//! Group commit versus a flush per request, at 1, 16 and 64 concurrent
//! writers. Each write is a task-sized record; each writer waits until its
//! write is on stable storage before the next, as a request handler does.
//!
//!     cargo run --release --example commit_bench -- [SECONDS_PER_CASE]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use forgeline::config::Durability;
use forgeline::store::{Store, StoreError};

#[derive(Clone, Copy, Debug)]
enum Mode {
    FlushPerRequest,
    GroupCommit,
}

async fn run(mode: Mode, writers: usize, secs: u64) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let durability = match mode {
        Mode::GroupCommit => Durability::Sync,
        Mode::FlushPerRequest => Durability::Relaxed,
    };
    let store = Store::open(dir.path(), durability).unwrap();
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(secs);
    let value = vec![b'x'; 600];
    let mut handles = Vec::new();
    for w in 0..writers {
        let (store, done, value) = (store.clone(), done.clone(), value.clone());
        handles.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < until {
                n += 1;
                let key = format!("bench/{w:03}/{n:012}").into_bytes();
                let ((), c) = store
                    .write(|t| {
                        t.put_raw(key, &value);
                        Ok::<_, StoreError>(())
                    })
                    .unwrap();
                match mode {
                    Mode::GroupCommit => store.wait_durable(c).await.unwrap(),
                    Mode::FlushPerRequest => {
                        let s = store.clone();
                        tokio::task::spawn_blocking(move || s.sync_now())
                            .await
                            .unwrap()
                            .unwrap();
                    }
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
    println!("| writers | flush per request (writes/s) | group commit (writes/s) | ratio |");
    println!("|--------:|-----------------------------:|------------------------:|------:|");
    for writers in [1, 16, 64] {
        let per = run(Mode::FlushPerRequest, writers, secs).await;
        let group = run(Mode::GroupCommit, writers, secs).await;
        println!(
            "| {writers} | {per:.0} | {group:.0} | {:.1}x |",
            group / per
        );
    }
}
