//! The metrics contract: after a scripted workload, the live `/metrics` of a
//! running server has exactly the families docs/metrics.md lists — same names,
//! types and label keys, both ways — and `promtool check metrics` accepts it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use forgeline::config::{Config, QueueReview, Span, TimeoutAction};
use forgeline::model::{CheckKind, Stage, Verdict};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{policy, spawn_app_with};

/// name → (type, label keys).
type Families = BTreeMap<String, (String, BTreeSet<String>)>;

/// The table after `<!-- metrics-contract -->` in docs/metrics.md.
fn documented() -> Families {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md"))
        .expect("docs/metrics.md");
    let table = doc
        .split("<!-- metrics-contract -->")
        .nth(1)
        .expect("docs/metrics.md has the <!-- metrics-contract --> marker");
    let mut out = Families::new();
    for line in table.lines().map(str::trim).skip_while(|l| l.is_empty()) {
        if !line.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        if cells[0] == "name" || cells[0].starts_with("---") {
            continue;
        }
        let name = cells[0].trim_matches('`').to_string();
        let labels = if cells[2] == "—" {
            BTreeSet::new()
        } else {
            cells[2]
                .split(',')
                .map(|l| l.trim().trim_matches('`').to_string())
                .collect()
        };
        assert!(
            out.insert(name.clone(), (cells[1].to_string(), labels))
                .is_none(),
            "{name} is listed twice"
        );
    }
    assert!(out.len() > 20, "the contract table did not parse: {out:?}");
    out
}

/// Families in a text exposition: `# TYPE` lines, and the label keys of
/// every sample (histogram `le` and the `_bucket/_sum/_count` suffixes folded
/// into the family).
fn scraped(text: &str) -> Families {
    let mut out = Families::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            out.insert(name.to_string(), (kind.to_string(), BTreeSet::new()));
        }
    }
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let series = line.split(' ').next().unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|s| name.strip_suffix(s))
            .find(|f| out.get(*f).is_some_and(|(k, _)| k == "histogram"))
            .unwrap_or(name);
        let entry = out
            .get_mut(family)
            .unwrap_or_else(|| panic!("sample {name} has no # TYPE line"));
        for pair in labels.split("\",").filter(|p| !p.is_empty()) {
            let key = pair.split('=').next().unwrap();
            if key != "le" {
                entry.1.insert(key.to_string());
            }
        }
    }
    out
}

fn config(c: &mut Config) {
    let mut tools = policy(
        "tools",
        CheckKind::AllowTools,
        &[Stage::Tool],
        Verdict::Flag,
    );
    tools.tools = vec!["read_file".into()];
    c.guardrails = vec![tools];
    c.review
        .sla
        .insert("default".into(), Span(Duration::from_secs(600)));
    c.review.queues.insert(
        "review".into(),
        QueueReview {
            on_timeout: TimeoutAction::Escalate,
            escalate_to: Some("oncall".into()),
            ..Default::default()
        },
    );
    c.queue.max_batch = 10;
}

