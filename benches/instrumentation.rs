//! The instrumentation budgets (DESIGN.md §7), held by criterion.
//!
//! Every bench here is in the group `instrumentation`, and every id is a key in
//! `benches/budgets.toml`; `scripts/bench-gate` runs this file and fails when a
//! bench is over its budget or produced no estimate. Ids stay within
//! `[A-Za-z0-9_]` so criterion writes them to `target/criterion/` unchanged.
//!
//! ```text
//! cargo bench --bench instrumentation
//! scripts/bench-gate
//! ```
//!
//! What each bench holds:
//! - `queue_wait_observation`, `verification_observation`: one histogram
//!   observation on a warm label, the cost every lease and every step pays.
//! - `event_envelope_encode`: one event rendered as the JSON `data:` line of
//!   the SSE stream, the cost every subscriber pays per event.
//! - `task_record_encode`, `task_record_decode`: the versioned store codec on a
//!   realistic task, paid on every read and write of a task.
//! - `sled_submit_shared_flush`: a durable submit through the pipeline, with
//!   concurrent submitters sharing the group committer's flush.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, SamplingMode};
use serde_json::json;
use ulid::Ulid;

use forgeline::app::App;
use forgeline::config::Config;
use forgeline::model::{
    EventKind, EventRecord, LeaseId, LeaseRef, QueueName, ReviewRequest, RunId, StepName, StepSpec,
    TaskId, TaskRecord, TaskState,
};
use forgeline::pipeline::transition::trace_id_of;
use forgeline::pipeline::Pipeline;
use forgeline::store::{decode, encode, Durability};
use forgeline::tasks::submit::{validate, NewTask, SubmitRequest};
use forgeline::tasks::Submission;
use forgeline::telemetry::Metrics;

/// The criterion group every budgeted bench belongs to (a table in budgets.toml).
const GROUP: &str = "instrumentation";

/// Size the task payload is padded to: a typical agent task (a goal, a repo,
/// some context), not a toy.
const PAYLOAD_BYTES: usize = 1024;

/// Submits in flight together in the submit bench. Under load the HTTP
/// handlers of many clients wait on the same commit round; 32 is between the
/// 16 and 64 clients of examples/commit_bench.rs.
const SUBMITS_PER_ROUND: usize = 32;

/// A fixed time (2026-11-18), so fixtures encode to the same bytes every run.
const FIXTURE_MS: u64 = 1_795_000_000_000;

/// A W3C traceparent, as a traced submission carries.
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// A JSON payload of about [`PAYLOAD_BYTES`] once serialised.
fn payload() -> serde_json::Value {
    const SENTENCE: &str =
        "Cap the retry backoff at queue.retry_cap and keep the public API unchanged. ";
    let mut context = String::new();
    loop {
        let value = json!({
            "goal": "fix the flaky retry scheduler test",
            "repo": "git@example.com:forgeline/forgeline.git",
            "branch": "fix/retry-cap",
            "context": context,
        });
        if value.to_string().len() >= PAYLOAD_BYTES {
            return value;
        }
        context.push_str(SENTENCE);
    }
}

