//! The `[log]` section: line format, level filter, and file output with
//! rotation.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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
    /// No rotation: one file that keeps growing.
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
