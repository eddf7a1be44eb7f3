//! The lease protocol: lease, heartbeat, events, complete, fail, expiry,
//! retries, dead-letter, stale tokens, and the worker status projection.

use std::future::IntoFuture;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use forgeline::auth::Role;

use crate::helpers::spawn_app;

#[tokio::test]
async fn leases_go_by_priority_then_age() {
    let app = spawn_app().await;
    let low = app.submit(json!({"queue": "q", "priority": 1})).await;
    app.clock.advance(Duration::from_millis(5));
    let high_old = app.submit(json!({"queue": "q", "priority": 9})).await;
    app.clock.advance(Duration::from_millis(5));
    let high_new = app.submit(json!({"queue": "q", "priority": 9})).await;
    let leases = app.lease("q", "w", 3).await;
    let order: Vec<&str> = leases
        .iter()
        .map(|l| l["task"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        [
            high_old["id"].as_str().unwrap(),
            high_new["id"].as_str().unwrap(),
            low["id"].as_str().unwrap()
        ]
    );
    assert_eq!(leases[0]["task"]["state"], "running");
    let tokens: Vec<u64> = leases
        .iter()
        .map(|l| l["token"].as_u64().unwrap())
        .collect();
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "fencing tokens increase: {tokens:?}"
    );
}

#[tokio::test]
async fn a_waiting_lease_wakes_on_submit() {
    let app = spawn_app().await;
    let started = Instant::now();
    let waiter = tokio::spawn(app.api().lease("q", "w", 1, 20000).into_future());
    // Nothing shows that the request is parked (no metric, no worker record
    // before a grant), so give it a moment; if the submit wins the race the
    // lease is granted at once and the test still holds.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = app.submit(json!({"queue": "q"})).await;
    let got = waiter.await.unwrap().body;
    assert_eq!(got["leases"][0]["task"]["id"], t["id"]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "woke on submit, not at the 20 s timeout"
    );
}

