//! `Config::validate`: the checks on values that parse but cannot work. Each
//! section checks itself (next to its struct); this file runs them in a fixed
//! order and holds the checks of the security sections (`auth`, `metrics`,
//! `ratelimit`, whose structs live in `security`).

use std::net::IpAddr;

use super::error::{invalid, ConfigError};
use super::root::Config;
use super::security::{AuthConfig, AuthMode, MetricsAccess, MetricsConfig, RateLimitConfig};
use super::steps::validate_steps;

impl Config {
    /// Checks values that parse but cannot work.
    ///
    /// Only the first problem is reported; the order below is part of the
    /// behaviour (a config with several problems always names the same one).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate_exposure()?;
        validate_auth(&self.auth, self.server.host)?;
        validate_metrics(&self.metrics)?;
        validate_ratelimit(&self.ratelimit)?;
        self.review.validate().map_err(ConfigError::Invalid)?;
        crate::guardrails::validate(&self.guardrails).map_err(ConfigError::Invalid)?;
        self.server.validate_body_limit()?;
        self.tasks.validate(self.server.max_body_bytes)?;
        self.queue.validate()?;
        self.executor.validate()?;
        validate_steps(&self.steps)?;
        self.events.validate()?;
        self.retention.validate()?;
        self.console.validate()
    }
}

/// Refuses unauthenticated mode off loopback (`host` is the bind address) and
/// key algorithms the verifier does not implement.
fn validate_auth(auth: &AuthConfig, host: IpAddr) -> Result<(), ConfigError> {
    if auth.mode == AuthMode::None && !host.is_loopback() {
        return invalid(format!(
            "refusing to bind {host} with auth.mode = \"none\": unauthenticated mode is for \
             loopback development only"
        ));
    }
    for k in &auth.public_keys {
        if k.algorithm != "RS256" && k.algorithm != "EdDSA" {
            return invalid(format!(
                "auth.public_keys: algorithm {:?} is not supported (RS256 or EdDSA)",
                k.algorithm
            ));
        }
    }
    Ok(())
}

/// Token access to `/metrics` needs a file to read the token from.
fn validate_metrics(metrics: &MetricsConfig) -> Result<(), ConfigError> {
    if metrics.access == MetricsAccess::Token && metrics.token_file.as_os_str().is_empty() {
        return invalid("metrics.access = \"token\" needs metrics.token_file");
    }
    Ok(())
}

/// Every rate-limit class needs a finite positive rate and a non-zero burst.
fn validate_ratelimit(ratelimit: &RateLimitConfig) -> Result<(), ConfigError> {
    for (name, b) in [
        ("submit", &ratelimit.submit),
        ("worker", &ratelimit.worker),
        ("review_action", &ratelimit.review_action),
        ("read", &ratelimit.read),
    ] {
        // Negated so that a NaN rate is refused too.
        if !(b.rate > 0.0 && b.rate.is_finite()) || b.burst == 0 {
            return invalid(format!("ratelimit.{name}: rate and burst must be above 0"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_loopback() {
        let c = Config::default();
        c.validate().unwrap();
        assert!(c.server.host.is_loopback());
        assert_eq!(c.server.port, 7878);
    }

    #[test]
    fn non_loopback_host_needs_allow_remote() {
        let mut c = Config::default();
        c.server.host = "0.0.0.0".parse().unwrap();
        assert!(c.validate().is_err());
        c.server.allow_remote = true;
        c.validate().unwrap();
    }

    #[test]
    fn a_grafana_url_must_be_http() {
        let mut c = Config::default();
        for ok in ["", "http://127.0.0.1:3000", "https://grafana.example/"] {
            c.console.grafana_url = ok.into();
            c.validate().unwrap();
        }
        c.console.grafana_url = "javascript:alert(1)".into();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("console.grafana_url"), "{e}");
    }
}
