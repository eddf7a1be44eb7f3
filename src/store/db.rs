//! The store handle: opening the database (trees, schema check, event
//! counter, committer), the write entry point that turns a [`Txn`] into one
//! atomic batch, durability waits, flushing and shutdown. Reads live in `read`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::commit::{Applied, Committer, Durable};
use super::error::{sled_err, StoreError};
use super::keys;
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

/// What the writer lock guards: counters advanced only by applied writes.
struct WriterState {
    seq: u64,
    last_event_id: u64,
    ulids: ulid::Generator,
}

struct Inner {
    db: sled::Db,
    data: sled::Tree,
    meta: sled::Tree,
    ratelimit: sled::Tree,
    dir: PathBuf,
    durability: Durability,
    writer: Mutex<WriterState>,
    applied: Arc<Applied>,
    committer: Option<Committer>,
    durable_tx: watch::Sender<Durable>,
    reserve: Reserve,
    /// Tasks inside `wait_durable` right now.
    waiting: AtomicUsize,
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
        let ratelimit = db
            .open_tree(RATELIMIT_TREE)
            .map_err(sled_err("opening the rate-limit tree"))?;
        let meta = db
            .open_tree(META_TREE)
            .map_err(sled_err("opening the meta tree"))?;
        check_schema(&meta)?;
        let last_event_id = last_event_id(&data)?;
        let applied = Arc::new(Applied::default());
        applied.event_id.store(last_event_id, Ordering::Release);
        let (durable_tx, _) = watch::channel(Durable {
            event_id: last_event_id,
            ..Durable::default()
        });
        let committer = match durability {
            Durability::Sync => Some(
                Committer::start(db.clone(), dir, applied.clone(), durable_tx.clone()).map_err(
                    |source| StoreError::Open {
                        path: dir.to_path_buf(),
                        source,
                    },
                )?,
            ),
            Durability::Relaxed => None,
        };
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                data,
                meta,
                ratelimit,
                dir: dir.to_path_buf(),
                durability,
                writer: Mutex::new(WriterState {
                    seq: 0,
                    last_event_id,
                    ulids: ulid::Generator::new(),
                }),
                applied,
                committer,
                durable_tx,
                reserve: Reserve::new(dir.to_path_buf(), opts.min_free_bytes),
                waiting: AtomicUsize::new(0),
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

