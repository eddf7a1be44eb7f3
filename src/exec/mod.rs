//! The built-in step executor: a worker pool inside the server that runs step
//! recipes from the config, each in its own process group, with a timeout.

mod pool;
mod runner;

pub use pool::Executor;
pub use runner::{run_step, StepCommand, StepOutcome, StepOutput};
