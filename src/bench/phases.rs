//! The measurements of a bench run, in the order they run.
//!
//! Every load phase starts its clients together: each opens its connection
//! with one untimed request, then all wait on a barrier, so connection set-up
//! is not measured and no client starts early.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::Barrier;
use tokio::task::JoinSet;

use super::client::{BenchClient, BenchError, Leased};
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

/// Runs every measurement against the target and returns the report.
pub async fn run(opts: &BenchOptions) -> Result<Report, BenchError> {
    let progress = Progress::new(std::io::stderr().is_terminal());
    let target = Target::open(&opts.target, &|m| progress.note(m)).await?;
    let client = target.client.clone();
    let scrape = client.scrape().await?;
    let (_, ready) = client.get_json_any("/health/ready").await?;
    let durability = ready["durability"]
        .as_str()
        .unwrap_or("unknown")
        .to_string();

    // A remote server's memory is only visible through its own metrics.
    let sampled_rss = Arc::new(AtomicU64::new(scrape.rss_bytes.unwrap_or(0)));
    let sampler = target.spawned.is_none().then(|| {
        let (client, max) = (client.clone(), sampled_rss.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RSS_SAMPLE_EVERY).await;
                if let Ok(s) = client.scrape().await {
                    max.fetch_max(s.rss_bytes.unwrap_or(0), Ordering::Relaxed);
                }
            }
        })
    });

    let mut measurements = Vec::new();
    for &clients in &opts.submit_clients {
        let m = submit(&client, &progress, clients, opts.tasks).await?;
        measurements.push(m);
    }
    measurements.push(end_to_end(&client, &progress, opts).await?);
    measurements.push(pickup(&client, &progress, opts.pickup_samples).await?);
    let health = health_live(
        "health_live",
        "/health/live req/s".into(),
        &client,
        &progress,
        opts.health_clients,
        opts.health_duration,
    )
    .await?;
    let mut health_vs_bare_warp = None;
    let bare = if opts.bare_warp {
        let server = BareWarp::start()?;
        let bare_client = BenchClient::new(&server.url, None)?;
        let m = health_live(
            "bare_warp",
            "/health/live, bare warp server".into(),
            &bare_client,
            &progress,
            opts.health_clients,
            opts.health_duration,
        )
        .await;
        server.stop();
        let m = m?;
        health_vs_bare_warp = ratio(health.per_second, m.per_second);
        Some(m)
    } else {
        None
    };
    measurements.push(health);
    measurements.extend(bare);

    if let Some(s) = sampler {
        s.abort();
        if let Ok(s) = client.scrape().await {
            sampled_rss.fetch_max(s.rss_bytes.unwrap_or(0), Ordering::Relaxed);
        }
        // Leave nothing queued on a server we do not own.
        drain(&client, &progress, SUBMIT_QUEUE).await?;
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
    let report = Report {
        schema: "forgeline.bench.v1",
        target: TargetInfo {
            url: client.base().to_string(),
            spawned: target.spawned.is_some(),
            durability,
            stored_tasks: if target.spawned.is_some() {
                opts.target.stored
            } else {
                0
            },
            version: scrape.version,
        },
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        tasks: opts.tasks,
        start_to_ready_ms,
        idle_rss_bytes,
        peak_rss_bytes,
        peak_rss_source: peak_rss_bytes.and(peak_rss_source),
        measurements,
        health_vs_bare_warp,
    };
    if let Some(s) = target.spawned {
        progress.note("stopping the server");
        let kept = s.stop(opts.target.keep_dir)?;
        if let Some(dir) = kept {
            progress.clear();
            eprintln!(
                "forgeline bench: kept the server's directory (store and server.log): {}",
                dir.display()
            );
        }
    }
    progress.clear();
    Ok(report)
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
    clients: usize,
    n: u64,
) -> Result<Measurement, BenchError> {
    let tick = progress.phase(format!("durable submits, {clients} client(s)"), n);
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
        "durable submits/s".into(),
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
    let mut s = Vec::with_capacity(samples);
    let started = Instant::now();
    for round in 0..PICKUP_WARMUP + samples {
        let c = client.clone();
        let waiting = tokio::spawn(async move {
            let leases = c
                .lease(PICKUP_QUEUE, "bench-pickup", 1, PICKUP_WAIT_MS)
                .await;
            (Instant::now(), leases)
        });
        tokio::time::sleep(PICKUP_PARK).await;
        let sent = Instant::now();
        client.submit(PICKUP_QUEUE, json!({"round": round})).await?;
        let (picked, leases) = waiting
            .await
            .map_err(|e| BenchError::Protocol(format!("the pickup lessee panicked: {e}")))?;
        let leases = leases?;
        let Some(lease) = leases.first() else {
            return Err(BenchError::Protocol(format!(
                "a waiting lease did not receive the task submitted to {PICKUP_QUEUE} within {PICKUP_WAIT_MS} ms"
            )));
        };
        client.complete(lease).await?;
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

/// Leases and completes whatever the bench left on `queue` (against `--url`).
async fn drain(client: &BenchClient, progress: &Progress, queue: &str) -> Result<(), BenchError> {
    progress.note(&format!("completing the tasks left on {queue}"));
    loop {
        let leases = client.lease(queue, "bench-cleanup", 100, 0).await?;
        if leases.is_empty() {
            return Ok(());
        }
        let calls = leases.iter().map(|l| client.complete(l));
        futures_util::future::try_join_all(calls).await?;
    }
}

/// A warp server with one route, `/health/live`, answering what forgeline's
/// does but with no middleware: the reference the real probe is compared
/// with. It runs on its own 2-thread runtime, like a server process would.
struct BareWarp {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BareWarp {
    fn start() -> Result<BareWarp, BenchError> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| BenchError::Target(format!("bare warp server: cannot listen: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| BenchError::Target(format!("bare warp server: {e}")))?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| BenchError::Target(format!("bare warp server: {e}")))?;
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                use warp::Filter;
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                let live = warp::path!("health" / "live")
                    .and(warp::get())
                    .map(|| warp::reply::json(&json!({"status": "ok"})));
                warp::serve(live)
                    .incoming(listener)
                    .graceful(async {
                        let _ = rx.await;
                    })
                    .run()
                    .await;
            });
        });
        Ok(BareWarp {
            url: format!("http://{addr}"),
            stop: Some(tx),
            thread: Some(thread),
        })
    }

    fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Progress on stderr when it is a terminal; silent otherwise.
#[derive(Debug)]
struct Progress {
    enabled: bool,
    ticker: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// The counter of the running phase.
#[derive(Debug, Clone)]
struct Tick(Arc<AtomicU64>);

impl Tick {
    fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

impl Progress {
    fn new(enabled: bool) -> Progress {
        Progress {
            enabled,
            ticker: Mutex::new(None),
        }
    }

    /// A one-line status (replaces the previous one).
    fn note(&self, message: &str) {
        if self.enabled {
            let mut e = std::io::stderr().lock();
            let _ = write!(e, "\r\x1b[2K{message}");
            let _ = e.flush();
        }
    }

    /// Starts a phase; its counter is shown against `total` (0: no total).
    fn phase(&self, label: impl Into<String>, total: u64) -> Tick {
        let count = Arc::new(AtomicU64::new(0));
        if self.enabled {
            let (label, c) = (label.into(), count.clone());
            let handle = tokio::spawn(async move {
                loop {
                    let n = c.load(Ordering::Relaxed);
                    let line = if total > 0 {
                        format!("{label}: {n}/{total}")
                    } else {
                        format!("{label}: {n}")
                    };
                    {
                        let mut e = std::io::stderr().lock();
                        let _ = write!(e, "\r\x1b[2K{line}");
                        let _ = e.flush();
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            });
            if let Some(old) = self.ticker.lock().expect("not poisoned").replace(handle) {
                old.abort();
            }
        }
        Tick(count)
    }

    /// Ends the running phase's display.
    fn done(&self) {
        if let Some(t) = self.ticker.lock().expect("not poisoned").take() {
            t.abort();
        }
    }

    /// Clears the status line.
    fn clear(&self) {
        self.done();
        self.note("");
    }
}
