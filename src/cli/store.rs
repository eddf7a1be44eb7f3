//! `forgeline store …`: offline looks at a stopped server's store (sled
//! allows one process per store; on a running server use `GET /api/v1/store`).

use clap::Subcommand;

use super::audit::{fail, with_store};
use super::ConfigArgs;

/// `forgeline store …`
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Print records and bytes by kind (with the oldest record), sled's size
    /// on disk and cache, the file system's free space, and the retention
    /// rules with how far they have removed, as JSON.
    Stats {
        /// Where the server's configuration is.
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Check that every index entry points at its record, every record has
    /// its index entries, counters equal what they count, and nothing hangs
    /// off a task that is not there. Exit status 1 when something is wrong.
    Check {
        /// Where the server's configuration is.
        #[command(flatten)]
        config: ConfigArgs,
    },
}

/// Runs a store subcommand; returns the exit code.
pub fn run(cmd: StoreCommand) -> i32 {
    match cmd {
        StoreCommand::Stats { config } => {
            with_store(
                &config,
                |config, store| match crate::retention::store_report(store, config) {
                    Ok(r) => {
                        println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
                        0
                    }
                    Err(e) => fail(format!("reading the store failed: {e}")),
                },
            )
        }
        StoreCommand::Check { config } => with_store(&config, |_, store| {
            match crate::retention::check_store(store) {
                Ok(found) if found.is_empty() => {
                    println!("store is consistent");
                    0
                }
                Ok(found) => {
                    for f in &found {
                        println!("{f}");
                    }
                    eprintln!("forgeline: {} inconsistencies", found.len());
                    1
                }
                Err(e) => fail(format!("reading the store failed: {e}")),
            }
        }),
    }
}
