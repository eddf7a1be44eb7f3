//! The review gate end to end: which tasks reach it, claims and their expiry,
//! N-of-M approval, reject and changes-requested, stale dossiers, the SLA
//! clock's actions, guardrails, and reviewer metrics (REST and Prometheus,
//! with exact values).

use std::time::Duration;

use forgeline::auth::Role;
use forgeline::clock::Clock;
use forgeline::config::{Config, QueueReview, Span, TimeoutAction};
use forgeline::model::{CheckKind, Stage, Verdict};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::client::TestClient;
use crate::helpers::{self, policy, spawn_app, spawn_app_with, TestApp};

/// Submits a task on `queue` (with `extra` fields), leases and completes it
/// as a worker; returns the task as read afterwards.
async fn run_to_review(app: &TestApp, queue: &str, extra: Value) -> Value {
    let mut body = json!({"queue": queue});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let t = app.submit(body).await;
    let l = app.lease(queue, "w", 1).await.remove(0);
    let r = app
        .lease_call(&l, "complete", json!({"result": {"diff": "+1 -1"}}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    app.task(t["id"].as_str().unwrap()).await
}

/// The pending ticket of a task, as a reviewer sees it (with the dossier hash).
async fn ticket_of(app: &TestApp, task: &Value) -> Value {
    let id = task["reviews"]
        .as_array()
        .unwrap()
        .last()
        .unwrap_or_else(|| panic!("no review: {task}"))["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.api().review(&id).await.body
}

#[tokio::test]
async fn a_task_that_asked_for_review_waits_for_it_instead_of_completing() {
    let app = spawn_app().await;
    let plain = run_to_review(&app, "q", json!({})).await;
    assert_eq!(plain["state"], "completed");
    assert!(plain["reviews"].as_array().unwrap().is_empty());
    let held = run_to_review(&app, "q", json!({"review": {"required": true}})).await;
    assert_eq!(held["state"], "awaiting_review");
    let kinds: Vec<&str> = held["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.last(), Some(&"review_requested"));
    let t = ticket_of(&app, &held).await;
    assert_eq!(t["state"], "open");
    assert_eq!(t["required_approvals"], 1);
    assert_eq!(t["review_required"], true);
    assert_eq!(
        t["dossier"]["dossier_hash"], t["dossier_hash"],
        "nothing changed since it opened"
    );
    assert_eq!(t["dossier"]["task"]["result"], json!({"diff": "+1 -1"}));
}

fn guarded(c: &mut Config) {
    let mut big = policy(
        "big-input",
        CheckKind::MaxBytes,
        &[Stage::Input],
        Verdict::Flag,
    );
    big.max_bytes = Some(200);
    let mut rm = policy(
        "no-rm",
        CheckKind::DenyPattern,
        &[Stage::Input, Stage::Tool, Stage::Output],
        Verdict::Block,
    );
    rm.pattern = Some(r"rm -rf /".into());
    let mut tools = policy(
        "tools",
        CheckKind::AllowTools,
        &[Stage::Tool],
        Verdict::Flag,
    );
    tools.tools = vec!["read_file".into(), "bash".into()];
    let secrets = policy(
        "secrets",
        CheckKind::SecretScan,
        &[Stage::Output],
        Verdict::Flag,
    );
    c.guardrails = vec![big, rm, tools, secrets];
}

#[tokio::test]
async fn guardrail_flags_at_each_stage_send_the_result_to_review_with_the_policy_on_the_ticket() {
    let app = spawn_app_with(guarded).await;
    // Input: a large payload.
    let t = run_to_review(&app, "q", json!({"payload": {"text": "x".repeat(300)}})).await;
    assert_eq!(t["state"], "awaiting_review", "{t}");
    assert_eq!(
        ticket_of(&app, &t).await["flagged_by"],
        json!(["big-input"])
    );
    assert_eq!(t["guardrails"][0]["decision"]["action"], "sent_to_review");

    // Tool: a tool outside the allow list; the worker hears about it at once.
    app.submit(json!({"queue": "t"})).await;
    let l = app.lease("t", "w", 1).await.remove(0);
    let r = app
        .lease_call(
            &l,
            "events",
            json!({"events": [{"type": "tool_invoked", "tool_name": "curl"}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["guardrails"][0]["policy"], "tools");
    assert_eq!(r.body["guardrails"][0]["verdict"], "flag");
    app.lease_call(&l, "complete", json!({})).await;
    let t = app.task(l["task"]["id"].as_str().unwrap()).await;
    assert_eq!(t["state"], "awaiting_review");
    assert_eq!(ticket_of(&app, &t).await["flagged_by"], json!(["tools"]));

    // Output: a secret in the result.
    app.submit(json!({"queue": "o"})).await;
    let l = app.lease("o", "w", 1).await.remove(0);
    app.lease_call(
        &l,
        "complete",
        json!({"result": {"note": "use AKIAIOSFODNN7EXAMPLE"}}),
    )
    .await;
    let t = app.task(l["task"]["id"].as_str().unwrap()).await;
    assert_eq!(ticket_of(&app, &t).await["flagged_by"], json!(["secrets"]));
    let kinds: Vec<&str> = t["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"guardrail_triggered"));

    let metrics = app.metrics().await;
    for series in [
        r#"forgeline_guardrail_decisions_total{action="sent_to_review",policy="big-input",stage="input",verdict="flag"} 1"#,
        r#"forgeline_guardrail_decisions_total{action="sent_to_review",policy="tools",stage="tool",verdict="flag"} 1"#,
        r#"forgeline_guardrail_decisions_total{action="sent_to_review",policy="secrets",stage="output",verdict="flag"} 1"#,
    ] {
        assert!(metrics.contains(series), "missing {series}");
    }
}

#[tokio::test]
async fn guardrail_blocks_refuse_with_422_naming_the_policy_at_each_stage() {
    let app = spawn_app_with(guarded).await;
    let r = app
        .api()
        .submit(json!({"queue": "q", "payload": "please rm -rf / now"}))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.code(), "guardrail_blocked");
    assert_eq!(
        r.body["error"]["details"],
        json!({"policy": "no-rm", "stage": "input"})
    );
    assert!(app.api().tasks("").await.body["tasks"]
        .as_array()
        .unwrap()
        .is_empty());

    app.submit(json!({"queue": "t"})).await;
    let l = app.lease("t", "w", 1).await.remove(0);
    let r = app
        .lease_call(&l, "events", json!({"events": [{"type": "tool_invoked", "tool_name": "bash", "attributes": {"cmd": "rm -rf /"}}]}))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.body["error"]["details"]["stage"], "tool");
    let run = app.api().run(&l["run_id"]).await.body;
    let kinds: Vec<&str> = run["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"guardrail_triggered") && !kinds.contains(&"tool_invoked"),
        "{kinds:?}"
    );
    assert_eq!(run["guardrails"][0]["action"], "rejected");

    let r = app
        .lease_call(&l, "complete", json!({"result": {"script": "rm -rf /"}}))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.body["error"]["details"]["stage"], "output");
    let t = app.task(l["task"]["id"].as_str().unwrap()).await;
    assert_eq!(t["state"], "failed");
    assert!(t["last_error"].as_str().unwrap().contains("no-rm"));
}

#[tokio::test]
async fn claims_are_exclusive_and_lapse_back_to_open() {
    let app = spawn_app().await;
    let t = run_to_review(&app, "q", json!({"review": {"required": true}})).await;
    let ticket = ticket_of(&app, &t).await;
    let (alice, bob) = (
        app.api_as("alice", &[Role::Reviewer]),
        app.api_as("bob", &[Role::Reviewer]),
    );
    let claimed_at = app.clock.now_ms();
    let r = alice.claim(&ticket).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        (r.body["state"].as_str(), r.body["holder"].as_str()),
        (Some("claimed"), Some("alice"))
    );
    // The timer loop sleeps until the claim lapses (not until its next
    // one-second poll): the clock reports the claim's end as its next due.
    let report = app.pipeline.review_clock(claimed_at).await.unwrap();
    assert_eq!(report.next_due, Some(claimed_at + 30 * 60 * 1000));
    assert_eq!(bob.claim(&ticket).await.status, StatusCode::CONFLICT);
    assert_eq!(
        bob.vote(&ticket, "approved", None).await.status,
        StatusCode::CONFLICT,
        "alice holds it"
    );
    assert_eq!(
        bob.release_review(&ticket).await.status,
        StatusCode::FORBIDDEN
    );

    app.advance(Duration::from_secs(29 * 60)).await;
    assert_eq!(ticket_of(&app, &t).await["state"], "claimed");
    app.advance(Duration::from_secs(60)).await; // review.claim_ttl (30 min) has passed
    let after = ticket_of(&app, &t).await;
    assert_eq!(after["state"], "open");
    let task = app.task(t["id"].as_str().unwrap()).await;
    let expired: Vec<&Value> = task["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "review_expired")
        .collect();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0]["data"]["what"], "claim");
    let r = bob.claim(&ticket).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["assignments"].as_array().unwrap().len(), 2);
    assert_eq!(
        r.body["assignments"][1]["first"], false,
        "a second claim is a reassignment"
    );
    let r = bob.release_review(&ticket).await;
    assert_eq!(
        (r.status, r.body["state"].as_str()),
        (StatusCode::OK, Some("open"))
    );
}

#[tokio::test]
async fn n_of_m_approvals_need_n_distinct_reviewers() {
    let app = spawn_app().await;
    let t = run_to_review(&app, "q", json!({"review": {"required_approvals": 2}})).await;
    let ticket = ticket_of(&app, &t).await;
    assert_eq!(ticket["required_approvals"], 2);
    let (alice, bob) = (
        app.api_as("alice", &[Role::Reviewer]),
        app.api_as("bob", &[Role::Reviewer]),
    );
    alice.claim(&ticket).await;
    let r = alice.vote(&ticket, "approved", Some("looks right")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        (r.body["state"].as_str(), r.body["approvals"].as_u64()),
        (Some("open"), Some(1)),
        "one of two: back to the pool"
    );
    let r = alice.vote(&ticket, "approved", None).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "a reviewer decides once");
    assert_eq!(r.body["error"]["code"], "already_decided");
    assert_eq!(alice.claim(&ticket).await.status, StatusCode::CONFLICT);
    assert_eq!(
        app.task(t["id"].as_str().unwrap()).await["state"],
        "awaiting_review"
    );
    let r = bob.vote(&ticket, "approved", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        (r.body["state"].as_str(), r.body["outcome"].as_str()),
        (Some("decided"), Some("approved"))
    );
    let task = app.task(t["id"].as_str().unwrap()).await;
    assert_eq!(task["state"], "completed");
    let decided: Vec<&Value> = task["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "review_decided")
        .collect();
    assert_eq!(
        decided
            .iter()
            .map(|e| e["data"]["final"].as_bool().unwrap())
            .collect::<Vec<_>>(),
        [false, true]
    );
}

#[tokio::test]
async fn a_rejection_fails_the_task_or_requeues_it_where_the_queue_says_so() {
    let app = spawn_app_with(|c| {
        c.review.queues.insert(
            "soft".into(),
            QueueReview {
                on_reject: forgeline::config::RejectAction::Requeue,
                ..Default::default()
            },
        );
    })
    .await;
    let carol = app.api_as("carol", &[Role::Reviewer]);
    let t = run_to_review(&app, "hard", json!({"review": {"required": true}})).await;
    let r = carol
        .vote(
            &ticket_of(&app, &t).await,
            "rejected",
            Some("wrong approach"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let task = app.task(t["id"].as_str().unwrap()).await;
    assert_eq!(task["state"], "failed");
    assert!(task["last_error"]
        .as_str()
        .unwrap()
        .contains("wrong approach"));

    let t = run_to_review(&app, "soft", json!({"review": {"required": true}})).await;
    carol
        .vote(&ticket_of(&app, &t).await, "rejected", None)
        .await;
    assert_eq!(app.task(t["id"].as_str().unwrap()).await["state"], "queued");
}

#[tokio::test]
async fn changes_requested_requeues_the_task_and_the_next_run_gets_the_comment() {
    let app = spawn_app().await;
    let dave = app.api_as("dave", &[Role::Reviewer]);
    let t = run_to_review(&app, "q", json!({"review": {"required": true}})).await;
    let ticket = ticket_of(&app, &t).await;
    let r = dave.vote(&ticket, "changes_requested", None).await;
    assert_eq!(
        r.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a change request says what to change"
    );
    assert_eq!(r.body["error"]["details"]["field"], "comment");
    let r = dave
        .vote(
            &ticket,
            "changes_requested",
            Some("add a test for the empty case"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let task = app.task(t["id"].as_str().unwrap()).await;
    assert_eq!(task["state"], "queued");
    assert_eq!(
        task["attempts_left"], task["max_attempts"],
        "human feedback starts a fresh budget"
    );
    let l = app.lease("q", "w", 1).await.remove(0);
    assert_eq!(l["attempt"], 2);
    assert_eq!(
        l["review_feedback"]["comment"],
        "add a test for the empty case"
    );
    assert_eq!(l["review_feedback"]["by"], "dave");
    // The second run goes back to review with a new ticket.
    app.lease_call(&l, "complete", json!({"result": {"tests": 2}}))
        .await;
    let task = app.task(t["id"].as_str().unwrap()).await;
    assert_eq!(task["state"], "awaiting_review");
    assert_eq!(task["reviews"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_decision_on_a_dossier_that_changed_is_refused() {
    let app = spawn_app().await;
    let erin = app.api_as("erin", &[Role::Reviewer]);
    let admin = app.api_as("root", &[Role::ReviewAdmin]);
    let t = run_to_review(&app, "q", json!({"review": {"required": true}})).await;
    let old = ticket_of(&app, &t).await;
    // A reviewer asks for changes; the task reruns with a different result.
    admin.vote(&old, "changes_requested", Some("again")).await;
    let l = app.lease("q", "w", 1).await.remove(0);
    app.lease_call(&l, "complete", json!({"result": {"diff": "+2 -2"}}))
        .await;
    let new = ticket_of(&app, &app.task(t["id"].as_str().unwrap()).await).await;
    assert_ne!(
        new["dossier"]["dossier_hash"],
        old["dossier"]["dossier_hash"]
    );
    // Erin decides the new ticket with the dossier she saw earlier.
    let r = erin
        .decide(&new, "approved", None, &old["dossier"]["dossier_hash"])
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.body["error"]["code"], "stale_dossier");
    assert_eq!(
        r.body["error"]["details"]["current_hash"], new["dossier"]["dossier_hash"],
        "the refusal names the dossier to show instead"
    );
    let r = erin.vote(&old, "approved", None).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("ticket_closed"))
    );
    assert_eq!(
        erin.vote(&new, "approved", None).await.status,
        StatusCode::OK
    );
}

fn sla_config(c: &mut Config) {
    c.review
        .sla
        .insert("default".into(), Span(Duration::from_secs(3600)));
    c.review
        .sla
        .insert("priority_9".into(), Span(Duration::from_secs(600)));
    c.review.queues.insert(
        "esc".into(),
        QueueReview {
            on_timeout: TimeoutAction::Escalate,
            escalate_to: Some("oncall".into()),
            ..Default::default()
        },
    );
    c.review.queues.insert(
        "rej".into(),
        QueueReview {
            on_timeout: TimeoutAction::AutoReject,
            ..Default::default()
        },
    );
    c.review.queues.insert(
        "req".into(),
        QueueReview {
            on_timeout: TimeoutAction::Requeue,
            ..Default::default()
        },
    );
}

#[tokio::test]
async fn each_sla_timeout_action_fires_once() {
    let app = spawn_app_with(sla_config).await;
    let required = json!({"review": {"required": true}});
    let esc = run_to_review(&app, "esc", required.clone()).await;
    let rej = run_to_review(&app, "rej", required.clone()).await;
    let req = run_to_review(&app, "req", required.clone()).await;
    let urgent = run_to_review(
        &app,
        "esc",
        json!({"review": {"required": true}, "priority": 9}),
    )
    .await;
    app.advance(Duration::from_secs(601)).await;
    let u = ticket_of(&app, &urgent).await;
    assert_eq!(
        (u["escalated"].as_bool(), u["holder"].as_str()),
        (Some(true), Some("oncall")),
        "priority 9: 10 min target"
    );
    assert_eq!(ticket_of(&app, &esc).await["escalated"], false);

    app.advance(Duration::from_secs(3000)).await; // 1 h passed for the rest
    let e = ticket_of(&app, &esc).await;
    assert_eq!(
        (
            e["state"].as_str(),
            e["holder"].as_str(),
            e["escalated"].as_bool()
        ),
        (Some("assigned"), Some("oncall"), Some(true))
    );
    let r = ticket_of(&app, &rej).await;
    assert_eq!(
        (r["state"].as_str(), r["outcome"].as_str()),
        (Some("decided"), Some("rejected"))
    );
    assert_eq!(r["votes"][0]["by"], "system");
    assert_eq!(
        app.task(rej["id"].as_str().unwrap()).await["state"],
        "failed"
    );
    let q = ticket_of(&app, &req).await;
    assert_eq!(q["state"], "expired");
    assert_eq!(
        app.task(req["id"].as_str().unwrap()).await["state"],
        "queued"
    );

    // Hours later nothing fires again.
    app.advance(Duration::from_secs(5 * 3600)).await;
    for t in [&esc, &urgent] {
        let task = app.task(t["id"].as_str().unwrap()).await;
        let sla: Vec<&Value> = task["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "review_expired" && e["data"]["what"] == "sla")
            .collect();
        assert_eq!(sla.len(), 1, "{}", t["id"]);
    }
    let metrics = app.metrics().await;
    for (q, n) in [("esc", 2), ("rej", 1), ("req", 1)] {
        let line = format!("forgeline_review_sla_breaches_total{{queue=\"{q}\"}} {n}");
        assert!(metrics.contains(&line), "missing {line}");
    }
    // The clock's rejection is in the audit log.
    let audit = app.api().audit("principal=system").await.body;
    assert_eq!(audit["records"][0]["method"], "TIMER");
    assert!(audit["records"][0]["detail"]
        .as_str()
        .unwrap()
        .contains("auto_rejected"));
}

#[tokio::test]
async fn cancelling_a_task_under_review_cancels_its_ticket() {
    let app = spawn_app().await;
    let t = run_to_review(&app, "q", json!({"review": {"required": true}})).await;
    let r = app.api().cancel(&t, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(ticket_of(&app, &t).await["state"], "cancelled");
    let pending = app.api().reviews("").await.body;
    assert!(pending["reviews"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn review_lists_filter_by_state_reviewer_mine_unassigned_and_age() {
    let app = spawn_app().await;
    let mut tickets = Vec::new();
    for i in 0..3 {
        let t = run_to_review(
            &app,
            if i == 2 { "other" } else { "q" },
            json!({"review": {"required": true}}),
        )
        .await;
        tickets.push(ticket_of(&app, &t).await);
        app.advance(Duration::from_secs(600)).await;
    }
    let frank = app.api_as("frank", &[Role::Reviewer]);
    frank.claim(&tickets[0]).await;
    let list = |q: &'static str| {
        let call = frank.reviews(q);
        async move {
            call.await.body["reviews"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["id"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    let id = |i: usize| tickets[i]["id"].as_str().unwrap().to_string();
    assert_eq!(
        list("").await,
        [id(0), id(1), id(2)],
        "pending, oldest first"
    );
    assert_eq!(list("mine=true").await, [id(0)]);
    assert_eq!(list("unassigned=true").await, [id(1), id(2)]);
    assert_eq!(list("queue=other").await, [id(2)]);
    assert_eq!(list("reviewer=frank").await, [id(0)]);
    assert_eq!(list("min_age=15m").await, [id(0), id(1)]);
    assert_eq!(list("state=claimed").await, [id(0)]);
    assert_eq!(list("limit=2").await.len(), 2);
    let r = frank.reviews("state=bogus").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

fn metric(text: &str, series: &str) -> f64 {
    helpers::metric(text, series).unwrap_or_else(|| panic!("no series {series}"))
}

#[tokio::test]
async fn reviewer_metrics_match_a_known_scenario_in_rest_and_prometheus() {
    let app = spawn_app_with(|c| {
        c.review
            .sla
            .insert("default".into(), Span(Duration::from_secs(3600)));
    })
    .await;
    let required = json!({"review": {"required": true}});
    let mut t = Vec::new();
    for _ in 0..4 {
        let task = run_to_review(&app, "rq", required.clone()).await;
        t.push(ticket_of(&app, &task).await);
    }
    let alice = app.api_as("alice", &[Role::Reviewer]);
    let bob = app.api_as("bob", &[Role::Reviewer]);
    let admin = app.api_as("root", &[Role::ReviewAdmin]);
    app.advance(Duration::from_secs(600)).await; // 10 min
    alice.claim(&t[0]).await;
    app.advance(Duration::from_secs(600)).await; // 20 min
    assert_eq!(
        alice.vote(&t[0], "approved", None).await.status,
        StatusCode::OK
    );
    admin.assign(&t[1], "bob").await;
    app.advance(Duration::from_secs(1200)).await; // 40 min
    assert_eq!(
        bob.vote(&t[1], "rejected", Some("no")).await.status,
        StatusCode::OK
    );
    admin.assign(&t[2], "bob").await;
    admin.assign(&t[2], "carol").await;
    app.advance(Duration::from_secs(1800)).await; // 70 min: t[2] and t[3] pass their 1 h target

    let m = app.api().review_metrics("window=24h").await.body;
    assert_eq!(m["window"], "24h");
    assert_eq!(m["backlog"]["total"], 2);
    assert_eq!(
        m["backlog"]["by_state"],
        json!({"open": 1, "claimed": 0, "assigned": 1})
    );
    assert_eq!(m["unassigned"], 1);
    assert_eq!(m["oldest_open_age_seconds"], 4200.0);
    assert_eq!(m["oldest_unassigned_age_seconds"], 4200.0);
    assert_eq!(
        m["aging"],
        json!([{"bucket": "0-15m", "count": 0}, {"bucket": "15m-1h", "count": 0}, {"bucket": "1h-4h", "count": 2}, {"bucket": "4h-24h", "count": 0}, {"bucket": "24h+", "count": 0}])
    );
    assert_eq!(m["arrivals"], 4);
    assert_eq!(m["arrival_rate_per_hour"], 4.0 / 24.0);
    assert_eq!(m["assignments"], json!({"first": 3, "reassign": 1}));
    assert_eq!(m["assignment_velocity_per_hour"]["total"], 4.0 / 24.0);
    assert_eq!(
        m["time_to_first_assignment_seconds"],
        json!({"count": 3, "avg": 1400.0, "p50": 1200.0, "p90": 2400.0})
    );
    assert_eq!(
        m["decision_latency_seconds"]["approved"],
        json!({"count": 1, "avg": 1200.0, "p50": 1200.0, "p90": 1200.0})
    );
    assert_eq!(
        m["decision_latency_seconds"]["rejected"],
        json!({"count": 1, "avg": 2400.0, "p50": 2400.0, "p90": 2400.0})
    );
    assert_eq!(
        m["decision_latency_seconds"]["changes_requested"]["count"],
        0
    );
    assert_eq!(m["decisions_per_hour"]["approved"], 1.0 / 24.0);
    assert_eq!(
        m["reviewers"],
        json!([
            {"reviewer": "alice", "decisions": 1, "decisions_per_hour": 1.0 / 24.0, "wip": 0},
            {"reviewer": "bob", "decisions": 1, "decisions_per_hour": 1.0 / 24.0, "wip": 0},
            {"reviewer": "carol", "decisions": 0, "decisions_per_hour": 0.0, "wip": 1},
        ])
    );
    assert_eq!(
        m["sla"],
        json!({"decided": 2, "within_target": 2, "attainment": 1.0, "breaches": 2})
    );
    assert_eq!(m["guardrail_override_rate"], json!([]));

    // Prometheus says the same.
    let p = app.metrics().await;
    assert_eq!(
        metric(
            &p,
            r#"forgeline_review_backlog{queue="rq",state="unassigned"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &p,
            r#"forgeline_review_backlog{queue="rq",state="assigned"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &p,
            r#"forgeline_review_oldest_age_seconds{state="unassigned"}"#
        ),
        4200.0
    );
    assert_eq!(
        metric(&p, r#"forgeline_review_backlog_by_age{age="1h-4h"}"#),
        2.0
    );
    assert_eq!(
        metric(&p, r#"forgeline_review_backlog_by_age{age="0-15m"}"#),
        0.0
    );
    assert_eq!(
        metric(&p, r#"forgeline_review_assignments_total{kind="first"}"#),
        3.0
    );
    assert_eq!(
        metric(&p, r#"forgeline_review_assignments_total{kind="reassign"}"#),
        1.0
    );
    assert_eq!(
        metric(
            &p,
            r#"forgeline_review_time_to_first_assignment_seconds_count"#
        ),
        3.0
    );
    assert_eq!(
        metric(
            &p,
            r#"forgeline_review_time_to_first_assignment_seconds_sum"#
        ),
        4200.0
    );
    assert_eq!(
        metric(
            &p,
            r#"forgeline_review_decision_latency_seconds_sum{outcome="approved"}"#
        ),
        1200.0
    );
    assert_eq!(
        metric(
            &p,
            r#"forgeline_review_decision_latency_seconds_sum{outcome="rejected"}"#
        ),
        2400.0
    );
    assert_eq!(
        metric(
            &p,
            r#"forgeline_review_decisions_total{outcome="approved",reviewer="alice"}"#
        ),
        1.0
    );
    assert_eq!(metric(&p, r#"forgeline_review_wip{reviewer="carol"}"#), 1.0);
    assert_eq!(
        metric(&p, r#"forgeline_review_sla_breaches_total{queue="rq"}"#),
        2.0
    );
}

#[tokio::test]
async fn the_guardrail_override_rate_counts_flagged_tickets_approved() {
    let app = spawn_app_with(guarded).await;
    let gina = app.api_as("gina", &[Role::Reviewer]);
    for outcome in ["approved", "approved", "rejected"] {
        let t = run_to_review(&app, "q", json!({"payload": {"text": "y".repeat(300)}})).await;
        gina.vote(&ticket_of(&app, &t).await, outcome, Some("x"))
            .await;
    }
    let m = app.api().review_metrics("").await.body;
    assert_eq!(
        m["guardrail_override_rate"],
        json!([{"policy": "big-input", "flagged_decided": 3, "approved": 2, "rate": 2.0 / 3.0}])
    );
}

#[tokio::test]
async fn review_actions_are_audited_and_need_the_right_role() {
    let app = spawn_app().await;
    let t = run_to_review(&app, "q", json!({"review": {"required": true}})).await;
    let ticket = ticket_of(&app, &t).await;
    let hank = app.api_as("hank", &[Role::Reviewer]);
    assert_eq!(
        hank.assign(&ticket, "hank").await.status,
        StatusCode::FORBIDDEN
    );
    hank.vote(&ticket, "approved", Some("ok")).await;
    let audit = app.api().audit("principal=hank").await.body;
    let details: Vec<&str> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["detail"].as_str())
        .collect();
    assert!(
        details.iter().any(|d| d.ends_with("approved")),
        "{details:?}"
    );
    assert!(
        details.iter().any(|d| d.starts_with("forbidden")),
        "{details:?}"
    );
}

/// A task carol (submitter and reviewer) submitted, waiting at review.
async fn own_task_at_review(app: &TestApp) -> (TestClient, Value) {
    let carol = app.api_as("carol", &[Role::Submitter, Role::Reviewer]);
    let r = carol
        .submit(json!({"queue": "q", "review": {"required": true}}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let l = app.lease("q", "w", 1).await.remove(0);
    let done = app
        .lease_call(&l, "complete", json!({"result": {"ok": 1}}))
        .await;
    assert_eq!(done.status, StatusCode::OK, "{:?}", done.body);
    let task = app.task(r.body["id"].as_str().unwrap()).await;
    assert_eq!(task["state"], "awaiting_review");
    (carol, task)
}

#[tokio::test]
async fn four_eyes_a_principal_cannot_review_a_task_it_submitted() {
    let app = spawn_app().await;
    let (carol, task) = own_task_at_review(&app).await;
    let ticket = ticket_of(&app, &task).await;

    let r = carol.claim(&ticket).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("needs another principal"),
        "{:?}",
        r.body
    );
    let r = carol.vote(&ticket, "approved", None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    let admin = app.api_as("root", &[Role::ReviewAdmin]);
    let r = admin.assign(&ticket, "carol").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    let unchanged = ticket_of(&app, &task).await;
    assert_eq!(unchanged["state"], "open");
    assert_eq!(unchanged["approvals"], 0);

    // Another reviewer decides it.
    let dave = app.api_as("dave", &[Role::Reviewer]);
    let r = dave.vote(&ticket, "approved", None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let done = app.task(task["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "completed");
}

#[tokio::test]
async fn allow_self_review_lets_the_submitter_decide() {
    let app = spawn_app_with(|c| c.review.allow_self_review = true).await;
    let (carol, task) = own_task_at_review(&app).await;
    let ticket = ticket_of(&app, &task).await;
    assert_eq!(carol.claim(&ticket).await.status, StatusCode::OK);
    let r = carol.vote(&ticket, "approved", None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(
        app.task(task["id"].as_str().unwrap()).await["state"],
        "completed"
    );
}
