//! `Config`, the whole configuration tree: one field per section (each defined
//! in its own file), and what is derived from several sections at once.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::events::EventsConfig;
use super::executor::ExecutorConfig;
use super::log::LogConfig;
use super::queue::QueueConfig;
use super::retention::RetentionConfig;
use super::review::ReviewConfig;
use super::security::{AuditConfig, AuthConfig, MetricsConfig, RateLimitConfig};
use super::server::ServerConfig;
use super::steps::StepRecipe;
use super::store::StoreConfig;
use super::tasks::TaskLimits;

/// The whole configuration of a forgeline server.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listener and HTTP limits.
    pub server: ServerConfig,
    /// Where and how durably data is kept.
    pub store: StoreConfig,
    /// Limits on what a submitted task may carry.
    pub tasks: TaskLimits,
    /// Leases, long-polls and retries.
    pub queue: QueueConfig,
    /// The built-in step executor.
    pub executor: ExecutorConfig,
    /// Named step recipes (`[steps.NAME]`), the only commands the executor runs
    /// unless inline commands are enabled.
    pub steps: BTreeMap<String, StepRecipe>,
    /// `[events]`: limits of SSE streams (batch size, idle timeout, length).
    pub events: EventsConfig,
    /// `[log]`: level, JSON or text, and the rotating log file.
    pub log: LogConfig,
    /// `[auth]`: the JWT secret or public keys, issuer and audience, leeway.
    pub auth: AuthConfig,
    /// `[ratelimit]`: token buckets per principal and route class.
    pub ratelimit: RateLimitConfig,
    /// `[retention]`: how long finished tasks, idempotency records and
    /// closed review tickets are kept.
    pub retention: RetentionConfig,
    /// Audit log retention.
    pub audit: AuditConfig,
    /// `/metrics` access.
    pub metrics: MetricsConfig,
    /// The review gate.
    pub review: ReviewConfig,
    /// Guardrail policies (`[[guardrails]]`).
    pub guardrails: Vec<crate::guardrails::PolicyConfig>,
    /// `[console]`: the browser console.
    pub console: super::server::ConsoleConfig,
}

impl Config {
    /// The directory steps run under.
    pub fn workspace_root(&self) -> PathBuf {
        if self.executor.workspace_root.as_os_str().is_empty() {
            self.store.data_dir.join("workspace")
        } else {
            self.executor.workspace_root.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn docs_configuration_lists_every_key() {
        fn keys(prefix: &str, v: &serde_json::Value, out: &mut Vec<String>) {
            match v.as_object() {
                Some(m) if !m.is_empty() => {
                    for (k, v) in m {
                        let p = if prefix.is_empty() {
                            k.clone()
                        } else {
                            format!("{prefix}.{k}")
                        };
                        keys(&p, v, out);
                    }
                }
                _ => out.push(prefix.to_string()),
            }
        }
        let doc = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md"),
        )
        .unwrap();
        let mut all = Vec::new();
        keys(
            "",
            &serde_json::to_value(Config::default()).unwrap(),
            &mut all,
        );
        let missing: Vec<&String> = all
            .iter()
            .filter(|k| k.as_str() != "steps" && !doc.contains(&format!("`{k}`")))
            .collect();
        assert!(
            missing.is_empty(),
            "docs/configuration.md lacks {missing:?}"
        );
    }
}
