//! Retention on the real server and store: finished tasks leave with
//! everything that hangs off them once their time has passed (and not
//! before), a removed task answers 404 `gone`, a resumed firehose is told
//! it missed removed events, tickets keep their task, indexes and counters
//! stay consistent after every pass, and the store report and metrics say
//! what was removed.

use std::time::Duration;

use forgeline::auth::Role;
use forgeline::retention::check_store;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{metric, spawn_app_with, TestApp};

const HOUR: Duration = Duration::from_secs(3600);

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

/// Submits to `q` with an idempotency key, leases and ends it by `how`.
async fn finish(app: &TestApp, key: &str, how: &str, extra: Value) -> Value {
    let mut body = json!({"queue": "q", "payload": {"key": key}});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let t = app
        .api()
        .submit(body)
        .header("Idempotency-Key", key)
        .await
        .expect(StatusCode::CREATED);
    let l = app.lease("q", "w", 1).await.remove(0);
    let r = match how {
        "complete" => {
            app.lease_call(&l, "complete", json!({"result": {"k": key}}))
                .await
        }
        _ => {
            let body = json!({"error": "boom", "retryable": false});
            app.lease_call(&l, "fail", body).await
        }
    };
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    t
}

async fn pass(app: &TestApp) -> forgeline::retention::PassReport {
    let now = forgeline::clock::Clock::now_ms(&*app.clock);
    let report = app.pipeline.retention_pass(now).await.unwrap();
    let found = check_store(app.pipeline.store()).unwrap();
    assert!(found.is_empty(), "inconsistent after a pass: {found:?}");
    report
}

fn removed(r: &forgeline::retention::PassReport, kind: &str) -> u64 {
    r.tally.removed.get(kind).map_or(0, |c| c.0)
}

