//! The command line: one file per subcommand.

pub mod audit;
pub mod backup;
pub mod bench;
pub mod export;
pub mod serve;
pub mod store;
pub mod token;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, Overrides};

/// forgeline: an observability-first pipeline for agent and automation tasks.
#[derive(Debug, Parser)]
#[command(name = "forgeline", version = crate::build_info::LONG_VERSION, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands, one module of `cli` each.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(serve::ServeArgs),
    /// Mint and inspect tokens signed with the server's key.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Check the audit log.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Look at a stopped server's store: statistics and a consistency check.
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// Write a point-in-time backup of a running server (`--url`) or of a
    /// stopped server's store, checksummed and versioned.
    Backup(backup::BackupArgs),
    /// Restore a backup into a new or empty data directory, then check it.
    Restore(backup::RestoreArgs),
    /// Measure a server end to end: durable submits/s, tasks/s through the
    /// worker protocol, pickup latency, probe req/s, start-up and memory.
    Bench(bench::BenchArgs),
    /// Write the ops kit embedded in this binary (alert rules, Alertmanager
    /// routing, Grafana dashboards, k6 scripts, example configs, the systemd
    /// unit) into a directory.
    Export(export::ExportArgs),
}

/// Where to find the server's configuration (same layering as `serve`).
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// TOML config file [default: ./forgeline.toml when it exists].
    #[arg(long, value_name = "FILE", env = "FORGELINE_CONFIG")]
    pub config: Option<PathBuf>,
    /// The server's data directory [config: store.data_dir].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

impl ConfigArgs {
    /// Loads the configuration these arguments point at.
    pub fn load(&self) -> Result<Config, String> {
        let overrides = Overrides {
            data_dir: self.data_dir.clone(),
            ..Overrides::default()
        };
        Config::load(self.config.as_deref(), &overrides).map_err(|e| e.to_string())
    }
}

/// The multi-threaded runtime a subcommand runs on; on failure, the message
/// is printed as `forgeline <command>: …` and the exit code (1) returned.
pub(crate) fn runtime(command: &str) -> Result<tokio::runtime::Runtime, i32> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("{command}: cannot start the runtime: {e}");
            1
        })
}

/// Runs the parsed command; returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Token(cmd) => token::run(cmd),
        Command::Audit(cmd) => audit::run(cmd),
        Command::Store(cmd) => store::run(cmd),
        Command::Backup(args) => backup::run_backup(args),
        Command::Restore(args) => backup::run_restore(args),
        Command::Bench(args) => bench::run(args),
        Command::Export(args) => export::run(args),
    }
}
