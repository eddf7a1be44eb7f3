//! Build script: stamps the binary with the git commit and build profile that
//! `forgeline --version` and the `forgeline_build_info` metric report, and
//! makes cargo rebuild when a file of the embedded ops kit changes (rust-embed
//! embeds the files it finds at compile time; a new file needs a rebuild).

use std::path::Path;
use std::process::Command;

/// The folders `forgeline export` embeds (src/cli/export.rs).
const EMBEDDED: &[&str] = &["alerts", "dashboards", "loadtest", "packaging"];

fn main() {
    let root = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let root = Path::new(&root);

    println!("cargo:rerun-if-env-changed=FORGELINE_COMMIT");
    // A packager building from a source archive (no .git) can still stamp the
    // commit it built: FORGELINE_COMMIT wins over git.
    let commit = std::env::var("FORGELINE_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| git_commit(root))
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=FORGELINE_COMMIT={}", commit.trim());

    // cargo's PROFILE is `release` for --release (and bench), `debug` otherwise.
    let profile = std::env::var("PROFILE").unwrap_or_else(|_| "unknown".to_string());
    println!("cargo:rustc-env=FORGELINE_PROFILE={profile}");

    for dir in EMBEDDED {
        track(root, Path::new(dir));
    }
}

/// Where k6 writes its run summaries by default: run output, not a source.
const K6_RESULTS: &str = "loadtest/results";

/// Asks cargo to rerun this script (and so rebuild the crate) when a file
/// under `dir` changes or a file is added to one of its folders. A folder path
/// makes cargo scan it recursively, so `loadtest/`, which holds k6's results
/// folder, is tracked file by file instead: a new file directly in
/// `loadtest/` needs a touch of build.rs to be picked up.
fn track(root: &Path, dir: &Path) {
    let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
        return;
    };
    if !root.join(dir).join("results").is_dir() {
        println!("cargo:rerun-if-changed={}", dir.display());
    }
    for entry in entries.flatten() {
        let rel = dir.join(entry.file_name());
        if rel == Path::new(K6_RESULTS) {
            continue;
        }
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            track(root, &rel);
        } else {
            println!("cargo:rerun-if-changed={}", rel.display());
        }
    }
}

/// The short commit of HEAD, when the crate is built from a git checkout.
fn git_commit(root: &Path) -> Option<String> {
    let git_dir = root.join(".git");
    if !git_dir.exists() {
        return None;
    }
    // HEAD names a branch whose ref file (or packed-refs) moves on commit.
    // A missing file would make cargo rerun this script on every build, so
    // only files that exist are named.
    let mut watched = vec![git_dir.join("HEAD"), git_dir.join("packed-refs")];
    if let Ok(head) = std::fs::read_to_string(git_dir.join("HEAD")) {
        if let Some(r) = head.strip_prefix("ref: ") {
            watched.push(git_dir.join(r.trim()));
        }
    }
    for file in watched.iter().filter(|f| f.is_file()) {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(root)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let commit = String::from_utf8(out.stdout).ok()?;
    let commit = commit.trim();
    (!commit.is_empty() && commit.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| commit.to_string())
}
