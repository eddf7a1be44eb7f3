//! The read model (`auth.visibility`): who sees which task and how much of it,
//! as a table of (caller, read, expected outcome) against a task that carries
//! content in every place a view shows it.

use forgeline::auth::{Role, Visibility};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::client::TestClient;
use crate::helpers::{spawn_app_with, TestApp};

/// Strings that appear only in the task's content: payload, step output,
/// a tool call's arguments, result.
const CONTENT: [&str; 4] = ["payload-p1", "step-out-s1", "tool-args-a1", "result-r1"];
/// The part of it a run's view (and its events) carries.
const RUN_CONTENT: [&str; 2] = ["step-out-s1", "tool-args-a1"];

/// A task submitted by `alice`, run by the admin's worker (an agent event, a
/// step with output) and completed with a result; held for review.
async fn alice_task(app: &TestApp) -> (Value, Value) {
    let alice = app.api_as("alice", &[Role::Submitter]);
    let task = alice
        .submit(json!({"queue": "vis", "payload": {"note": "payload-p1"}, "review": {"required": true}}))
        .await
        .expect(StatusCode::CREATED);
    let lease = app.lease("vis", "w-vis", 1).await.remove(0);
    app.api()
        .lease_events(
            &lease,
            json!([
                {"type": "agent_started", "agent_name": "coder"},
                {"type": "tool_invoked", "tool_name": "bash", "args": "tool-args-a1"},
                {"type": "verification_finished", "step": "test", "outcome": "passed", "output_tail": "step-out-s1"},
            ]),
        )
        .await
        .expect(StatusCode::OK);
    app.api()
        .complete(&lease, Some(json!({"answer": "result-r1"})))
        .await
        .expect(StatusCode::OK);
    (task, lease)
}

/// What a read showed of alice's task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// The task with its content.
    Full,
    /// The task, none of its content.
    Metadata,
    /// Not at all (404 for a task, run or stream; absent from a list).
    Nothing,
}

fn judge(status: StatusCode, text: &str, task_id: &str, content: &[&str]) -> Seen {
    if status == StatusCode::NOT_FOUND || (status.is_success() && !text.contains(task_id)) {
        return Seen::Nothing;
    }
    assert!(status.is_success(), "{status}: {text}");
    let shown: Vec<&str> = content
        .iter()
        .copied()
        .filter(|c| text.contains(c))
        .collect();
    match shown.len() {
        0 => Seen::Metadata,
        n if n == content.len() => Seen::Full,
        _ => panic!("part of the content shown ({shown:?}): {text}"),
    }
}

