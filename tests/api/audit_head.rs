//! The audit chain's head outside the store and its MAC key, on the real
//! binary: the head in the log and from `forgeline audit head`, a cut tail
//! found only against a saved head, key rotation, the verify route's
//! `expect_head`.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::wait_until;
use crate::process::ServerProcess;

fn cli(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_forgeline"))
        .arg("audit")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("FORGELINE_CONFIG")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn start(data: &Path) -> ServerProcess {
    ServerProcess::start_with_env(
        data,
        &[],
        &[
            ("FORGELINE_RATELIMIT__ENABLED", "false"),
            ("FORGELINE_AUDIT__HEAD_LOG_INTERVAL", "1s"),
        ],
    )
}

async fn submit_some(server: &ServerProcess, n: usize) {
    for i in 0..n {
        server
            .api()
            .submit(json!({"queue": "aq", "labels": {"i": i.to_string()}}))
            .await
            .expect(StatusCode::CREATED);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_tail_is_found_against_the_head_the_server_published() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start(&data);
    submit_some(&server, 4).await;
    // The route reports the head, and checks a head passed back to it.
    let v: Value = server.api().audit_verify().await.expect(StatusCode::OK);
    assert_eq!(
        (v["ok"].clone(), v["keyed"].clone()),
        (json!(true), json!(true)),
        "{v}"
    );
    let head = format!("{}:{}", v["head_seq"], v["head_hash"].as_str().unwrap());
    let r = server
        .api()
        .send("GET", "/api/v1/audit/verify", "")
        .query(&format!("expect_head={head}"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(r["expected_head_checked"], true, "{r}");
    let bad = server
        .api()
        .send("GET", "/api/v1/audit/verify", "")
        .query("expect_head=12:zz")
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.text);
    // The log carries the head within the interval.
    wait_until(
        "an audit head log line",
        Duration::from_secs(10),
        async || {
            server.log_text().lines().any(|l| {
                serde_json::from_str::<Value>(l).is_ok_and(|v| v["message"] == "audit head")
            })
        },
    )
    .await;
    assert!(server.terminate().success());

    let printed = cli(&data, &["head"]);
    assert!(printed.status.success(), "{}", stderr(&printed));
    let saved = String::from_utf8(printed.stdout)
        .unwrap()
        .trim()
        .to_string();
    let (seq, _) = saved.split_once(':').unwrap();
    let seq: u64 = seq.parse().unwrap();
    assert_eq!(
        seq, 4,
        "{saved}: one record per submit (reads are not audited)"
    );

    // Cut the last two records and rewrite the head to the new end: the
    // chain still links and every MAC holds.
    {
        let store =
            forgeline::store::Store::open(&data, forgeline::store::Durability::Sync).unwrap();
        let _ = store
            .write(|t| {
                use forgeline::store::keys;
                t.delete(keys::audit(seq));
                t.delete(keys::audit(seq - 1));
                let r: forgeline::audit::AuditRecord = t.get(&keys::audit(seq - 2))?.unwrap();
                t.put(
                    keys::AUDIT_HEAD.to_vec(),
                    &forgeline::audit::ChainPoint {
                        seq: r.seq,
                        hash: r.hash,
                    },
                )
            })
            .unwrap();
        store.close().unwrap();
    }
    let plain = cli(&data, &["verify"]);
    assert_eq!(plain.status.code(), Some(0), "{}", stderr(&plain));
    let against = cli(&data, &["verify", "--expect-head", &saved]);
    assert_eq!(against.status.code(), Some(1), "{}", stderr(&against));
    assert!(
        stderr(&against).contains("records were deleted"),
        "{}",
        stderr(&against)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_signs_after_restart_and_older_records_still_verify() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start(&data);
    submit_some(&server, 2).await;
    assert!(server.terminate().success());

    let rotated = cli(&data, &["rotate-key"]);
    assert!(rotated.status.success(), "{}", stderr(&rotated));
    assert!(
        stderr(&rotated).contains("added audit key 2"),
        "{}",
        stderr(&rotated)
    );

    let server = start(&data);
    submit_some(&server, 2).await;
    let v: Value = server.api().audit_verify().await.expect(StatusCode::OK);
    assert_eq!(v["ok"], true, "{v}");
    let records = server.api().audit("limit=1").await.expect(StatusCode::OK);
    assert!(server.terminate().success());
    assert!(records["records"][0]["seq"].as_u64().unwrap() > 2);

    let ok = cli(&data, &["verify"]);
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    // Without the key file only the structure can be checked, and it says so.
    std::fs::rename(data.join("audit-key"), dir.path().join("kept-elsewhere")).unwrap();
    let structural = cli(&data, &["verify"]);
    assert_eq!(structural.status.code(), Some(0), "{}", stderr(&structural));
    assert!(
        stderr(&structural).contains("structure only"),
        "{}",
        stderr(&structural)
    );
    let with_file = cli(
        &data,
        &[
            "verify",
            "--key-file",
            dir.path().join("kept-elsewhere").to_str().unwrap(),
        ],
    );
    assert_eq!(with_file.status.code(), Some(0), "{}", stderr(&with_file));
    assert!(
        stderr(&with_file).contains("MACs verified"),
        "{}",
        stderr(&with_file)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_store_without_its_key_file_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start(&data);
    submit_some(&server, 1).await;
    assert!(server.terminate().success());
    std::fs::remove_file(data.join("audit-key")).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_forgeline"))
        .args(["serve", "--port", "0", "--data-dir"])
        .arg(&data)
        .env("FORGELINE_EXECUTOR__ENABLED", "false")
        .env_remove("FORGELINE_JWT_SECRET")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("forgeline started without its audit key");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(
        err.contains("audit-key") && err.contains("missing"),
        "{err}"
    );
    assert!(!data.join("audit-key").exists(), "no new key was made");
}
