//! Rate-limit buckets: each check is a read-modify-write in memory under one
//! lock, and the commit thread persists changed buckets to the `ratelimit`
//! tree (at every round, and at least every [`PERSIST_EVERY`]).
//!
//! Why not sled's `update_and_fetch` per request: that is a sled write on a
//! tokio worker, which blocks the worker when sled's log buffers cannot be
//! written out (a full or stalled disk) — the runtime must never wait on the
//! disk. The cost: after a crash a principal may get back the tokens it spent
//! since the last persist (at most about half a second's worth); a clean
//! shutdown persists everything. No one gets a fresh burst.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use sled::IVec;

use super::error::{sled_err, StoreError};

/// The longest a changed bucket waits in memory before it is persisted.
pub(super) const PERSIST_EVERY: Duration = Duration::from_millis(500);

/// The buckets and their changes not yet in the tree.
pub(super) struct Buckets {
    tree: sled::Tree,
    /// Changed since the last persist: `Some(state)`, or `None` for removed.
    dirty: Mutex<HashMap<Vec<u8>, Option<IVec>>>,
}

impl Buckets {
    pub fn new(tree: sled::Tree) -> Buckets {
        Buckets {
            tree,
            dirty: Mutex::new(HashMap::new()),
        }
    }

    /// Replaces the state under `key` with `f(current)`, atomically with
    /// respect to every other update; returns the new state.
    pub fn update(
        &self,
        key: &[u8],
        f: impl FnOnce(Option<&[u8]>) -> Option<Vec<u8>>,
    ) -> Result<Option<IVec>, StoreError> {
        let mut dirty = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
        let current = match dirty.get(key) {
            Some(v) => v.clone(),
            None => self
                .tree
                .get(key)
                .map_err(sled_err("reading a rate-limit bucket"))?,
        };
        let next = f(current.as_deref()).map(IVec::from);
        dirty.insert(key.to_vec(), next.clone());
        Ok(next)
    }

    /// Writes the changed buckets to the tree (single-key inserts, no batch).
    /// A bucket changed again meanwhile stays dirty for the next persist.
    pub fn persist(&self) -> Result<(), sled::Error> {
        let changed: Vec<(Vec<u8>, Option<IVec>)> = {
            let dirty = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
            if dirty.is_empty() {
                return Ok(());
            }
            dirty.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        for (k, v) in &changed {
            match v {
                Some(v) => self.tree.insert(k.as_slice(), v.clone())?,
                None => self.tree.remove(k.as_slice())?,
            };
        }
        let mut dirty = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
        for (k, v) in changed {
            if dirty.get(&k) == Some(&v) {
                dirty.remove(&k);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_are_seen_at_once_and_persisted_later() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let b = Buckets::new(db.open_tree("rl").unwrap());
        let bump = |prev: Option<&[u8]>| Some(vec![prev.map_or(0, |p| p[0]) + 1]);
        b.update(b"k", bump).unwrap();
        assert_eq!(b.update(b"k", bump).unwrap().as_deref(), Some(&[2u8][..]));
        assert_eq!(b.tree.get(b"k").unwrap(), None, "not persisted yet");
        b.persist().unwrap();
        assert_eq!(b.tree.get(b"k").unwrap().as_deref(), Some(&[2u8][..]));
        // Read back from the tree once nothing is dirty.
        assert_eq!(b.update(b"k", bump).unwrap().as_deref(), Some(&[3u8][..]));
    }
}
