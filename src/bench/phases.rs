//! The measurements of a bench run, in the order they run.
//!
//! Every load phase starts its clients together: each opens its connection
//! with one untimed request, then all wait on a barrier, so connection set-up
//! is not measured and no client starts early.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::Barrier;
use tokio::task::JoinSet;

use super::bare::BareWarp;
use super::client::{BenchClient, BenchError, Leased};
use super::progress::Progress;
use super::report::{Latency, Measurement, Report, TargetInfo};
use super::target::{Target, TargetOptions};

/// Queue of the submit measurements (nobody leases it during the run).
pub const SUBMIT_QUEUE: &str = "bench-submit";
/// Queue of the submit → lease → complete measurement.
pub const E2E_QUEUE: &str = "bench-e2e";
/// Queue of the pickup-latency measurement.
pub const PICKUP_QUEUE: &str = "bench-pickup";
/// How long a pickup lease waits for its task.
const PICKUP_WAIT_MS: u64 = 5_000;
/// Untimed pickup rounds before the measured ones.
const PICKUP_WARMUP: usize = 10;
/// Pause between parking a lease and submitting, so that the lease request is
/// waiting at the server when the task arrives.
const PICKUP_PARK: Duration = Duration::from_millis(20);
/// Long-poll of the end-to-end workers: short, so they notice the end.
const E2E_WAIT_MS: u64 = 100;
/// Tasks per lease while emptying a queue: `queue.max_batch`'s default.
const DRAIN_BATCH: usize = 100;
/// How often the remote server's memory is sampled (`--url`).
const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(500);

/// What to measure and how hard.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The server.
    pub target: TargetOptions,
    /// Tasks per throughput measurement.
    pub tasks: u64,
    /// Client counts of the durable-submit measurement.
    pub submit_clients: Vec<usize>,
    /// Submitters of the end-to-end measurement.
    pub e2e_clients: usize,
    /// Lessees of the end-to-end measurement.
    pub e2e_workers: usize,
    /// Tasks per lease request in the end-to-end measurement.
    pub lease_batch: usize,
    /// Measured enqueue → pickup rounds.
    pub pickup_samples: usize,
    /// Clients of the `/health/live` measurements.
    pub health_clients: usize,
    /// Length of each `/health/live` measurement.
    pub health_duration: Duration,
    /// Also measure a bare warp server answering `/health/live`.
    pub bare_warp: bool,
}

/// A run that did not finish cleanly: the error, and the report when every
/// measurement was taken (the server then failed to stop cleanly).
#[derive(Debug)]
pub struct BenchFailure {
    /// What went wrong.
    pub error: BenchError,
    /// The measurements, when they were all taken.
    pub report: Option<Report>,
}

impl From<BenchError> for BenchFailure {
    fn from(error: BenchError) -> Self {
        BenchFailure {
            error,
            report: None,
        }
    }
}

/// Runs every measurement against the target and returns the report.
///
/// Whatever happens, the bench's queues on a `--url` server are emptied
/// again, and a server the bench started is stopped (its directory kept
/// with `keep_dir`, and its log's last lines added to the error when it
/// died).
pub async fn run(opts: &BenchOptions) -> Result<Report, BenchFailure> {
    let progress = Progress::new(std::io::stderr().is_terminal());
    let result = run_on_target(opts, &progress).await;
    progress.clear();
    result
}