    /// The rate-limit tree, for `update_bucket` in `read`.
    pub(super) fn ratelimit_tree(&self) -> &sled::Tree {
        &self.inner.ratelimit
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
        self.write_in_reserve(f)
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
        let mut state = inner.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut txn = Txn::new(&inner.data, state.last_event_id + 1, &mut state.ulids);
        let out = f(&mut txn)?;
        let (batch, next_event_id) = txn.into_batch();
        inner
            .data
            .apply_batch(batch)
            .map_err(sled_err("applying a write batch"))?;
        // Only an applied batch advances the counters, so a failed `f` or a
        // failed batch leaves no gap in sequence numbers or event ids.
        state.seq += 1;
        state.last_event_id = next_event_id - 1;
        let commit = Commit { seq: state.seq };
        inner
            .applied
            .event_id
            .store(state.last_event_id, Ordering::Release);
        inner.applied.seq.store(state.seq, Ordering::Release);
        // When to start a commit round. With nobody waiting (one client, an
        // idle server) the round waits for the first waiter: inside a request
        // the handler's writes and the audit record are all applied before the
        // middleware waits, so one round (one flush, one fdatasync) covers the
        // request, not one for the handler's write and one for the audit
        // record. With others already waiting (many clients) the round starts
        // now, so that the disk is kept busy: measured, waiting for a waiter
        // there cost 14-18 % of the 64-client submit rate.
        if let Some(c) = &inner.committer {
            if inner.waiting.load(Ordering::Relaxed) > 0 {
                c.request();
            }
        }
        if inner.committer.is_none() {
            // Relaxed mode has no committer: an applied write counts as
            // durable at once.
            let (seq, event_id) = (state.seq, state.last_event_id);
            inner.durable_tx.send_modify(|d| {
                d.seq = seq;
                d.event_id = event_id;
            });
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
        if let Some(c) = &self.inner.committer {
            if rx.borrow().seq < commit.seq {
                c.request();
            }
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
    /// commit benchmark; request paths use [`Store::wait_durable`].
    pub fn sync_now(&self) -> Result<(), StoreError> {
        self.inner.db.flush().map_err(sled_err("flushing"))?;
        std::fs::File::open(self.inner.dir.join("db"))
            .and_then(|f| f.sync_data())
            .map_err(|source| StoreError::Open {
                path: self.inner.dir.clone(),
                source,
            })
    }

    /// Flushes everything (shutdown) and stops the committer.
    pub fn close(&self) -> Result<(), StoreError> {
        self.inner
            .db
            .flush()
            .map_err(sled_err("flushing at shutdown"))?;
        if let Some(c) = &self.inner.committer {
            c.stop();
        }
        Ok(())
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
fn last_event_id(data: &sled::Tree) -> Result<u64, StoreError> {
    Ok(data
        .scan_prefix([keys::EVENT])
        .keys()
        .next_back()
        .transpose()
        .map_err(sled_err("reading the last event id"))?
        .and_then(|k| keys::parse_event(&k))
        .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Record;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Thing(u32);
    impl Record for Thing {
        const VERSION: u8 = 1;
    }

    fn open(d: Durability) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), d).unwrap();
        (dir, s)
    }

    #[tokio::test]
    async fn writes_applied_before_one_wait_share_one_commit_round() {
        let (_d, s) = open(Durability::Sync);
        // A handler's write and the request's audit record, then the wait.
        let ((), a) = s.write(|t| t.put(b"a".to_vec(), &Thing(1))).unwrap();
        let ((), b) = s.write(|t| t.put(b"b".to_vec(), &Thing(2))).unwrap();
        // Applying asks for no round: nothing is durable until someone waits.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(s.durable().borrow().rounds, 0);
        s.wait_durable(a.max(b)).await.unwrap();
        assert_eq!(s.durable().borrow().rounds, 1);
        // Waiting for a write that is already durable costs no round.
        s.wait_durable(a).await.unwrap();
        assert_eq!(s.durable().borrow().rounds, 1);
    }

    #[tokio::test]
    async fn a_failed_transaction_writes_nothing_and_takes_no_event_id() {
        let (_d, s) = open(Durability::Sync);
        let r: Result<((), Commit), StoreError> = s.write(|t| {
            t.put(b"k".to_vec(), &Thing(1))?;
            t.next_event_id();
            Err(StoreError::Closed)
        });
        assert!(r.is_err());
        assert_eq!(s.get::<Thing>(b"k").unwrap(), None);
        let (id, c) = s.write(|t| Ok::<_, StoreError>(t.next_event_id())).unwrap();
        assert_eq!(id, 1);
        s.wait_durable(c).await.unwrap();
        assert_eq!(s.durable().borrow().event_id, 1);
    }

    #[tokio::test]
    async fn reads_inside_a_write_see_its_own_writes() {
        let (_d, s) = open(Durability::Relaxed);
        let (got, c) = s
            .write(|t| {
                t.put(b"a1".to_vec(), &Thing(1))?;
                t.put_raw(b"a0".to_vec(), b"");
                let first = t.first_key(b"a")?;
                t.delete(b"a0".to_vec());
                let second = t.first_key(b"a")?;
                Ok::<_, StoreError>((t.get::<Thing>(b"a1")?, first, second))
            })
            .unwrap();
        s.wait_durable(c).await.unwrap();
        assert_eq!(got.0, Some(Thing(1)));
        assert_eq!(got.1.as_deref(), Some(&b"a0"[..]));
        assert_eq!(got.2.as_deref(), Some(&b"a1"[..]));
    }

    #[tokio::test]
    async fn many_concurrent_writers_share_commit_rounds() {
        let (_d, s) = open(Durability::Sync);
        let mut handles = Vec::new();
        for i in 0..64u32 {
            let s = s.clone();
            handles.push(tokio::spawn(async move {
                let ((), c) = s
                    .write(|t| t.put(format!("w{i:03}").into_bytes(), &Thing(i)))
                    .unwrap();
                s.wait_durable(c).await.unwrap();
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
        assert_eq!(s.keys(b"w", None, 100).unwrap().len(), 64);
        assert_eq!(s.durable().borrow().seq, 64);
    }

    #[test]
    fn reopening_keeps_the_event_counter() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path(), Durability::Relaxed).unwrap();
            let _ = s
                .write(|t| {
                    let id = t.next_event_id();
                    t.put_raw(keys::event(id), b"x");
                    Ok::<_, StoreError>(())
                })
                .unwrap();
            s.close().unwrap();
        }
        let s = Store::open(dir.path(), Durability::Relaxed).unwrap();
        let (id, _) = s.write(|t| Ok::<_, StoreError>(t.next_event_id())).unwrap();
        assert_eq!(id, 2);
        assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
    }
}
