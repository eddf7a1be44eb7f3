//! `forgeline audit verify`: walk the audit chain of a stopped server's store.

use clap::Subcommand;

use super::ConfigArgs;
use crate::store::Store;

/// `forgeline audit …`: offline checks that open the store themselves.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk the hash chain and report the first broken link. The server must
    /// be stopped (sled allows one process per store); on a running server use
    /// `GET /api/v1/audit/verify`.
    Verify {
        /// Where the server's configuration is.
        #[command(flatten)]
        config: ConfigArgs,
    },
}

/// Runs an audit subcommand; returns the exit code (1 when the chain is broken).
pub fn run(cmd: AuditCommand) -> i32 {
    let AuditCommand::Verify { config } = cmd;
    let config = match config.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("forgeline: {e}");
            return 2;
        }
    };
    let dir = &config.store.data_dir;
    if !dir.join("db").exists() {
        eprintln!("forgeline: no store at {}", dir.display());
        return 2;
    }
    let store = match Store::open_with(dir, config.store.options()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "forgeline: cannot open the store at {} (is the server still running?): {e}",
                dir.display()
            );
            return 2;
        }
    };
    match crate::audit::verify(&store) {
        Ok(report) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
            match &report.broken {
                None => {
                    eprintln!("audit chain intact: {} record(s) checked", report.checked);
                    0
                }
                Some(b) => {
                    eprintln!("audit chain BROKEN at record {}: {}", b.seq, b.reason);
                    1
                }
            }
        }
        Err(e) => {
            eprintln!("forgeline: reading the audit log failed: {e}");
            2
        }
    }
}
