//! A stalled disk, with the real binary on a loop-mounted ext4 that the test
//! freezes (`fsfreeze`): every write to it blocks in the kernel, as on a disk
//! that stops answering. The commit thread is stuck in its flush, but the
//! tokio workers never call into sled's write path, so liveness, readiness,
//! `/metrics` and reads keep answering; after the stall limit new writes are
//! refused fast with 503 `store_unavailable` and `Retry-After` (rate limits
//! on, so their buckets are exercised too); SIGTERM ends the server within
//! its drain time; and after the thaw nothing acknowledged is lost.
//!
//! Mounting needs root. Under `CI=true` its absence is a failure; elsewhere
//! the test says why it did not run.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::wait_until;
use crate::process::ServerProcess;

/// A 64 MiB ext4 image loop-mounted on a temporary directory; thawed and
/// unmounted on drop.
struct LoopFs {
    dir: tempfile::TempDir,
    _image: tempfile::TempDir,
}

impl LoopFs {
    fn mount() -> Option<LoopFs> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "the disk-stall test loop-mounts a file system and must run as root under CI"
            );
            eprintln!("disk_stall: not root, so nothing can be mounted; not run");
            return None;
        }
        let image_dir = tempfile::tempdir().unwrap();
        let image = image_dir.path().join("fs.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(64 * 1024 * 1024)
            .unwrap();
        run("mkfs.ext4", &["-q".as_ref(), image.as_os_str()]);
        let dir = tempfile::tempdir().unwrap();
        run(
            "mount",
            &[
                "-o".as_ref(),
                "loop".as_ref(),
                image.as_os_str(),
                dir.path().as_os_str(),
            ],
        );
        Some(LoopFs {
            dir,
            _image: image_dir,
        })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn freeze(&self) {
        run("fsfreeze", &["-f".as_ref(), self.path().as_os_str()]);
    }

    fn thaw(&self) {
        let _ = Command::new("fsfreeze").arg("-u").arg(self.path()).status();
    }
}

/// Thaws the file system when dropped: declared after the server, so that a
/// failing assertion thaws before the server's drop waits for its exit.
struct Thaw<'a>(&'a LoopFs);

impl Drop for Thaw<'_> {
    fn drop(&mut self) {
        self.0.thaw();
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        self.thaw();
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn run(cmd: &str, args: &[&std::ffi::OsStr]) {
    let status = Command::new(cmd)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("{cmd} runs: {e}"));
    assert!(status.success(), "{cmd} {args:?} failed: {status}");
}

/// `fut` must finish within 3 s: the server answers, it does not hang.
async fn answers<T>(what: &str, fut: impl std::future::IntoFuture<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(3), fut)
        .await
        .unwrap_or_else(|_| panic!("{what} did not answer within 3 s while the disk was stalled"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_disk_leaves_probes_and_reads_answering_and_sigterm_working() {
    let Some(fs) = LoopFs::mount() else { return };
    let data = fs.path().join("data");
    let env = [
        ("FORGELINE_STORE__MIN_FREE_BYTES", "1048576"),
        ("FORGELINE_SERVER__SHUTDOWN_TIMEOUT", "2s"),
    ];
    let mut server = ServerProcess::start_with_env(&data, &[], &env);
    let thaw = Thaw(&fs);
    let api = server.api().clone();
    let before = api.submit(json!({"queue": "stall"})).await;
    assert_eq!(before.status, 201, "{}", before.text);
    let before = before.body["id"].as_str().unwrap().to_string();

    fs.freeze();
    let frozen_at = Instant::now();
    // Four writers: their first submits wait on the stuck commit round (they
    // are not acknowledged); later ones are refused once the round has
    // stalled. Each answer is recorded; bounded in count.
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..4 {
        let (api, acked) = (api.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            for n in 0..50 {
                let r = api
                    .submit(json!({"queue": "stall", "payload": {"w": w, "n": n}}))
                    .await;
                match r.status.as_u16() {
                    201 => acked
                        .lock()
                        .unwrap()
                        .push(r.body["id"].as_str().unwrap().into()),
                    503 | 429 => tokio::time::sleep(Duration::from_millis(100)).await,
                    s => panic!("unexpected {s}: {}", r.text),
                }
            }
        }));
    }

    // Past the stall limit a write is refused at once, with Retry-After.
    let refused = wait_until_refused(&api).await;
    assert!(frozen_at.elapsed() >= forgeline::store::STALL_AFTER);
    assert_eq!(refused.code(), "store_unavailable", "{}", refused.text);
    assert!(
        refused.headers.contains_key("retry-after"),
        "{:?}",
        refused.headers
    );
    assert!(
        refused.text.contains("has not finished a commit"),
        "{}",
        refused.text
    );

    // Probes, metrics and reads answer while the commit thread is stuck.
    assert_eq!(
        answers("/health/live", api.health("live")).await.status,
        200
    );
    let ready = answers("/health/ready", api.health("ready")).await;
    assert_eq!(
        ready.status, 503,
        "not ready while writes fail: {}",
        ready.text
    );
    let metrics = answers("/metrics", api.metrics()).await;
    assert_eq!(metrics.status, 200);
    let read = answers("a task read", api.task(&before)).await;
    assert_eq!(read.status, 200, "{}", read.text);

    // SIGTERM: the server gives up on the stuck round at its drain time and
    // ends. (The kernel keeps the process until the frozen write returns,
    // so the exit status is collected after the thaw.)
    // SAFETY: sending a signal to our own child.
    unsafe { libc::kill(server.child.id() as libc::pid_t, libc::SIGTERM) };
    let logs = server.logs.clone();
    wait_until(
        "the server logs 'shutdown complete' within its drain time",
        Duration::from_secs(8),
        async || {
            logs.lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("shutdown complete"))
        },
    )
    .await;
    assert!(
        server.log_text().contains("final store flush failed"),
        "the stuck round was given up on: {}",
        server.log_text()
    );
    drop(thaw);
    let status = server.child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    for w in writers {
        // Writers waiting on the stuck round saw their connection close.
        let _ = w.await;
    }
    drop(server);

    // Nothing acknowledged is lost.
    let server = ServerProcess::start_with_env(&data, &[], &env);
    let api = server.api().clone();
    let acked = acked.lock().unwrap().clone();
    for id in acked.iter().chain([&before]) {
        let r = api.task(id).await;
        assert_eq!(r.status, 200, "acknowledged task {id} is lost: {}", r.text);
    }
    let after = api.submit(json!({"queue": "stall"})).await;
    assert_eq!(after.status, 201, "{}", after.text);
    drop(server);
}

/// Submits until one is refused with 503 (each attempt must answer within
/// 3 s once the stall limit has passed), at most 20 s.
async fn wait_until_refused(api: &crate::client::TestClient) -> crate::client::Resp {
    let deadline = Instant::now() + Duration::from_secs(20);
    let started = Instant::now();
    loop {
        assert!(
            Instant::now() < deadline,
            "no write was refused within 20 s of the stall"
        );
        let attempt = api.submit(json!({"queue": "stall"}));
        match tokio::time::timeout(Duration::from_secs(3), attempt).await {
            Ok(r) if r.status == 503 => return r,
            Ok(r) => assert!(
                r.status != 201,
                "a write was acknowledged on a frozen disk: {}",
                r.text
            ),
            // Before the stall limit a submit waits on the round.
            Err(_) => assert!(
                started.elapsed() < forgeline::store::STALL_AFTER + Duration::from_secs(3),
                "a submit hung past the stall limit instead of being refused"
            ),
        }
    }
}
