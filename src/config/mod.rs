//! The typed configuration tree and its layered loading.
//!
//! Precedence, highest first: command-line flags, `FORGELINE_<SECTION>__<KEY>`
//! environment variables, the TOML file (`--config FILE`, else `./forgeline.toml`
//! when it exists), then the defaults below. Every default is a named function so
//! that docs/configuration.md and the code can be checked against each other.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

mod review;
mod security;

pub use review::{QueueReview, RejectAction, ReviewConfig, Span, TimeoutAction};

pub use security::{
    AuditConfig, AuthConfig, AuthMode, Bucket, MetricsAccess, MetricsConfig, PublicKeyConfig,
    RateLimitConfig,
};

use crate::store::Durability;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

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
    /// Event streams.
    pub events: EventsConfig,
    /// Log output.
    pub log: LogConfig,
    /// Authentication.
    pub auth: AuthConfig,
    /// Rate limits.
    pub ratelimit: RateLimitConfig,
    /// Audit log retention.
    pub audit: AuditConfig,
    /// `/metrics` access.
    pub metrics: MetricsConfig,
    /// The review gate.
    pub review: ReviewConfig,
    /// Guardrail policies (`[[guardrails]]`).
    pub guardrails: Vec<crate::guardrails::PolicyConfig>,
}

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
/// Default port.
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

/// `[store]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Directory holding the sled store (created when missing).
    pub data_dir: PathBuf,
    /// `sync`: every acknowledged write is on stable storage (group commit).
    /// `relaxed`: sled's own periodic flush; a crash can lose the last ~500 ms.
    pub durability: Durability,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            data_dir: PathBuf::from("forgeline-data"),
            durability: Durability::Sync,
        }
    }
}

/// `[tasks]`: bounds on submissions and on what reads return.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TaskLimits {
    /// Largest JSON payload (serialised bytes).
    pub max_payload_bytes: usize,
    /// Most labels on one task.
    pub max_labels: usize,
    /// Longest label key.
    pub max_label_key_bytes: usize,
    /// Longest label value.
    pub max_label_value_bytes: usize,
    /// Most steps on one task.
    pub max_steps: usize,
    /// `max_attempts` when a submission does not say.
    pub default_max_attempts: u32,
    /// Highest `max_attempts` a submission may ask for.
    pub max_attempts_limit: u32,
    /// Events returned by `GET /tasks/{id}` when `?events` is absent.
    pub default_event_history: usize,
    /// Highest `?events=N`.
    pub max_event_history: usize,
    /// Largest page for list endpoints.
    pub max_page_size: usize,
}

impl Default for TaskLimits {
    fn default() -> Self {
        TaskLimits {
            max_payload_bytes: 256 * 1024,
            max_labels: 32,
            max_label_key_bytes: 64,
            max_label_value_bytes: 256,
            max_steps: 32,
            default_max_attempts: 3,
            max_attempts_limit: 100,
            default_event_history: 20,
            max_event_history: 1000,
            max_page_size: 500,
        }
    }
}

/// `[queue]`: the lease protocol and retries.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Lease length when the worker does not ask for one.
    #[serde(with = "humantime_serde")]
    pub lease_timeout: Duration,
    /// Shortest lease a worker may ask for.
    #[serde(with = "humantime_serde")]
    pub min_lease: Duration,
    /// Longest lease a worker may ask for.
    #[serde(with = "humantime_serde")]
    pub max_lease: Duration,
    /// Longest long-poll (`wait_ms`) a lease request may hold.
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
    /// Most tasks one lease request may take.
    pub max_batch: usize,
    /// Retry backoff base: attempt n waits about `retry_base * 2^(n-1)`.
    #[serde(with = "humantime_serde")]
    pub retry_base: Duration,
    /// Upper bound of one retry delay.
    #[serde(with = "humantime_serde")]
    pub retry_cap: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            lease_timeout: Duration::from_secs(30),
            min_lease: Duration::from_millis(100),
            max_lease: Duration::from_secs(3600),
            max_wait: Duration::from_secs(30),
            max_batch: 100,
            retry_base: Duration::from_secs(1),
            retry_cap: Duration::from_secs(600),
        }
    }
}