#[tokio::test]
async fn finished_tasks_leave_after_their_retention_with_what_hangs_off_them() {
    let app = spawn_app_with(|c| {
        c.retention.completed = HOUR;
        c.retention.failed = 2 * HOUR;
        c.retention.review_tickets = 3 * HOUR;
        c.retention.idempotency = 24 * HOUR;
    })
    .await;
    let done = finish(&app, "a", "complete", json!({})).await;
    let failed = finish(&app, "b", "fail", json!({})).await;
    let reviewed = finish(&app, "r", "complete", json!({"review": {"required": true}})).await;
    let ticket = app.task(&id(&reviewed)).await["reviews"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let reviewer = app.api_as("alice", &[Role::Reviewer]);
    let t = reviewer.review(&ticket).await.expect(StatusCode::OK);
    reviewer
        .vote(&t, "approved", None)
        .await
        .expect(StatusCode::OK);
    let waiting = app
        .api()
        .submit(json!({"queue": "other"}))
        .header("Idempotency-Key", "c")
        .await
        .expect(StatusCode::CREATED);

    // Not yet: an hour has not passed since the completion.
    app.clock.advance(HOUR - Duration::from_secs(1));
    let r = pass(&app).await;
    assert_eq!(removed(&r, "task"), 0, "{r:?}");
    app.task(&id(&done)).await;

    // Past the hour: the completed task goes with its run, lease, events and
    // idempotency record; the failed one (2 h), the reviewed one (its ticket
    // is kept 3 h) and the queued one stay.
    app.clock.advance(Duration::from_secs(2));
    let r = pass(&app).await;
    assert_eq!(removed(&r, "task"), 1, "{r:?}");
    for kind in ["run", "lease", "idempotency"] {
        assert_eq!(removed(&r, kind), 1, "{kind}: {r:?}");
    }
    assert!(removed(&r, "event") >= 4, "{r:?}");
    let gone = app.api().task(&id(&done)).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(gone.code(), "gone", "{:?}", gone.body);
    assert_eq!(gone.body["error"]["details"]["reason"], "gone");
    let events = app.api().task_events(&id(&done), "").await;
    assert_eq!(events.code(), "gone");
    for t in [&failed, &reviewed, &waiting] {
        app.task(&id(t)).await;
    }
    // A task newer than anything removed is plainly unknown.
    let fresh = ulid::Ulid::new().to_string();
    assert_eq!(app.api().task(&fresh).await.code(), "not_found");
    // The key of the removed task is free again: a new task.
    let again = app
        .api()
        .submit(json!({"queue": "q", "payload": {"key": "a"}}))
        .header("Idempotency-Key", "a")
        .await
        .expect(StatusCode::CREATED);
    assert_ne!(id(&again), id(&done));

    // The failed task at 2 h; the reviewed one only once its ticket has gone
    // (3 h after the close), in the pass after.
    app.clock.advance(HOUR);
    let r = pass(&app).await;
    assert_eq!(removed(&r, "task"), 1, "{r:?}");
    assert_eq!(app.api().task(&id(&failed)).await.code(), "gone");
    app.task(&id(&reviewed)).await;
    reviewer.review(&ticket).await.expect(StatusCode::OK);
    app.clock.advance(HOUR);
    let r = pass(&app).await;
    assert_eq!(removed(&r, "ticket"), 1, "{r:?}");
    assert_eq!(reviewer.review(&ticket).await.status, StatusCode::NOT_FOUND);
    let r = pass(&app).await;
    assert_eq!(removed(&r, "task"), 1, "{r:?}");
    assert_eq!(app.api().task(&id(&reviewed)).await.code(), "gone");
    // The queued task stays whatever its age; its idempotency record goes
    // after 24 h, and the key then makes a new task.
    app.clock.advance(24 * HOUR);
    let r = pass(&app).await;
    assert!(removed(&r, "idempotency") >= 1, "{r:?}");
    app.task(&id(&waiting)).await;
    let twin = app
        .api()
        .submit(json!({"queue": "other"}))
        .header("Idempotency-Key", "c")
        .await
        .expect(StatusCode::CREATED);
    assert_ne!(id(&twin), id(&waiting));

    let m = app.metrics().await;
    assert!(metric(&m, "forgeline_retention_removed_total{kind=\"task\"}").unwrap() >= 3.0);
    assert!(
        metric(
            &m,
            "forgeline_retention_removed_bytes_total{kind=\"event\"}"
        )
        .unwrap()
            > 0.0
    );
    assert!(metric(&m, "forgeline_retention_last_run_timestamp_seconds").unwrap() > 0.0);
    assert!(metric(&m, "forgeline_store_disk_size_bytes").unwrap() > 0.0);
    assert!(metric(&m, "forgeline_store_disk_free_bytes").unwrap() > 0.0);
    // Counters follow: no completed or failed task is left in queue q.
    assert_eq!(
        metric(&m, "forgeline_tasks{queue=\"q\",state=\"completed\"}"),
        Some(0.0)
    );
    assert_eq!(
        metric(&m, "forgeline_tasks{queue=\"q\",state=\"failed\"}"),
        Some(0.0)
    );
}

#[tokio::test]
async fn a_firehose_resumed_before_removed_events_is_told_so() {
    let app = spawn_app_with(|c| c.retention.completed = HOUR).await;
    let kept = app.submit(json!({"queue": "keep"})).await;
    let done = finish(&app, "a", "complete", json!({})).await;
    let all = app
        .sse("/api/v1/events?max_events=100&idle_timeout=200ms", None)
        .await;
    assert!(
        all.iter().all(|e| e.event != "stream_gap"),
        "nothing removed yet"
    );
    let first = all[0].id.clone();
    app.clock.advance(2 * HOUR);
    pass(&app).await;
    let resumed = app
        .sse(
            "/api/v1/events?max_events=100&idle_timeout=200ms",
            Some(&first),
        )
        .await;
    assert_eq!(resumed[0].event, "stream_gap", "{resumed:?}");
    assert_eq!(resumed[0].id, "", "the notice does not move Last-Event-ID");
    assert_eq!(resumed[0].data["after"], first.as_str());
    assert_eq!(resumed[0].data["schema"], "forgeline.stream-gap.v1");
    // What remains still comes, and nothing of the removed task.
    assert!(
        resumed[1..].iter().all(|e| e.data["task_id"] == kept["id"]),
        "{resumed:?}"
    );
    assert_ne!(done["id"], kept["id"]);
    // From the newest event there is nothing missed.
    let last = all.last().unwrap().id.clone();
    let tail = app
        .sse(
            "/api/v1/events?max_events=100&idle_timeout=200ms",
            Some(&last),
        )
        .await;
    assert!(tail.iter().all(|e| e.event != "stream_gap"), "{tail:?}");
}

#[tokio::test]
async fn the_store_report_counts_by_kind_and_names_the_rules() {
    let app = spawn_app_with(|c| c.retention.completed = HOUR).await;
    finish(&app, "a", "complete", json!({})).await;
    let v = app.api().store_report().await.expect(StatusCode::OK);
    assert_eq!(v["kinds"]["task"]["records"], 1, "{v}");
    assert_eq!(v["kinds"]["run"]["records"], 1, "{v}");
    assert!(v["kinds"]["event"]["records"].as_u64().unwrap() >= 4, "{v}");
    assert!(v["kinds"]["task"]["oldest"].is_string(), "{v}");
    assert!(v["disk"]["free_bytes"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["retention"]["completed"], "1h");
    assert_eq!(v["retention"]["review_tickets"], "90d");
    assert!(v["retention"]["removed_through_task"].is_null());
    // Only review_admin reads it.
    let observer = app.api_as("olga", &[Role::Observer]);
    assert_eq!(observer.store_report().await.status, StatusCode::FORBIDDEN);
    app.clock.advance(2 * HOUR);
    pass(&app).await;
    let v = app.api().store_report().await.expect(StatusCode::OK);
    assert_eq!(v["kinds"]["task"]["records"], 0, "{v}");
    assert!(v["retention"]["removed_through_task"].is_string(), "{v}");
}

#[tokio::test]
async fn the_check_finds_what_a_half_done_removal_would_leave() {
    let app = spawn_app_with(|_| {}).await;
    let t = finish(&app, "a", "complete", json!({})).await;
    let store = app.pipeline.store();
    assert!(check_store(store).unwrap().is_empty());
    // Remove the task record alone, as a removal cut in half would.
    let tid: forgeline::model::TaskId = id(&t).parse().unwrap();
    let (_, c) = store
        .write(|txn| {
            txn.delete(forgeline::store::keys::task(&tid.to_bytes()));
            Ok::<_, forgeline::store::StoreError>(())
        })
        .unwrap();
    store.wait_durable(c).await.unwrap();
    let found: Vec<String> = check_store(store)
        .unwrap()
        .iter()
        .map(|f| f.to_string())
        .collect();
    for what in [
        "state index names task",
        "count of state",
        "event ",
        "run ",
        "lease ",
        "idempotency record",
    ] {
        assert!(
            found.iter().any(|f| f.contains(what)),
            "{what:?} not in {found:#?}"
        );
    }
}
