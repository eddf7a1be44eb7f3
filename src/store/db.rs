//! The store handle: opening the database (trees, schema check, event
//! counter, committer), the write entry point that turns a [`Txn`] into one
//! atomic batch, durability waits, flushing and shutdown. Reads live in `read`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::buckets::Buckets;
use super::commit::{Committer, Durable, Target, WriterState};
use super::error::{sled_err, StoreError};
use super::keys;
use super::layers::Layers;
use super::schema::{DATA_TREE, META_SCHEMA, META_TREE, RATELIMIT_TREE, SCHEMA_VERSION};
use super::space::Reserve;
use super::txn::Txn;
use super::Durability;

/// Proof that a write was applied; await [`Store::wait_durable`] with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[must_use = "a write is only acknowledged once it is durable"]
pub struct Commit {
    seq: u64,
}

impl Commit {
    /// The later of two commits (waiting for it covers both).
    pub fn max(self, other: Commit) -> Commit {
        std::cmp::max(self, other)
    }
}

/// How a store is opened (the `[store]` config section minus the path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// How far an acknowledged write has travelled.
    pub durability: Durability,
    /// sled's page cache, in bytes (sled's own default is 1 GiB).
    pub cache_bytes: u64,
    /// Writes are refused while the file system has fewer free bytes than
    /// this (0: never).
    pub min_free_bytes: u64,
}

impl StoreOptions {
    /// The defaults of `[store]`, with `durability`.
    pub fn new(durability: Durability) -> StoreOptions {
        StoreOptions {
            durability,
            cache_bytes: DEFAULT_CACHE_BYTES,
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
        }
    }
}

/// `store.cache_bytes`' default: enough for the hot part of a workstation's
/// store (the ready index, recent tasks and events) without sled's 1 GiB.
pub const DEFAULT_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// `store.min_free_bytes`' default.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 256 * 1024 * 1024;

/// A pending group this large asks for a round even when nobody waits.
const PENDING_ROUND_KEYS: usize = 4096;

struct Inner {
    db: sled::Db,
    data: sled::Tree,
    meta: sled::Tree,
    buckets: Arc<Buckets>,
    dir: PathBuf,
    durability: Durability,
    writer: Arc<Mutex<WriterState>>,
    layers: Arc<RwLock<Layers>>,
    committer: Committer,
    durable_tx: watch::Sender<Durable>,
    reserve: Reserve,
    snapshots: Arc<super::snapshot::Snapshots>,
    /// Tasks inside `wait_durable` right now.
    waiting: AtomicUsize,
    /// When the running commit round began (ms since `epoch`, 0: none).
    round_began_ms: Arc<AtomicU64>,
    epoch: Instant,
}

/// A cheap, cloneable handle on the store.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.inner.dir)
            .finish()
    }
}

impl Store {
    /// Opens (creating if needed) the store in `dir` with the default cache
    /// and free-space reserve.
    pub fn open(dir: &Path, durability: Durability) -> Result<Store, StoreError> {
        Store::open_with(dir, StoreOptions::new(durability))
    }

