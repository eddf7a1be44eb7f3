//! The `forgeline` binary: parse the command line and hand over to the library.

use clap::Parser;

fn main() {
    let cli = forgeline::cli::Cli::parse();
    std::process::exit(forgeline::cli::run(cli));
}