/// Every read of a task: (name, what it shows).
async fn reads(client: &TestClient, task: &Value, lease: &Value) -> Vec<(&'static str, Seen)> {
    let id = task["id"].as_str().unwrap();
    let mut out = Vec::new();
    let r = client.task(task).await;
    out.push(("GET task", judge(r.status, &r.text, id, &CONTENT)));
    let r = client.run(&lease["run_id"]).await;
    // A run view names its task by id too.
    out.push(("GET run", judge(r.status, &r.text, id, &RUN_CONTENT)));
    let r = client.task_events(task, "idle_timeout=300ms").await;
    out.push(("task stream", judge(r.status, &r.text, id, &RUN_CONTENT)));
    let r = client.events("queue=vis&idle_timeout=300ms").await;
    out.push(("firehose", judge(r.status, &r.text, id, &RUN_CONTENT)));
    // Lists carry no content: shown or not.
    let r = client.tasks("queue=vis").await;
    let listed = judge(r.status, &r.text, id, &[]);
    out.push((
        "list",
        if listed == Seen::Nothing {
            Seen::Nothing
        } else {
            Seen::Metadata
        },
    ));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_sees_what_of_a_task_follows_the_documented_table() {
    use Role::*;
    use Seen::*;
    let own = spawn_app_with(|c| c.auth.visibility = Visibility::Own).await;
    let all = spawn_app_with(|c| c.auth.visibility = Visibility::All).await;
    // (visibility, principal, roles, what every read shows; lists show
    // Metadata when the task is listed).
    let table: &[(&TestApp, &str, &[Role], Seen)] = &[
        (&own, "alice", &[Submitter], Full),
        (&own, "bob", &[Submitter], Nothing),
        (&own, "wes", &[Worker], Nothing),
        (&own, "olga", &[Observer], Metadata),
        (&own, "olga", &[Observer, Submitter], Metadata),
        (&own, "rita", &[Reviewer], Full),
        (&own, "ada", &[ReviewAdmin], Full),
        (&all, "bob", &[Submitter], Full),
        (&all, "olga", &[Observer], Full),
        (&all, "wes", &[Worker], Full),
    ];
    let own_task = alice_task(&own).await;
    let all_task = alice_task(&all).await;
    let mut failures = Vec::new();
    for (app, who, roles, expected) in table {
        let (task, lease) = if std::ptr::eq(*app, &own) {
            &own_task
        } else {
            &all_task
        };
        let client = app.api_as(who, roles);
        for (read, seen) in reads(&client, task, lease).await {
            let want = if read == "list" && *expected == Full {
                Metadata
            } else {
                *expected
            };
            if seen != want {
                failures.push(format!(
                    "{who} {roles:?}: {read} showed {seen:?}, expected {want:?}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metadata_view_says_what_it_withheld_and_keeps_the_state() {
    let app = spawn_app_with(|_| {}).await;
    let (task, lease) = alice_task(&app).await;
    let olga = app.api_as("olga", &[Role::Observer]);
    let v = olga.task(&task).await.expect(StatusCode::OK);
    assert_eq!(v["state"], "awaiting_review", "{v}");
    assert_eq!(v["submitted_by"], "alice");
    assert_eq!(v["payload"], Value::Null);
    assert_eq!(v["result"], Value::Null);
    assert_eq!(
        v["withheld"],
        json!(["payload", "result", "step_output", "event_data"])
    );
    let step = &v["runs"][0]["steps"][0];
    assert_eq!(step["name"], "test");
    assert_eq!(step["outcome"], "passed");
    assert_eq!(step["output_tail"], Value::Null);
    let agent = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "tool_invoked")
        .expect("tool_invoked listed");
    assert_eq!(agent["data"], json!({"withheld": true}));
    let run = olga.run(&lease["run_id"]).await.expect(StatusCode::OK);
    assert_eq!(run["withheld"], v["withheld"]);
    // The submitter's own view has no `withheld`.
    let mine = app.api_as("alice", &[Role::Submitter]).task(&task).await;
    assert_eq!(mine.body.get("withheld"), None, "{}", mine.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_rules_on_writes_follow_the_table() {
    use Role::*;
    let app = spawn_app_with(|_| {}).await;
    let alice = app.api_as("alice", &[Submitter]);
    let worker_a = app.api_as("worker-a", &[Worker]);
    worker_a
        .worker_status("wid-a", json!({"status": "idle"}))
        .await
        .expect(StatusCode::OK);
    // (caller, roles, action, expected status).
    type Action = fn(&TestClient, &Value) -> crate::client::Call;
    let cancel: Action = |c, t| c.cancel(t, None);
    let status_of_a: Action = |c, _| c.worker_status("wid-a", json!({"status": "busy"}));
    let table: &[(&str, &[Role], &str, Action, StatusCode)] = &[
        // Another principal's task: unseen is 404, seen but not owned 403.
        ("bob", &[Submitter], "cancel", cancel, StatusCode::NOT_FOUND),
        (
            "olga",
            &[Observer, Submitter],
            "cancel",
            cancel,
            StatusCode::FORBIDDEN,
        ),
        ("ada", &[ReviewAdmin], "cancel", cancel, StatusCode::OK),
        // Another worker's id.
        (
            "worker-b",
            &[Worker],
            "status",
            status_of_a,
            StatusCode::FORBIDDEN,
        ),
        ("worker-a", &[Worker], "status", status_of_a, StatusCode::OK),
    ];
    for (who, roles, what, action, want) in table {
        let task = alice.submit(json!({"queue": "w"})).await.body;
        let r = action(&app.api_as(who, roles), &task).await;
        assert_eq!(r.status, *want, "{who} {roles:?} {what}: {}", r.text);
    }
}
