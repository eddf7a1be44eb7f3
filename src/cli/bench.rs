//! `forgeline bench`: measure a server end to end (see `crate::bench`).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::bench::{BenchOptions, TargetOptions};
use crate::store::Durability;

use crate::bench::MAX_CLIENTS;

/// Largest `--lease-batch`: `queue.max_batch`'s default.
const MAX_LEASE_BATCH: usize = 100;
/// Where `--url`'s token comes from when neither flag gives one.
const TOKEN_ENV: &str = "FORGELINE_TOKEN";

/// Flags of `forgeline bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Measure the server at this URL instead of starting one in a temp dir.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Bearer token for `--url` (needs the submitter and worker roles)
    /// [default: $FORGELINE_TOKEN, read only with --url].
    #[arg(long, conflicts_with = "token_file")]
    pub token: Option<String>,
    /// File holding the bearer token for `--url`.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Durability of the server the bench starts [default: sync].
    #[arg(long, value_enum)]
    pub durability: Option<DurabilityArg>,
    /// Tasks per throughput measurement.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub tasks: u64,
    /// Load this many stored tasks into the started server's store first (they
    /// wait on queue `bench-backlog`): how cost changes with the store's size.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub stored: u64,
    /// Keep the started server's temporary directory (its store and
    /// server.log) and print its path.
    #[arg(long)]
    pub keep_dir: bool,
    /// Client counts of the durable-submit measurement.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,16,64",
        value_name = "N,N,..."
    )]
    pub clients: Vec<usize>,
    /// Submitters of the submit → lease → complete measurement.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub e2e_clients: usize,
    /// Lessees of the submit → lease → complete measurement.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub e2e_workers: usize,
    /// Tasks per lease request of those lessees.
    #[arg(long, default_value_t = 50, value_name = "N")]
    pub lease_batch: usize,
    /// Enqueue → pickup rounds measured.
    #[arg(long, default_value_t = 200, value_name = "N")]
    pub pickup_samples: usize,
    /// Tasks of the shell-steps measurement: each runs one step, `true`,
    /// through the started server's built-in executor (pool 2); 0 skips it.
    /// Not measured with --url (the bench cannot configure that server).
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub steps: u64,
    /// Clients of the `/health/live` measurements.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub health_clients: usize,
    /// Length of each `/health/live` measurement, e.g. `3s`.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub health_duration: Duration,
    /// Skip the bare warp server that `/health/live` is compared with.
    #[arg(long)]
    pub no_bare_warp: bool,
    /// Print the report as JSON (`forgeline.bench.v1`) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `--durability`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DurabilityArg {
    /// Every acknowledged write is on stable storage (group commit).
    Sync,
    /// sled's periodic flush; acknowledged writes can be lost on a crash.
    Relaxed,
}

impl BenchArgs {
    /// The token for `--url`: `--token-file`, `--token`, or the environment.
    fn token(&self) -> Result<Option<String>, String> {
        Ok(match &self.token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("--token-file {}: {e}", path.display()))?
                    .trim()
                    .to_string(),
            ),
            None => self.token.clone().or_else(|| {
                self.url
                    .as_ref()
                    .and_then(|_| std::env::var(TOKEN_ENV).ok())
            }),
        })
    }

    /// Checks the flags and turns them into options; `Err` is a usage error.
    pub fn options(&self) -> Result<BenchOptions, String> {
        if let Some(url) = &self.url {
            if !url.starts_with("http://") {
                return Err(format!("--url must be an http:// URL (the bench's client speaks plain HTTP), got {url:?}"));
            }
            if self.durability.is_some() {
                return Err("--durability applies to the server the bench starts; a server at --url keeps its own store.durability".into());
            }
            if self.stored > 0 {
                return Err("--stored loads tasks into the store of the server the bench starts; it cannot be used with --url".into());
            }
            if self.keep_dir {
                return Err("--keep-dir keeps the directory of the server the bench starts; it cannot be used with --url".into());
            }
        } else if self.token.is_some() || self.token_file.is_some() {
            return Err("--token and --token-file are for --url; the server the bench starts uses its own admin token".into());
        }
        let token = self.token()?;
        if self.tasks == 0 {
            return Err("--tasks must be at least 1".into());
        }
        if self.clients.is_empty() {
            return Err("--clients needs at least one client count".into());
        }
        let counts = self.clients.iter().map(|c| ("--clients", *c)).chain([
            ("--e2e-clients", self.e2e_clients),
            ("--e2e-workers", self.e2e_workers),
            ("--health-clients", self.health_clients),
        ]);
        for (flag, n) in counts {
            if n == 0 || n > MAX_CLIENTS {
                return Err(format!("{flag} must be 1-{MAX_CLIENTS}, got {n}"));
            }
        }
        if self.lease_batch == 0 || self.lease_batch > MAX_LEASE_BATCH {
            return Err(format!(
                "--lease-batch must be 1-{MAX_LEASE_BATCH} (queue.max_batch's default), got {}",
                self.lease_batch
            ));
        }
        if self.pickup_samples == 0 {
            return Err("--pickup-samples must be at least 1".into());
        }
        if self.health_duration.is_zero() {
            return Err("--health-duration must be above 0".into());
        }
        Ok(BenchOptions {
            target: TargetOptions {
                url: self.url.clone(),
                token,
                durability: match self.durability {
                    Some(DurabilityArg::Relaxed) => Durability::Relaxed,
                    Some(DurabilityArg::Sync) | None => Durability::Sync,
                },
                stored: self.stored,
                keep_dir: self.keep_dir,
                steps_executor: self.url.is_none() && self.steps > 0,
            },
            tasks: self.tasks,
            submit_clients: self.clients.clone(),
            e2e_clients: self.e2e_clients,
            e2e_workers: self.e2e_workers,
            lease_batch: self.lease_batch,
            pickup_samples: self.pickup_samples,
            health_clients: self.health_clients,
            health_duration: self.health_duration,
            bare_warp: !self.no_bare_warp,
            steps: if self.url.is_none() { self.steps } else { 0 },
        })
    }
}

/// Runs the bench; returns the exit code (0 done, 1 the run failed, 2 usage,
/// 130 interrupted).
pub fn run(args: BenchArgs) -> i32 {
    let opts = match args.options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("forgeline bench: {e}");
            return 2;
        }
    };
    let runtime = match super::runtime("forgeline bench") {
        Ok(r) => r,
        Err(code) => return code,
    };
    // Ctrl-C or SIGTERM drops the run, which stops a started server and
    // removes its directory (unless --keep-dir) instead of leaving them behind.
    let outcome = runtime.block_on(async {
        tokio::select! {
            r = crate::bench::run(&opts) => Some(r),
            _ = super::serve::shutdown_signal() => None,
        }
    });
    match outcome {
        None => {
            eprintln!("forgeline bench: interrupted");
            130
        }
        Some(Ok(report)) => print_report(&report, args.json),
        Some(Err(failure)) => {
            if let Some(report) = &failure.report {
                let _ = print_report(report, args.json);
            }
            eprintln!("forgeline bench: {}", failure.error);
            1
        }
    }
}

/// Prints the report as a table or JSON; returns the exit code.
fn print_report(report: &crate::bench::Report, json: bool) -> i32 {
    if !json {
        print!("{}", report.table());
        return 0;
    }
    match serde_json::to_string_pretty(report) {
        Ok(s) => {
            println!("{s}");
            0
        }
        Err(e) => {
            eprintln!("forgeline bench: {e}");
            1
        }
    }
}
