//! Event streams over SSE: resume without gap or duplicate, bounds, filters,
//! submit-and-stream, and streams ending at shutdown.

use std::future::IntoFuture;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{kinds, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_event_id_resumes_with_no_gap_and_no_duplicate() {
    let app = spawn_app().await;
    for i in 0..10 {
        app.submit(json!({"queue": "q", "labels": {"i": i.to_string()}}))
            .await;
    }
    let first = app.sse("/api/v1/events?max_events=7", None).await;
    assert_eq!(first.len(), 7);
    // More events arrive between the two connections.
    for _ in 0..3 {
        app.submit(json!({"queue": "q"})).await;
    }
    let last = first.last().unwrap().id.clone();
    let rest = app
        .sse("/api/v1/events?idle_timeout=300ms", Some(&last))
        .await;
    let ids: Vec<u64> = first
        .iter()
        .chain(rest.iter())
        .map(|e| u64::from_str_radix(&e.id, 16).unwrap())
        .collect();
    assert_eq!(
        ids,
        (1..=26).collect::<Vec<u64>>(),
        "13 tasks x 2 events, each once, in order"
    );
    assert_eq!(first[0].data["schema"], "forgeline.task-event.v1");
    assert_eq!(first[0].data["id"], first[0].id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_stream_sees_events_as_they_happen() {
    let app = spawn_app().await;
    let reader = tokio::spawn(app.api().events("max_events=4").into_future());
    app.api().wait_for_streams(1).await;
    app.submit(json!({"queue": "q"})).await;
    app.submit(json!({"queue": "q"})).await;
    let events = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .unwrap()
        .unwrap()
        .sse();
    assert_eq!(
        kinds(&events),
        [
            "task_submitted",
            "task_queued",
            "task_submitted",
            "task_queued"
        ]
    );
}

#[tokio::test]
async fn firehose_filters_by_queue_and_type() {
    let app = spawn_app().await;
    app.submit(json!({"queue": "a"})).await;
    let b = app.submit(json!({"queue": "b"})).await;
    let only_b = app
        .sse("/api/v1/events?queue=b&idle_timeout=200ms", None)
        .await;
    assert_eq!(only_b.len(), 2);
    assert!(only_b.iter().all(|e| e.data["task_id"] == b["id"]));
    let queued = app
        .sse("/api/v1/events?type=task_queued&idle_timeout=200ms", None)
        .await;
    assert_eq!(kinds(&queued), ["task_queued", "task_queued"]);
    let r = app.api().events("type=nonsense").await;
    assert_eq!(r.status, reqwest::StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_stream_ends_after_the_task_finishes() {
    let app = spawn_app().await;
    let t = app.submit(json!({"queue": "q"})).await;
    let id = t["id"].as_str().unwrap().to_string();
    let reader = tokio::spawn(app.api().task_events(&id, "").into_future());
    let lease = app.lease("q", "w", 1).await.remove(0);
    app.lease_call(&lease, "complete", json!({})).await;
    let events = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .unwrap()
        .unwrap()
        .sse();
    assert_eq!(
        kinds(&events),
        [
            "task_submitted",
            "task_queued",
            "task_leased",
            "task_completed"
        ]
    );
    // Resuming after the final event ends at once.
    let last = events.last().unwrap().id.clone();
    let started = Instant::now();
    let rest = app
        .sse(&format!("/api/v1/tasks/{id}/events"), Some(&last))
        .await;
    assert!(rest.is_empty());
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_and_stream_follows_the_task_to_its_end() {
    let app = spawn_app().await;
    let stream = app.api().submit_stream(json!({"queue": "q"}));
    let reader = tokio::spawn(async move {
        let r = stream.await;
        assert!(r.headers.contains_key("x-task-id"));
        r
    });
    let lease = app.lease_wait("q", "w", 1, 5000).await.remove(0);
    app.lease_call(&lease, "fail", json!({"error": "no", "retryable": false}))
        .await;
    let events = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .unwrap()
        .unwrap()
        .sse();
    assert_eq!(
        kinds(&events),
        [
            "task_submitted",
            "task_queued",
            "task_leased",
            "task_failed"
        ]
    );
    assert_eq!(events[3].data["state"], "failed");
}

#[tokio::test]
async fn idle_timeout_and_max_events_bound_a_stream() {
    let app = spawn_app().await;
    let started = Instant::now();
    let none = app.sse("/api/v1/events?idle_timeout=300ms", None).await;
    assert!(none.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(300));
    app.submit(json!({"queue": "q"})).await;
    assert_eq!(app.sse("/api/v1/events?max_events=1", None).await.len(), 1);
    for bad in ["max_events=0", "idle_timeout=soon", "last_event_id=xyz"] {
        let r = app.api().events(bad).await;
        assert_eq!(r.status, reqwest::StatusCode::BAD_REQUEST, "{bad}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_streams_do_not_hold_up_shutdown() {
    let app = spawn_app().await;
    let reader = tokio::spawn(app.api().events("").into_future());
    app.api().wait_for_streams(1).await;
    let started = Instant::now();
    app.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "shutdown took {:?}",
        started.elapsed()
    );
    assert!(
        tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .is_ok(),
        "the stream ended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_event_id_now_carries_only_what_happens_next() {
    let app = spawn_app().await;
    app.submit(json!({"queue": "old"})).await;
    let reader = tokio::spawn(
        app.api()
            .events("last_event_id=now&max_events=2")
            .into_future(),
    );
    app.api().wait_for_streams(1).await;
    app.submit(json!({"queue": "new"})).await;
    let events = reader.await.unwrap().sse();
    assert_eq!(kinds(&events), ["task_submitted", "task_queued"]);
    assert!(
        events.iter().all(|e| e.data["queue"] == "new"),
        "{events:?}"
    );
}

#[tokio::test]
async fn the_console_is_served_with_its_security_headers() {
    let app = spawn_app().await;
    for path in ["/", "/console/app.js", "/console/style.css"] {
        let r = app.api().with_token(None).send("GET", path, "").await;
        assert_eq!(r.status, 200, "{path}");
        let csp = r.headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(r.headers["x-frame-options"], "DENY");
        assert_eq!(r.headers["referrer-policy"], "no-referrer");
    }
    let r = app
        .api()
        .with_token(None)
        .send("GET", "/console/x.js", "")
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (404, "not_found"));
}
