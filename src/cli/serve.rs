//! `forgeline serve`: load the config, start telemetry, serve until a signal.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::Args;

use crate::app::App;
use crate::config::{Config, Overrides};

/// Flags of `forgeline serve`. Every setting can also come from the config
/// file and from `FORGELINE_<SECTION>__<KEY>` variables; flags win.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on [config: server.host; default 127.0.0.1].
    #[arg(long)]
    pub host: Option<IpAddr>,
    /// Port to listen on; 0 picks a free one [config: server.port; default 7878].
    #[arg(long)]
    pub port: Option<u16>,
    /// Directory of the store [config: store.data_dir; default ./forgeline-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// TOML config file [default: ./forgeline.toml when it exists; env FORGELINE_CONFIG].
    #[arg(long, value_name = "FILE", env = "FORGELINE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Allow listening on a non-loopback address [config: server.allow_remote].
    #[arg(long)]
    pub allow_remote: bool,
}

/// Loads the config for `args`.
pub fn load_config(args: &ServeArgs) -> Result<Config, String> {
    let overrides = Overrides {
        host: args.host,
        port: args.port,
        data_dir: args.data_dir.clone(),
        allow_remote: args.allow_remote.then_some(true),
    };
    Config::load(args.config.as_deref(), &overrides).map_err(|e| e.to_string())
}

/// Runs the server; returns the exit code.
pub fn run(args: ServeArgs) -> i32 {
    let config = match load_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("forgeline: {e}");
            return 2;
        }
    };
    let _log_guard = match crate::telemetry::logging::init(&config.log) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("forgeline: {e}");
            return 2;
        }
    };
    let runtime = match super::runtime("forgeline") {
        Ok(r) => r,
        Err(code) => return code,
    };
    runtime.block_on(async move {
        let addr = SocketAddr::new(config.server.host, config.server.port);
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(%addr, error = %e, "cannot listen");
                eprintln!("forgeline: cannot listen on {addr}: {e}");
                return 1;
            }
        };
        let app = match App::build(config).await {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                eprintln!("forgeline: {e}");
                return 1;
            }
        };
        app.run(listener, shutdown_signal()).await;
        0
    })
}

/// Resolves on SIGTERM or SIGINT.
pub(crate) async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
