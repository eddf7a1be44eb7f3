//! Group commit: one thread applies every pending write to sled as one batch
//! and makes it durable, many writes at a time.
//!
//! A round takes the pending group (see `layers`), applies it with one
//! `apply_batch`, then (in `sync` durability) flushes and syncs, and
//! publishes how far writes are durable (in `relaxed`, applied). The
//! tokio workers never call into sled's write path: a disk that stalls stalls
//! this thread, and writers see it as a round that does not end.
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
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::error::StoreError;
use super::layers::Layers;

/// What the writer lock guards: counters advanced only by written
/// transactions (and rewound by a failed round).
pub(crate) struct WriterState {
    pub seq: u64,
    pub last_event_id: u64,
    pub ulids: ulid::Generator,
}

impl WriterState {
    pub fn new(last_event_id: u64) -> WriterState {
        WriterState {
            seq: 0,
            last_event_id,
            ulids: ulid::Generator::new(),
        }
    }
}

/// A commit round running longer than this counts as stalled: new writes are
/// refused (503 `store_unavailable`) until it ends, instead of piling up in
/// memory behind a disk that does not answer.
pub const STALL_AFTER: Duration = Duration::from_secs(5);

/// Refuses a write while a commit round has run for longer than
/// [`STALL_AFTER`] (`round_began_ms`: ms since `epoch` plus one, 0: none).
pub(crate) fn check_not_stalled(
    round_began_ms: &AtomicU64,
    epoch: Instant,
) -> Result<(), StoreError> {
    let began = round_began_ms.load(Ordering::Acquire);
    if began == 0 {
        return Ok(());
    }
    let running =
        Duration::from_millis((epoch.elapsed().as_millis() as u64).saturating_sub(began - 1));
    if running > STALL_AFTER {
        return Err(StoreError::Stalled {
            secs: running.as_secs(),
        });
    }
    Ok(())
}

/// `Durable::failed_through` once a group failed to apply: every write fails.
pub(crate) const POISONED: u64 = u64::MAX;

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

