//! The built-in executor: a pool of in-process workers that lease from the
//! configured queues and run each task's steps from the server's recipes.
//!
//! It speaks the same protocol as an external worker (lease, heartbeat,
//! events, complete/fail), only without HTTP, so everything it does shows up
//! in events, runs and metrics exactly as an external worker's would.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::runner::{run_step, StepCommand, StepOutcome};
use crate::model::{QueueName, StepSpec, TaskRecord, WorkerId};
use crate::pipeline::{deferring_durability, Pipeline, PipelineError};
use crate::queue::{Failure, Grant, LeaseRequest};
use crate::workers::{AgentEvent, AgentEventKind};

/// How long one lease request of an idle executor worker waits for work.
const IDLE_WAIT: Duration = Duration::from_secs(5);

/// The executor pool.
#[derive(Clone)]
pub struct Executor {
    pipeline: Arc<Pipeline>,
    queues: Vec<QueueName>,
    /// Stops leasing (shutdown begins).
    stop: CancellationToken,
    /// Kills running steps (the drain timeout passed).
    kill: CancellationToken,
    busy: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("queues", &self.queues)
            .finish()
    }
}

impl Executor {
    /// An executor over the configured queues.
    pub fn new(
        pipeline: Arc<Pipeline>,
        stop: CancellationToken,
        kill: CancellationToken,
        busy: Arc<AtomicUsize>,
    ) -> Executor {
        let queues = pipeline
            .config()
            .executor
            .queues
            .iter()
            .filter_map(|q| QueueName::parse(q).ok())
            .collect();
        Executor {
            pipeline,
            queues,
            stop,
            kill,
            busy,
        }
    }

    /// Workers currently running a task.
    pub fn busy(&self) -> usize {
        self.busy.load(Ordering::Relaxed)
    }

    fn set_busy(&self, busy: usize) {
        let size = self.pipeline.config().executor.pool_size.max(1);
        self.pipeline
            .metrics()
            .pool_utilization
            .set(busy as f64 / size as f64);
    }

    /// Starts `pool_size` workers; the handles end after shutdown.
    pub fn spawn(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let n = self.pipeline.config().executor.pool_size;
        (0..n)
            .map(|i| {
                let me = self.clone();
                tokio::spawn(async move { me.worker_loop(i).await })
            })
            .collect()
    }

