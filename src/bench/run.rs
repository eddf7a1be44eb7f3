//! A bench run from start to report: open the target (start a server or
//! use `--url`), run every measurement in order, sample memory, stop what
//! was started, and leave nothing queued on a server the bench does not own.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::bare::BareWarp;
use super::client::{BenchClient, BenchError};
use super::options::BenchOptions;
use super::phases::{
    drain, end_to_end, health_live, pickup, submit, E2E_QUEUE, PICKUP_QUEUE, SUBMIT_QUEUE,
};
use super::progress::Progress;
use super::report::{Measurement, Report, TargetInfo};
use super::target::Target;

/// How often the memory of a server at `--url` is sampled (its highest
/// value is the run's peak).
const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(500);

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
    let sampler = (target.spawned.is_none() && scrape.is_some())
        .then(|| rss_sampler(client.clone(), sampled_rss.clone()));

    let submit_title = match durability.as_str() {
        "sync" => "durable submits/s".to_string(),
        d => format!("submits/s (durability {d})"),
    };
    let (measurements, health_vs_bare_warp) =
        load_phases(&client, progress, opts, &submit_title).await?;

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
    let memory = Memory::of(target, &sampled_rss);
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
        start_to_ready_ms: memory.start_to_ready_ms,
        idle_rss_bytes: memory.idle_rss_bytes,
        peak_rss_bytes: memory.peak_rss_bytes,
        peak_rss_source: memory.peak_rss_bytes.and(memory.peak_rss_source),
        measurements,
        health_vs_bare_warp,
    })
}

/// The load phases, in order, and `/health/live`'s share of bare warp's rate.
async fn load_phases(
    client: &BenchClient,
    progress: &Progress,
    opts: &BenchOptions,
    submit_title: &str,
) -> Result<(Vec<Measurement>, Option<f64>), BenchError> {
    let mut measurements = Vec::new();
    for &clients in &opts.submit_clients {
        let m = submit(client, progress, submit_title, clients, opts.tasks).await?;
        measurements.push(m);
    }
    for batched in [false, true] {
        measurements.push(end_to_end(client, progress, opts, batched).await?);
    }
    measurements.push(pickup(client, progress, opts.pickup_samples).await?);
    if opts.steps > 0 {
        measurements.push(super::steps::steps(client, progress, opts.steps).await?);
    }
    let (health, health_vs_bare_warp) = health_phases(client, progress, opts).await?;
    measurements.extend(health);
    Ok((measurements, health_vs_bare_warp))
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

/// Samples a remote server's resident memory from its metrics every
/// `RSS_SAMPLE_EVERY`, keeping the highest value, until dropped.
fn rss_sampler(client: BenchClient, max: Arc<AtomicU64>) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(async move {
        loop {
            tokio::time::sleep(RSS_SAMPLE_EVERY).await;
            if let Ok(s) = client.scrape().await {
                max.fetch_max(s.rss_bytes.unwrap_or(0), Ordering::Relaxed);
            }
        }
    }))
}

/// `/health/live` under load, and the same load against a bare warp server
/// when asked: the ratio says what forgeline's middleware costs.
async fn health_phases(
    client: &BenchClient,
    progress: &Progress,
    opts: &BenchOptions,
) -> Result<(Vec<Measurement>, Option<f64>), BenchError> {
    let (clients, duration) = (opts.health_clients, opts.health_duration);
    let title = "/health/live req/s".to_string();
    let health = health_live("health_live", title, client, progress, clients, duration).await?;
    if !opts.bare_warp {
        return Ok((vec![health], None));
    }
    let server = BareWarp::start()?;
    let bare_client = BenchClient::new(server.url(), None)?;
    let title = "/health/live, bare warp server".to_string();
    let m = health_live(
        "bare_warp",
        title,
        &bare_client,
        progress,
        clients,
        duration,
    )
    .await;
    // Its keep-alive connections would hold the graceful stop open.
    drop(bare_client);
    let _ = tokio::task::spawn_blocking(move || server.stop()).await;
    let m = m?;
    let ratio = ratio(health.per_second, m.per_second);
    Ok((vec![health, m], ratio))
}

/// Start-up time and memory: read from /proc for a server the bench
/// started, from the sampled metrics for one at `--url`.
struct Memory {
    peak_rss_bytes: Option<u64>,
    peak_rss_source: Option<&'static str>,
    start_to_ready_ms: Option<f64>,
    idle_rss_bytes: Option<u64>,
}

impl Memory {
    fn of(target: &Target, sampled_rss: &AtomicU64) -> Memory {
        match &target.spawned {
            Some(s) => Memory {
                peak_rss_bytes: s.rss("VmHWM"),
                peak_rss_source: Some("VmHWM"),
                start_to_ready_ms: Some(s.start_to_ready.as_secs_f64() * 1000.0),
                idle_rss_bytes: s.idle_rss,
            },
            None => {
                let peak = sampled_rss.load(Ordering::Relaxed);
                Memory {
                    peak_rss_bytes: (peak > 0).then_some(peak),
                    peak_rss_source: Some("scraped"),
                    start_to_ready_ms: None,
                    idle_rss_bytes: None,
                }
            }
        }
    }
}
