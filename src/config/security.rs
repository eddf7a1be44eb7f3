//! `[auth]`, `[ratelimit]`, `[audit]` and `[metrics]`: the security-related
//! settings (docs/security.md has the threat model behind them).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[auth]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `jwt` (every `/api/v1` route needs a bearer token) or `none`
    /// (loopback-only development: every caller is `anonymous` with every role).
    pub mode: AuthMode,
    /// HS256 secret file. Else `FORGELINE_JWT_SECRET`; else
    /// `<data_dir>/jwt-secret`, generated on first start (mode 0600).
    pub secret_file: PathBuf,
    /// Public keys of an external identity provider (RS256 or EdDSA, PEM).
    pub public_keys: Vec<PublicKeyConfig>,
    /// Required `iss` claim (empty: not checked). Tokens minted by
    /// `forgeline token issue` carry it.
    pub issuer: String,
    /// Required `aud` claim (empty: not checked).
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// Where the first start writes an admin token; empty means
    /// `<data_dir>/admin-token`.
    pub admin_token_file: PathBuf,
    /// Lifetime of that admin token.
    #[serde(with = "humantime_serde")]
    pub admin_token_ttl: Duration,
    /// Who sees which tasks: `own` (content for the submitter and reviewers,
    /// metadata for observers) or `all` (every reader sees every task).
    pub visibility: Visibility,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            mode: AuthMode::Jwt,
            secret_file: PathBuf::new(),
            public_keys: Vec::new(),
            issuer: String::new(),
            audience: String::new(),
            leeway: Duration::from_secs(30),
            admin_token_file: PathBuf::new(),
            admin_token_ttl: Duration::from_secs(90 * 24 * 3600),
            visibility: Visibility::Own,
        }
    }
}

/// `auth.visibility`: the read model (src/auth/sight.rs).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    /// Content for the submitter and reviewers; metadata for observers.
    #[default]
    Own,
    /// Every reader sees every task in full.
    All,
}

/// How callers are authenticated.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Bearer JWTs.
    Jwt,
    /// No authentication (loopback only).
    None,
}

/// One `[[auth.public_keys]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PublicKeyConfig {
    /// `RS256` or `EdDSA`.
    pub algorithm: String,
    /// PEM file with the public key.
    pub file: PathBuf,
}

/// `[ratelimit]`: token buckets per (principal, route class).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Apply limits at all.
    pub enabled: bool,
    /// `POST /tasks`, `/tasks/stream`, cancel.
    pub submit: Bucket,
    /// The lease protocol and worker status.
    pub worker: Bucket,
    /// Review decisions, assignments, dead-letter requeues.
    pub review_action: Bucket,
    /// Every `GET` under `/api/v1`.
    pub read: Bucket,
}

/// Refill rate and capacity of one bucket.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Bucket {
    /// Tokens added per second.
    pub rate: f64,
    /// Capacity (the largest burst).
    pub burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            enabled: true,
            submit: Bucket {
                rate: 200.0,
                burst: 1000,
            },
            worker: Bucket {
                rate: 1000.0,
                burst: 2000,
            },
            review_action: Bucket {
                rate: 20.0,
                burst: 50,
            },
            read: Bucket {
                rate: 500.0,
                burst: 1000,
            },
        }
    }
}

/// `[audit]`: retention of the hash-chained audit log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Records older than this are pruned (0: keep by age forever).
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// At most this many records are kept (0: no count limit).
    pub max_records: u64,
    /// How often pruning runs.
    #[serde(with = "humantime_serde")]
    pub prune_interval: Duration,
    /// The MAC key file (`<id> <base64url key>` lines, newest last). Empty:
    /// `<data_dir>/audit-key`, generated on first start with mode 0600.
    pub key_file: PathBuf,
    /// How often the chain head (seq and hash) is written to the log when it
    /// moved, for an operator to keep outside the store.
    #[serde(with = "humantime_serde")]
    pub head_log_interval: Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            max_age: Duration::from_secs(90 * 24 * 3600),
            max_records: 0,
            prune_interval: Duration::from_secs(3600),
            key_file: PathBuf::new(),
            head_log_interval: Duration::from_secs(60),
        }
    }
}

/// `[metrics]`: who may scrape `/metrics`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `open`, `loopback` (only 127.0.0.0/8 and ::1), or `token`.
    pub access: MetricsAccess,
    /// For `token`: a file holding the bearer token scrapers must send.
    pub token_file: PathBuf,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            access: MetricsAccess::Open,
            token_file: PathBuf::new(),
        }
    }
}

/// `/metrics` access rule.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MetricsAccess {
    /// Anyone who can reach the port.
    Open,
    /// Loopback peers only.
    Loopback,
    /// Peers sending `Authorization: Bearer <token_file contents>`.
    Token,
}
