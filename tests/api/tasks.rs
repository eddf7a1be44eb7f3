//! Submitting, reading, listing and cancelling tasks.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test]
async fn a_submitted_task_is_queued_with_its_fields_and_two_events() {
    let app = spawn_app().await;
    let t = app
        .submit(json!({
            "queue": "agents", "priority": 7, "labels": {"project_id": "p1"},
            "payload": {"goal": "fix the build"}, "steps": ["build", "test"],
            "max_attempts": 4, "review": {"required": true}
        }))
        .await;
    assert_eq!(t["state"], "queued");
    assert_eq!(t["queue"], "agents");
    assert_eq!(t["priority"], 7);
    assert_eq!(t["payload"]["goal"], "fix the build");
    assert_eq!(t["steps"], json!(["build", "test"]));
    assert_eq!(t["max_attempts"], 4);
    assert_eq!(t["review"]["required"], true);
    assert_eq!(t["trace_id"].as_str().unwrap().len(), 32);
    let full = app.task(t["id"].as_str().unwrap()).await;
    let kinds: Vec<&str> = full["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["task_submitted", "task_queued"]);
    assert_eq!(full["events"][0]["schema"], "forgeline.task-event.v1");
    assert_eq!(full["events_truncated"], false);
}

#[tokio::test]
async fn the_same_idempotency_key_and_body_returns_the_first_task_and_another_body_conflicts() {
    let app = spawn_app().await;
    let send = |body: serde_json::Value| app.api().submit(body).header("idempotency-key", "key-1");
    let first = send(json!({"queue": "q"})).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let again = send(json!({"queue": "q"})).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.headers["idempotent-replay"], "true");
    assert_eq!(again.body["id"], first.body["id"]);
    let other = send(json!({"queue": "other"})).await;
    assert_eq!(other.status, StatusCode::CONFLICT);
    let list = app.api().tasks("").await;
    assert_eq!(
        list.body["tasks"].as_array().unwrap().len(),
        1,
        "only one task exists"
    );
}

#[tokio::test]
async fn a_delayed_task_waits_in_scheduled_until_its_time() {
    let app = spawn_app().await;
    let t = app.submit(json!({"queue": "q", "delay": "10m"})).await;
    assert_eq!(t["state"], "scheduled");
    assert!(app.lease("q", "w", 1).await.is_empty());
    app.advance(std::time::Duration::from_secs(599)).await;
    assert!(app.lease("q", "w", 1).await.is_empty());
    app.advance(std::time::Duration::from_secs(1)).await;
    let leases = app.lease("q", "w", 1).await;
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0]["task"]["id"], t["id"]);
}

