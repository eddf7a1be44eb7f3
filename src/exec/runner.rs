//! Running one step: a child process in its own process group, a timeout that
//! kills the whole group, and a bounded tail of its output.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::sync::CancellationToken;

/// How long to wait for the output pipes to close after the process group is
/// gone (a daemonised grandchild may keep them open forever).
const PIPE_DRAIN: Duration = Duration::from_millis(500);

/// What to run.
#[derive(Debug, Clone)]
pub struct StepCommand {
    /// Step name (for reports).
    pub name: String,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Working directory: the task's directory, or the recipe's `workdir`
    /// under it (it must exist: the step is not started otherwise).
    pub cwd: PathBuf,
    /// The complete environment of the child.
    pub env: Vec<(String, String)>,
    /// Killed after this long.
    pub timeout: Duration,
    /// Bytes of output kept.
    pub tail_bytes: usize,
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    /// Exit status 0.
    Passed,
    /// Non-zero exit status or killed by a signal.
    Failed,
    /// Killed at the timeout.
    TimedOut,
    /// Could not start, or was cancelled.
    Error,
}

impl StepOutcome {
    /// The report spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            StepOutcome::Passed => "passed",
            StepOutcome::Failed => "failed",
            StepOutcome::TimedOut => "timed_out",
            StepOutcome::Error => "error",
        }
    }
}

/// The result of one step.
#[derive(Debug, Clone)]
pub struct StepOutput {
    /// How it ended; `error` carries the reason for anything but `Passed`.
    pub outcome: StepOutcome,
    /// Exit code when it exited.
    pub exit_code: Option<i32>,
    /// Wall time from the call until the output pipes were drained.
    pub duration: Duration,
    /// Last bytes of stdout and stderr, interleaved as they arrived.
    pub output_tail: String,
    /// Why it could not run, or was stopped.
    pub error: Option<String>,
}

struct Tail {
    buf: VecDeque<u8>,
    cap: usize,
}

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        let bytes = &bytes[bytes.len().saturating_sub(self.cap)..];
        let overflow = (self.buf.len() + bytes.len()).saturating_sub(self.cap);
        self.buf.drain(..overflow);
        self.buf.extend(bytes);
    }
}

async fn pump(mut r: impl AsyncRead + Unpin, tail: Arc<Mutex<Tail>>) {
    let mut chunk = [0u8; 8192];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => tail
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(&chunk[..n]),
        }
    }
}

fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid {
        // SAFETY: killpg only sends a signal; the group id is the child's pid,
        // which we made a group leader with process_group(0).
        unsafe {
            libc::killpg(pid as libc::pid_t, libc::SIGKILL);
        }
    }
}

/// How a step's process ended.
enum End {
    Exited(std::io::Result<std::process::ExitStatus>),
    TimedOut,
    Cancelled,
}

/// Runs `cmd` to completion, timeout, or `cancel`.
pub async fn run_step(cmd: &StepCommand, cancel: &CancellationToken) -> StepOutput {
    let started = Instant::now();
    let fail = |error: String| StepOutput {
        outcome: StepOutcome::Error,
        exit_code: None,
        duration: started.elapsed(),
        output_tail: String::new(),
        error: Some(error),
    };
    if !cmd.cwd.is_dir() {
        return fail(format!(
            "working directory {} does not exist",
            cmd.cwd.display()
        ));
    }
    let mut child = match command(cmd).spawn() {
        Ok(c) => c,
        Err(e) => return fail(format!("cannot start {:?}: {e}", cmd.argv[0])),
    };
    let pid = child.id();
    let tail = Arc::new(Mutex::new(Tail {
        buf: VecDeque::new(),
        cap: cmd.tail_bytes,
    }));
    let mut pumps = Vec::new();
    if let Some(out) = child.stdout.take() {
        pumps.push(tokio::spawn(pump(out, tail.clone())));
    }
    if let Some(err) = child.stderr.take() {
        pumps.push(tokio::spawn(pump(err, tail.clone())));
    }
    let end = tokio::select! {
        s = child.wait() => End::Exited(s),
        _ = tokio::time::sleep(cmd.timeout) => End::TimedOut,
        _ = cancel.cancelled() => End::Cancelled,
    };
    // Kill the whole group in every case: on timeout or cancel to stop the
    // step, after a normal exit to reap anything it left running.
    kill_group(pid);
    if !matches!(end, End::Exited(_)) {
        let _ = child.wait().await;
    }
    for p in pumps {
        let _ = tokio::time::timeout(PIPE_DRAIN, p).await;
    }
    let output_tail = {
        let t = tail.lock().unwrap_or_else(|e| e.into_inner());
        let (a, b) = t.buf.as_slices();
        String::from_utf8_lossy(&[a, b].concat()).into_owned()
    };
    let (outcome, exit_code, error) = verdict(cmd, end);
    StepOutput {
        outcome,
        exit_code,
        duration: started.elapsed(),
        output_tail,
        error,
    }
}

