//! The command line: one file per subcommand.

pub mod serve;

use clap::{Parser, Subcommand};

/// forgeline: an observability-first pipeline for agent and automation tasks.
#[derive(Debug, Parser)]
#[command(name = "forgeline", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(serve::ServeArgs),
}

/// Runs the parsed command; returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Serve(args) => serve::run(args),
    }
}
