//! Running the real `forgeline` binary (for crash and signal tests).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::client::TestClient;

/// A `forgeline serve` child process on 127.0.0.1 and a free port.
pub struct ServerProcess {
    pub child: Child,
    /// The admin token the server wrote on its first start.
    pub admin_token: String,
    /// Every line the server wrote to stderr so far.
    pub logs: Arc<Mutex<Vec<String>>>,
    api: TestClient,
}

impl ServerProcess {
    /// Starts the server on `data_dir` (plus extra args) and waits until it
    /// listens. Rate limits are off: these tests drive load from one principal.
    pub fn start(data_dir: &Path, extra: &[&str]) -> ServerProcess {
        Self::start_with_env(
            data_dir,
            extra,
            &[("FORGELINE_RATELIMIT__ENABLED", "false")],
        )
    }

    /// `start` with extra environment variables.
    pub fn start_with_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> ServerProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_forgeline"))
            .args(["serve", "--port", "0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("FORGELINE_LOG__FORMAT", "json")
            .env("FORGELINE_EXECUTOR__ENABLED", "false")
            .envs(env.iter().copied())
            .env_remove("RUST_LOG")
            .env_remove("FORGELINE_JWT_SECRET")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("forgeline starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let logs: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = logs.clone();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if !sent {
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                        if v["message"] == "forgeline listening" {
                            let _ =
                                tx.send(v["addr"].as_str().unwrap().parse::<SocketAddr>().unwrap());
                            sent = true;
                        }
                    }
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server logs its address");
        let admin_token = std::fs::read_to_string(data_dir.join("admin-token"))
            .expect("the first start writes an admin token")
            .trim()
            .to_string();
        ServerProcess {
            child,
            api: TestClient::new(addr, Some(&admin_token)),
            admin_token,
            logs,
        }
    }

    /// The client sending the admin token.
    pub fn api(&self) -> &TestClient {
        &self.api
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// The log lines written so far, joined.
    pub fn log_text(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        // SAFETY: sending a signal to our own child.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        self.child.wait().unwrap()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
