//! Group commit: one thread makes every applied write durable, many at a time.
//!
//! Why not `flush_async`: in sled 0.34.7 it deadlocks with 8 or more concurrent
//! callers (spacejam/sled#1308). Why not `flush` alone: it ends in
//! `sync_file_range`, which survives a process crash but not a power loss. So a
//! single committer thread, woken by writers, reads how far writes have been
//! applied, runs the blocking `flush()`, then `fdatasync`s sled's log file (and any
//! new blob files), and publishes the new durable watermark. Every writer whose
//! write was applied before the round began is released by that one round.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use tokio::sync::watch;

/// How far writes are durable; published after each commit round.
#[derive(Debug, Clone, Default)]
pub struct Durable {
    /// Writes up to this sequence number are on stable storage.
    pub seq: u64,
    /// Events up to this id are on stable storage (streams read up to here).
    pub event_id: u64,
    /// Writes up to this sequence number were in a round that failed.
    pub failed_through: u64,
    /// The last failure, for the error returned to its waiters.
    pub error: Option<Arc<str>>,
    /// Successful commit rounds (flush + fdatasync) since the store opened.
    pub rounds: u64,
}

/// Progress of applied (not yet durable) writes, set by the writer lock holder.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    pub seq: AtomicU64,
    pub event_id: AtomicU64,
}

#[derive(Default)]
struct Signal {
    pending: bool,
    stop: bool,
}

/// Handle on the committer thread.
pub(crate) struct Committer {
    signal: Arc<(Mutex<Signal>, Condvar)>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Committer {
    /// Starts the committer for the sled database in `dir`.
    pub fn start(
        db: sled::Db,
        dir: &Path,
        applied: Arc<Applied>,
        durable: watch::Sender<Durable>,
    ) -> std::io::Result<Committer> {
        let log = File::open(dir.join("db"))?;
        let signal = Arc::new((Mutex::new(Signal::default()), Condvar::new()));
        let round = Round {
            db,
            log,
            blobs: dir.join("blobs"),
            synced_blobs: HashSet::new(),
            applied,
            durable,
        };
        let thread_signal = signal.clone();
        let thread = std::thread::Builder::new()
            .name("forgeline-commit".into())
            .spawn(move || round.run(&thread_signal))?;
        Ok(Committer {
            signal,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Asks for a commit round (cheap; many requests fold into one round).
    pub fn request(&self) {
        let (lock, cv) = &*self.signal;
        let mut s = lock.lock().unwrap_or_else(|e| e.into_inner());
        if !s.pending {
            s.pending = true;
            cv.notify_one();
        }
    }

    /// Runs a last round and stops the thread.
    pub fn stop(&self) {
        {
            let (lock, cv) = &*self.signal;
            let mut s = lock.lock().unwrap_or_else(|e| e.into_inner());
            s.pending = true;
            s.stop = true;
            cv.notify_one();
        }
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Round {
    db: sled::Db,
    log: File,
    blobs: PathBuf,
    synced_blobs: HashSet<OsString>,
    applied: Arc<Applied>,
    durable: watch::Sender<Durable>,
}

impl Round {
    fn run(mut self, signal: &(Mutex<Signal>, Condvar)) {
        let (lock, cv) = signal;
        loop {
            let stop = {
                let mut s = lock.lock().unwrap_or_else(|e| e.into_inner());
                while !s.pending && !s.stop {
                    s = cv.wait(s).unwrap_or_else(|e| e.into_inner());
                }
                s.pending = false;
                s.stop
            };
            self.commit_once();
            if stop {
                return;
            }
        }
    }

    fn commit_once(&mut self) {
        // Read the watermark before flushing: everything applied up to here is
        // in sled's buffers and will be covered by this flush.
        let seq = self.applied.seq.load(Ordering::Acquire);
        let event_id = self.applied.event_id.load(Ordering::Acquire);
        if seq <= self.durable.borrow().seq {
            return;
        }
        match self.flush_and_sync() {
            Ok(()) => {
                self.durable.send_modify(|d| {
                    d.seq = seq;
                    d.event_id = event_id;
                    d.rounds += 1;
                });
            }
            Err(e) => {
                tracing::error!(error = %e, "store commit failed; acknowledged writes are refused until it succeeds");
                let msg: Arc<str> = Arc::from(e.to_string());
                self.durable.send_modify(|d| {
                    d.failed_through = seq;
                    d.error = Some(msg);
                });
            }
        }
    }

    fn flush_and_sync(&mut self) -> std::io::Result<()> {
        self.db.flush().map_err(std::io::Error::other)?;
        self.log.sync_data()?;
        self.sync_new_blobs()
    }

    /// sled writes values too large for a log segment as separate files and does
    /// not sync them; sync each new one (and the directory entry) once.
    fn sync_new_blobs(&mut self) -> std::io::Result<()> {
        let entries = match std::fs::read_dir(&self.blobs) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut seen = HashSet::new();
        let mut new = false;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            if !self.synced_blobs.contains(&name) {
                File::open(entry.path())?.sync_data()?;
                new = true;
            }
            seen.insert(name);
        }
        if new {
            File::open(&self.blobs)?.sync_all()?;
        }
        self.synced_blobs = seen;
        Ok(())
    }
}