#[tokio::test]
async fn event_history_is_bounded_and_says_when_it_is_truncated() {
    let app = spawn_app().await;
    let t = app.submit(json!({"queue": "q"})).await;
    let id = t["id"].as_str().unwrap();
    let one = app.api().task(id).query("events=1").await;
    assert_eq!(one.body["events"].as_array().unwrap().len(), 1);
    assert_eq!(
        one.body["events"][0]["type"], "task_queued",
        "the most recent event is kept"
    );
    assert_eq!(one.body["events_truncated"], true);
    let none = app.api().task(id).query("events=0").await;
    assert_eq!(none.body["events"].as_array().unwrap().len(), 0);
    let bad = app.api().task(id).query("events=100000").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn listing_filters_by_state_queue_and_label_and_pages_with_a_cursor() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let q = if i % 2 == 0 { "even" } else { "odd" };
        let t = app
            .submit(json!({"queue": q, "labels": {"n": i.to_string(), "team": "a"}}))
            .await;
        ids.push(t["id"].as_str().unwrap().to_string());
    }
    app.api().cancel(&ids[0], None).await;

    let even = app.api().tasks("queue=even").await.body;
    assert_eq!(even["tasks"].as_array().unwrap().len(), 3);
    let queued = app.api().tasks("state=queued&queue=even").await.body;
    assert_eq!(queued["tasks"].as_array().unwrap().len(), 2);
    let cancelled = app.api().tasks("state=cancelled").await.body;
    assert_eq!(cancelled["tasks"][0]["id"], ids[0].as_str());
    let labelled = app.api().tasks("label=n:3&label=team:a").await.body;
    assert_eq!(labelled["tasks"].as_array().unwrap().len(), 1);
    assert_eq!(labelled["tasks"][0]["id"], ids[3].as_str());

    // Pages of two, newest first, cover everything exactly once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(c) => format!("limit=2&cursor={c}"),
            None => "limit=2".to_string(),
        };
        let page = app.api().tasks(&query).await.body;
        for t in page["tasks"].as_array().unwrap() {
            seen.push(t["id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let mut expected = ids.clone();
    expected.reverse();
    assert_eq!(seen, expected);
    assert_eq!(
        app.api().tasks("state=bogus").await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn cancelling_ends_a_task_and_a_second_cancel_is_a_conflict() {
    let app = spawn_app().await;
    let t = app.submit(json!({"queue": "q"})).await;
    let id = t["id"].as_str().unwrap();
    let r = app.api().cancel(id, Some("not needed")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["state"], "cancelled");
    assert_eq!(r.body["state_detail"]["reason"], "not needed");
    assert!(
        app.lease("q", "w", 1).await.is_empty(),
        "a cancelled task leaves the queue"
    );
    let again = app.api().cancel(id, None).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.code(), "illegal_transition");
}

#[tokio::test]
async fn cancelling_a_running_task_ends_its_lease() {
    let app = spawn_app().await;
    let t = app.submit(json!({"queue": "q"})).await;
    let lease = app.lease("q", "w1", 1).await.remove(0);
    app.api().cancel(&t, None).await;
    let r = app.lease_call(&lease, "complete", json!({})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.code(), "stale_lease");
    let run = app.api().run(&lease["run_id"]).await;
    assert_eq!(run.body["outcome"], "cancelled");
}

#[tokio::test]
async fn the_dossier_holds_the_whole_record_and_a_run_has_its_events() {
    let app = spawn_app().await;
    let t = app.submit(json!({"queue": "q", "payload": {"a": 1}})).await;
    let id = t["id"].as_str().unwrap();
    let lease = app.lease("q", "w1", 1).await.remove(0);
    app.lease_call(
        &lease,
        "events",
        json!({"events": [{"type": "agent_started", "agent_name": "planner"}]}),
    )
    .await;
    app.lease_call(&lease, "complete", json!({"result": {"ok": true}}))
        .await;

    let r = app.api().dossier(id).await;
    assert!(r.headers["content-disposition"]
        .to_str()
        .unwrap()
        .contains(id));
    let d = r.body;
    assert_eq!(d["schema"], "forgeline.dossier.v1");
    assert_eq!(d["state"], "completed");
    assert_eq!(d["result"], json!({"ok": true}));
    assert_eq!(d["runs"].as_array().unwrap().len(), 1);
    assert_eq!(d["runs"][0]["agents"], json!(["planner"]));
    assert_eq!(d["events"].as_array().unwrap().len(), 5);

    let run = app.api().run(&lease["run_id"]).await.body;
    assert_eq!(run["outcome"], "completed");
    let kinds: Vec<&str> = run["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["task_leased", "agent_started", "task_completed"]);
}

#[tokio::test]
async fn responses_carry_request_ids_and_timing_and_echo_a_good_client_id() {
    let app = spawn_app().await;
    let r = app.api().tasks("").header("x-request-id", "abc-123").await;
    assert_eq!(r.headers["x-request-id"], "abc-123");
    assert!(r.headers["x-response-time"]
        .to_str()
        .unwrap()
        .ends_with("ms"));
    let r = app
        .api()
        .send("GET", "/nope", "")
        .header("x-request-id", "bad id!")
        .await;
    let rid = r.headers["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(rid.len(), 16);
    assert_eq!(
        r.body["error"]["request_id"],
        rid.as_str(),
        "error bodies carry the same id"
    );
}
