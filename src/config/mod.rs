//! The typed configuration tree and its layered loading.
//!
//! Precedence, highest first: command-line flags, `FORGELINE_<SECTION>__<KEY>`
//! environment variables, the TOML file (`--config FILE`, else `./forgeline.toml`
//! when it exists), then the defaults. Every default is a named function so
//! that docs/configuration.md and the code can be checked against each other.
//!
//! One file per section (`server`, `store`, `tasks`, `queue`, `executor`,
//! `steps`, `events`, `log`, `review`, `security`), each with its own checks;
//! `root` ties them into [`Config`], `load` layers the sources, `validate`
//! runs the checks in order.

mod error;
mod events;
mod executor;
mod load;
mod log;
mod queue;
mod retention;
mod review;
mod root;
mod security;
mod server;
mod steps;
mod store;
mod tasks;
mod validate;

pub use error::ConfigError;
pub use events::EventsConfig;
pub use executor::ExecutorConfig;
pub use load::{Overrides, ENV_PREFIX};
pub use log::{LogConfig, LogFormat, LogRotation};
pub use queue::QueueConfig;
pub use retention::RetentionConfig;
pub use review::{QueueReview, RejectAction, ReviewConfig, Span, TimeoutAction};
pub use root::Config;
pub use security::{
    AuditConfig, AuthConfig, AuthMode, Bucket, MetricsAccess, MetricsConfig, PublicKeyConfig,
    RateLimitConfig, Visibility,
};
pub use server::{default_host, ConsoleConfig, ServerConfig, DEFAULT_MAX_BODY_BYTES, DEFAULT_PORT};
pub use steps::{default_env_allow, default_step_timeout, is_contained_relative, StepRecipe};
pub use store::StoreConfig;
pub use tasks::TaskLimits;
