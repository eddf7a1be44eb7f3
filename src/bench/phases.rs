//! The measurements of a bench run: durable submits, submit → lease →
//! complete, enqueue → pickup, and `/health/live` under load.
//!
//! Every load phase starts its clients together: each opens its connection
//! with one untimed request, then all wait on a barrier, so connection set-up
//! is not measured and no client starts early.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::Barrier;
use tokio::task::JoinSet;

use super::client::{BenchClient, BenchError, Leased};
use super::options::BenchOptions;
use super::progress::{Progress, Tick};
use super::report::{Latency, Measurement};

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

/// Per-client latency samples, merged at the end.
pub(super) type Samples = Vec<Duration>;

/// Starts `clients` tasks that each warm their connection, wait for the
/// others, then run `body`; returns the merged samples and the wall time
/// from the common start to the last client's end.
pub(super) async fn load<F, Fut>(
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
pub(super) async fn submit(
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
/// from the submit being sent to the completion being acknowledged. With
/// `batched`, a worker completes each leased batch in one
/// `POST /api/v1/leases/complete` instead of a call per lease.
pub(super) async fn end_to_end(
    client: &BenchClient,
    progress: &Progress,
    opts: &BenchOptions,
    batched: bool,
) -> Result<Measurement, BenchError> {
    let n = opts.tasks;
    let how = if batched {
        "batched completes"
    } else {
        "complete"
    };
    let tick = progress.phase(
        format!(
            "submit → lease → {how}, {} submitters, {} workers",
            opts.e2e_clients, opts.e2e_workers
        ),
        n,
    );
    // Tasks of another run (an interrupted one, against --url) are completed
    // but not counted.
    let run_id = ulid::Ulid::new().to_string();
    let epoch = Instant::now();
    let shared = E2eShared {
        n,
        run_id: run_id.clone(),
        epoch,
        done: Arc::new(AtomicU64::new(0)),
        finished: Arc::new(OnceLock::new()),
        latencies: Arc::default(),
    };
    let mut workers = JoinSet::new();
    for w in 0..opts.e2e_workers {
        let (c, shared, tick) = (client.clone(), shared.clone(), tick.clone());
        let batch = opts.lease_batch;
        workers.spawn(async move {
            e2e_worker(c, format!("bench-worker-{w}"), batch, batched, shared, tick).await
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
    let end = shared.finished.get().copied().unwrap_or_else(Instant::now);
    let started = begun.get().copied().unwrap_or(epoch);
    let seconds = end.saturating_duration_since(started).as_secs_f64();
    let samples = std::mem::take(&mut *shared.latencies.lock().expect("not poisoned"));
    Ok(e2e_measurement(opts, batched, samples, seconds))
}

fn e2e_measurement(
    opts: &BenchOptions,
    batched: bool,
    mut samples: Samples,
    seconds: f64,
) -> Measurement {
    Measurement {
        name: if batched { "e2e_batched" } else { "e2e" },
        title: if batched {
            "no-op tasks/s, batched completes".into()
        } else {
            "no-op tasks/s, submit → lease → complete".into()
        },
        clients: opts.e2e_clients,
        workers: Some(opts.e2e_workers),
        count: samples.len() as u64,
        seconds,
        per_second: Some(samples.len() as f64 / seconds.max(1e-9)),
        latency: Latency::of(&mut samples),
    }
}

/// What the end-to-end workers share: the run's id (tasks of another run
/// are completed but not counted), the clock the submit times are read
/// against, the count of this run's tasks completed and when the last one was.
#[derive(Clone)]
struct E2eShared {
    n: u64,
    run_id: String,
    epoch: Instant,
    done: Arc<AtomicU64>,
    finished: Arc<OnceLock<Instant>>,
    latencies: Arc<Mutex<Samples>>,
}

/// One end-to-end worker: leases a batch, completes every lease, records
/// each of this run's tasks' submit → complete latency, until `n` are done.
async fn e2e_worker(
    c: BenchClient,
    worker: String,
    batch: usize,
    batched: bool,
    s: E2eShared,
    tick: Tick,
) -> Result<(), BenchError> {
    while s.done.load(Ordering::Relaxed) < s.n {
        let leases = c.lease(E2E_QUEUE, &worker, batch, E2E_WAIT_MS).await?;
        let done = if batched {
            if !leases.is_empty() {
                c.complete_many(&leases).await?;
            }
            leases
        } else {
            let completions = leases.into_iter().map(|l: Leased| {
                let c = c.clone();
                async move { c.complete(&l).await.map(|()| l) }
            });
            futures_util::future::try_join_all(completions).await?
        };
        for l in done {
            if l.payload["run"] != s.run_id.as_str() {
                continue;
            }
            let sent = Duration::from_micros(l.payload["t_us"].as_u64().unwrap_or(0));
            s.latencies
                .lock()
                .expect("not poisoned")
                .push(s.epoch.elapsed().saturating_sub(sent));
            tick.inc();
            if s.done.fetch_add(1, Ordering::Relaxed) + 1 == s.n {
                let _ = s.finished.set(Instant::now());
            }
        }
    }
    Ok(())
}

/// Enqueue → pickup on an idle server: a lease request is already waiting
/// when the task is submitted; the sample is from sending the submit to the
/// lease answer arriving (so it includes the durable write).
pub(super) async fn pickup(
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
pub(super) async fn health_live(
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
pub(super) async fn drain(
    client: &BenchClient,
    progress: &Progress,
    queue: &str,
) -> Result<(), BenchError> {
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
