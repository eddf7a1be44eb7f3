//! The `[steps.NAME]` recipes: the commands the executor may run, their
//! defaults, and the checks on names, programs, timeouts and working
//! directories.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::{invalid, ConfigError};

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

/// True for a relative path that cannot climb out of its base (`a/b`, `.`).
pub fn is_contained_relative(path: &Path) -> bool {
    path.components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// Checks every recipe (in name order): a valid step name, a program to run,
/// a timeout above zero, and a working directory that stays inside the task's
/// directory.
pub(super) fn validate_steps(steps: &BTreeMap<String, StepRecipe>) -> Result<(), ConfigError> {
    for (name, recipe) in steps {
        if crate::model::StepName::parse(name).is_err() {
            return invalid(format!("steps.{name}: not a valid step name"));
        }
        if recipe.argv.is_empty() || recipe.argv[0].is_empty() {
            return invalid(format!("steps.{name}.argv must name a program"));
        }
        if recipe.timeout.is_zero() {
            return invalid(format!("steps.{name}.timeout must be above 0"));
        }
        if let Some(dir) = &recipe.workdir {
            if !is_contained_relative(dir) {
                return invalid(format!(
                    "steps.{name}.workdir must be a relative path without '..'"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workdir_may_not_escape() {
        assert!(is_contained_relative(Path::new("a/b")));
        assert!(is_contained_relative(Path::new(".")));
        assert!(!is_contained_relative(Path::new("../x")));
        assert!(!is_contained_relative(Path::new("/etc")));
        assert!(!is_contained_relative(Path::new("a/../../b")));
    }
}