    async fn worker_loop(self, index: usize) {
        let worker = WorkerId::parse(&format!("builtin-{index}")).expect("valid worker id");
        let cfg = &self.pipeline.config().queue;
        let req = LeaseRequest {
            queues: self.queues.clone(),
            holder: worker.to_string(),
            worker,
            max: 1,
            wait: IDLE_WAIT,
            lease_for: cfg.lease_timeout,
        };
        while !self.stop.is_cancelled() {
            // The executor acknowledges nothing to anyone until a task's
            // result is written, so its lease grant, step events and result
            // share commit rounds instead of waiting for one each; the wait
            // at the end of the task covers them all. A crash before it can
            // run the task again, which is the at-least-once contract anyway.
            let (grants, leased) = tokio::select! {
                g = deferring_durability(self.pipeline.lease(&req)) => g,
                _ = self.stop.cancelled() => return,
            };
            match grants {
                Ok(grants) => {
                    for g in grants {
                        self.set_busy(self.busy.fetch_add(1, Ordering::Relaxed) + 1);
                        let ((), ran) = deferring_durability(self.run_task(g)).await;
                        self.wait_durable(leased.into_iter().chain(ran).max()).await;
                        self.set_busy(self.busy.fetch_sub(1, Ordering::Relaxed) - 1);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "executor could not lease; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Waits until a task's writes are durable (its result reaches event
    /// streams then).
    async fn wait_durable(&self, last: Option<crate::store::Commit>) {
        if let Some(c) = last {
            if let Err(e) = self.pipeline.store().wait_durable(c).await {
                tracing::error!(error = %e, "executor: a task's result could not be made durable");
            }
        }
    }

    /// Runs one leased task to completion, failure, loss of the lease, or kill.
    pub async fn run_task(&self, g: Grant) {
        let lease_id = g.lease.id;
        let token = g.lease.token;
        let lost = CancellationToken::new();
        let step_cancel = CancellationToken::new();
        let heartbeat = tokio::spawn(heartbeat_loop(
            self.pipeline.clone(),
            g.clone(),
            lost.clone(),
            step_cancel.clone(),
        ));
        let kill = self.kill.clone();
        let cancel_on_kill = {
            let step_cancel = step_cancel.clone();
            tokio::spawn(async move {
                kill.cancelled().await;
                step_cancel.cancel();
            })
        };
        let outcome = self.run_steps(&g.task, lease_id, token, &step_cancel).await;
        heartbeat.abort();
        cancel_on_kill.abort();
        let p = &self.pipeline;
        let result = match outcome {
            _ if lost.is_cancelled() => Ok(()), // lease gone: someone else owns the task now
            _ if self.kill.is_cancelled() => p.release(lease_id, token, None).await.map(drop),
            Ok(n) => p
                .complete(lease_id, token, None, Some(json!({"steps_passed": n})))
                .await
                .map(drop),
            Err((error, retryable)) => p
                .fail(lease_id, token, None, Failure { retryable, error })
                .await
                .map(drop),
        };
        match result {
            Ok(())
            | Err(PipelineError::StaleLease { .. })
            | Err(PipelineError::NotFound { .. }) => {}
            Err(e) => {
                tracing::error!(task_id = %g.task.id, error = %e, "executor could not report a result")
            }
        }
    }

    /// Runs the steps in order; `Err((message, retryable))` at the first failure.
    async fn run_steps(
        &self,
        task: &TaskRecord,
        lease_id: crate::model::LeaseId,
        token: u64,
        cancel: &CancellationToken,
    ) -> Result<usize, (String, bool)> {
        let config = self.pipeline.config();
        let root = config.workspace_root();
        let task_dir = match &task.workdir {
            Some(w) => root.join(w),
            None => root.clone(),
        };
        for (i, spec) in task.steps.iter().enumerate() {
            let (cmd, retryable) = match self.command_for(task, spec, &task_dir) {
                Ok(c) => c,
                Err(e) => return Err((e, false)),
            };
            let started = AgentEvent::for_step(AgentEventKind::VerificationStarted, &cmd.name);
            if self
                .pipeline
                .report_events(lease_id, token, None, vec![started])
                .await
                .is_err()
            {
                return Err(("lease lost before the step started".into(), true));
            }
            let out = run_step(&cmd, cancel).await;
            let mut finished =
                AgentEvent::for_step(AgentEventKind::VerificationFinished, &cmd.name);
            finished.outcome = Some(out.outcome.as_str().to_string());
            finished.exit_code = out.exit_code.map(i64::from);
            finished.duration_ms = Some(out.duration.as_millis() as u64);
            finished.output_tail = Some(out.output_tail.clone());
            finished.error = out.error.clone();
            // A guardrail that blocks the step's output fails the task now
            // (the events are not stored; complete would refuse the run).
            if let Err(e @ PipelineError::Blocked { .. }) = self
                .pipeline
                .report_events(lease_id, token, None, vec![finished])
                .await
            {
                return Err((e.to_string(), false));
            }
            if out.outcome != StepOutcome::Passed {
                let msg = out
                    .error
                    .unwrap_or_else(|| format!("step {} failed", cmd.name));
                let retry = retryable || out.outcome == StepOutcome::TimedOut;
                return Err((
                    format!("step {} ({}/{}): {msg}", cmd.name, i + 1, task.steps.len()),
                    retry,
                ));
            }
        }
        Ok(task.steps.len())
    }

    fn command_for(
        &self,
        task: &TaskRecord,
        spec: &StepSpec,
        task_dir: &Path,
    ) -> Result<(StepCommand, bool), String> {
        let config = self.pipeline.config();
        let (argv, timeout, workdir, env_allow, fixed, retryable) = match spec {
            StepSpec::Named(name) => {
                let r = config.steps.get(name.as_str()).ok_or_else(|| {
                    format!("no step recipe named {name} in this server's config")
                })?;
                (
                    r.argv.clone(),
                    r.timeout,
                    r.workdir.clone(),
                    r.env_allow.clone(),
                    r.env.clone(),
                    r.retryable,
                )
            }
            StepSpec::Inline { argv, .. } => {
                if !config.executor.allow_inline_commands {
                    return Err("inline commands are disabled on this server".into());
                }
                (
                    argv.clone(),
                    config.executor.inline_timeout,
                    None,
                    crate::config::default_env_allow(),
                    Default::default(),
                    false,
                )
            }
        };
        let cwd: PathBuf = match workdir {
            Some(w) => task_dir.join(w),
            None => task_dir.to_path_buf(),
        };
        let mut env: Vec<(String, String)> = env_allow
            .iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| (k.clone(), v)))
            .collect();
        env.extend(fixed);
        env.push(("FORGELINE_TASK_ID".into(), task.id.to_string()));
        env.push(("FORGELINE_QUEUE".into(), task.queue.to_string()));
        env.push(("FORGELINE_ATTEMPT".into(), task.attempts.to_string()));
        env.push(("FORGELINE_STEP".into(), spec.name().to_string()));
        Ok((
            StepCommand {
                name: spec.name().to_string(),
                argv,
                cwd,
                env,
                timeout,
                tail_bytes: config.executor.output_tail_bytes,
            },
            retryable,
        ))
    }
}

/// Extends the lease every third of its length; when it is lost (cancelled
/// task, expiry), stops the running step.
async fn heartbeat_loop(
    pipeline: Arc<Pipeline>,
    g: Grant,
    lost: CancellationToken,
    step_cancel: CancellationToken,
) {
    let lease_for = Duration::from_millis(g.lease.deadline.saturating_sub(g.lease.granted_at));
    let every = (lease_for / 3).max(Duration::from_millis(50));
    loop {
        tokio::time::sleep(every).await;
        match pipeline
            .heartbeat(g.lease.id, g.lease.token, None, lease_for)
            .await
        {
            Ok(_) => {}
            Err(PipelineError::StaleLease { .. }) | Err(PipelineError::NotFound { .. }) => {
                lost.cancel();
                step_cancel.cancel();
                return;
            }
            Err(e) => {
                tracing::warn!(task_id = %g.task.id, error = %e, "heartbeat failed; will retry")
            }
        }
    }
}
