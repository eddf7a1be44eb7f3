//! The built-in executor running step recipes.

use std::collections::BTreeMap;
use std::time::Duration;

use forgeline::config::{Config, StepRecipe};
use serde_json::json;

use crate::helpers::{kinds, spawn_app_with, start, test_config};

fn recipe(argv: &[&str]) -> StepRecipe {
    StepRecipe {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        timeout: Duration::from_secs(10),
        workdir: None,
        env_allow: vec!["PATH".into()],
        env: BTreeMap::new(),
        retryable: false,
    }
}

fn with_recipes(c: &mut Config) {
    c.executor.enabled = true;
    c.executor.pool_size = 2;
    c.executor.output_tail_bytes = 64;
    c.steps.insert(
        "ok".into(),
        recipe(&["sh", "-c", "echo step ok in $(basename $PWD)"]),
    );
    c.steps.insert(
        "fail".into(),
        recipe(&["sh", "-c", "echo broken >&2; exit 4"]),
    );
    let mut flaky = recipe(&["sh", "-c", "exit 1"]);
    flaky.retryable = true;
    c.steps.insert("flaky".into(), flaky);
    let mut slow = recipe(&["sleep", "30"]);
    slow.timeout = Duration::from_millis(300);
    c.steps.insert("slow".into(), slow);
    let mut env = recipe(&[
        "sh",
        "-c",
        "echo leak=${FORGELINE_TEST_SECRET:-unset} fixed=$FIXED task=$FORGELINE_TASK_ID",
    ]);
    env.env.insert("FIXED".into(), "yes".into());
    c.steps.insert("env".into(), env);
    c.steps.insert("forever".into(), recipe(&["sleep", "60"]));
}

async fn stream_of(
    app: &crate::helpers::TestApp,
    body: serde_json::Value,
) -> Vec<crate::helpers::Sse> {
    let r = tokio::time::timeout(Duration::from_secs(30), app.api().submit_stream(body))
        .await
        .unwrap();
    assert_eq!(r.status, reqwest::StatusCode::OK);
    r.sse()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passing_steps_complete_the_task_with_their_results() {
    let app = spawn_app_with(with_recipes).await;
    std::fs::create_dir_all(app.pipeline.config().workspace_root().join("proj")).unwrap();
    let events = stream_of(&app, json!({"steps": ["ok", "ok"], "workdir": "proj"})).await;
    assert_eq!(
        kinds(&events),
        [
            "task_submitted",
            "task_queued",
            "task_leased",
            "verification_started",
            "verification_finished",
            "verification_started",
            "verification_finished",
            "task_completed"
        ]
    );
    let finished = &events[4].data["data"];
    assert_eq!(finished["outcome"], "passed");
    assert_eq!(finished["exit_code"], 0);
    assert_eq!(finished["output_tail"], "step ok in proj\n");
    let task = app.task(events[0].data["task_id"].as_str().unwrap()).await;
    assert!(task["runs"][0]["worker"]
        .as_str()
        .unwrap()
        .starts_with("builtin-"));
    assert_eq!(task["runs"][0]["steps"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_step_fails_the_task_and_keeps_its_output() {
    let app = spawn_app_with(with_recipes).await;
    let events = stream_of(&app, json!({"steps": ["ok", "fail", "ok"]})).await;
    let last = events.last().unwrap();
    assert_eq!(last.event, "task_failed");
    assert!(last.data["data"]["error"]
        .as_str()
        .unwrap()
        .contains("step fail (2/3)"));
    let fin: Vec<_> = events
        .iter()
        .filter(|e| e.event == "verification_finished")
        .collect();
    assert_eq!(fin.len(), 2, "the third step never ran");
    assert_eq!(fin[1].data["data"]["exit_code"], 4);
    assert_eq!(fin[1].data["data"]["output_tail"], "broken\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retryable_step_is_retried_until_its_attempts_run_out() {
    let app = spawn_app_with(|c| {
        with_recipes(c);
        c.queue.retry_base = Duration::from_millis(1);
        c.queue.retry_cap = Duration::from_millis(1);
    })
    .await;
    let t = app
        .submit(json!({"steps": ["flaky"], "max_attempts": 2}))
        .await;
    let id = t["id"].as_str().unwrap().to_string();
    let sched = app
        .sse(&format!("/api/v1/tasks/{id}/events?max_events=6"), None)
        .await;
    assert_eq!(sched.last().unwrap().event, "task_scheduled");
    app.advance(Duration::from_millis(5)).await; // the backoff has passed
    let all = app.sse(&format!("/api/v1/tasks/{id}/events"), None).await;
    assert_eq!(all.last().unwrap().event, "task_dead_lettered");
    assert_eq!(app.task(&id).await["attempts"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_past_its_timeout_is_killed() {
    let app = spawn_app_with(with_recipes).await;
    let events = stream_of(&app, json!({"steps": ["slow"], "max_attempts": 1})).await;
    let fin = events
        .iter()
        .find(|e| e.event == "verification_finished")
        .unwrap();
    assert_eq!(fin.data["data"]["outcome"], "timed_out");
    assert!(fin.data["data"]["duration_ms"].as_u64().unwrap() < 5000);
    assert_eq!(events.last().unwrap().event, "task_dead_lettered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_see_only_allowlisted_and_fixed_environment() {
    std::env::set_var("FORGELINE_TEST_SECRET", "do-not-leak");
    let app = spawn_app_with(with_recipes).await;
    let events = stream_of(&app, json!({"steps": ["env"]})).await;
    let out = events
        .iter()
        .find(|e| e.event == "verification_finished")
        .unwrap()
        .data["data"]["output_tail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(out.starts_with("leak=unset fixed=yes task=0"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_task_stops_its_step() {
    let app = spawn_app_with(|c| {
        with_recipes(c);
        c.queue.lease_timeout = Duration::from_millis(300);
    })
    .await;
    let t = app.submit(json!({"steps": ["forever"]})).await;
    let id = t["id"].as_str().unwrap().to_string();
    app.sse(&format!("/api/v1/tasks/{id}/events?max_events=4"), None)
        .await; // verification_started
    app.api().cancel(&id, None).await;
    let all = app
        .sse(&format!("/api/v1/tasks/{id}/events?idle_timeout=3s"), None)
        .await;
    assert_eq!(all.last().unwrap().event, "task_cancelled");
    // The heartbeat notices the lost lease and the worker is free again.
    let next = app.submit(json!({"steps": ["ok"]})).await;
    let done = app
        .sse(
            &format!("/api/v1/tasks/{}/events", next["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(done.last().unwrap().event, "task_completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_kills_steps_after_the_timeout_and_releases_their_leases() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    with_recipes(&mut config);
    config.server.shutdown_timeout = Duration::from_millis(500);
    let app = start(config.clone(), dir).await;
    let t = app.submit(json!({"steps": ["forever"]})).await;
    let id = t["id"].as_str().unwrap().to_string();
    app.sse(&format!("/api/v1/tasks/{id}/events?max_events=4"), None)
        .await;
    let started = std::time::Instant::now();
    let dir = app.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    config.executor.enabled = false;
    let app = start(config, dir).await;
    let task = app.task(&id).await;
    assert_eq!(task["state"], "queued", "released back to the queue");
    assert_eq!(
        task["attempts_left"], 3,
        "a release does not use up an attempt"
    );
    assert_eq!(task["runs"][0]["outcome"], "released");
}
