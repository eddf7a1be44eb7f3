//! `ConfigError`, why a configuration could not be used, and the helper the
//! section checks use to report a value that parses but cannot work.

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

/// The error for a value that parses but cannot work (`message` names the key).
pub(super) fn invalid(message: impl Into<String>) -> Result<(), ConfigError> {
    Err(ConfigError::Invalid(message.into()))
}