    /// Opens (creating if needed) the store in `dir`.
    pub fn open_with(dir: &Path, opts: StoreOptions) -> Result<Store, StoreError> {
        let durability = opts.durability;
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Open {
            path: dir.to_path_buf(),
            source,
        })?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(opts.cache_bytes)
            .open()
            .map_err(sled_err("opening the database"))?;
        let data = db
            .open_tree(DATA_TREE)
            .map_err(sled_err("opening the data tree"))?;
        let buckets = Arc::new(Buckets::new(
            db.open_tree(RATELIMIT_TREE)
                .map_err(sled_err("opening the rate-limit tree"))?,
        ));
        let meta = db
            .open_tree(META_TREE)
            .map_err(sled_err("opening the meta tree"))?;
        check_schema(&meta)?;
        let last_event_id = last_event_id(&data)?;
        let (durable_tx, _) = watch::channel(Durable {
            event_id: last_event_id,
            ..Durable::default()
        });
        let writer = Arc::new(Mutex::new(WriterState::new(last_event_id)));
        let layers = Arc::new(RwLock::new(Layers {
            pending_event_id: last_event_id,
            ..Layers::default()
        }));
        let round_began_ms = Arc::new(AtomicU64::new(0));
        let epoch = Instant::now();
        let snapshots = Arc::new(super::snapshot::Snapshots::default());
        let target = Target {
            snapshots: snapshots.clone(),
            data: data.clone(),
            layers: layers.clone(),
            writer: writer.clone(),
            buckets: buckets.clone(),
            sync: durability == Durability::Sync,
            round_began_ms: round_began_ms.clone(),
            epoch,
        };
        let committer =
            Committer::start(db.clone(), dir, target, durable_tx.clone()).map_err(|source| {
                StoreError::Open {
                    path: dir.to_path_buf(),
                    source,
                }
            })?;
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                data,
                meta,
                buckets,
                dir: dir.to_path_buf(),
                durability,
                writer,
                layers,
                committer,
                durable_tx,
                reserve: Reserve::new(dir.to_path_buf(), opts.min_free_bytes),
                snapshots,
                waiting: AtomicUsize::new(0),
                round_began_ms,
                epoch,
            }),
        })
    }

    /// The durability mode this store was opened with.
    pub fn durability(&self) -> Durability {
        self.inner.durability
    }

    /// The schema version recorded in the meta tree.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        let v = self
            .inner
            .meta
            .get(META_SCHEMA)
            .map_err(sled_err("reading the schema version"))?;
        Ok(
            v.map(|v| u32::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 4])))
                .unwrap_or(0),
        )
    }

    /// The data tree, for the reads in `read`.
    pub(super) fn data(&self) -> &sled::Tree {
        &self.inner.data
    }

    /// The write groups, for the reads in `read`.
    pub(super) fn layers(&self) -> &RwLock<Layers> {
        &self.inner.layers
    }

    /// The snapshot registry, for `backup`.
    pub(super) fn snapshots(&self) -> &Arc<super::snapshot::Snapshots> {
        &self.inner.snapshots
    }

    /// The rate-limit buckets, for `update_bucket` in `read`.
    pub(super) fn buckets(&self) -> &Buckets {
        &self.inner.buckets
    }

    /// Runs `f` under the writer lock and applies what it wrote as one atomic
    /// batch. Nothing is written when `f` fails.
    pub fn write<T, E>(
        &self,
        f: impl FnOnce(&mut Txn<'_>) -> Result<T, E>,
    ) -> Result<(T, Commit), E>
    where
        E: From<StoreError>,
    {
        self.inner.reserve.check()?;
        super::commit::check_not_stalled(&self.inner.round_began_ms, self.inner.epoch)?;
        self.write_in_reserve(f)
    }

    /// The error that poisoned the store (a group that failed to apply).
    fn poisoned(&self) -> Option<StoreError> {
        let d = self.inner.durable_tx.borrow();
        (d.failed_through == super::commit::POISONED)
            .then(|| StoreError::Commit(d.error.clone().unwrap_or_else(|| Arc::from("unknown"))))
    }

    /// Whether a commit round has run for over [`STALL_AFTER`](super::STALL_AFTER).
    pub fn stalled(&self) -> bool {
        super::commit::check_not_stalled(&self.inner.round_began_ms, self.inner.epoch).is_err()
    }

    /// Like [`Store::write`], but not refused below the free-space reserve:
    /// for the few small records that must exist even then, such as the audit
    /// record of a request that was refused for want of space. The reserve is
    /// there to leave room for exactly these.
    pub fn write_in_reserve<T, E>(
        &self,
        f: impl FnOnce(&mut Txn<'_>) -> Result<T, E>,
    ) -> Result<(T, Commit), E>
    where
        E: From<StoreError>,
    {
        let inner = &*self.inner;
        if let Some(e) = self.poisoned() {
            return Err(e.into());
        }
        let mut state = inner.writer.lock().unwrap_or_else(|e| e.into_inner());
        let state = &mut *state;
        let mut txn = Txn::new(
            &inner.data,
            &inner.layers,
            state.last_event_id + 1,
            &mut state.ulids,
        );
        let out = f(&mut txn)?;
        let (writes, next_event_id) = txn.into_parts();
        // Only a written transaction advances the counters, so a failed `f`
        // leaves no gap in sequence numbers or event ids.
        state.seq += 1;
        state.last_event_id = next_event_id - 1;
        let commit = Commit { seq: state.seq };
        let pending_keys = {
            let mut l = inner.layers.write().unwrap_or_else(|e| e.into_inner());
            l.pending.extend(writes);
            l.pending_seq = state.seq;
            l.pending_event_id = state.last_event_id;
            l.pending.len()
        };
        // When to start a commit round. With nobody waiting (one client, an
        // idle server) the round waits for the first waiter: inside a request
        // the handler's writes and the audit record are all in the pending
        // group before the middleware waits, so one round (one sled batch, one
        // flush, one fdatasync) covers the request. With others already
        // waiting (many clients) the round starts now, so that the disk is
        // kept busy: measured, waiting for a waiter there cost 14-18 % of the
        // 64-client submit rate.
        if inner.waiting.load(Ordering::Relaxed) > 0 || pending_keys >= PENDING_ROUND_KEYS {
            inner.committer.request();
        }
        Ok((out, commit))
    }

    /// Waits until `commit` is on stable storage (at once in relaxed mode),
    /// asking the committer for a round when none has covered it yet.
    pub async fn wait_durable(&self, commit: Commit) -> Result<(), StoreError> {
        /// Counts this wait in `waiting` until it returns (or is dropped).
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.inner.waiting.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(&self.inner.waiting);
        let mut rx = self.inner.durable_tx.subscribe();
        if rx.borrow().seq < commit.seq {
            self.inner.committer.request();
        }
        let d = rx
            .wait_for(|d| d.seq >= commit.seq || d.failed_through >= commit.seq)
            .await
            .map_err(|_| StoreError::Closed)?;
        if d.seq >= commit.seq {
            Ok(())
        } else {
            Err(StoreError::Commit(
                d.error.clone().unwrap_or_else(|| Arc::from("unknown")),
            ))
        }
    }

    /// Watches the durable watermark (event streams read up to it).
    pub fn durable(&self) -> watch::Receiver<Durable> {
        self.inner.durable_tx.subscribe()
    }

    /// Checks that the store accepts a write and can commit it.
    pub async fn probe_write(&self) -> Result<(), StoreError> {
        let ((), c) = self.write(|_txn| Ok::<_, StoreError>(()))?;
        self.wait_durable(c).await
    }

    /// Flushes and fdatasyncs right now, outside the group committer: what a
    /// write would cost if every request paid for its own flush. Used by the
    /// commit benchmark (after `wait_durable` in relaxed mode, which applies
    /// the write); request paths use [`Store::wait_durable`].
    pub fn sync_now(&self) -> Result<(), StoreError> {
        self.inner.db.flush().map_err(sled_err("flushing"))?;
        std::fs::File::open(self.inner.dir.join("db"))
            .and_then(|f| f.sync_data())
            .map_err(|source| StoreError::Open {
                path: self.inner.dir.clone(),
                source,
            })
    }

    /// Applies and flushes everything (shutdown) and stops the committer,
    /// giving up after `timeout` when the disk does not answer (what was not
    /// durable then was never acknowledged).
    pub fn close_within(&self, timeout: Duration) -> Result<(), StoreError> {
        if !self.inner.committer.stop(timeout) {
            return Err(StoreError::Stalled {
                secs: timeout.as_secs(),
            });
        }
        self.inner
            .db
            .flush()
            .map_err(sled_err("flushing at shutdown"))?;
        Ok(())
    }

    /// [`Store::close_within`] with a generous timeout (tools and tests).
    pub fn close(&self) -> Result<(), StoreError> {
        self.close_within(Duration::from_secs(60))
    }

    /// Bytes the store occupies on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.inner.db.size_on_disk().unwrap_or(0)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }
}

/// Refuses a store written by a newer schema; stamps a new store with ours.
fn check_schema(meta: &sled::Tree) -> Result<(), StoreError> {
    match meta
        .get(META_SCHEMA)
        .map_err(sled_err("reading the schema version"))?
    {
        Some(v) => {
            // An unreadable version counts as "newer": refuse rather than guess.
            let found = u32::from_be_bytes(v.as_ref().try_into().unwrap_or([0xff; 4]));
            if found > SCHEMA_VERSION {
                return Err(StoreError::NewerSchema { found });
            }
        }
        None => {
            meta.insert(META_SCHEMA, &SCHEMA_VERSION.to_be_bytes())
                .map_err(sled_err("writing the schema version"))?;
        }
    }
    Ok(())
}

/// The id of the last stored event (0 when there is none), where the event
/// counter resumes after a restart.
/// The last event id taken: the newest stored event's, or the highest id
/// retention removed when that is newer (ids must never be reused).
fn last_event_id(data: &sled::Tree) -> Result<u64, StoreError> {
    let stored = data
        .scan_prefix([keys::EVENT])
        .keys()
        .next_back()
        .transpose()
        .map_err(sled_err("reading the last event id"))?
        .and_then(|k| keys::parse_event(&k))
        .unwrap_or(0);
    let pruned = data
        .get(keys::PRUNED_EVENT)
        .map_err(sled_err("reading the last event id"))?
        .map_or(0, |v| super::txn::decode_count(&v));
    Ok(stored.max(pruned))
}

#[cfg(test)]
#[path = "db_tests.rs"]
mod tests;
