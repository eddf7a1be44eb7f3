//! Layered loading: defaults, then the TOML file, then sectioned
//! `FORGELINE_*` environment variables, then command-line flags (figment),
//! followed by validation.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::Serialize;

use super::error::ConfigError;
use super::root::Config;

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

/// The prefix of the environment variables `load` reads: only sectioned names
/// (`FORGELINE_<SECTION>__<KEY>`) are configuration.
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
        figment = figment.merge(Serialized::defaults(flag_layer(overrides)));
        let config: Config = figment.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }
}

/// The flags as a partial config tree (`{"server": {...}, "store": {...}}`),
/// holding only the flags that were given, so that absent flags override nothing.
fn flag_layer(overrides: &Overrides) -> serde_json::Value {
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
    serde_json::Value::Object(cli)
}

#[cfg(test)]
// figment::Jail's closures return figment's own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use std::time::Duration;

    use super::*;

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
}
