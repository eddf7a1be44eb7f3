//! The `[server]` section: listener address and port, exposure beyond
//! loopback, the request body limit and the shutdown drain, with their checks.

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::{invalid, ConfigError};

/// `[server]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to bind. Anything but a loopback address needs `allow_remote`.
    pub host: IpAddr,
    /// TCP port; 0 picks a free one.
    pub port: u16,
    /// Permit binding a non-loopback address.
    pub allow_remote: bool,
    /// Largest request body accepted, checked before any parsing.
    pub max_body_bytes: usize,
    /// How long in-flight work may drain after SIGTERM before it is cut off.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
}

/// Default bind address: loopback only.
pub fn default_host() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}
/// Default `server.port`, when neither the config nor `serve --port` sets one.
pub const DEFAULT_PORT: u16 = 7878;
/// Default request body limit (1 MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: default_host(),
            port: DEFAULT_PORT,
            allow_remote: false,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

impl ServerConfig {
    /// Refuses a non-loopback address unless exposure was asked for.
    pub(super) fn validate_exposure(&self) -> Result<(), ConfigError> {
        if !self.host.is_loopback() && !self.allow_remote {
            return invalid(format!(
                "refusing to bind {}: it is not a loopback address; pass --allow-remote \
                 (server.allow_remote = true) to expose forgeline on the network",
                self.host
            ));
        }
        Ok(())
    }

    /// Refuses a zero body limit (every request would be rejected).
    pub(super) fn validate_body_limit(&self) -> Result<(), ConfigError> {
        if self.max_body_bytes == 0 {
            return invalid("server.max_body_bytes must be above 0");
        }
        Ok(())
    }
}

/// `[console]`: the browser console served at `/`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Grafana's base URL (`http://grafana.local:3000`); when set, the
    /// console links to the shipped dashboards there. Empty: no links.
    pub grafana_url: String,
}

impl ConsoleConfig {
    /// Refuses a Grafana URL that is not http(s).
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let u = self.grafana_url.as_str();
        if !(u.is_empty() || u.starts_with("http://") || u.starts_with("https://")) {
            return invalid(format!(
                "console.grafana_url must start with http:// or https://, got {u:?}"
            ));
        }
        Ok(())
    }
}
