//! `forgeline token issue` and `forgeline token inspect`.

use std::time::Duration;

use base64::Engine;
use clap::Subcommand;

use super::ConfigArgs;
use crate::auth::{Authenticator, Role, RoleSet};

/// `forgeline token …`: both load the server's config to find its keys.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a new HS256 token signed with the server's secret.
    Issue {
        /// The principal (`sub` claim).
        #[arg(long)]
        sub: String,
        /// A role: observer, submitter, worker, reviewer, review_admin (repeatable).
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// Lifetime, e.g. 8h, 30m, 7d.
        #[arg(long, default_value = "8h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Print a sign-in link for the console on this server's address
        /// instead of the bare token (the token rides in the link's
        /// fragment, which browsers never send to a server).
        #[arg(long)]
        console: bool,
        /// Where the server's configuration is.
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Show a token's header and claims and whether this server accepts it.
    Inspect {
        /// The compact JWT (`header.claims.signature`), without `Bearer `.
        token: String,
        /// Where the server's configuration is.
        #[command(flatten)]
        config: ConfigArgs,
    },
}

/// Runs a token subcommand; returns the exit code.
pub fn run(cmd: TokenCommand) -> i32 {
    match cmd {
        TokenCommand::Issue {
            sub,
            roles,
            ttl,
            console,
            config,
        } => issue(&sub, &roles, ttl, console, &config),
        TokenCommand::Inspect { token, config } => inspect(&token, &config),
    }
}

fn authenticator(args: &ConfigArgs) -> Result<Authenticator, String> {
    let config = args.load()?;
    Authenticator::from_config(&config, false)
        .map(|(a, _)| a)
        .map_err(|e| e.to_string())
}

fn issue(sub: &str, roles: &[String], ttl: Duration, console: bool, args: &ConfigArgs) -> i32 {
    let mut parsed = Vec::new();
    for r in roles {
        match Role::parse(r) {
            Some(role) => parsed.push(role),
            None => {
                let all: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
                eprintln!(
                    "forgeline: unknown role {r:?}; roles are {}",
                    all.join(", ")
                );
                return 2;
            }
        }
    }
    let result = authenticator(args).and_then(|a| {
        a.issue(sub, RoleSet::from_roles(&parsed), ttl)
            .map_err(|e| e.to_string())
    });
    match result {
        Ok(token) if console => match args.load() {
            Ok(config) => {
                println!("{}/#token={token}", console_base(&config));
                0
            }
            Err(e) => {
                eprintln!("forgeline: {e}");
                2
            }
        },
        Ok(token) => {
            println!("{token}");
            0
        }
        Err(e) => {
            eprintln!("forgeline: {e}");
            1
        }
    }
}

/// The console's address: the server's, with an unspecified bind address
/// (`0.0.0.0`, `::`) replaced by loopback.
fn console_base(config: &crate::config::Config) -> String {
    let host = config.server.host;
    let host = if host.is_unspecified() {
        match host {
            std::net::IpAddr::V4(_) => std::net::IpAddr::from([127, 0, 0, 1]),
            std::net::IpAddr::V6(_) => std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        }
    } else {
        host
    };
    let addr = std::net::SocketAddr::new(host, config.server.port);
    format!("http://{addr}")
}

fn decode_part(part: &str) -> serde_json::Value {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null)
}

fn inspect(token: &str, args: &ConfigArgs) -> i32 {
    let parts: Vec<&str> = token.trim().split('.').collect();
    if parts.len() != 3 {
        eprintln!("forgeline: not a JWT (expected three dot-separated parts)");
        return 2;
    }
    let header = decode_part(parts[0]);
    let claims = decode_part(parts[1]);
    println!("header: {header}");
    println!("claims: {claims}");
    if let Some(exp) = claims["exp"].as_u64() {
        println!("expires: {}", crate::clock::format_rfc3339(exp * 1000));
    }
    let auth = match authenticator(args) {
        Ok(a) => a,
        Err(e) => {
            println!("verifies: unknown ({e})");
            return 1;
        }
    };
    match auth.verify_token(token.trim()) {
        Ok((claims, roles)) => {
            println!(
                "verifies: yes (principal {}, roles {})",
                claims.sub,
                roles.names().join(", ")
            );
            0
        }
        Err(reason) => {
            println!("verifies: no ({reason})");
            1
        }
    }
}