/// The step's process: its own process group (so that a timeout kills
/// everything it started), a clean environment, no stdin.
fn command(cmd: &StepCommand) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(&cmd.argv[0]);
    c.args(&cmd.argv[1..])
        .current_dir(&cmd.cwd)
        .env_clear()
        .envs(cmd.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    c
}

/// The outcome, exit code and error message of a step that ended as `end`.
fn verdict(cmd: &StepCommand, end: End) -> (StepOutcome, Option<i32>, Option<String>) {
    match end {
        End::Exited(Ok(s)) if s.success() => (StepOutcome::Passed, s.code(), None),
        End::Exited(Ok(s)) => (
            StepOutcome::Failed,
            s.code(),
            Some(match s.code() {
                Some(c) => format!("{} exited with status {c}", cmd.name),
                None => format!("{} was killed by a signal", cmd.name),
            }),
        ),
        End::Exited(Err(e)) => (
            StepOutcome::Error,
            None,
            Some(format!("waiting for {}: {e}", cmd.name)),
        ),
        End::TimedOut => (
            StepOutcome::TimedOut,
            None,
            Some(format!(
                "{} timed out after {:?} and was killed",
                cmd.name, cmd.timeout
            )),
        ),
        End::Cancelled => (
            StepOutcome::Error,
            None,
            Some(format!("{} was stopped", cmd.name)),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(argv: &[&str], timeout_ms: u64) -> StepCommand {
        StepCommand {
            name: "t".into(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            cwd: std::env::temp_dir(),
            env: vec![("PATH".into(), std::env::var("PATH").unwrap_or_default())],
            timeout: Duration::from_millis(timeout_ms),
            tail_bytes: 16,
        }
    }

    #[tokio::test]
    async fn exit_status_decides_the_outcome() {
        let ok = run_step(&cmd(&["true"], 5_000), &CancellationToken::new()).await;
        assert_eq!(ok.outcome, StepOutcome::Passed);
        let bad = run_step(
            &cmd(&["sh", "-c", "exit 3"], 5_000),
            &CancellationToken::new(),
        )
        .await;
        assert_eq!((bad.outcome, bad.exit_code), (StepOutcome::Failed, Some(3)));
    }

    #[tokio::test]
    async fn only_the_tail_of_the_output_is_kept() {
        let out = run_step(
            &cmd(&["sh", "-c", "echo 0123456789; echo abcdefghij >&2"], 5_000),
            &CancellationToken::new(),
        )
        .await;
        assert_eq!(out.output_tail.len(), 16);
        assert!(
            out.output_tail.ends_with("abcdefghij\n"),
            "{:?}",
            out.output_tail
        );
    }

    fn alive(pid: &str) -> bool {
        // A killed process is gone, or a zombie waiting to be reaped.
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => !stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z'),
            Err(_) => false,
        }
    }

    #[tokio::test]
    async fn a_timeout_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("grandchild.pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let out = run_step(&cmd(&["sh", "-c", &script], 300), &CancellationToken::new()).await;
        assert_eq!(out.outcome, StepOutcome::TimedOut);
        let pid = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .to_string();
        // SIGKILL was sent to the group before run_step returned; allow the
        // kernel a moment to finish delivering it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(&pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!alive(&pid), "grandchild {pid} outlived the step's timeout");
    }

    #[tokio::test]
    async fn a_missing_program_is_an_error_not_a_panic() {
        let out = run_step(
            &cmd(&["/nonexistent/forgeline-test"], 1_000),
            &CancellationToken::new(),
        )
        .await;
        assert_eq!(out.outcome, StepOutcome::Error);
        assert!(out.error.unwrap().contains("cannot start"));
    }
}
