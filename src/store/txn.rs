//! `Txn`, the write transaction handed to the closure of
//! [`Store::write`](super::Store::write): reads that see its own writes over
//! the write groups and the tree, the overlay of its writes, counters,
//! sequences, event ids and ULIDs.

use std::ops::Bound;
use std::sync::RwLock;

use sled::IVec;

use super::codec::{encode, Record};
use super::error::{decode_at, sled_err, StoreError};
use super::layers::{merge, prefix_end, read_layers, Layers, Overlay};

/// A write transaction: reads see its own writes; its writes join the pending
/// group as a whole, and the group applies atomically.
pub struct Txn<'a> {
    tree: &'a sled::Tree,
    layers: &'a RwLock<Layers>,
    /// This transaction's writes by key: `Some(value)` to put, `None` to delete.
    overlay: Overlay,
    next_event_id: u64,
    ulids: &'a mut ulid::Generator,
}

impl<'a> Txn<'a> {
    /// A transaction over `tree` and the groups in `layers` whose first event
    /// id will be `next_event_id`.
    pub(super) fn new(
        tree: &'a sled::Tree,
        layers: &'a RwLock<Layers>,
        next_event_id: u64,
        ulids: &'a mut ulid::Generator,
    ) -> Txn<'a> {
        Txn {
            tree,
            layers,
            overlay: Overlay::new(),
            next_event_id,
            ulids,
        }
    }

    /// Everything written, and the event id the next transaction starts from
    /// (so ids taken by a failed transaction are never consumed).
    pub(super) fn into_parts(self) -> (Overlay, u64) {
        (self.overlay, self.next_event_id)
    }

    /// The newest value of `key`: this transaction's, a group's, or sled's.
    fn lookup(&self, key: &[u8]) -> Result<Option<IVec>, StoreError> {
        if let Some(v) = self.overlay.get(key) {
            return Ok(v.clone());
        }
        if let Some(v) = read_layers(self.layers).get(key) {
            return Ok(v);
        }
        self.tree.get(key).map_err(sled_err("reading in a write"))
    }

    /// Pairs under `prefix` as the groups and sled hold them, with this
    /// transaction's own writes on top when `own` is set.
    fn merged(
        &self,
        prefix: &[u8],
        own: bool,
        limit: usize,
    ) -> Result<Vec<(IVec, IVec)>, StoreError> {
        let end = prefix_end(prefix);
        let hi = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        let mut groups = read_layers(self.layers).range(Bound::Included(prefix), hi);
        if own {
            for (k, v) in self.overlay.range::<[u8], _>((Bound::Included(prefix), hi)) {
                groups.insert(k.clone(), v.clone());
            }
        }
        merge(self.tree.scan_prefix(prefix), groups, false, limit)
            .map_err(sled_err("scanning in a write"))
    }
}

impl Txn<'_> {
    /// Reads a record, including this transaction's own writes.
    pub fn get<R: Record>(&self, key: &[u8]) -> Result<Option<R>, StoreError> {
        self.lookup(key)?.map(|v| decode_at(key, &v)).transpose()
    }

    /// Writes a record.
    pub fn put<R: Record>(&mut self, key: Vec<u8>, record: &R) -> Result<(), StoreError> {
        let v = encode(record).map_err(StoreError::Encode)?;
        self.overlay.insert(key, Some(IVec::from(v)));
        Ok(())
    }

    /// Writes a raw value (index entries; usually empty).
    pub fn put_raw(&mut self, key: Vec<u8>, value: &[u8]) {
        self.overlay.insert(key, Some(IVec::from(value)));
    }

    /// Deletes a key.
    pub fn delete(&mut self, key: Vec<u8>) {
        self.overlay.insert(key, None);
    }

    /// Reads a raw value, including this transaction's own writes.
    pub fn get_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lookup(key)?.map(|v| v.to_vec()))
    }

    /// The first key under `prefix`, counting this transaction's writes.
    pub fn first_key(&self, prefix: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .merged(prefix, true, 1)?
            .into_iter()
            .next()
            .map(|(k, _)| k.to_vec()))
    }

    /// Key/value pairs under `prefix` written by earlier writes (this
    /// transaction's own writes are not seen), at most `limit`.
    pub fn scan_prefix(
        &self,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<(sled::IVec, sled::IVec)>, StoreError> {
        self.merged(prefix, false, limit)
    }

    /// Adds `delta` to a stored count (never below zero).
    pub fn add_count(&mut self, key: Vec<u8>, delta: i64) -> Result<(), StoreError> {
        let cur = self.get_raw(&key)?.map(|v| decode_count(&v)).unwrap_or(0);
        let next = (cur as i64).saturating_add(delta).max(0) as u64;
        // A zero count is deleted rather than stored, so counter families
        // only hold keys that count something.
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

/// Decodes a count written by [`Txn::add_count`] or [`Txn::next_sequence`]
/// (a big-endian u64; anything else reads as zero).
pub(super) fn decode_count(v: &[u8]) -> u64 {
    u64::from_be_bytes(v.try_into().unwrap_or([0; 8]))
}