/// `[executor]`: the built-in step runner.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ExecutorConfig {
    /// Run the built-in executor at all.
    pub enabled: bool,
    /// Tasks run at once.
    pub pool_size: usize,
    /// Queues the executor leases from; other queues are for external workers.
    pub queues: Vec<String>,
    /// Root under which every step runs; empty means `<data_dir>/workspace`.
    pub workspace_root: PathBuf,
    /// Accept `{"name", "argv"}` steps in submissions (off: only named recipes).
    pub allow_inline_commands: bool,
    /// Bytes of combined stdout/stderr kept per step (the tail).
    pub output_tail_bytes: usize,
    /// Timeout for inline commands (recipes carry their own).
    #[serde(with = "humantime_serde")]
    pub inline_timeout: Duration,
    /// `/health/ready` fails once this share of the pool is busy (0 < x ≤ 1).
    pub ready_max_utilization: f64,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            enabled: true,
            pool_size: 2,
            queues: vec!["default".to_string()],
            workspace_root: PathBuf::new(),
            allow_inline_commands: false,
            output_tail_bytes: 16 * 1024,
            inline_timeout: Duration::from_secs(600),
            ready_max_utilization: 0.9,
        }
    }
}

/// `[steps.NAME]`: one command the executor may run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StepRecipe {
    /// Program and arguments; never passed through a shell.
    pub argv: Vec<String>,
    /// Killed (with its whole process group) after this long.
    #[serde(with = "humantime_serde", default = "default_step_timeout")]
    pub timeout: Duration,
    /// Working directory relative to the task's directory under the workspace root.
    #[serde(default)]
    pub workdir: Option<PathBuf>,
    /// Variables copied from the server's environment when set there.
    #[serde(default = "default_env_allow")]
    pub env_allow: Vec<String>,
    /// Variables set to fixed values.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Whether a non-zero exit schedules a retry (else the task fails).
    #[serde(default)]
    pub retryable: bool,
}

/// Step timeout when a recipe does not name one.
pub fn default_step_timeout() -> Duration {
    Duration::from_secs(600)
}

/// Variables a recipe inherits when it does not list its own.
pub fn default_env_allow() -> Vec<String> {
    ["PATH", "HOME", "LANG", "USER"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// `[events]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// Interval of SSE keep-alive comments.
    #[serde(with = "humantime_serde")]
    pub keepalive: Duration,
    /// Events read from the store per round when a stream catches up.
    pub read_batch: usize,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            keepalive: Duration::from_secs(15),
            read_batch: 256,
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `json`, `pretty`, or `auto` (JSON unless stderr is a terminal).
    pub format: LogFormat,
    /// An `EnvFilter` directive; `RUST_LOG` overrides it.
    pub level: String,
    /// Directory for rotating log files; empty means stderr.
    pub dir: PathBuf,
    /// When files rotate: `daily`, `hourly` or `never`.
    pub rotation: LogRotation,
    /// Rotated files kept (the oldest are deleted); 0 keeps all.
    pub max_files: usize,
    /// File name prefix (`<prefix>.<date>.log`).
    pub file_prefix: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Auto,
            level: "info".to_string(),
            dir: PathBuf::new(),
            rotation: LogRotation::Daily,
            max_files: 7,
            file_prefix: "forgeline".to_string(),
        }
    }
}

/// How often log files rotate.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogRotation {
    /// A new file each day (UTC).
    Daily,
    /// A new file each hour.
    Hourly,
    /// One file.
    Never,
}

/// Log line format.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// JSON unless stderr is a terminal.
    Auto,
    /// One JSON object per line.
    Json,
    /// Human-readable.
    Pretty,
}

