//! `forgeline audit …`: offline checks of a stopped server's audit chain, its
//! head, and the MAC key.

use std::path::PathBuf;

use clap::Subcommand;

use super::ConfigArgs;
use crate::audit::{key_path, parse_head, AuditKeys, ChainPoint, VerifyWith};
use crate::config::Config;
use crate::store::Store;

/// `forgeline audit …`: offline checks that open the store themselves.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk the chain, check every MAC, and report the first broken link. The
    /// server must be stopped (sled allows one process per store); on a
    /// running server use `GET /api/v1/audit/verify`.
    Verify {
        /// Where the server's configuration is.
        #[command(flatten)]
        config: ConfigArgs,
        /// The MAC key file [default: audit.key_file, else <data_dir>/audit-key].
        /// Without one only the chain's structure is checked.
        #[arg(long, value_name = "FILE")]
        key_file: Option<PathBuf>,
        /// A head saved earlier (`forgeline audit head`, or the server's
        /// `audit head` log line): the log must still hold that record,
        /// unchanged.
        #[arg(long, value_name = "SEQ:HASH", value_parser = parse_head)]
        expect_head: Option<ChainPoint>,
    },
    /// Print the chain head as SEQ:HASH, to keep outside the store.
    Head {
        /// Where the server's configuration is.
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Add a new MAC key to the key file; the server signs with it from its
    /// next start (older keys stay in the file to verify older records).
    RotateKey {
        /// Where the server's configuration is.
        #[command(flatten)]
        config: ConfigArgs,
    },
}

/// Runs an audit subcommand; returns the exit code (1 when the chain is
/// broken, 2 on any other failure).
pub fn run(cmd: AuditCommand) -> i32 {
    match cmd {
        AuditCommand::Verify {
            config,
            key_file,
            expect_head,
        } => with_store(&config, |config, store| {
            verify(config, store, key_file, expect_head)
        }),
        AuditCommand::Head { config } => with_store(&config, |_, store| {
            let head = match store.get::<ChainPoint>(crate::store::keys::AUDIT_HEAD) {
                Ok(h) => h.unwrap_or_default(),
                Err(e) => return fail(format!("reading the chain head failed: {e}")),
            };
            println!("{}:{}", head.seq, hex::encode(head.hash));
            0
        }),
        AuditCommand::RotateKey { config } => {
            let config = match config.load() {
                Ok(c) => c,
                Err(e) => return fail(e),
            };
            let path = key_path(&config);
            match AuditKeys::rotate(&path) {
                Ok(id) => {
                    eprintln!(
                        "added audit key {id} to {}; restart the server to sign with it",
                        path.display()
                    );
                    0
                }
                Err(e) => fail(e.to_string()),
            }
        }
    }
}

pub(super) fn fail(message: impl std::fmt::Display) -> i32 {
    eprintln!("forgeline: {message}");
    2
}

/// Opens the stopped server's store and runs `f` on it.
pub(super) fn with_store(args: &ConfigArgs, f: impl FnOnce(&Config, &Store) -> i32) -> i32 {
    let config = match args.load() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let dir = &config.store.data_dir;
    if !dir.join("db").exists() {
        return fail(format!("no store at {}", dir.display()));
    }
    match Store::open_with(dir, config.store.options()) {
        Ok(store) => f(&config, &store),
        Err(e) => fail(format!(
            "cannot open the store at {} (is the server still running?): {e}",
            dir.display()
        )),
    }
}

fn verify(
    config: &Config,
    store: &Store,
    key_file: Option<PathBuf>,
    expect_head: Option<ChainPoint>,
) -> i32 {
    let path = key_file.unwrap_or_else(|| key_path(config));
    let keys = match AuditKeys::load(&path) {
        Ok(k) => k,
        Err(e) => return fail(e),
    };
    if keys.is_none() {
        eprintln!(
            "no audit key at {}: checking the chain's structure only (MACs not checked)",
            path.display()
        );
    }
    let with = VerifyWith {
        keys: keys.as_ref(),
        expect_head,
        now: crate::clock::Clock::now_ms(&crate::clock::SystemClock),
    };
    match crate::audit::verify(store, with) {
        Ok(report) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
            match &report.broken {
                None => {
                    eprintln!(
                        "audit chain intact: {} record(s) checked{}{}",
                        report.checked,
                        if report.keyed { ", MACs verified" } else { "" },
                        if report.expected_head_checked {
                            ", saved head found unchanged"
                        } else {
                            ""
                        }
                    );
                    0
                }
                Some(b) => {
                    eprintln!("audit chain BROKEN at record {}: {}", b.seq, b.reason);
                    1
                }
            }
        }
        Err(e) => fail(format!("reading the audit log failed: {e}")),
    }
}