/// The labels a CI integration attaches to its tasks.
fn labels() -> BTreeMap<String, String> {
    [
        ("project_id", "forgeline"),
        ("correlation_id", "ci-run-4711"),
        ("team", "platform"),
        ("env", "staging"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn step(name: &str) -> StepName {
    StepName::parse(name).expect("valid step name")
}

/// A task as stored mid-run: labels, a ~1 KiB payload, three steps, a lease.
fn task_record() -> TaskRecord {
    let run_id = RunId::from_ulid(Ulid::from_parts(FIXTURE_MS + 40, 2));
    TaskRecord {
        id: TaskId::from_ulid(Ulid::from_parts(FIXTURE_MS, 1)),
        queue: QueueName::parse("agents").expect("valid queue name"),
        priority: 5,
        labels: labels(),
        payload: payload().to_string(),
        steps: vec![
            StepSpec::Named(step("fmt")),
            StepSpec::Named(step("clippy")),
            StepSpec::Inline {
                name: step("test"),
                argv: vec!["cargo".into(), "test".into(), "--release".into()],
            },
        ],
        max_attempts: 3,
        review: ReviewRequest {
            required: true,
            required_approvals: 1,
        },
        workdir: Some("repos/forgeline".into()),
        submitted_by: "ci-bot".into(),
        idempotency_key: Some("ci-run-4711-fix".into()),
        traceparent: Some(TRACEPARENT.into()),
        created_at: FIXTURE_MS,
        updated_at: FIXTURE_MS + 40,
        state: TaskState::Running(LeaseRef {
            lease_id: LeaseId::from_ulid(Ulid::from_parts(FIXTURE_MS + 40, 3)),
            run_id,
            token: 7,
            worker: "agent-runner-1".into(),
        }),
        attempts: 1,
        budget_used: 1,
        runs: vec![run_id],
        last_error: None,
        result: None,
    }
}

/// The `task_submitted` event of [`task_record`], shaped as `Pipeline::submit`
/// writes it (the most common event, with the largest data of the hot ones).
fn submitted_event(task: &TaskRecord) -> EventRecord {
    let data = json!({
        "priority": task.priority,
        "labels": task.labels,
        "steps": task.steps.iter().map(|s| s.name().as_str()).collect::<Vec<_>>(),
        "max_attempts": task.max_attempts,
        "review_required": task.review.required,
        "submitted_by": task.submitted_by,
    });
    EventRecord {
        id: 4711,
        kind: EventKind::TaskSubmitted,
        at: task.created_at,
        task_id: task.id,
        queue: task.queue.clone(),
        run_id: None,
        attempt: 0,
        trace_id: task.traceparent.as_deref().and_then(trace_id_of),
        data: data.to_string(),
        state_after: None,
    }
}

/// DESIGN.md §7: one queue-wait observation ≤ 50 ns. Warm: the queue's
/// handles are already cached, as they are after a queue's first lease.
fn queue_wait_observation(g: &mut BenchmarkGroup<'_, WallTime>) {
    let metrics = Metrics::new();
    metrics.observe_queue_wait("agents", 12);
    g.bench_function("queue_wait_observation", |b| {
        b.iter(|| metrics.observe_queue_wait(black_box("agents"), black_box(12)))
    });
}

/// DESIGN.md §7: one verification-duration observation ≤ 50 ns, on a step
/// that has been seen before.
fn verification_observation(g: &mut BenchmarkGroup<'_, WallTime>) {
    let metrics = Metrics::new();
    metrics.observe_verification("clippy", "passed", 1_850);
    g.bench_function("verification_observation", |b| {
        b.iter(|| {
            metrics.observe_verification(black_box("clippy"), black_box("passed"), black_box(1_850))
        })
    });
}

/// One event in the `forgeline.task-event.v1` envelope, serialised to the JSON
/// text the SSE stream sends as `data:`. This is the body of `to_sse` in
/// src/events/stream.rs (private there): keep the two the same.
fn event_envelope_encode(g: &mut BenchmarkGroup<'_, WallTime>) {
    let event = submitted_event(&task_record());
    g.bench_function("event_envelope_encode", |b| {
        b.iter(|| serde_json::to_string(&black_box(&event).envelope()).expect("envelope encodes"))
    });
}

/// The store codec writing a task (version byte + bincode body).
fn task_record_encode(g: &mut BenchmarkGroup<'_, WallTime>) {
    let task = task_record();
    g.bench_function("task_record_encode", |b| {
        b.iter(|| encode(black_box(&task)).expect("task encodes"))
    });
}

/// The store codec reading a task back.
fn task_record_decode(g: &mut BenchmarkGroup<'_, WallTime>) {
    let bytes = encode(&task_record()).expect("task encodes");
    g.bench_function("task_record_decode", |b| {
        b.iter(|| decode::<TaskRecord>(black_box(bytes.as_slice())).expect("task decodes"))
    });
}

/// The submit every client of the submit bench sends (validated once, up
/// front: the bench measures the pipeline, not request parsing).
fn new_task(config: &Config, now: u64) -> NewTask {
    let body = json!({
        "queue": "bench",
        "priority": 5,
        "labels": labels(),
        "payload": payload(),
        "steps": ["fmt", "clippy", "test"],
        "max_attempts": 3,
    });
    let req: SubmitRequest = serde_json::from_value(body).expect("submit body parses");
    validate(req, config, now).expect("submit body is valid")
}

/// One round: [`SUBMITS_PER_ROUND`] submits in flight at once, each on its own
/// tokio task as HTTP handlers are; returns once every one is durable.
async fn submit_round(pipeline: &Arc<Pipeline>, task: &NewTask) -> Duration {
    let submissions: Vec<Submission> = (0..SUBMITS_PER_ROUND)
        .map(|client| {
            let mut task = task.clone();
            task.labels.insert("client".into(), client.to_string());
            Submission {
                principal: "bench".into(),
                idempotency: None,
                traceparent: Some(TRACEPARENT.into()),
                task,
            }
        })
        .collect();
    let started = Instant::now();
    let handles: Vec<_> = submissions
        .into_iter()
        .map(|s| {
            let p = pipeline.clone();
            tokio::spawn(async move { p.submit(s).await })
        })
        .collect();
    for h in handles {
        h.await.expect("submit task ran").expect("submit succeeded");
    }
    started.elapsed()
}

/// A durable submit through the pipeline into sled, with
/// [`SUBMITS_PER_ROUND`] submitters sharing the group committer's flush
/// (`durability = "sync"`, what the server runs). Reported per submit: the
/// wall time of whole rounds divided by the submits in them.
///
/// Changes the group's sampling (few, flat samples: each submit takes ~150 µs
/// and the store grows as it runs), so it must be the last bench in the group.
fn sled_submit_shared_flush(g: &mut BenchmarkGroup<'_, WallTime>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::default();
    config.store.data_dir = dir.path().join("data");
    config.store.durability = Durability::Sync;
    config.executor.enabled = false;
    let app = rt.block_on(App::build(config.clone())).expect("app builds");
    let pipeline = app.pipeline().clone();
    let task = new_task(&config, pipeline.now());

    g.sample_size(20).sampling_mode(SamplingMode::Flat);
    g.bench_function("sled_submit_shared_flush", |b| {
        b.iter_custom(|iters| {
            // Always whole rounds, so every submit shares its flush with the
            // same number of others; scale back to the `iters` asked for.
            let rounds = iters.div_ceil(SUBMITS_PER_ROUND as u64).max(1);
            let elapsed = rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..rounds {
                    total += submit_round(&pipeline, &task).await;
                }
                total
            });
            let submitted = rounds * SUBMITS_PER_ROUND as u64;
            elapsed.mul_f64(iters as f64 / submitted as f64)
        })
    });

    // Stop the committer thread before the temp dir goes away.
    pipeline.store().close().expect("final store flush");
}

/// A handler that answers at once, tagged with a route like the real ones.
#[derive(Clone)]
struct Answer;

impl tower_service::Service<http::Request<()>> for Answer {
    type Response = warp::reply::Response;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<warp::reply::Response, std::convert::Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<()>) -> Self::Future {
        std::future::ready(Ok(forgeline::http::respond(
            &forgeline::auth::matrix::HEALTH_LIVE,
            Ok::<_, forgeline::http::ApiError>(warp::reply::json(&json!({"status": "ok"}))),
        )))
    }
}