/// What a round needs of the store: the tree it applies to, the groups it
/// takes from, and the writer state it rewinds when a group fails.
pub(crate) struct Target {
    pub data: sled::Tree,
    /// Pre-images for an open backup snapshot (see `snapshot`).
    pub snapshots: Arc<super::snapshot::Snapshots>,
    pub layers: Arc<RwLock<Layers>>,
    pub writer: Arc<Mutex<WriterState>>,
    /// Rate-limit buckets, persisted after every round.
    pub buckets: Arc<super::buckets::Buckets>,
    /// Whether rounds flush and sync (`durability = "sync"`).
    pub sync: bool,
    /// When the running round began (ms since `epoch`; 0: none running).
    pub round_began_ms: Arc<AtomicU64>,
    pub epoch: Instant,
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
    /// Receives once when the thread has run its last round.
    done: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

impl Committer {
    /// Starts the committer for the sled database in `dir`.
    pub fn start(
        db: sled::Db,
        dir: &Path,
        target: Target,
        durable: watch::Sender<Durable>,
    ) -> std::io::Result<Committer> {
        let log = File::open(dir.join("db"))?;
        let signal = Arc::new((Mutex::new(Signal::default()), Condvar::new()));
        let round = Round {
            db,
            log,
            blobs: dir.join("blobs"),
            synced_blobs: HashSet::new(),
            target,
            durable,
        };
        let thread_signal = signal.clone();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("forgeline-commit".into())
            .spawn(move || {
                round.run(&thread_signal);
                let _ = done_tx.send(());
            })?;
        Ok(Committer {
            signal,
            thread: Mutex::new(Some(thread)),
            done: Mutex::new(Some(done_rx)),
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

    /// Runs a last round and stops the thread, waiting at most `timeout` for
    /// it (a round stuck on a stalled disk must not hold up the process's
    /// exit). Returns whether the thread finished.
    pub fn stop(&self, timeout: Duration) -> bool {
        {
            let (lock, cv) = &*self.signal;
            let mut s = lock.lock().unwrap_or_else(|e| e.into_inner());
            s.pending = true;
            s.stop = true;
            cv.notify_one();
        }
        let done = self.done.lock().unwrap_or_else(|e| e.into_inner()).take();
        let finished = match done {
            Some(rx) => rx.recv_timeout(timeout).is_ok(),
            // Stopped before: finished if the thread was joined.
            None => self
                .thread
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_none(),
        };
        if finished {
            let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(h) = handle {
                let _ = h.join();
            }
        }
        finished
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(30));
    }
}

struct Round {
    db: sled::Db,
    log: File,
    blobs: PathBuf,
    synced_blobs: HashSet<OsString>,
    target: Target,
    durable: watch::Sender<Durable>,
}

impl Round {
    fn run(mut self, signal: &(Mutex<Signal>, Condvar)) {
        let (lock, cv) = signal;
        loop {
            let stop = {
                let mut s = lock.lock().unwrap_or_else(|e| e.into_inner());
                if !s.pending && !s.stop {
                    // Wakes at least every PERSIST_EVERY for the buckets.
                    s = cv
                        .wait_timeout(s, super::buckets::PERSIST_EVERY)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                s.pending = false;
                s.stop
            };
            // Both the round and the buckets' persist write to sled, and
            // either can be the one stuck on a stalled disk.
            let t = &self.target;
            t.round_began_ms
                .store(t.epoch.elapsed().as_millis() as u64 + 1, Ordering::Release);
            self.commit_once();
            if let Err(e) = self.target.buckets.persist() {
                tracing::error!(error = %e, "persisting rate-limit buckets failed; they stay in memory");
            }
            let t = &self.target;
            let began = t.round_began_ms.swap(0, Ordering::AcqRel);
            let took = (t.epoch.elapsed().as_millis() as u64).saturating_sub(began - 1);
            if Duration::from_millis(took) > STALL_AFTER {
                tracing::warn!(
                    took_ms = took,
                    "a store commit round took {took} ms; writes were refused with 503 while it ran"
                );
            }
            if stop {
                return;
            }
        }
    }

    fn commit_once(&mut self) {
        let t = &self.target;
        // Take the pending group; it stays readable as `applying` until sled
        // has it.
        let (group, seq, event_id) = {
            let mut l = t.layers.write().unwrap_or_else(|e| e.into_inner());
            if l.pending_seq <= self.durable.borrow().seq && l.pending.is_empty() {
                return;
            }
            let group = Arc::new(std::mem::take(&mut l.pending));
            l.applying = Some(group.clone());
            (group, l.pending_seq, l.pending_event_id)
        };
        let result = self.apply(&group).and_then(|()| {
            if self.target.sync {
                self.flush_and_sync()
            } else {
                Ok(())
            }
        });
        match result {
            Ok(()) => {
                self.durable.send_modify(|d| {
                    d.seq = seq;
                    d.event_id = event_id;
                    d.rounds += 1;
                });
            }
            Err(e) => self.fail(seq, &e),
        }
    }

    /// Applies a group as one atomic sled batch, then drops it from the
    /// layers (readers find it in sled from here on).
    fn apply(&self, group: &Arc<super::layers::Overlay>) -> std::io::Result<()> {
        if !group.is_empty() {
            let mut batch = sled::Batch::default();
            for (k, v) in group.iter() {
                match v {
                    Some(v) => batch.insert(k.as_slice(), v.clone()),
                    None => batch.remove(k.as_slice()),
                }
            }
            let t = &self.target;
            if let Err(e) = t
                .snapshots
                .apply_with(&t.data, group, || t.data.apply_batch(batch))
            {
                return Err(std::io::Error::other(e));
            }
        }
        let mut l = self
            .target
            .layers
            .write()
            .unwrap_or_else(|e| e.into_inner());
        l.applying = None;
        Ok(())
    }

    /// A failed round. A failed flush or sync: the round's writers get the
    /// error (their writes are applied, and a later round may still make them
    /// durable). A group that never reached sled: it is dropped with every
    /// write pending behind it (they may have read what it wrote), and the
    /// store is poisoned — every current and later write fails until a
    /// restart, as sled itself does after such an error. Poisoning is what
    /// keeps "durable in order" true: a request waits only for its last
    /// write, which must not succeed after an earlier one was dropped.
    fn fail(&self, seq: u64, e: &std::io::Error) {
        let mut w = self.target.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut l = self
            .target
            .layers
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let dropped = l.applying.is_some();
        let through = if dropped {
            tracing::error!(error = %e, "store write failed; the store refuses writes until it is restarted");
            l.applying = None;
            l.pending.clear();
            let durable_event = self.durable.borrow().event_id;
            w.last_event_id = durable_event;
            l.pending_event_id = durable_event;
            POISONED
        } else {
            tracing::error!(error = %e, "store commit failed; acknowledged writes are refused until it succeeds");
            seq
        };
        let msg: Arc<str> = Arc::from(e.to_string());
        self.durable.send_modify(|d| {
            d.failed_through = d.failed_through.max(through);
            d.error = Some(msg);
        });
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
