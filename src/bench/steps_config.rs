//! What the spawned server needs for the steps measurement (see `steps`):
//! its queue, its one recipe, and the `forgeline.toml` that sets them up.

/// The queue the spawned server's executor leases from.
pub const STEPS_QUEUE: &str = "bench-steps";

/// The recipe every steps task names.
pub const STEP_RECIPE: &str = "bench-true";

/// Pool size of the spawned server's executor.
pub const STEPS_POOL: usize = 2;

/// What the spawned server's `forgeline.toml` says when the steps phase runs:
/// the executor on, serving only the steps queue, and the one recipe.
pub fn server_config() -> String {
    format!(
        "[executor]\nenabled = true\npool_size = {STEPS_POOL}\nqueues = [\"{STEPS_QUEUE}\"]\n\n\
         [steps.{STEP_RECIPE}]\nargv = [\"true\"]\ntimeout = \"30s\"\n"
    )
}