#[tokio::test]
async fn live_metrics_match_the_documented_contract_both_ways_and_pass_promtool() {
    let app = spawn_app_with(config).await;

    // A task that runs with agents, a tool (flagged by a guardrail),
    // verification, and completes into review.
    let t = app
        .submit(json!({"queue": "review", "review": {"required": true}}))
        .await;
    let l = app.lease("review", "w1", 1).await.remove(0);
    let events = json!({"events": [
        {"type": "agent_started", "agent_name": "planner"},
        {"type": "tool_invoked", "agent_name": "planner", "tool_name": "bash", "duration_ms": 5},
        {"type": "agent_finished", "agent_name": "planner", "duration_ms": 20},
        {"type": "verification_started", "step": "test"},
        {"type": "verification_finished", "step": "test", "outcome": "passed", "duration_ms": 40},
    ]});
    let r = app.lease_call(&l, "events", events).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    // A stale token is refused and counted.
    let mut stale = l.clone();
    stale["token"] = json!(l["token"].as_u64().unwrap() + 1000);
    let r = app.lease_call(&stale, "heartbeat", json!({})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    let r = app
        .lease_call(&l, "complete", json!({"result": {"ok": true}}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let task = app.task(t["id"].as_str().unwrap()).await;
    assert_eq!(task["state"], "awaiting_review", "{task}");

    // A task that fails for good (one attempt), one whose lease expires, and
    // one left waiting (queue depth, oldest age).
    let f = app
        .submit(json!({"queue": "jobs", "max_attempts": 1}))
        .await;
    let l = app.lease("jobs", "w2", 1).await.remove(0);
    let r = app
        .lease_call(&l, "fail", json!({"retryable": true, "error": "boom"}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(app.task(f["id"].as_str().unwrap()).await["state"], "dead");
    app.submit(json!({"queue": "jobs", "max_attempts": 3}))
        .await;
    app.lease("jobs", "w3", 1).await;
    app.submit(json!({"queue": "jobs"})).await;
    // Past the lease timeout and the review SLA: an expiry, a retry-less
    // requeue, an SLA breach and an escalation.
    app.advance(Duration::from_secs(700)).await;
    // The escalated ticket is assigned; a decision ends it.
    let ticket = app
        .api()
        .review(&app.task(&t).await["reviews"][0])
        .await
        .body;
    let r = app
        .api_as("oncall", &[forgeline::auth::Role::Reviewer])
        .vote(&ticket, "approved", None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // A second review left open (backlog gauges).
    let t2 = app
        .submit(json!({"queue": "review", "review": {"required": true}}))
        .await;
    let l = app.lease("review", "w1", 1).await.remove(0);
    app.lease_call(&l, "complete", json!({"result": {}})).await;
    assert_eq!(
        app.task(t2["id"].as_str().unwrap()).await["state"],
        "awaiting_review"
    );
    // ... claimed by a reviewer (work in progress).
    let t2 = app.task(t2["id"].as_str().unwrap()).await;
    let r = app
        .api_as("alice", &[forgeline::auth::Role::Reviewer])
        .claim(&t2["reviews"][0])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // Authentication failures.
    let anon = app.api().with_token(None);
    for _ in 0..3 {
        anon.tasks("").await;
    }
    // An event stream, bounded.
    app.sse("/api/v1/events?max_events=1", None).await;

    let text = app.metrics().await;
    let live = scraped(&text);
    let doc = documented();

    let undocumented: Vec<_> = live.keys().filter(|k| !doc.contains_key(*k)).collect();
    let missing: Vec<_> = doc.keys().filter(|k| !live.contains_key(*k)).collect();
    assert!(
        undocumented.is_empty(),
        "exported but not in docs/metrics.md: {undocumented:?}"
    );
    assert!(
        missing.is_empty(),
        "in docs/metrics.md but not exported after the workload: {missing:?}\n{text}"
    );
    for (name, (kind, labels)) in &doc {
        let (live_kind, live_labels) = &live[name];
        assert_eq!(live_kind, kind, "{name}: type");
        assert_eq!(live_labels, labels, "{name}: label keys");
    }
    // No series carries an id or a raw path.
    for line in text.lines().filter(|l| l.starts_with("forgeline_")) {
        assert!(!line.contains(t["id"].as_str().unwrap()), "{line}");
        assert!(!line.contains("/api/v1/tasks/0"), "{line}");
    }

    // promtool lints the same exposition.
    let promtool = which("promtool").expect(
        "promtool is required (Debian package `prometheus`; scripts/test.sh installs it under CI)",
    );
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    app.stop().await;
}

fn which(tool: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join(tool))
        .find(|p| p.is_file())
}

/// The value of the series of `family` whose labels include every one of
/// `labels` (`name="value"` strings), if it is exposed.
fn series(text: &str, family: &str, labels: &[&str]) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(family)?.strip_prefix('{')?;
        let (l, v) = rest.split_once("} ")?;
        labels
            .iter()
            .all(|want| l.split(',').any(|have| have == *want))
            .then(|| v.trim().parse().ok())?
    })
}

#[tokio::test]
async fn an_emptied_queue_reports_zero_instead_of_vanishing() {
    let app = spawn_app_with(|_| {}).await;
    app.submit(json!({"queue": "drained"})).await;
    let text = app.metrics().await;
    let queued = ["queue=\"drained\"", "state=\"queued\""];
    assert_eq!(series(&text, "forgeline_tasks", &queued), Some(1.0));
    assert_eq!(
        series(&text, "forgeline_queue_depth", &["queue=\"drained\""]),
        Some(1.0)
    );
    let l = app.lease("drained", "w1", 1).await.remove(0);
    let r = app.lease_call(&l, "complete", json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let text = app.metrics().await;
    assert_eq!(
        series(&text, "forgeline_tasks", &queued),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        series(&text, "forgeline_queue_depth", &["queue=\"drained\""]),
        Some(0.0)
    );
    // Every state of a known queue is there, at 0 when it holds nothing.
    for state in ["scheduled", "running", "dead", "cancelled"] {
        let l = format!("state=\"{state}\"");
        assert_eq!(
            series(&text, "forgeline_tasks", &["queue=\"drained\"", &l]),
            Some(0.0),
            "{state}"
        );
    }
    assert_eq!(
        series(
            &text,
            "forgeline_tasks",
            &["queue=\"drained\"", "state=\"completed\""]
        ),
        Some(1.0)
    );
}
