//! Stores written by earlier versions keep loading (tests/data/store-v*).

use std::path::Path;
use std::sync::Arc;

use forgeline::app::App;
use forgeline::clock::ManualClock;
use forgeline::config::Config;
use forgeline::model::TaskId;
use forgeline::store::Durability;
use serde_json::Value;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[tokio::test]
async fn the_v1_fixture_store_opens_and_reads_back_what_was_written() {
    check_fixture("store-v1").await;
}

#[tokio::test]
async fn the_v2_fixture_store_opens_and_reads_back_what_was_written() {
    check_fixture("store-v2").await;
}

async fn check_fixture(name: &str) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(fixture.join("manifest.json")).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture.join("data"), &dir.path().join("data"));

    let mut config = Config::default();
    config.store.data_dir = dir.path().join("data");
    config.store.durability = Durability::Sync;
    config.executor.enabled = false;
    // The fixture's own clock, so that its running lease is still live.
    let clock = Arc::new(ManualClock::new(manifest["clock_ms"].as_u64().unwrap()));
    let app = App::build_with_clock(config, clock)
        .await
        .expect("the fixture opens");
    let p = app.pipeline();
    assert_eq!(
        p.store().schema_version().unwrap() as u64,
        manifest["schema_version"].as_u64().unwrap()
    );

    for (name, want) in manifest["tasks"].as_object().unwrap() {
        let id = TaskId::parse(want["id"].as_str().unwrap()).unwrap();
        let t = p.task(id).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(t.state.kind().as_str(), want["state"], "{name}");
        assert_eq!(t.queue.as_str(), want["queue"], "{name}");
        assert_eq!(
            t.attempts as u64,
            want["attempts"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            t.runs.len() as u64,
            want["runs"].as_u64().unwrap(),
            "{name}"
        );
        for r in p.runs_of(&t).unwrap() {
            assert_eq!(r.task_id, id);
        }
        let (events, _) = p.recent_events(id, 1000).unwrap();
        assert_eq!(
            events.len() as u64,
            want["events"].as_u64().unwrap(),
            "{name}"
        );
    }
    let completed = TaskId::parse(manifest["tasks"]["completed"]["id"].as_str().unwrap()).unwrap();
    let t = p.task(completed).unwrap();
    assert_eq!(t.result.as_deref(), Some(r#"{"merged":true}"#));
    assert_eq!(t.review.required_approvals, 2);
    let run = &p.runs_of(&t).unwrap()[0];
    assert_eq!(run.steps[0].outcome.as_deref(), Some("passed"));

    let total = manifest["events_total"].as_u64().unwrap();
    let mut seen = 0;
    for id in 1..=total {
        p.event(id).unwrap_or_else(|e| panic!("event {id}: {e}"));
        seen += 1;
    }
    assert_eq!(seen, total);
    let workers: Vec<String> = p.workers(100).unwrap().into_iter().map(|w| w.id).collect();
    assert_eq!(workers, ["agent-1", "agent-2", "agent-3"]);

    // Leases load whatever version wrote them; v1 leases have no holder.
    let running = TaskId::parse(manifest["tasks"]["running"]["id"].as_str().unwrap()).unwrap();
    let t = p.task(running).unwrap();
    let lease_id = t.state.lease().expect("still leased").lease_id;
    let lease: forgeline::model::LeaseRecord = p
        .store()
        .get(&forgeline::store::keys::lease(&lease_id.to_bytes()))
        .unwrap()
        .unwrap();
    assert_eq!(lease.worker, "agent-1");
    let written_by_v1 = manifest["audit_records"].is_null();
    assert_eq!(lease.holder.is_empty(), written_by_v1);
    // The records from before keys verify, bound by the seal this start wrote.
    let with = forgeline::audit::VerifyWith {
        keys: Some(p.audit_keys()),
        expect_head: None,
        now: p.now(),
    };
    let report = forgeline::audit::verify(p.store(), with).unwrap();
    assert!(report.ok && report.keyed, "{report:?}");
    assert_eq!(
        report.checked,
        manifest["audit_records"].as_u64().unwrap_or(0)
    );
}
