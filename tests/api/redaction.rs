//! Secrets never reach logs, events, stored step output or error messages:
//! every redaction pattern, through every sink, on the real binary. And the
//! token CLI against a server's own keys.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use forgeline::redact::SAMPLES;
use serde_json::json;

use crate::process::ServerProcess;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pattern_is_redacted_in_every_sink() {
    let dir = tempfile::tempdir().unwrap();
    let workspace = dir.path().join("workspace");
    std::fs::create_dir_all(&workspace).unwrap();
    let all_samples: String = SAMPLES
        .iter()
        .map(|(_, text, _)| format!("{text}\n"))
        .collect();
    std::fs::write(workspace.join("secrets.txt"), &all_samples).unwrap();
    let config = dir.path().join("forgeline.toml");
    std::fs::write(
        &config,
        format!(
            "[executor]\nqueues = [\"default\"]\nworkspace_root = {:?}\noutput_tail_bytes = 65536\n[steps.leak]\nargv = [\"sh\", \"-c\", \"cat secrets.txt; cat secrets.txt >&2; exit 3\"]\n",
            workspace.display().to_string()
        ),
    )
    .unwrap();
    let server = ServerProcess::start_with_env(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
        &[
            ("FORGELINE_EXECUTOR__ENABLED", "true"),
            ("FORGELINE_RATELIMIT__ENABLED", "false"),
        ],
    );
    let c = server.api();

    // The built-in executor runs a step that prints every sample (stored step output).
    let executor_events = c
        .submit_stream(json!({"steps": ["leak"], "max_attempts": 1}))
        .await;
    assert!(executor_events.text.contains("verification_finished"));
    let mut task_ids = vec![executor_events.sse()[0].data["task_id"]
        .as_str()
        .unwrap()
        .to_string()];

    for (i, (_, text, _)) in SAMPLES.iter().enumerate() {
        // An external worker reports output and attributes with a secret, then fails with one.
        let t = c.submit(json!({"queue": "ext"})).await.body;
        task_ids.push(t["id"].as_str().unwrap().to_string());
        let l = c.lease("ext", "w", 1, 0).await.body;
        let l = &l["leases"][0];
        c.lease_events(l, json!([
            {"type": "verification_started", "step": "check"},
            {"type": "verification_finished", "step": "check", "exit_code": 1, "output_tail": text, "error": text, "note": text},
        ]))
        .await;
        c.fail(l, text, Some(false)).await;
        // A cancel reason and a worker status detail.
        let t2 = c.submit(json!({"queue": "other"})).await.body;
        task_ids.push(t2["id"].as_str().unwrap().to_string());
        c.cancel(&t2, Some(*text)).await;
        c.worker_status(&format!("w{i}"), json!({"status": "busy", "detail": text}))
            .await;
        // A secret in a query string (the request log line records the URI)
        // and in a rejected body (parse errors quote the input).
        let q: String = form_urlencoded::byte_serialize(text.as_bytes()).collect();
        c.tasks(&format!("api_key={q}")).await;
        c.submit(json!({"queue": "q", "priority": text})).await;
    }

    let mut seen = String::new();
    for id in &task_ids {
        seen.push_str(&c.dossier(id).await.text);
    }
    seen.push_str(&c.events("idle_timeout=1s").await.text);
    seen.push_str(&c.workers().await.text);
    seen.push_str(&c.audit("limit=500").await.text);
    let bad = c.submit(json!({"priority": "password=hunter2"})).await;
    seen.push_str(&bad.text);
    assert!(seen.contains("REDACTED"), "the sinks were exercised");
    assert!(
        seen.contains("step leak"),
        "the executor's failure is in the records"
    );
    let logs = server.log_text();
    assert!(
        logs.contains("api_key=[REDACTED]"),
        "the request log records the redacted URI"
    );
    for (name, _, secret) in SAMPLES {
        assert!(!seen.contains(secret), "{name}: {secret} reached the API");
        assert!(!logs.contains(secret), "{name}: {secret} reached the log");
    }
    assert!(!seen.contains("hunter2"));
    assert!(server.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_start_writes_private_keys_and_the_token_cli_uses_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = ServerProcess::start(&data, &[]);
    for f in ["jwt-secret", "admin-token"] {
        let mode = std::fs::metadata(data.join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    let logs = server.log_text();
    assert!(logs.contains("admin-token"), "the path is logged");
    assert!(!logs.contains(&server.admin_token), "the token is not");

    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_forgeline"))
            .args(args)
            .arg("--data-dir")
            .arg(&data)
            .output()
            .unwrap()
    };
    let out = cli(&[
        "token", "issue", "--sub", "alice", "--role", "observer", "--ttl", "10m",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let alice = server.api().with_token(Some(&token));
    assert_eq!(alice.tasks("").await.status, 200);
    assert_eq!(alice.submit(json!({})).await.status, 403);

    let out = cli(&["token", "inspect", &token]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("\"sub\":\"alice\""), "{text}");
    assert!(
        text.contains("verifies: yes (principal alice, roles observer)"),
        "{text}"
    );

    let foreign = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "x", "roles": ["observer"], "exp": 4_000_000_000u64}),
        &jsonwebtoken::EncodingKey::from_secret(b"not-this-servers-secret-0123456789abcdef"),
    )
    .unwrap();
    let out = cli(&["token", "inspect", &foreign]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .contains("verifies: no (bad signature)"));
    let out = cli(&["token", "issue", "--sub", "x", "--role", "superuser"]);
    assert_eq!(out.status.code(), Some(2));

    // A console sign-in link: the server's address, the token in the fragment.
    let out = cli(&[
        "token",
        "issue",
        "--sub",
        "rita",
        "--role",
        "reviewer",
        "--ttl",
        "10m",
        "--console",
    ]);
    assert!(out.status.success());
    let link = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let token = link
        .strip_prefix("http://127.0.0.1:7878/#token=")
        .unwrap_or_else(|| panic!("{link}"));
    let me = server
        .api()
        .with_token(Some(token))
        .send("GET", "/api/v1/me", "")
        .await
        .expect(reqwest::StatusCode::OK);
    assert_eq!(me["principal"], "rita");
    assert_eq!(me["roles"], json!(["reviewer"]));
    assert!(server.terminate().success());
}