/// Values given on the command line; each overrides every other layer.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Overrides {
    /// `--host`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<IpAddr>,
    /// `--port`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `--data-dir`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// `--allow-remote`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_remote: Option<bool>,
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file, an env var or a flag did not parse.
    #[error("{0}")]
    Load(#[from] Box<figment::Error>),
    /// The values parsed but make no sense together.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Environment variables read by `load` (besides the sectioned ones).
pub const ENV_PREFIX: &str = "FORGELINE_";

impl Config {
    /// Loads defaults ← file ← environment ← flags, then validates.
    ///
    /// `file` is the `--config` path; without it `./forgeline.toml` is read
    /// when present. A named file that does not exist is an error.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) => {
                if !path.is_file() {
                    return Err(ConfigError::Invalid(format!(
                        "config file {} does not exist",
                        path.display()
                    )));
                }
                figment = figment.merge(Toml::file(path));
            }
            None => figment = figment.merge(Toml::file("forgeline.toml")),
        }
        // Only sectioned variables (FORGELINE_SERVER__PORT) are configuration; other
        // FORGELINE_* names (FORGELINE_CONFIG, secrets) are read where they are used.
        figment = figment.merge(
            Env::prefixed(ENV_PREFIX)
                .filter(|key| key.as_str().contains("__"))
                .split("__"),
        );
        let mut server = serde_json::Map::new();
        if let Some(h) = overrides.host {
            server.insert("host".into(), serde_json::json!(h));
        }
        if let Some(p) = overrides.port {
            server.insert("port".into(), serde_json::json!(p));
        }
        if let Some(a) = overrides.allow_remote {
            server.insert("allow_remote".into(), serde_json::json!(a));
        }
        let mut cli = serde_json::Map::new();
        if !server.is_empty() {
            cli.insert("server".into(), server.into());
        }
        if let Some(d) = &overrides.data_dir {
            cli.insert("store".into(), serde_json::json!({ "data_dir": d }));
        }
        figment = figment.merge(Serialized::defaults(serde_json::Value::Object(cli)));
        let config: Config = figment.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if !self.server.host.is_loopback() && !self.server.allow_remote {
            return bad(format!(
                "refusing to bind {}: it is not a loopback address; pass --allow-remote \
                 (server.allow_remote = true) to expose forgeline on the network",
                self.server.host
            ));
        }
        if self.auth.mode == AuthMode::None && !self.server.host.is_loopback() {
            return bad(format!(
                "refusing to bind {} with auth.mode = \"none\": unauthenticated mode is for \
                 loopback development only",
                self.server.host
            ));
        }
        for k in &self.auth.public_keys {
            if k.algorithm != "RS256" && k.algorithm != "EdDSA" {
                return bad(format!(
                    "auth.public_keys: algorithm {:?} is not supported (RS256 or EdDSA)",
                    k.algorithm
                ));
            }
        }
        if self.metrics.access == MetricsAccess::Token
            && self.metrics.token_file.as_os_str().is_empty()
        {
            return bad("metrics.access = \"token\" needs metrics.token_file".into());
        }
        for (name, b) in [
            ("submit", &self.ratelimit.submit),
            ("worker", &self.ratelimit.worker),
            ("review_action", &self.ratelimit.review_action),
            ("read", &self.ratelimit.read),
        ] {
            if !(b.rate > 0.0 && b.rate.is_finite()) || b.burst == 0 {
                return bad(format!("ratelimit.{name}: rate and burst must be above 0"));
            }
        }
        self.review.validate().map_err(ConfigError::Invalid)?;
        crate::guardrails::validate(&self.guardrails).map_err(ConfigError::Invalid)?;
        if self.server.max_body_bytes == 0 {
            return bad("server.max_body_bytes must be above 0".into());
        }
        if self.tasks.max_payload_bytes > self.server.max_body_bytes {
            return bad(format!(
                "tasks.max_payload_bytes ({}) exceeds server.max_body_bytes ({})",
                self.tasks.max_payload_bytes, self.server.max_body_bytes
            ));
        }
        let t = &self.tasks;
        if t.default_max_attempts == 0 || t.default_max_attempts > t.max_attempts_limit {
            return bad(
                "tasks.default_max_attempts must be between 1 and max_attempts_limit".into(),
            );
        }
        if t.max_page_size == 0 || t.max_event_history == 0 {
            return bad("tasks.max_page_size and tasks.max_event_history must be above 0".into());
        }
        let q = &self.queue;
        if q.min_lease.is_zero() || q.min_lease > q.lease_timeout || q.lease_timeout > q.max_lease {
            return bad("queue: expected 0 < min_lease <= lease_timeout <= max_lease".into());
        }
        if q.max_batch == 0 {
            return bad("queue.max_batch must be above 0".into());
        }
        if q.retry_base > q.retry_cap {
            return bad("queue.retry_base may not exceed queue.retry_cap".into());
        }
        let u = self.executor.ready_max_utilization;
        if !(u > 0.0 && u <= 1.0) {
            return bad(format!(
                "executor.ready_max_utilization must be in (0, 1], got {u}"
            ));
        }
        if self.executor.enabled && self.executor.pool_size == 0 {
            return bad("executor.pool_size must be above 0 when the executor is enabled".into());
        }
        for q in &self.executor.queues {
            if crate::model::QueueName::parse(q).is_err() {
                return bad(format!("executor.queues: {q:?} is not a valid queue name"));
            }
        }
        for (name, recipe) in &self.steps {
            if crate::model::StepName::parse(name).is_err() {
                return bad(format!("steps.{name}: not a valid step name"));
            }
            if recipe.argv.is_empty() || recipe.argv[0].is_empty() {
                return bad(format!("steps.{name}.argv must name a program"));
            }
            if recipe.timeout.is_zero() {
                return bad(format!("steps.{name}.timeout must be above 0"));
            }
            if let Some(dir) = &recipe.workdir {
                if !is_contained_relative(dir) {
                    return bad(format!(
                        "steps.{name}.workdir must be a relative path without '..'"
                    ));
                }
            }
        }
        if self.events.read_batch == 0 {
            return bad("events.read_batch must be above 0".into());
        }
        Ok(())
    }

    /// The directory steps run under.
    pub fn workspace_root(&self) -> PathBuf {
        if self.executor.workspace_root.as_os_str().is_empty() {
            self.store.data_dir.join("workspace")
        } else {
            self.executor.workspace_root.clone()
        }
    }
}