#[tokio::test]
async fn a_lease_request_with_nothing_to_do_returns_empty_after_its_wait() {
    let app = spawn_app().await;
    let started = Instant::now();
    assert!(app.lease_wait("q", "w", 1, 200).await.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn heartbeats_extend_the_deadline_so_the_reaper_leaves_the_lease_alone() {
    let app = spawn_app().await;
    app.submit(json!({"queue": "q"})).await;
    let lease = app.lease("q", "w", 1).await.remove(0);
    app.advance(Duration::from_secs(20)).await;
    let hb = app.lease_call(&lease, "heartbeat", json!({})).await;
    assert_eq!(hb.status, StatusCode::OK);
    app.advance(Duration::from_secs(20)).await; // 40 s after the lease, 20 s after the heartbeat
    let r = app.lease_call(&lease, "complete", json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["state"], "completed");
}

#[tokio::test]
async fn a_vanished_worker_loses_its_task_to_redelivery_and_its_late_complete_is_refused() {
    let app = spawn_app().await;
    let t = app.submit(json!({"queue": "q", "max_attempts": 3})).await;
    let stale = app.lease("q", "w1", 1).await.remove(0);
    app.advance(Duration::from_secs(31)).await;
    let task = app.task(t["id"].as_str().unwrap()).await;
    assert_eq!(task["state"], "queued");
    let kinds: Vec<&str> = task["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(
        kinds.ends_with(&["lease_expired", "task_queued"]),
        "{kinds:?}"
    );

    let fresh = app.lease("q", "w2", 1).await.remove(0);
    assert_eq!(fresh["attempt"], 2);
    assert!(fresh["token"].as_u64() > stale["token"].as_u64());
    for action in ["complete", "heartbeat", "fail"] {
        let body = if action == "fail" {
            json!({"error": "late"})
        } else {
            json!({})
        };
        let r = app.lease_call(&stale, action, body).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{action}: {:?}", r.body);
        assert_eq!(r.code(), "stale_lease");
    }
    let text = app.api().metrics().await.text;
    assert!(
        text.contains("forgeline_stale_acks_total{queue=\"q\"} 3"),
        "stale calls are counted"
    );
    assert!(text.contains("forgeline_leases_expired_total{queue=\"q\"} 1"));
    let ok = app.lease_call(&fresh, "complete", json!({})).await;
    assert_eq!(ok.status, StatusCode::OK);
}

#[tokio::test]
async fn a_wrong_token_on_a_live_lease_is_refused() {
    let app = spawn_app().await;
    app.submit(json!({"queue": "q"})).await;
    let mut lease = app.lease("q", "w", 1).await.remove(0);
    lease["token"] = json!(lease["token"].as_u64().unwrap() + 1000);
    let r = app.lease_call(&lease, "complete", json!({})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.code(), "stale_lease");
}

#[tokio::test]
async fn retryable_failures_back_off_then_dead_letter_and_requeue_restores_the_budget() {
    let app = spawn_app().await;
    let t = app.submit(json!({"queue": "q", "max_attempts": 2})).await;
    let id = t["id"].as_str().unwrap().to_string();
    let l1 = app.lease("q", "w", 1).await.remove(0);
    let r = app
        .lease_call(&l1, "fail", json!({"error": "flaky network"}))
        .await;
    assert_eq!(r.body["state"], "scheduled");
    assert_eq!(r.body["state_detail"]["reason"], "retry");
    assert!(app.lease("q", "w", 1).await.is_empty(), "backing off");
    // Default backoff: base 1 s, attempt 1 -> between 0.5 s and 1 s.
    app.advance(Duration::from_millis(1000)).await;
    let l2 = app.lease("q", "w", 1).await.remove(0);
    assert_eq!(l2["attempt"], 2);
    let r = app
        .lease_call(&l2, "fail", json!({"error": "still flaky"}))
        .await;
    assert_eq!(r.body["state"], "dead");

    let dead = app.api().dead_letter().await.body;
    assert_eq!(dead["tasks"][0]["id"], id.as_str());
    assert_eq!(dead["tasks"][0]["last_error"], "still flaky");
    let rq = app.api().requeue(&id).await;
    assert_eq!(rq.status, StatusCode::OK);
    assert_eq!(rq.body["state"], "queued");
    assert_eq!(rq.body["attempts_left"], 2);
    let again = app.api().requeue(&id).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(app.lease("q", "w", 1).await[0]["attempt"], 3);
}

#[tokio::test]
async fn a_non_retryable_failure_fails_the_task_at_once() {
    let app = spawn_app().await;
    app.submit(json!({"queue": "q", "max_attempts": 5})).await;
    let l = app.lease("q", "w", 1).await.remove(0);
    let r = app
        .lease_call(
            &l,
            "fail",
            json!({"error": "bad input", "retryable": false}),
        )
        .await;
    assert_eq!(r.body["state"], "failed");
    assert_eq!(r.body["last_error"], "bad input");
}

#[tokio::test]
async fn expiry_after_the_last_attempt_dead_letters() {
    let app = spawn_app().await;
    let t = app.submit(json!({"queue": "q", "max_attempts": 1})).await;
    app.lease("q", "w", 1).await;
    app.advance(Duration::from_secs(31)).await;
    assert_eq!(app.task(t["id"].as_str().unwrap()).await["state"], "dead");
}

#[tokio::test]
async fn worker_events_in_every_shape_are_stored_in_one_canonical_form() {
    let app = spawn_app().await;
    app.submit(json!({"queue": "q"})).await;
    let lease = app.lease("q", "w", 1).await.remove(0);
    let shapes = [
        json!({"type": "tool_invoked", "tool_name": "bash", "tool_call_id": "c1"}),
        json!({"type": "toolInvoked", "toolName": "bash", "toolCallId": "c1"}),
        json!({"event": "tool_invoked", "event_data": {"tool_name": "bash", "tool_call_id": "c1"}}),
        json!({"eventType": "toolInvoked", "eventData": {"toolName": "bash", "toolCallId": "c1"}}),
    ];
    for s in &shapes {
        let r = app
            .lease_call(&lease, "events", json!({"events": [s]}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{s}: {:?}", r.body);
    }
    let run = app.api().run(&lease["run_id"]).await.body;
    let tools: Vec<&serde_json::Value> = run["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "tool_invoked")
        .collect();
    assert_eq!(tools.len(), 4);
    for e in tools {
        assert_eq!(
            e["data"],
            json!({"tool_name": "bash", "tool_call_id": "c1"})
        );
    }
    let bad = app
        .lease_call(&lease, "events", json!({"events": [{"type": "teleport"}]}))
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("expected one of"));
    assert_eq!(bad.body["error"]["details"]["field"], "events[0].type");
}

#[tokio::test]
async fn verification_events_move_the_task_to_verifying_and_record_step_results() {
    let app = spawn_app().await;
    let t = app
        .submit(json!({"queue": "q", "steps": ["npm-ci", "npm-build"]}))
        .await;
    let lease = app.lease("q", "w", 1).await.remove(0);
    assert_eq!(lease["steps"], json!(["npm-ci", "npm-build"]));
    app.lease_call(&lease, "events", json!({"events": [
        {"type": "verification_started", "step": "npm-ci"},
        {"type": "verificationFinished", "step": "npm-ci", "exitCode": 0, "durationMs": 4200, "output": "added 12 packages"},
    ]})).await;
    let task = app.task(t["id"].as_str().unwrap()).await;
    assert_eq!(task["state"], "verifying");
    let step = &task["runs"][0]["steps"][0];
    assert_eq!(step["name"], "npm-ci");
    assert_eq!(step["outcome"], "passed");
    assert_eq!(step["duration_ms"], 4200);
    assert_eq!(step["output_tail"], "added 12 packages");
    // Start and finish reported in one batch without timestamps: the
    // worker's duration places the start, it is not stamped at arrival.
    let ms = |v: &Value| {
        time::OffsetDateTime::parse(
            v.as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
        .unix_timestamp_nanos()
            / 1_000_000
    };
    assert_eq!(ms(&step["finished_at"]) - ms(&step["started_at"]), 4200);

    // A finish carrying its own timestamp, with no start reported.
    app.lease_call(
        &lease,
        "events",
        json!({"events": [
            {"type": "verification_finished", "step": "npm-build", "exit_code": 0,
             "duration_ms": 8400, "timestamp": "2026-01-01T00:00:10Z"},
        ]}),
    )
    .await;
    let task = app.task(t["id"].as_str().unwrap()).await;
    let step = &task["runs"][0]["steps"][1];
    assert_eq!(step["name"], "npm-build");
    assert_eq!(step["started_at"], "2026-01-01T00:00:01.600Z");
    assert_eq!(step["finished_at"], "2026-01-01T00:00:10.000Z");
    assert_eq!(step["duration_ms"], 8400);
}

#[tokio::test]
async fn a_worker_id_belongs_to_the_principal_that_first_uses_it() {
    let app = spawn_app().await;
    app.submit(json!({"queue": "q"})).await;
    let (a, b) = (
        app.api_as("worker-a", &[Role::Worker]),
        app.api_as("worker-b", &[Role::Worker]),
    );
    let r = a.lease("q", "agent-7", 1, 0).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["leases"].as_array().unwrap().len(), 1);

    // B can neither overwrite A's status nor lease under A's id.
    let r = b.worker_status("agent-7", json!({"status": "idle"})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    assert_eq!(r.body["error"]["code"], "forbidden");
    assert!(
        !r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("worker-a"),
        "the owner is not named"
    );
    app.submit(json!({"queue": "q"})).await;
    assert_eq!(
        b.lease("q", "agent-7", 1, 0).await.status,
        StatusCode::FORBIDDEN
    );
    let ws = app.api().workers().await.body;
    assert_eq!(
        ws["workers"][0]["status"], "busy",
        "A's status is untouched"
    );

    // A's own reports go through; once A says it is offline, the id is free.
    assert_eq!(
        a.worker_status("agent-7", json!({"status": "draining"}))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        a.worker_status("agent-7", json!({"status": "offline"}))
            .await
            .status,
        StatusCode::OK
    );
    let r = b.lease("q", "agent-7", 1, 0).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["leases"].as_array().unwrap().len(), 1);
    assert_eq!(
        a.worker_status("agent-7", json!({"status": "idle"}))
            .await
            .status,
        StatusCode::FORBIDDEN
    );

    // The built-in executor's ids are nobody else's.
    let r = a.lease("q", "builtin-0", 1, 0).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.body["error"]["details"]["field"], "worker_id");
    let r = a
        .worker_status("builtin-1", json!({"status": "idle"}))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn the_worker_projection_follows_leases_and_refuses_idle_with_a_task() {
    let app = spawn_app().await;
    let t = app.submit(json!({"queue": "q"})).await;
    let lease = app.lease("q", "agent-7", 1).await.remove(0);
    let ws = app.api().workers().await.body;
    assert_eq!(ws["workers"][0]["id"], "agent-7");
    assert_eq!(ws["workers"][0]["status"], "busy");
    assert_eq!(ws["workers"][0]["current_task"], t["id"]);
    app.lease_call(&lease, "complete", json!({})).await;
    let ws = app.api().workers().await.body;
    assert_eq!(ws["workers"][0]["status"], "idle");
    assert!(ws["workers"][0]["current_task"].is_null());

    let bad = app
        .api()
        .worker_status("agent-7", json!({"status": "idle", "currentTask": t["id"]}))
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad.body["error"]["details"]["field"], "current_task");
    let ok = app
        .api()
        .worker_status("agent-7", json!({"event_data": {"status": "draining"}}))
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(
        app.api().workers().await.body["workers"][0]["status"],
        "draining"
    );
}

#[tokio::test]
async fn lease_requests_are_checked() {
    let app = spawn_app().await;
    for (body, field) in [
        (json!({"worker_id": "w", "max": 0}), "max"),
        (json!({"worker_id": "w", "max": 1000}), "max"),
        (json!({"worker_id": "w", "wait_ms": 3_600_000}), "wait_ms"),
        (json!({"worker_id": "w", "lease_ms": 5}), "lease_ms"),
        (json!({"worker_id": "bad id"}), "worker_id"),
    ] {
        let r = app
            .api()
            .send("POST", "/api/v1/queues/q/lease", body.to_string())
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(r.body["error"]["details"]["field"], field, "{body}");
    }
    let r = app
        .api()
        .send(
            "POST",
            "/api/v1/queues/bad%20queue/lease",
            json!({"worker_id": "w"}).to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = app
        .api()
        .complete(
            &json!({"lease_id": "01ARZ3NDEKTSV4RRFFQ69G5FAV", "token": 1}),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_requeue_is_recorded_and_then_queues_the_task_like_any_other_entry() {
    let app = spawn_app().await;
    let t = app.submit(json!({"queue": "q", "max_attempts": 1})).await;
    let id = t["id"].as_str().unwrap();
    let l = app.lease("q", "w", 1).await.remove(0);
    app.lease_call(&l, "fail", json!({"error": "x"})).await;
    app.api().requeue(id).await;
    let events = app.task(id).await["events"].as_array().unwrap().clone();
    let tail: Vec<(&str, &serde_json::Value)> = events[events.len() - 2..]
        .iter()
        .map(|e| (e["type"].as_str().unwrap(), &e["data"]))
        .collect();
    assert_eq!(tail[0].0, "task_requeued");
    assert_eq!(tail[1], ("task_queued", &json!({"reason": "requeued"})));
}

#[tokio::test]
async fn a_worker_whose_lease_expired_or_whose_task_was_cancelled_is_idle_again() {
    let app = spawn_app().await;
    app.submit(json!({"queue": "q"})).await;
    let t2 = app.submit(json!({"queue": "r"})).await;
    app.lease("q", "sleepy", 1).await;
    app.advance(Duration::from_secs(31)).await;
    let ws = app.api().workers().await.body;
    assert_eq!(ws["workers"][0]["status"], "idle", "{ws}");
    app.lease("r", "busy-one", 1).await;
    app.api().cancel(&t2, None).await;
    let ws = app.api().workers().await.body;
    let busy = ws["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == "busy-one")
        .unwrap()
        .clone();
    assert_eq!(busy["status"], "idle");
    let unknown = app
        .api()
        .worker_status(
            "x",
            json!({"status": "busy", "current_task": "01ARZ3NDEKTSV4RRFFQ69G5FAV"}),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn a_released_lease_puts_the_task_back_at_once_without_counting_the_attempt() {
    let app = spawn_app().await;
    let t = app.submit(json!({"queue": "q", "max_attempts": 2})).await;
    let id = t["id"].as_str().unwrap().to_string();
    let first = app.lease("q", "w1", 1).await.remove(0);

    let r = app.api().release_lease(&first).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["state"], "queued");
    assert_eq!(
        r.body["attempts_left"], 2,
        "the released attempt is not counted"
    );

    // Leasable again right away, by another worker, with a new fencing token.
    let second = app.lease("q", "w2", 1).await.remove(0);
    assert_eq!(second["task"]["id"], id.as_str());
    assert!(second["token"].as_u64() > first["token"].as_u64());

    // The released lease is over: every call on it is stale, release included.
    for action in ["release", "heartbeat", "complete"] {
        let again = app.lease_call(&first, action, json!({})).await;
        assert_eq!(again.status, StatusCode::CONFLICT, "{action}");
        assert_eq!(again.code(), "stale_lease", "{action}");
    }
    let run = app.api().run(&first["run_id"]).await;
    assert_eq!(run.body["outcome"], "released", "{:?}", run.body);
    let released = app.task(&id).await["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["type"] == "task_queued" && e["data"]["reason"] == "released");
    assert!(released, "a task_queued event says why");

    let missing = app
        .api()
        .release_lease(&json!({"lease_id": "01M80SJK6MDAVKB72ZW345732Y", "token": 1}))
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let done = app
        .lease_call(&second, "complete", json!({"result": {"ok": true}}))
        .await;
    assert_eq!(done.status, StatusCode::OK);
}
