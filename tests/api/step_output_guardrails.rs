//! Output-stage guardrails see step output as the step printed it: secret
//! scans fire on the built-in executor's and on workers' step output, and
//! only the stored copy is redacted.

use std::collections::BTreeMap;
use std::time::Duration;

use forgeline::config::{Config, StepRecipe};
use forgeline::model::{CheckKind, Stage, Verdict};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{policy, spawn_app_with, wait_until, TestApp};

const KEY: &str = "AKIAIOSFODNN7EXAMPLE";

fn printing(text: &str) -> StepRecipe {
    StepRecipe {
        argv: vec!["sh".into(), "-c".into(), format!("echo {text}")],
        timeout: Duration::from_secs(10),
        workdir: None,
        env_allow: vec!["PATH".into()],
        env: BTreeMap::new(),
        retryable: false,
    }
}

/// `no-secrets` flags a secret at the output stage; `no-launch-codes`
/// blocks the word TOPSECRET there.
fn with_policies(c: &mut Config) {
    c.guardrails = vec![
        policy(
            "no-secrets",
            CheckKind::SecretScan,
            &[Stage::Output],
            Verdict::Flag,
        ),
        {
            let mut p = policy(
                "no-launch-codes",
                CheckKind::DenyPattern,
                &[Stage::Output],
                Verdict::Block,
            );
            p.pattern = Some("TOPSECRET".into());
            p
        },
    ];
}

fn with_executor(c: &mut Config) {
    with_policies(c);
    c.executor.enabled = true;
    c.executor.pool_size = 1;
    c.steps
        .insert("leak".into(), printing(&format!("aws key {KEY}")));
    c.steps.insert("codes".into(), printing("TOPSECRET 0000"));
    c.steps.insert("ok".into(), printing("fine"));
}

async fn wait_for_state(app: &TestApp, id: &str, state: &str) -> Value {
    let mut last = Value::Null;
    wait_until(
        &format!("task {id} is {state}"),
        Duration::from_secs(30),
        async || {
            last = app.task(id).await;
            last["state"] == state
        },
    )
    .await;
    last
}

fn step_outputs(task: &Value) -> String {
    task["runs"][0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["output_tail"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_printed_by_an_executor_step_is_flagged_for_review_and_stored_redacted() {
    let app = spawn_app_with(with_executor).await;
    let t = app.submit(json!({"steps": ["leak", "ok"]})).await;
    let task = wait_for_state(&app, t["id"].as_str().unwrap(), "awaiting_review").await;
    assert_eq!(
        task["reviews"][0]["flagged_by"],
        json!(["no-secrets"]),
        "{task}"
    );
    let out = step_outputs(&task);
    assert!(
        out.contains("aws key") && !out.contains(KEY),
        "stored output: {out:?}"
    );
    assert!(
        !task.to_string().contains(KEY),
        "the key is nowhere in the task view"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_executor_step_output_fails_the_task_at_once() {
    let app = spawn_app_with(with_executor).await;
    let t = app.submit(json!({"steps": ["codes", "ok"]})).await;
    let task = wait_for_state(&app, t["id"].as_str().unwrap(), "failed").await;
    assert!(
        task["last_error"]
            .as_str()
            .unwrap()
            .contains("no-launch-codes"),
        "{task}"
    );
    assert_eq!(
        task["runs"][0]["steps"].as_array().unwrap().len(),
        1,
        "the block's events are not stored and the next step never ran: {task}"
    );
}

#[tokio::test]
async fn a_workers_step_output_is_screened_before_it_is_redacted() {
    let app = spawn_app_with(with_policies).await;
    let t = app.submit(json!({"queue": "q"})).await;
    let l = app.lease("q", "w", 1).await.remove(0);
    let r = app
        .lease_call(&l, "events", json!({"events": [
            {"type": "verification_finished", "step": "test", "exit_code": 0, "output_tail": format!("key {KEY}")},
        ]}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(
        r.body["guardrails"][0]["policy"], "no-secrets",
        "{:?}",
        r.body
    );
    let r = app
        .lease_call(&l, "complete", json!({"result": {"ok": true}}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let task = app.task(t["id"].as_str().unwrap()).await;
    assert_eq!(task["state"], "awaiting_review");
    assert!(!step_outputs(&task).contains(KEY));

    // A block on step output refuses the events, and the run cannot
    // complete past it.
    let t = app.submit(json!({"queue": "q"})).await;
    let l = app.lease("q", "w", 1).await.remove(0);
    let r = app
        .lease_call(&l, "events", json!({"events": [
            {"type": "verification_finished", "step": "test", "exit_code": 0, "output_tail": "TOPSECRET"},
        ]}))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", r.body);
    assert_eq!(r.body["error"]["details"]["stage"], "output");
    let r = app
        .lease_call(&l, "complete", json!({"result": {"ok": true}}))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", r.body);
    let task = app.task(t["id"].as_str().unwrap()).await;
    assert_eq!(task["state"], "failed");
    assert!(task["last_error"]
        .as_str()
        .unwrap()
        .contains("no-launch-codes"));
}