async fn run_on_target(opts: &BenchOptions, progress: &Progress) -> Result<Report, BenchFailure> {
    let mut target = Target::open(&opts.target, &|m| progress.note(m)).await?;
    let measured = measure(&target, opts, progress).await;
    if target.spawned.is_none() {
        // Leave nothing queued on a server we do not own, even after a failure.
        for queue in [SUBMIT_QUEUE, E2E_QUEUE, PICKUP_QUEUE] {
            if let Err(e) = drain(&target.client, progress, queue).await {
                if measured.is_ok() {
                    return Err(e.into());
                }
            }
        }
    }
    let measured = match (measured, &mut target.spawned) {
        (Err(e), Some(s)) => Err(s.explain(e)),
        (m, _) => m,
    };
    let Some(spawned) = target.spawned.take() else {
        return measured.map_err(BenchFailure::from);
    };
    progress.note("stopping the server");
    let keep = opts.target.keep_dir;
    let stopped = tokio::task::spawn_blocking(move || spawned.stop(keep))
        .await
        .map_err(|e| BenchError::Protocol(format!("stopping the server panicked: {e}")))?;
    progress.clear();
    let (kept, stop_error) = match stopped {
        Ok(kept) => (kept, None),
        Err((kept, e)) => (kept, Some(e)),
    };
    if let Some(dir) = kept {
        eprintln!(
            "forgeline bench: kept the server's directory (store and server.log): {}",
            dir.display()
        );
    }
    match (measured, stop_error) {
        (Ok(report), None) => Ok(report),
        (Ok(report), Some(error)) => Err(BenchFailure {
            error,
            report: Some(report),
        }),
        (Err(error), _) => Err(error.into()),
    }
}

/// Every measurement, in order, and the report.
async fn measure(
    target: &Target,
    opts: &BenchOptions,
    progress: &Progress,
) -> Result<Report, BenchError> {
    let client = target.client.clone();
    // /metrics may be closed to the bench (`metrics.access`): then there is no
    // version, no backlog count and no scraped memory, but the rest holds.
    let scrape = match client.scrape().await {
        Ok(s) => Some(s),
        Err(e) => {
            progress.clear();
            eprintln!("forgeline bench: cannot read /metrics ({e}); version, stored tasks and scraped memory are not reported");
            None
        }
    };
    let (_, ready) = client.get_json_any("/health/ready").await?;
    let durability = ready["durability"]
        .as_str()
        .unwrap_or("unknown")
        .to_string();
    // Tasks an interrupted run left behind would be leased instead of ours.
    for queue in [E2E_QUEUE, PICKUP_QUEUE] {
        drain(&client, progress, queue).await?;
    }

    // A remote server's memory is only visible through its own metrics.
    let sampled_rss = Arc::new(AtomicU64::new(
        scrape.as_ref().and_then(|s| s.rss_bytes).unwrap_or(0),
    ));
    let sampler = (target.spawned.is_none() && scrape.is_some()).then(|| {
        let (client, max) = (client.clone(), sampled_rss.clone());
        AbortOnDrop(tokio::spawn(async move {
            loop {
                tokio::time::sleep(RSS_SAMPLE_EVERY).await;
                if let Ok(s) = client.scrape().await {
                    max.fetch_max(s.rss_bytes.unwrap_or(0), Ordering::Relaxed);
                }
            }
        }))
    });

    let submit_title = if durability == "sync" {
        "durable submits/s".to_string()
    } else {
        format!("submits/s (durability {durability})")
    };
    let mut measurements = Vec::new();
    for &clients in &opts.submit_clients {
        let m = submit(&client, progress, &submit_title, clients, opts.tasks).await?;
        measurements.push(m);
    }
    measurements.push(end_to_end(&client, progress, opts).await?);
    measurements.push(pickup(&client, progress, opts.pickup_samples).await?);
    let health = health_live(
        "health_live",
        "/health/live req/s".into(),
        &client,
        progress,
        opts.health_clients,
        opts.health_duration,
    )
    .await?;
    let mut health_vs_bare_warp = None;
    let bare = if opts.bare_warp {
        let server = BareWarp::start()?;
        let bare_client = BenchClient::new(server.url(), None)?;
        let m = health_live(
            "bare_warp",
            "/health/live, bare warp server".into(),
            &bare_client,
            progress,
            opts.health_clients,
            opts.health_duration,
        )
        .await;
        // Its keep-alive connections would hold the graceful stop open.
        drop(bare_client);
        let _ = tokio::task::spawn_blocking(move || server.stop()).await;
        let m = m?;
        health_vs_bare_warp = ratio(health.per_second, m.per_second);
        Some(m)
    } else {
        None
    };
    measurements.push(health);
    measurements.extend(bare);

    let last = match sampler {
        Some(s) => {
            drop(s);
            client.scrape().await.ok()
        }
        None => None,
    };
    if let Some(rss) = last.and_then(|s| s.rss_bytes) {
        sampled_rss.fetch_max(rss, Ordering::Relaxed);
    }
    let (peak_rss_bytes, peak_rss_source, start_to_ready_ms, idle_rss_bytes) = match &target.spawned
    {
        Some(s) => (
            s.rss("VmHWM"),
            Some("VmHWM"),
            Some(s.start_to_ready.as_secs_f64() * 1000.0),
            s.idle_rss,
        ),
        None => {
            let peak = sampled_rss.load(Ordering::Relaxed);
            ((peak > 0).then_some(peak), Some("scraped"), None, None)
        }
    };
    Ok(Report {
        schema: "forgeline.bench.v1",
        target: TargetInfo {
            url: client.base().to_string(),
            spawned: target.spawned.is_some(),
            durability,
            // No series: no task has waited on that queue since the server started.
            stored_tasks: scrape.as_ref().map(|s| s.backlog.unwrap_or(0)),
            version: scrape.and_then(|s| s.version),
        },
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        tasks: opts.tasks,
        start_to_ready_ms,
        idle_rss_bytes,
        peak_rss_bytes,
        peak_rss_source: peak_rss_bytes.and(peak_rss_source),
        measurements,
        health_vs_bare_warp,
    })
}

