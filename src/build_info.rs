//! What this binary is: its version, the git commit it was built from and
//! the cargo profile, stamped by build.rs. `forgeline --version` prints them
//! and the `forgeline_build_info` metric carries the same values as labels.

/// The crate version (Cargo.toml).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The short git commit of the build (12 hex digits), the `FORGELINE_COMMIT`
/// value given at build time, or `unknown` when built outside a checkout
/// without it (e.g. from a source archive).
pub const COMMIT: &str = env!("FORGELINE_COMMIT");

/// The cargo profile: `release` or `debug`.
pub const PROFILE: &str = env!("FORGELINE_PROFILE");

/// `forgeline --version`'s text after the program name.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("FORGELINE_COMMIT"),
    ", ",
    env!("FORGELINE_PROFILE"),
    " build)"
);
