//! `forgeline backup` and `forgeline restore`.
//!
//! A backup of a running server goes through `GET /api/v1/backup` (a
//! review_admin token); without `--url` the stopped server's store is read
//! directly. Either way the file is a point-in-time snapshot with a checksum
//! (docs/operations.md, "Backup and restore").

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;

use super::audit::{fail, with_store};
use super::ConfigArgs;
use crate::retention::backup::AUDIT_KEY_FILE;
use crate::store::{Store, StoreOptions};

/// `forgeline backup`
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Where to write the backup (refused when it exists).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// A running server to back up (`http://127.0.0.1:7878`); without it the
    /// stopped server's data directory is read.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// A review_admin token for `--url`.
    #[arg(long, env = "FORGELINE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Where the stopped server's configuration is.
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// `forgeline restore`
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup to restore.
    #[arg(long, value_name = "FILE")]
    pub from: PathBuf,
    /// A new or empty directory to restore into (then start the server with
    /// `--data-dir DIR`).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
}

/// Runs `forgeline backup`; returns the exit code.
pub fn run_backup(args: BackupArgs) -> i32 {
    if args.out.exists() {
        return fail(format!("{} exists; not overwriting it", args.out.display()));
    }
    let partial = args.out.with_extension("partial");
    let result = match &args.url {
        Some(url) => online(url, args.token.as_deref(), &partial),
        None => offline(&args.config, &partial),
    };
    match result
        .and_then(|()| std::fs::rename(&partial, &args.out).map_err(|e| format!("renaming: {e}")))
    {
        Ok(()) => {
            let size = std::fs::metadata(&args.out).map_or(0, |m| m.len());
            eprintln!("backup written to {} ({size} bytes)", args.out.display());
            0
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            if e.is_empty() {
                2
            } else {
                fail(e)
            }
        }
    }
}

/// Backs up a stopped server's store into `path` (an empty error: the
/// failure was already reported).
fn offline(config: &ConfigArgs, path: &Path) -> Result<(), String> {
    let mut result = Err(String::new());
    let code = with_store(config, |config, store| {
        let now = crate::clock::Clock::now_ms(&crate::clock::SystemClock);
        result = std::fs::File::create(path)
            .map_err(|e| format!("creating {}: {e}", path.display()))
            .and_then(|f| {
                let out = std::io::BufWriter::new(f);
                crate::retention::backup::backup(store, config, now, out)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            });
        0
    });
    if code != 0 {
        return Err(String::new());
    }
    result
}

/// Streams `GET {url}/api/v1/backup` into `path`.
fn online(url: &str, token: Option<&str>, path: &Path) -> Result<(), String> {
    let rt = super::runtime("backup").map_err(|_| String::new())?;
    rt.block_on(async {
        let mut req =
            reqwest::Client::new().get(format!("{}/api/v1/backup", url.trim_end_matches('/')));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let mut resp = req
            .send()
            .await
            .map_err(|e| format!("GET /api/v1/backup: {e}"))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            return Err(format!("GET /api/v1/backup: HTTP {status}: {body}"));
        }
        let mut f =
            std::fs::File::create(path).map_err(|e| format!("creating {}: {e}", path.display()))?;
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("reading the backup: {e}"))?
        {
            f.write_all(&chunk).map_err(|e| format!("writing: {e}"))?;
        }
        f.sync_all().map_err(|e| format!("writing: {e}"))?;
        // A cut stream has no checksum: check the file before keeping it.
        verify_file(path)
    })
}

/// Reads a backup through to its checksum without restoring it.
fn verify_file(path: &Path) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    crate::store::restore(
        f,
        &dir.path().join("check"),
        StoreOptions::new(crate::store::Durability::Relaxed),
    )
    .map(|_| ())
    .map_err(|e| format!("the backup received is not whole: {e}"))
}

/// Runs `forgeline restore`; returns the exit code.
pub fn run_restore(args: RestoreArgs) -> i32 {
    let f = match std::fs::File::open(&args.from) {
        Ok(f) => f,
        Err(e) => return fail(format!("opening {}: {e}", args.from.display())),
    };
    let opts = StoreOptions::new(crate::store::Durability::Sync);
    let restored = match crate::store::restore(f, &args.data_dir, opts) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    for (name, bytes) in &restored.files {
        if name != AUDIT_KEY_FILE {
            continue;
        }
        let path = args.data_dir.join(name);
        if let Err(e) = write_private(&path, bytes) {
            return fail(format!("writing {}: {e}", path.display()));
        }
    }
    let store = match Store::open_with(&args.data_dir, opts) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let problems = match crate::retention::check_store(&store) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let keys = crate::audit::AuditKeys::load(&args.data_dir.join(AUDIT_KEY_FILE))
        .ok()
        .flatten();
    let with = crate::audit::VerifyWith {
        keys: keys.as_ref(),
        expect_head: None,
        now: crate::clock::Clock::now_ms(&crate::clock::SystemClock),
    };
    let audit = crate::audit::verify(&store, with);
    let report = serde_json::json!({
        "restored_into": args.data_dir.display().to_string(),
        "backup": restored.header,
        "keys": restored.keys,
        "files": restored.files.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
        "consistent": problems.is_empty(),
        "audit": audit.as_ref().map(|r| serde_json::json!(r)).unwrap_or_else(|e| e.to_string().into()),
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    let _ = store.close();
    let audit_ok = audit.is_ok_and(|r| r.broken.is_none());
    if problems.is_empty() && audit_ok {
        0
    } else {
        for p in &problems {
            eprintln!("{p}");
        }
        fail("the restored store does not check out (see above)");
        1
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}