/// Aborts a background task when dropped (also on an early return).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// Per-client latency samples, merged at the end.
type Samples = Vec<Duration>;

/// Starts `clients` tasks that each warm their connection, wait for the
/// others, then run `body`; returns the merged samples and the wall time
/// from the common start to the last client's end.
async fn load<F, Fut>(
    client: &BenchClient,
    clients: usize,
    body: F,
) -> Result<(Samples, Duration), BenchError>
where
    F: Fn(usize, BenchClient) -> Fut,
    Fut: std::future::Future<Output = Result<Samples, BenchError>> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(clients + 1));
    let mut set = JoinSet::new();
    for i in 0..clients {
        let (c, barrier) = (client.clone(), barrier.clone());
        let work = body(i, c.clone());
        set.spawn(async move {
            let warm = c.get("/health/live").await;
            barrier.wait().await;
            warm?;
            work.await
        });
    }
    barrier.wait().await;
    let started = Instant::now();
    let mut samples = Vec::new();
    while let Some(joined) = set.join_next().await {
        // Dropping the set on error aborts the other clients.
        let s =
            joined.map_err(|e| BenchError::Protocol(format!("a bench client panicked: {e}")))??;
        samples.extend(s);
    }
    Ok((samples, started.elapsed()))
}

fn measurement(
    name: &'static str,
    title: String,
    clients: usize,
    mut samples: Samples,
    elapsed: Duration,
) -> Measurement {
    let count = samples.len() as u64;
    Measurement {
        name,
        title,
        clients,
        workers: None,
        count,
        seconds: elapsed.as_secs_f64(),
        per_second: Some(count as f64 / elapsed.as_secs_f64().max(1e-9)),
        latency: Latency::of(&mut samples),
    }
}

/// Durable submits: `clients` submitters share `n` submits.
async fn submit(
    client: &BenchClient,
    progress: &Progress,
    title: &str,
    clients: usize,
    n: u64,
) -> Result<Measurement, BenchError> {
    let tick = progress.phase(format!("{title}, {clients} client(s)"), n);
    let next = Arc::new(AtomicU64::new(0));
    let (samples, elapsed) = load(client, clients, |_, c| {
        let (next, tick) = (next.clone(), tick.clone());
        async move {
            let mut s = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok(s);
                }
                let t = Instant::now();
                c.submit(SUBMIT_QUEUE, json!({"n": i})).await?;
                s.push(t.elapsed());
                tick.inc();
            }
        }
    })
    .await?;
    progress.done();
    Ok(measurement(
        "submit",
        title.to_string(),
        clients,
        samples,
        elapsed,
    ))
}

