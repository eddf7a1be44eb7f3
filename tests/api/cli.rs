//! The command line as users meet it after `pip install` or `cargo install`:
//! `forgeline --version` and `forgeline export`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::helpers::spawn_app;

fn forgeline() -> Command {
    Command::new(env!("CARGO_BIN_EXE_forgeline"))
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every file under `dir` (relative to `root`), by path, with its bytes.
fn files_under(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
    for entry in std::fs::read_dir(root.join(dir)).unwrap() {
        let entry = entry.unwrap();
        let rel = dir.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            files_under(root, &rel, out);
        } else {
            let bytes = std::fs::read(entry.path()).unwrap();
            out.insert(rel.to_string_lossy().into_owned(), bytes);
        }
    }
}

/// The repository's ops kit: what `forgeline export all` must reproduce.
fn repo_kit() -> BTreeMap<String, Vec<u8>> {
    let mut kit = BTreeMap::new();
    for dir in ["alerts", "dashboards", "loadtest", "packaging"] {
        files_under(&repo(), Path::new(dir), &mut kit);
    }
    // k6 run output, not part of the kit.
    kit.retain(|path, _| !path.starts_with("loadtest/results/"));
    kit
}

fn exported(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name();
        files_under(dir, Path::new(&name), &mut files);
    }
    files
}

#[test]
fn export_all_writes_the_repository_ops_kit_byte_for_byte() {
    let out = tempfile::tempdir().unwrap();
    let status = forgeline()
        .args(["export", "--out"])
        .arg(out.path())
        .arg("all")
        .status()
        .unwrap();
    assert!(status.success());
    let written = exported(out.path());
    let expected = repo_kit();
    assert_eq!(
        written.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "the exported paths are the repository's"
    );
    for (path, bytes) in &expected {
        assert!(
            written[path] == *bytes,
            "{path} differs from the repository's"
        );
    }
    for must in [
        "alerts/forgeline.rules.yml",
        "alerts/alertmanager.yml",
        "alerts/alertmanager-routes.tsv",
        "dashboards/overview.json",
        "dashboards/provisioning/dashboards.yaml",
        "loadtest/smoke.js",
        "packaging/forgeline.example.toml",
        "packaging/forgeline.service",
    ] {
        assert!(written.contains_key(must), "{must} is exported");
    }
}

#[test]
fn export_of_one_part_writes_only_that_part_and_list_writes_nothing() {
    let out = tempfile::tempdir().unwrap();
    let status = forgeline()
        .args(["export", "systemd", "dashboards", "--out"])
        .arg(out.path())
        .status()
        .unwrap();
    assert!(status.success());
    let written = exported(out.path());
    assert!(written.contains_key("packaging/forgeline.service"));
    assert!(written
        .keys()
        .all(|p| p == "packaging/forgeline.service" || p.starts_with("dashboards/")));
    assert!(!written.contains_key("packaging/forgeline.example.toml"));

    let listed = forgeline()
        .args(["export", "--list", "alerts"])
        .output()
        .unwrap();
    assert!(listed.status.success());
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(listed.lines().all(|l| l.starts_with("alerts/")), "{listed}");
    assert!(listed.lines().any(|l| l == "alerts/forgeline.rules.yml"));
}

#[test]
fn export_refuses_to_replace_an_edited_file_unless_forced() {
    let out = tempfile::tempdir().unwrap();
    let run = |force: bool| {
        let mut cmd = forgeline();
        cmd.args(["export", "config", "--out"]).arg(out.path());
        if force {
            cmd.arg("--force");
        }
        cmd.output().unwrap()
    };
    assert!(run(false).status.success());
    let example = out.path().join("packaging/forgeline.example.toml");
    std::fs::write(&example, "# my edits\n").unwrap();

    let refused = run(false);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("--force") && stderr.contains("forgeline.example.toml"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&example).unwrap(), "# my edits\n");

    assert!(run(true).status.success());
    assert_eq!(
        std::fs::read(&example).unwrap(),
        std::fs::read(repo().join("packaging/forgeline.example.toml")).unwrap()
    );
}

#[test]
fn export_without_out_is_a_usage_error() {
    let out = forgeline().args(["export", "all"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "clap's usage exit status");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--out"));
}

/// `forgeline 0.1.0 (commit 0123456789ab, release build)` → (version, commit, profile).
fn parse_version(line: &str) -> (String, String, String) {
    let rest = line
        .trim()
        .strip_prefix("forgeline ")
        .expect("starts with the name");
    let (version, rest) = rest.split_once(" (commit ").expect("names the commit");
    let (commit, rest) = rest.split_once(", ").expect("then the profile");
    let profile = rest.strip_suffix(" build)").expect("ends with the profile");
    (version.into(), commit.into(), profile.into())
}

#[tokio::test]
async fn version_names_the_commit_and_profile_that_build_info_reports() {
    let out = forgeline().arg("--version").output().unwrap();
    assert!(out.status.success());
    let (version, commit, profile) = parse_version(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(version, env!("CARGO_PKG_VERSION"));
    assert!(profile == "release" || profile == "debug", "{profile}");
    // Built from this checkout without an override, the commit is HEAD's.
    if std::env::var_os("FORGELINE_COMMIT").is_none() && repo().join(".git").exists() {
        let head = Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .current_dir(repo())
            .output()
            .unwrap();
        if head.status.success() {
            let head = String::from_utf8(head.stdout).unwrap();
            assert_eq!(commit, head.trim(), "the binary was built from HEAD");
        }
    }
    assert_ne!(commit, "", "a commit or `unknown`");

    let app = spawn_app().await;
    let metrics = app.metrics().await;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("forgeline_build_info{"))
        .expect("forgeline_build_info is exported");
    for (label, value) in [
        ("version", &version),
        ("commit", &commit),
        ("profile", &profile),
    ] {
        assert!(
            line.contains(&format!("{label}=\"{value}\"")),
            "{line} carries {label}={value}"
        );
    }
    app.stop().await;
}