/// True for a relative path that cannot climb out of its base (`a/b`, `.`).
pub fn is_contained_relative(path: &Path) -> bool {
    path.components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

#[cfg(test)]
// figment::Jail's closures return figment's own (large) error type.
#[allow(clippy::result_large_err)]
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
    fn flags_beat_env_which_beats_the_file_which_beats_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "forgeline.toml",
                "[server]\nport = 1111\nmax_body_bytes = 2048\n[tasks]\nmax_payload_bytes = 1024\n[store]\ndata_dir = \"from-file\"\n",
            )?;
            jail.set_env("FORGELINE_SERVER__PORT", "2222");
            jail.set_env("FORGELINE_STORE__DATA_DIR", "from-env");
            jail.set_env("FORGELINE_CONFIG", "ignored-here");
            let flags = Overrides {
                port: Some(3333),
                ..Overrides::default()
            };
            let c = Config::load(None, &flags).expect("loads");
            assert_eq!(c.server.port, 3333, "flag over env");
            assert_eq!(c.store.data_dir, PathBuf::from("from-env"), "env over file");
            assert_eq!(c.server.max_body_bytes, 2048, "file over default");
            assert_eq!(c.queue.lease_timeout, Duration::from_secs(30), "default");
            let without_flag = Config::load(None, &Overrides::default()).expect("loads");
            assert_eq!(without_flag.server.port, 2222);
            Ok(())
        });
    }

    #[test]
    fn a_misspelt_key_or_a_missing_file_is_an_error() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("typo.toml", "[server]\nprot = 1\n")?;
            let e = Config::load(Some(Path::new("typo.toml")), &Overrides::default()).unwrap_err();
            assert!(e.to_string().contains("prot"), "{e}");
            assert!(Config::load(Some(Path::new("nope.toml")), &Overrides::default()).is_err());
            jail.set_env("FORGELINE_QUEUE__LEASE_TIMEOUT", "soon");
            assert!(Config::load(None, &Overrides::default()).is_err());
            Ok(())
        });
    }

    #[test]
    fn the_shipped_example_config_loads() {
        // Inside a jail: other tests here change FORGELINE_* variables.
        figment::Jail::expect_with(|_| {
            let path =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/forgeline.example.toml");
            let c =
                Config::load(Some(&path), &Overrides::default()).expect("example config is valid");
            for step in [
                "build",
                "test",
                "clippy",
                "npm-ci",
                "npm-build",
                "merge-check",
            ] {
                assert!(c.steps.contains_key(step), "{step}");
            }
            assert_eq!(c.steps["npm-ci"].workdir.as_deref(), Some(Path::new("web")));
            assert_eq!(c.guardrails.len(), 4);
            assert_eq!(c.review.sla_for("ci", 9), Duration::from_secs(1800));
            Ok(())
        });
    }

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

    #[test]
    fn workdir_may_not_escape() {
        assert!(is_contained_relative(Path::new("a/b")));
        assert!(is_contained_relative(Path::new(".")));
        assert!(!is_contained_relative(Path::new("../x")));
        assert!(!is_contained_relative(Path::new("/etc")));
        assert!(!is_contained_relative(Path::new("a/../../b")));
    }
}
