//! Writes the store fixture in tests/data/ that the fixture test opens.
//!
//! Run it when the store format changes, with a new directory name, and keep
//! the old fixtures: every released format must keep loading. store-v1 was
//! written before leases were bound to a principal (LeaseRecord v1);
//! store-v2 by the version that added that and the audit log.
//!
//!     cargo run --example write_fixture -- tests/data/store-v2

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use forgeline::app::App;
use forgeline::clock::ManualClock;
use forgeline::config::Config;
use forgeline::model::{QueueName, TaskId, WorkerId};
use forgeline::queue::{Failure, LeaseRequest};
use forgeline::store::Durability;
use forgeline::tasks::submit::{validate, SubmitRequest};
use forgeline::tasks::{Submission, Submitted};
use forgeline::workers::{normalize_event, normalize_status};
use serde_json::json;

/// The fixture's clock: 2026-01-01T00:00:00Z.
const FIXTURE_TIME: u64 = 1_767_225_600_000;

#[tokio::main]
async fn main() {
    let out = std::env::args().nth(1).expect("usage: write_fixture DIR");
    let out = std::path::PathBuf::from(out);
    let _ = std::fs::remove_dir_all(&out);
    let mut config = Config::default();
    config.store.data_dir = out.join("data");
    config.store.durability = Durability::Sync;
    config.executor.enabled = false;
    // No keys in a fixture: nothing to generate.
    config.auth.mode = forgeline::config::AuthMode::None;
    let clock = Arc::new(ManualClock::new(FIXTURE_TIME));
    let app = App::build_with_clock(config.clone(), clock.clone())
        .await
        .unwrap();
    let p = app.pipeline().clone();

    let submit = |body: serde_json::Value, key: Option<&str>| {
        let p = p.clone();
        let config = config.clone();
        let key = key.map(|k| (k.to_string(), [7u8; 32]));
        async move {
            let req: SubmitRequest = serde_json::from_value(body).unwrap();
            let task = validate(req, &config, p.now()).unwrap();
            let s = Submission {
                principal: "fixture".into(),
                idempotency: key,
                traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
                task,
            };
            match p.submit(s).await.unwrap() {
                Submitted::Created(t) | Submitted::Replayed(t) => t.id,
            }
        }
    };
    let lease = |queue: &str, worker: &str| {
        let p = p.clone();
        let req = LeaseRequest {
            queues: vec![QueueName::parse(queue).unwrap()],
            worker: WorkerId::parse(worker).unwrap(),
            holder: format!("principal-{worker}"),
            max: 1,
            wait: Duration::ZERO,
            lease_for: Duration::from_secs(30),
        };
        async move { p.lease(&req).await.unwrap().remove(0) }
    };

    let mut names: BTreeMap<&str, TaskId> = BTreeMap::new();
    names.insert("queued", submit(json!({"queue": "agents", "priority": 8, "labels": {"project_id": "p1"}, "payload": {"goal": "refactor"}, "steps": ["build", "test"]}), Some("idem-1")).await);
    names.insert(
        "scheduled",
        submit(json!({"queue": "agents", "delay": "1h"}), None).await,
    );

    let running = submit(json!({"queue": "work", "steps": ["npm-ci"]}), None).await;
    names.insert("running", running);
    let g = lease("work", "agent-1").await;
    let evs = [
        json!({"type": "agentStarted", "agentName": "coder"}),
        json!({"event": "tool_invoked", "event_data": {"tool_name": "bash", "tool_call_id": "c1"}}),
    ];
    p.report_events(
        g.lease.id,
        g.lease.token,
        None,
        evs.iter().map(|e| normalize_event(e).unwrap()).collect(),
    )
    .await
    .unwrap();

    let done = submit(json!({"queue": "work", "steps": ["npm-ci"], "review": {"required": true, "required_approvals": 2}}), None).await;
    names.insert("completed", done);
    let g = lease("work", "agent-2").await;
    let evs = [
        json!({"type": "verification_started", "step": "npm-ci"}),
        json!({"type": "verification_finished", "step": "npm-ci", "exit_code": 0, "duration_ms": 1500, "output_tail": "ok"}),
    ];
    p.report_events(
        g.lease.id,
        g.lease.token,
        None,
        evs.iter().map(|e| normalize_event(e).unwrap()).collect(),
    )
    .await
    .unwrap();
    p.complete(
        g.lease.id,
        g.lease.token,
        None,
        Some(json!({"merged": true})),
    )
    .await
    .unwrap();

    let dead = submit(json!({"queue": "work", "max_attempts": 1}), None).await;
    names.insert("dead", dead);
    let g = lease("work", "agent-2").await;
    p.fail(
        g.lease.id,
        g.lease.token,
        None,
        Failure {
            retryable: true,
            error: "boom".into(),
        },
    )
    .await
    .unwrap();

    let retry = submit(json!({"queue": "work", "max_attempts": 3}), None).await;
    names.insert("retrying", retry);
    let g = lease("work", "agent-2").await;
    p.fail(
        g.lease.id,
        g.lease.token,
        None,
        Failure {
            retryable: true,
            error: "flaky".into(),
        },
    )
    .await
    .unwrap();

    let cancelled = submit(json!({"queue": "agents"}), None).await;
    names.insert("cancelled", cancelled);
    p.cancel(cancelled, "fixture", Some("obsolete".into()))
        .await
        .unwrap();

    p.report_status(
        &WorkerId::parse("agent-3").unwrap(),
        "fixture",
        normalize_status(&json!({"status": "draining"})).unwrap(),
    )
    .await
    .unwrap();

    // Two audit records, as the HTTP layer writes them.
    for (status, detail) in [
        (201, None),
        (401, Some("auth failure: expired".to_string())),
    ] {
        let c = p
            .audit(forgeline::audit::AuditDraft {
                at: FIXTURE_TIME,
                request_id: format!("fixture-{status}"),
                principal: "fixture".into(),
                roles: vec!["submitter".into()],
                method: "POST".into(),
                route: "/api/v1/tasks".into(),
                body_sha256: Some([1; 32]),
                status,
                latency_us: 250,
                detail,
            })
            .unwrap();
        p.store().wait_durable(c).await.unwrap();
    }

    let mut tasks = serde_json::Map::new();
    for (name, id) in &names {
        let t = p.task(*id).unwrap();
        let (events, _) = p.recent_events(*id, 1000).unwrap();
        tasks.insert(
            name.to_string(),
            json!({
                "id": id.to_string(),
                "state": t.state.kind().as_str(),
                "queue": t.queue.as_str(),
                "attempts": t.attempts,
                "runs": t.runs.len(),
                "events": events.len(),
            }),
        );
    }
    let events_total = p.store().durable().borrow().event_id;
    p.store().close().unwrap();
    drop(app);
    let manifest = json!({
        "written_by": env!("CARGO_PKG_VERSION"),
        "clock_ms": FIXTURE_TIME,
        "schema_version": forgeline::store::SCHEMA_VERSION,
        "events_total": events_total,
        "tasks": tasks,
        "workers": ["agent-1", "agent-2", "agent-3"],
        "audit_records": 2,
    });
    std::fs::write(
        out.join("manifest.json"),
        serde_json::to_string_pretty(&manifest).unwrap(),
    )
    .unwrap();
    println!("wrote {}", out.display());
}