/// No-op tasks through the whole worker protocol: submitters and lessees run
/// at once; a task counts when its `complete` is acknowledged. Latency is
/// from the submit being sent to the completion being acknowledged.
async fn end_to_end(
    client: &BenchClient,
    progress: &Progress,
    opts: &BenchOptions,
) -> Result<Measurement, BenchError> {
    let n = opts.tasks;
    let tick = progress.phase(
        format!(
            "submit → lease → complete, {} submitters, {} workers",
            opts.e2e_clients, opts.e2e_workers
        ),
        n,
    );
    // Tasks of another run (an interrupted one, against --url) are completed
    // but not counted.
    let run_id = ulid::Ulid::new().to_string();
    let epoch = Instant::now();
    let done = Arc::new(AtomicU64::new(0));
    let finished: Arc<OnceLock<Instant>> = Arc::new(OnceLock::new());
    let latencies: Arc<Mutex<Samples>> = Arc::default();

    let mut workers = JoinSet::new();
    for w in 0..opts.e2e_workers {
        let (c, done, finished, lat, tick) = (
            client.clone(),
            done.clone(),
            finished.clone(),
            latencies.clone(),
            tick.clone(),
        );
        let (run_id, batch) = (run_id.clone(), opts.lease_batch);
        workers.spawn(async move {
            let worker = format!("bench-worker-{w}");
            while done.load(Ordering::Relaxed) < n {
                let leases = c.lease(E2E_QUEUE, &worker, batch, E2E_WAIT_MS).await?;
                let completions = leases.into_iter().map(|l: Leased| {
                    let c = c.clone();
                    async move { c.complete(&l).await.map(|()| l) }
                });
                for l in futures_util::future::try_join_all(completions).await? {
                    if l.payload["run"] != run_id.as_str() {
                        continue;
                    }
                    let sent = Duration::from_micros(l.payload["t_us"].as_u64().unwrap_or(0));
                    lat.lock()
                        .expect("not poisoned")
                        .push(epoch.elapsed().saturating_sub(sent));
                    tick.inc();
                    if done.fetch_add(1, Ordering::Relaxed) + 1 == n {
                        let _ = finished.set(Instant::now());
                    }
                }
            }
            Ok::<(), BenchError>(())
        });
    }
    let next = Arc::new(AtomicU64::new(0));
    // The submitters' common start (after their warm-up) is the measurement's.
    let begun: Arc<OnceLock<Instant>> = Arc::new(OnceLock::new());
    let submitters = load(client, opts.e2e_clients, |_, c| {
        let (next, run_id, begun) = (next.clone(), run_id.clone(), begun.clone());
        async move {
            begun.get_or_init(Instant::now);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok(Vec::new());
                }
                let t_us = epoch.elapsed().as_micros() as u64;
                c.submit(E2E_QUEUE, json!({"run": run_id, "t_us": t_us}))
                    .await?;
            }
        }
    });
    let submitted = submitters.await;
    if let Err(e) = submitted {
        workers.abort_all();
        return Err(e);
    }
    while let Some(joined) = workers.join_next().await {
        joined.map_err(|e| BenchError::Protocol(format!("a bench worker panicked: {e}")))??;
    }
    progress.done();
    let end = finished.get().copied().unwrap_or_else(Instant::now);
    let started = begun.get().copied().unwrap_or(epoch);
    let seconds = end.saturating_duration_since(started).as_secs_f64();
    let mut samples = std::mem::take(&mut *latencies.lock().expect("not poisoned"));
    Ok(Measurement {
        name: "e2e",
        title: "no-op tasks/s, submit → lease → complete".into(),
        clients: opts.e2e_clients,
        workers: Some(opts.e2e_workers),
        count: samples.len() as u64,
        seconds,
        per_second: Some(samples.len() as f64 / seconds.max(1e-9)),
        latency: Latency::of(&mut samples),
    })
}

