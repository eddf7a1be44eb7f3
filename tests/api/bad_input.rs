//! Bad input gets the right status and a JSON error, and changes nothing.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::spawn_app_with;

const UNKNOWN_ID: &str = "01ARZ3NDEKTSV4RRFFQ69G5FAV";

#[tokio::test]
async fn bad_requests_get_clear_errors_and_leave_the_store_unchanged() {
    let app = spawn_app_with(|c| c.server.max_body_bytes = 4096).await;
    let keep = app
        .submit(json!({"queue": "q", "payload": {"keep": true}}))
        .await;
    let keep_id = keep["id"].as_str().unwrap().to_string();
    let before = app.task(&keep_id).await;

    let cases: Vec<(&str, String, Vec<u8>, StatusCode, &str)> = vec![
        (
            "POST",
            "/api/v1/tasks".into(),
            b"{\"queue\": ".to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            "POST",
            "/api/v1/tasks".into(),
            b"".to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            "POST",
            "/api/v1/tasks".into(),
            b"\xff\xfe".to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            "POST",
            "/api/v1/tasks".into(),
            b"[1,2]".to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            "POST",
            "/api/v1/tasks".into(),
            br#"{"queue": "q", "queue": "other"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            "POST",
            "/api/v1/workers/w1/status".into(),
            br#"{"status": "busy", "status": "idle"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            "POST",
            "/api/v1/tasks".into(),
            br#"{"priority": "high"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            "POST",
            "/api/v1/tasks".into(),
            br#"{"priority": 10}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            "POST",
            "/api/v1/tasks".into(),
            br#"{"queue": "no spaces"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            "POST",
            "/api/v1/tasks".into(),
            br#"{"queue": "q", "colour": "red"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            "POST",
            "/api/v1/tasks".into(),
            br#"{"steps": [{"name": "x", "argv": ["rm", "-rf", "/"]}]}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            "POST",
            "/api/v1/tasks".into(),
            format!("{{\"payload\": \"{}\"}}", "x".repeat(5000)).into_bytes(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
        ),
        (
            "GET",
            format!("/api/v1/tasks/{UNKNOWN_ID}"),
            vec![],
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "GET",
            "/api/v1/tasks/not-a-task-id".into(),
            vec![],
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "GET",
            format!("/api/v1/tasks/{UNKNOWN_ID}/dossier"),
            vec![],
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "GET",
            format!("/api/v1/tasks/{UNKNOWN_ID}/events"),
            vec![],
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "GET",
            format!("/api/v1/runs/{UNKNOWN_ID}"),
            vec![],
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "POST",
            format!("/api/v1/tasks/{UNKNOWN_ID}/cancel"),
            vec![],
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "POST",
            format!("/api/v1/tasks/{keep_id}/cancel"),
            br#"{"reason": 5}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            "POST",
            format!("/api/v1/dead-letter/{keep_id}/requeue"),
            vec![],
            StatusCode::CONFLICT,
            "not_dead",
        ),
        (
            "POST",
            "/api/v1/queues/q/lease".into(),
            br#"{"max": 1}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            "POST",
            format!("/api/v1/leases/{UNKNOWN_ID}/complete"),
            br#"{"token": "one"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            "POST",
            format!("/api/v1/leases/{UNKNOWN_ID}/teleport"),
            br#"{}"#.to_vec(),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "GET",
            "/api/v1/tasks?limit=0".into(),
            vec![],
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "GET",
            "/api/v1/tasks?colour=red".into(),
            vec![],
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "DELETE",
            "/api/v1/tasks".into(),
            vec![],
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            "GET",
            "/api/v2/tasks".into(),
            vec![],
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let r = app.api().send(method, &path, body.clone()).await;
        let (got, json) = (r.status, r.body);
        assert_eq!(
            got,
            status,
            "{method} {path} {}: {json}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(json["error"]["code"], code, "{method} {path}: {json}");
        assert!(!json["error"]["message"].as_str().unwrap_or("").is_empty());
        assert!(json["error"]["request_id"]
            .as_str()
            .is_some_and(|s| !s.is_empty()));
    }

    let list = app.api().tasks("").await.body;
    assert_eq!(
        list["tasks"].as_array().unwrap().len(),
        1,
        "no bad request created a task"
    );
    let after = app.task(&keep_id).await;
    assert_eq!(after["state"], before["state"]);
    assert_eq!(
        after["events"], before["events"],
        "no bad request appended an event"
    );
    assert_eq!(app.api().health("ready").await.status, StatusCode::OK);
}

#[tokio::test]
async fn an_oversized_chunked_body_is_refused_while_reading() {
    let app = spawn_app_with(|c| c.server.max_body_bytes = 4096).await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..10).map(|_| Ok(vec![b' '; 1024])).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let r = app.api().send("POST", "/api/v1/tasks", body).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.code(), "too_large");
}

#[tokio::test]
async fn completing_a_cancelled_task_is_refused_and_the_task_stays_cancelled() {
    let app = spawn_app_with(|_| {}).await;
    let t = app.submit(json!({"queue": "q"})).await;
    let lease = app.lease("q", "w", 1).await.remove(0);
    let id = t["id"].as_str().unwrap();
    app.api().cancel(id, None).await;
    for action in ["complete", "events"] {
        let body = if action == "events" {
            json!({"events": [{"type": "agent_started", "agent_name": "a"}]})
        } else {
            json!({})
        };
        let r = app.lease_call(&lease, action, body).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{action}");
    }
    assert_eq!(app.task(id).await["state"], "cancelled");
}

#[tokio::test]
async fn times_past_year_9999_get_a_422_and_an_audit_record_instead_of_no_answer() {
    let app = spawn_app_with(|_| {}).await;
    let api = app.api();
    let cases = [
        (json!({"queue": "q", "delay": "8000y"}), "delay"),
        (
            json!({"queue": "q", "run_at": "9999-12-31T23:59:59-12:00"}),
            "run_at",
        ),
        (
            json!({"queue": "q", "delay": "18446744073709551615ms"}),
            "delay",
        ),
    ];
    for (body, field) in cases {
        let r = api.submit(body.clone()).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            r.text
        );
        assert_eq!(r.body["error"]["details"]["field"], field, "{}", r.text);
    }
    // The latest time forgeline keeps is still accepted.
    let last = api
        .submit(json!({"queue": "q", "run_at": "9999-12-31T23:59:59.999Z"}))
        .await;
    assert_eq!(last.status, StatusCode::CREATED, "{}", last.text);
    assert_eq!(last.body["state"], "scheduled", "{}", last.text);

    // A worker event stamped past year 9999 is refused the same way.
    api.submit(json!({"queue": "w"})).await;
    let lease = app.lease("w", "w1", 1).await.remove(0);
    let r = api
        .lease_events(
            &lease,
            json!([{"type": "agent_started", "timestamp": "9999-12-31T23:59:59-12:00"}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);

    // Every one of those requests was answered, so every one is audited.
    let audit = api.audit("limit=500").await.body;
    let refused = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == 422)
        .count();
    assert_eq!(refused, 4, "{audit:#}");
}

#[tokio::test]
async fn a_405_says_which_methods_the_route_does_accept() {
    let app = spawn_app_with(|_| {}).await;
    let cases = [
        ("DELETE", "/api/v1/tasks", "GET, POST"),
        ("GET", "/api/v1/tasks/stream", "POST"),
        ("PUT", "/api/v1/tasks/01ARZ3NDEKTSV4RRFFQ69G5FAV", "GET"),
        ("POST", "/health/live", "GET"),
    ];
    for (method, path, allow) in cases {
        let r = app.api().send(method, path, vec![]).await;
        assert_eq!(
            r.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}: {}",
            r.text
        );
        assert_eq!(
            r.code(),
            "method_not_allowed",
            "{method} {path}: {}",
            r.text
        );
        assert_eq!(
            r.headers.get("allow").and_then(|v| v.to_str().ok()),
            Some(allow),
            "{method} {path}"
        );
    }
}
