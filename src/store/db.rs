//! The store handle: opening, reads, and atomic write transactions.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::codec::{decode, encode, CodecError, Record};
use super::commit::{Applied, Committer, Durable};
use super::keys;
use super::Durability;

/// The schema version this build writes. Bump it with a migration when the key
/// layout changes (record formats carry their own version byte).
pub const SCHEMA_VERSION: u32 = 1;

const META_SCHEMA: &[u8] = b"schema_version";
const DATA_TREE: &[u8] = b"pipeline";
const META_TREE: &[u8] = b"meta";
const RATELIMIT_TREE: &[u8] = b"ratelimit";

/// A storage failure. Callers add context; clients see only "store unavailable".
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled reported an error.
    #[error("store i/o while {context}: {source}")]
    Sled {
        /// What we were doing.
        context: &'static str,
        /// sled's error.
        source: sled::Error,
    },
    /// A stored value could not be decoded.
    #[error("corrupt record under key {key:?}: {source}")]
    Codec {
        /// Printable form of the key.
        key: String,
        /// The codec error.
        source: CodecError,
    },
    /// A value could not be encoded.
    #[error("record does not encode: {0}")]
    Encode(CodecError),
    /// The store was written by a newer forgeline.
    #[error("store schema version {found} is newer than this build's {SCHEMA_VERSION}; upgrade forgeline")]
    NewerSchema {
        /// The version found on disk.
        found: u32,
    },
    /// The commit round covering this write failed.
    #[error("commit failed: {0}")]
    Commit(Arc<str>),
    /// The committer has stopped (shutting down).
    #[error("store is closed")]
    Closed,
    /// Opening the directory failed.
    #[error("cannot open store at {path}: {source}")]
    Open {
        /// The data directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

fn sled_err(context: &'static str) -> impl FnOnce(sled::Error) -> StoreError {
    move |source| StoreError::Sled { context, source }
}

fn printable(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

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
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: &Path, durability: Durability) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Open {
            path: dir.to_path_buf(),
            source,
        })?;
        let db = sled::Config::new()
            .path(dir)
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
        match meta
            .get(META_SCHEMA)
            .map_err(sled_err("reading the schema version"))?
        {
            Some(v) => {
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
        let last_event_id = data
            .scan_prefix([keys::EVENT])
            .keys()
            .next_back()
            .transpose()
            .map_err(sled_err("reading the last event id"))?
            .and_then(|k| keys::parse_event(&k))
            .unwrap_or(0);
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

    /// Reads and decodes one record.
    pub fn get<R: Record>(&self, key: &[u8]) -> Result<Option<R>, StoreError> {
        let raw = self
            .inner
            .data
            .get(key)
            .map_err(sled_err("reading a record"))?;
        raw.map(|v| decode_at(key, &v)).transpose()
    }

    /// Keys under `prefix`, strictly after `after` when given, at most `limit`.
    pub fn keys(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<sled::IVec>, StoreError> {
        self.range(prefix, after)
            .keys()
            .take(limit)
            .collect::<Result<_, _>>()
            .map_err(sled_err("scanning keys"))
    }

    /// Records under `prefix`, strictly after `after` when given, at most `limit`.
    pub fn scan<R: Record>(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(sled::IVec, R)>, StoreError> {
        let mut out = Vec::new();
        for item in self.range(prefix, after).take(limit) {
            let (k, v) = item.map_err(sled_err("scanning records"))?;
            let r = decode_at(&k, &v)?;
            out.push((k, r));
        }
        Ok(out)
    }

    /// Keys under `prefix` in descending order, strictly before `before` when
    /// given, at most `limit`.
    pub fn keys_rev(
        &self,
        prefix: &[u8],
        before: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<sled::IVec>, StoreError> {
        self.range_rev(prefix, before)
            .keys()
            .rev()
            .take(limit)
            .collect::<Result<_, _>>()
            .map_err(sled_err("scanning keys backwards"))
    }

    /// Records under `prefix` in descending key order, strictly before `before`.
    pub fn scan_rev<R: Record>(
        &self,
        prefix: &[u8],
        before: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(sled::IVec, R)>, StoreError> {
        let mut out = Vec::new();
        for item in self.range_rev(prefix, before).rev().take(limit) {
            let (k, v) = item.map_err(sled_err("scanning records backwards"))?;
            let r = decode_at(&k, &v)?;
            out.push((k, r));
        }
        Ok(out)
    }

    fn range_rev(&self, prefix: &[u8], before: Option<&[u8]>) -> sled::Iter {
        match before {
            Some(b) if b.starts_with(prefix) => self.inner.data.range::<Vec<u8>, _>((
                Bound::Included(prefix.to_vec()),
                Bound::Excluded(b.to_vec()),
            )),
            _ => self.inner.data.scan_prefix(prefix),
        }
    }

    /// The first key under `prefix`.
    pub fn first_key(&self, prefix: &[u8]) -> Result<Option<sled::IVec>, StoreError> {
        Ok(self.keys(prefix, None, 1)?.into_iter().next())
    }

    /// Raw key/value pairs under `prefix`, strictly after `after`, at most
    /// `limit` (for readers that decode themselves, such as audit
    /// verification, which must report undecodable records).
    pub fn raw_range(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(sled::IVec, sled::IVec)>, StoreError> {
        self.range(prefix, after)
            .take(limit)
            .collect::<Result<_, _>>()
            .map_err(sled_err("scanning raw values"))
    }

    /// Raw key/value pairs under `prefix` (counters and other small families).
    pub fn scan_raw(&self, prefix: &[u8]) -> Result<Vec<(sled::IVec, sled::IVec)>, StoreError> {
        self.inner
            .data
            .scan_prefix(prefix)
            .collect::<Result<_, _>>()
            .map_err(sled_err("scanning raw values"))
    }

    /// Atomically updates one rate-limit bucket (compare-and-swap; `f` may run
    /// more than once and must be pure). Not flushed: see `ratelimit`.
    pub fn update_bucket(
        &self,
        key: &[u8],
        f: impl FnMut(Option<&[u8]>) -> Option<Vec<u8>>,
    ) -> Result<Option<sled::IVec>, StoreError> {
        self.inner
            .ratelimit
            .update_and_fetch(key, f)
            .map_err(sled_err("updating a rate-limit bucket"))
    }

    /// Reads a count stored by [`Txn::add_count`].
    pub fn count(&self, key: &[u8]) -> Result<u64, StoreError> {
        let v = self
            .inner
            .data
            .get(key)
            .map_err(sled_err("reading a count"))?;
        Ok(v.map(|v| decode_count(&v)).unwrap_or(0))
    }

    fn range(&self, prefix: &[u8], after: Option<&[u8]>) -> sled::Iter {
        match after {
            Some(a) if a.starts_with(prefix) => {
                let end = match prefix_end(prefix) {
                    Some(e) => Bound::Excluded(e),
                    None => Bound::Unbounded,
                };
                self.inner
                    .data
                    .range::<Vec<u8>, _>((Bound::Excluded(a.to_vec()), end))
            }
            _ => self.inner.data.scan_prefix(prefix),
        }
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
        let inner = &*self.inner;
        let mut state = inner.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut txn = Txn {
            tree: &inner.data,
            overlay: BTreeMap::new(),
            next_event_id: state.last_event_id + 1,
            ulids: &mut state.ulids,
        };
        let out = f(&mut txn)?;
        let next_event_id = txn.next_event_id;
        let mut batch = sled::Batch::default();
        for (k, v) in txn.overlay {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        inner
            .data
            .apply_batch(batch)
            .map_err(sled_err("applying a write batch"))?;
        state.seq += 1;
        state.last_event_id = next_event_id - 1;
        let commit = Commit { seq: state.seq };
        inner
            .applied
            .event_id
            .store(state.last_event_id, Ordering::Release);
        inner.applied.seq.store(state.seq, Ordering::Release);
        match &inner.committer {
            Some(c) => c.request(),
            None => {
                let (seq, event_id) = (state.seq, state.last_event_id);
                inner.durable_tx.send_modify(|d| {
                    d.seq = seq;
                    d.event_id = event_id;
                });
            }
        }
        Ok((out, commit))
    }

    /// Waits until `commit` is on stable storage (at once in relaxed mode).
    pub async fn wait_durable(&self, commit: Commit) -> Result<(), StoreError> {
        let mut rx = self.inner.durable_tx.subscribe();
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

/// The smallest key greater than every key starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn decode_at<R: Record>(key: &[u8], value: &[u8]) -> Result<R, StoreError> {
    decode(value).map_err(|source| StoreError::Codec {
        key: printable(key),
        source,
    })
}

fn decode_count(v: &[u8]) -> u64 {
    u64::from_be_bytes(v.try_into().unwrap_or([0; 8]))
}

/// A write transaction: reads see its own writes; the batch applies atomically.
pub struct Txn<'a> {
    tree: &'a sled::Tree,
    overlay: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    next_event_id: u64,
    ulids: &'a mut ulid::Generator,
}

impl Txn<'_> {
    /// Reads a record, including this transaction's own writes.
    pub fn get<R: Record>(&self, key: &[u8]) -> Result<Option<R>, StoreError> {
        match self.overlay.get(key) {
            Some(Some(v)) => decode_at(key, v).map(Some),
            Some(None) => Ok(None),
            None => {
                let raw = self.tree.get(key).map_err(sled_err("reading in a write"))?;
                raw.map(|v| decode_at(key, &v)).transpose()
            }
        }
    }

    /// Writes a record.
    pub fn put<R: Record>(&mut self, key: Vec<u8>, record: &R) -> Result<(), StoreError> {
        let v = encode(record).map_err(StoreError::Encode)?;
        self.overlay.insert(key, Some(v));
        Ok(())
    }

    /// Writes a raw value (index entries; usually empty).
    pub fn put_raw(&mut self, key: Vec<u8>, value: &[u8]) {
        self.overlay.insert(key, Some(value.to_vec()));
    }

    /// Deletes a key.
    pub fn delete(&mut self, key: Vec<u8>) {
        self.overlay.insert(key, None);
    }

    /// Reads a raw value, including this transaction's own writes.
    pub fn get_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.overlay.get(key) {
            Some(v) => Ok(v.clone()),
            None => Ok(self
                .tree
                .get(key)
                .map_err(sled_err("reading in a write"))?
                .map(|v| v.to_vec())),
        }
    }

    /// The first key under `prefix`, counting this transaction's writes.
    pub fn first_key(&self, prefix: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let mut from_tree = None;
        for k in self.tree.scan_prefix(prefix).keys() {
            let k = k.map_err(sled_err("scanning in a write"))?;
            if !matches!(self.overlay.get(k.as_ref()), Some(None)) {
                from_tree = Some(k.to_vec());
                break;
            }
        }
        let from_overlay = self
            .overlay
            .range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .find(|(_, v)| v.is_some())
            .map(|(k, _)| k.clone());
        Ok(match (from_tree, from_overlay) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// Committed key/value pairs under `prefix` (this transaction's own writes
    /// are not seen), at most `limit`.
    pub fn scan_prefix(
        &self,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<(sled::IVec, sled::IVec)>, StoreError> {
        self.tree
            .scan_prefix(prefix)
            .take(limit)
            .collect::<Result<_, _>>()
            .map_err(sled_err("scanning in a write"))
    }

    /// Adds `delta` to a stored count (never below zero).
    pub fn add_count(&mut self, key: Vec<u8>, delta: i64) -> Result<(), StoreError> {
        let cur = self.get_raw(&key)?.map(|v| decode_count(&v)).unwrap_or(0);
        let next = (cur as i64).saturating_add(delta).max(0) as u64;
        if next == 0 {
            self.delete(key);
        } else {
            self.put_raw(key, &next.to_be_bytes());
        }
        Ok(())
    }

    /// Increments the u64 sequence stored under `key` and returns the new value.
    pub fn next_sequence(&mut self, key: &[u8]) -> Result<u64, StoreError> {
        let next = self.get_raw(key)?.map(|v| decode_count(&v)).unwrap_or(0) + 1;
        self.put_raw(key.to_vec(), &next.to_be_bytes());
        Ok(next)
    }

    /// Takes the next global event id (monotonic; no gaps from failed writes).
    pub fn next_event_id(&mut self) -> u64 {
        let id = self.next_event_id;
        self.next_event_id += 1;
        id
    }

    /// A new ULID, monotonic within this process.
    pub fn new_ulid(&mut self) -> ulid::Ulid {
        self.ulids.generate().unwrap_or_else(|_| ulid::Ulid::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    #[test]
    fn keys_after_a_cursor_stay_inside_the_prefix() {
        let (_d, s) = open(Durability::Relaxed);
        let _ = s
            .write(|t| {
                for k in ["a1", "a2", "a3", "b1"] {
                    t.put_raw(k.as_bytes().to_vec(), b"");
                }
                Ok::<_, StoreError>(())
            })
            .unwrap();
        let ks = s.keys(b"a", Some(b"a1"), 10).unwrap();
        assert_eq!(ks.len(), 2);
        assert_eq!(s.count(b"none").unwrap(), 0);
    }
}