/// Enqueue → pickup on an idle server: a lease request is already waiting
/// when the task is submitted; the sample is from sending the submit to the
/// lease answer arriving (so it includes the durable write).
async fn pickup(
    client: &BenchClient,
    progress: &Progress,
    samples: usize,
) -> Result<Measurement, BenchError> {
    let tick = progress.phase("enqueue → pickup", (PICKUP_WARMUP + samples) as u64);
    let run_id = ulid::Ulid::new().to_string();
    let mut s = Vec::with_capacity(samples);
    let mut started = Instant::now();
    for round in 0..PICKUP_WARMUP + samples {
        if round == PICKUP_WARMUP {
            started = Instant::now();
        }
        let c = client.clone();
        let waiting = tokio::spawn(async move {
            let leases = c
                .lease(PICKUP_QUEUE, "bench-pickup", 1, PICKUP_WAIT_MS)
                .await;
            (Instant::now(), leases)
        });
        tokio::time::sleep(PICKUP_PARK).await;
        let sent = Instant::now();
        let submitted = client
            .submit(PICKUP_QUEUE, json!({"run": run_id, "round": round}))
            .await;
        let (picked, leases) = waiting
            .await
            .map_err(|e| BenchError::Protocol(format!("the pickup lessee panicked: {e}")))?;
        submitted?;
        let leases = leases?;
        let Some(lease) = leases.first() else {
            return Err(BenchError::Protocol(format!(
                "a waiting lease did not receive the task submitted to {PICKUP_QUEUE} within {PICKUP_WAIT_MS} ms"
            )));
        };
        client.complete(lease).await?;
        if lease.payload["run"] != run_id.as_str() || lease.payload["round"] != round {
            return Err(BenchError::Protocol(format!(
                "the pickup lease got a task this round did not submit: something else submits to {PICKUP_QUEUE}"
            )));
        }
        if round >= PICKUP_WARMUP {
            s.push(picked.saturating_duration_since(sent));
        }
        tick.inc();
    }
    progress.done();
    let mut m = measurement(
        "pickup",
        "enqueue → pickup, idle, lease waiting".into(),
        1,
        s,
        started.elapsed(),
    );
    m.per_second = None;
    Ok(m)
}

/// `GET /health/live` from `clients` clients for `duration`.
async fn health_live(
    name: &'static str,
    title: String,
    client: &BenchClient,
    progress: &Progress,
    clients: usize,
    duration: Duration,
) -> Result<Measurement, BenchError> {
    let tick = progress.phase(format!("{title}, {clients} clients, {duration:?}"), 0);
    let start: Arc<OnceLock<Instant>> = Arc::new(OnceLock::new());
    let (samples, elapsed) = load(client, clients, |_, c| {
        let (start, tick) = (start.clone(), tick.clone());
        async move {
            let begun = *start.get_or_init(Instant::now);
            let mut s = Vec::new();
            while begun.elapsed() < duration {
                let t = Instant::now();
                c.get("/health/live").await?;
                s.push(t.elapsed());
                tick.inc();
            }
            Ok(s)
        }
    })
    .await?;
    progress.done();
    Ok(measurement(name, title, clients, samples, elapsed))
}

/// Leases and completes whatever is waiting on one of the bench's queues.
async fn drain(client: &BenchClient, progress: &Progress, queue: &str) -> Result<(), BenchError> {
    progress.note(&format!("completing the tasks left on {queue}"));
    loop {
        let leases = client.lease(queue, "bench-cleanup", DRAIN_BATCH, 0).await?;
        if leases.is_empty() {
            return Ok(());
        }
        let calls = leases.iter().map(|l| client.complete(l));
        futures_util::future::try_join_all(calls).await?;
    }
}