/// The whole per-request middleware around a handler that does nothing:
/// request id, server span (no exporter), timing headers, HTTP metrics and
/// the JSON log line (written to a sink by a real subscriber at `debug`, so
/// the line is formatted, as `/health` lines are at that level).
fn middleware_stack(g: &mut BenchmarkGroup<'_, WallTime>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::default();
    config.store.data_dir = dir.path().join("data");
    config.executor.enabled = false;
    let app = rt.block_on(App::build(config)).expect("app builds");
    let pipeline = app.pipeline().clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(std::io::sink)
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let mut svc = forgeline::http::server::Middleware::new(
        Answer,
        pipeline.clone(),
        Some(([127, 0, 0, 1], 40000).into()),
    );
    // The same request through the bare handler: the gate subtracts it, so
    // `middleware_stack` is held to what the middleware adds.
    let mut bare = Answer;
    g.bench_function("handler_baseline", |b| {
        b.iter(|| {
            let req = http::Request::builder()
                .method("GET")
                .uri("/health/live")
                .header("x-request-id", "bench-1")
                .body(())
                .expect("request");
            let resp = rt.block_on(tower_service::Service::call(&mut bare, req));
            black_box(resp)
        })
    });
    g.bench_function("middleware_stack", |b| {
        b.iter(|| {
            let req = http::Request::builder()
                .method("GET")
                .uri("/health/live")
                .header("x-request-id", "bench-1")
                .body(())
                .expect("request");
            let resp = rt.block_on(tower_service::Service::call(&mut svc, req));
            black_box(resp)
        })
    });
    pipeline.store().close().expect("final store flush");
}

/// The `instrumentation` group, in a fixed order.
fn instrumentation(c: &mut Criterion) {
    let mut g = c.benchmark_group(GROUP);
    queue_wait_observation(&mut g);
    verification_observation(&mut g);
    event_envelope_encode(&mut g);
    task_record_encode(&mut g);
    task_record_decode(&mut g);
    // Keep it before the submit bench, which changes the group's sampling.
    middleware_stack(&mut g);
    sled_submit_shared_flush(&mut g);
    g.finish();
}

criterion_group!(benches, instrumentation);
criterion_main!(benches);
