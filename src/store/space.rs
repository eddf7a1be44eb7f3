//! The free-space reserve: writes are refused while the data directory's
//! file system has less than `store.min_free_bytes` free.
//!
//! Why refuse early: sled applies a batch in memory and writes it out later;
//! when the disk fills under that, its flush and its writers block each other
//! and the process stops answering (liveness probes and SIGTERM included).
//! Refusing new writes while there is still room keeps the flushes of what was
//! already applied able to finish, reads and probes answering, and the server
//! stoppable; writes succeed again as soon as space is freed, without a
//! restart. `statvfs` is read at most every `CHECK_EVERY`, so the check costs
//! nothing measurable per write.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::error::StoreError;

/// How long a free-space reading is trusted.
const CHECK_EVERY: Duration = Duration::from_millis(100);

/// The reserve of one store.
#[derive(Debug)]
pub(crate) struct Reserve {
    dir: PathBuf,
    /// Bytes that must stay free; 0 turns the check off.
    min_free: u64,
    started: Instant,
    /// When the next reading is due, in µs since `started`.
    next_check_us: AtomicU64,
    /// Free bytes at the last reading.
    free: AtomicU64,
    /// Whether the last reading was below `min_free`.
    low: AtomicBool,
}

impl Reserve {
    pub(crate) fn new(dir: PathBuf, min_free: u64) -> Reserve {
        Reserve {
            dir,
            min_free,
            started: Instant::now(),
            next_check_us: AtomicU64::new(0),
            free: AtomicU64::new(u64::MAX),
            low: AtomicBool::new(false),
        }
    }

    /// Refuses a write while the file system is below the reserve.
    pub(crate) fn check(&self) -> Result<(), StoreError> {
        if self.min_free == 0 {
            return Ok(());
        }
        let now_us = self.started.elapsed().as_micros() as u64;
        let due = self.next_check_us.load(Ordering::Relaxed);
        if now_us >= due
            && self
                .next_check_us
                .compare_exchange(
                    due,
                    now_us + CHECK_EVERY.as_micros() as u64,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            self.read();
        }
        if self.low.load(Ordering::Relaxed) {
            return Err(StoreError::NoSpace {
                free: self.free.load(Ordering::Relaxed),
                reserve: self.min_free,
            });
        }
        Ok(())
    }

    /// Reads the file system's free space (for unprivileged users: root's
    /// reserved blocks do not count) and logs each crossing of the reserve.
    fn read(&self) {
        let free = match rustix::fs::statvfs(&self.dir) {
            Ok(s) => s.f_bavail.saturating_mul(s.f_frsize),
            Err(e) => {
                // Not knowing is no reason to refuse: sled's own errors remain.
                tracing::warn!(error = %e, dir = %self.dir.display(), "cannot read the data directory's free space");
                return;
            }
        };
        self.free.store(free, Ordering::Relaxed);
        let low = free < self.min_free;
        if self.low.swap(low, Ordering::Relaxed) != low {
            if low {
                tracing::error!(
                    free_bytes = free,
                    min_free_bytes = self.min_free,
                    "the data directory's file system is below its free-space reserve; writes are refused (503) until space is freed"
                );
            } else {
                tracing::warn!(
                    free_bytes = free,
                    min_free_bytes = self.min_free,
                    "free space is back above the reserve; writes are accepted again"
                );
            }
        }
    }
}
