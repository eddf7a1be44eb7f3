//! Progress of a bench run on stderr, when stderr is a terminal.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often the running phase's counter is redrawn.
const REDRAW_EVERY: Duration = Duration::from_millis(200);

/// Progress on stderr when it is a terminal; silent otherwise.
#[derive(Debug)]
pub struct Progress {
    enabled: bool,
    ticker: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// The counter of the running phase.
#[derive(Debug, Clone)]
pub struct Tick(Arc<AtomicU64>);

impl Tick {
    /// Counts one operation.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Sets the count (phases that read it from the server).
    pub fn set(&self, n: u64) {
        self.0.store(n, Ordering::Relaxed);
    }
}

impl Progress {
    /// A display that prints only when `enabled`.
    pub fn new(enabled: bool) -> Progress {
        Progress {
            enabled,
            ticker: Mutex::new(None),
        }
    }

    /// A one-line status (replaces the previous one).
    pub fn note(&self, message: &str) {
        if self.enabled {
            let mut e = std::io::stderr().lock();
            let _ = write!(e, "\r\x1b[2K{message}");
            let _ = e.flush();
        }
    }

    /// Starts a phase; its counter is shown against `total` (0: no total).
    pub fn phase(&self, label: impl Into<String>, total: u64) -> Tick {
        let count = Arc::new(AtomicU64::new(0));
        if self.enabled {
            let (label, c) = (label.into(), count.clone());
            let handle = tokio::spawn(async move {
                loop {
                    let n = c.load(Ordering::Relaxed);
                    let line = if total > 0 {
                        format!("{label}: {n}/{total}")
                    } else {
                        format!("{label}: {n}")
                    };
                    {
                        let mut e = std::io::stderr().lock();
                        let _ = write!(e, "\r\x1b[2K{line}");
                        let _ = e.flush();
                    }
                    tokio::time::sleep(REDRAW_EVERY).await;
                }
            });
            if let Some(old) = self.ticker.lock().expect("not poisoned").replace(handle) {
                old.abort();
            }
        }
        Tick(count)
    }

    /// Ends the running phase's display.
    pub fn done(&self) {
        if let Some(t) = self.ticker.lock().expect("not poisoned").take() {
            t.abort();
        }
    }

    /// Clears the status line.
    pub fn clear(&self) {
        self.done();
        self.note("");
    }
}
