//! `Txn`, the write transaction handed to the closure of
//! [`Store::write`](super::Store::write): reads that see its own writes, the
//! overlay of pending writes, counters, sequences, event ids and ULIDs, and the
//! conversion of the overlay into one sled batch.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::codec::{encode, Record};
use super::error::{decode_at, sled_err, StoreError};

/// A write transaction: reads see its own writes; the batch applies atomically.
pub struct Txn<'a> {
    tree: &'a sled::Tree,
    /// Pending writes by key: `Some(value)` to put, `None` to delete.
    overlay: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    next_event_id: u64,
    ulids: &'a mut ulid::Generator,
}

impl<'a> Txn<'a> {
    /// A transaction over `tree` whose first event id will be `next_event_id`.
    pub(super) fn new(
        tree: &'a sled::Tree,
        next_event_id: u64,
        ulids: &'a mut ulid::Generator,
    ) -> Txn<'a> {
        Txn {
            tree,
            overlay: BTreeMap::new(),
            next_event_id,
            ulids,
        }
    }

    /// The batch of everything written, and the event id the next transaction
    /// starts from (so ids taken by a failed transaction are never consumed).
    pub(super) fn into_batch(self) -> (sled::Batch, u64) {
        let mut batch = sled::Batch::default();
        for (k, v) in self.overlay {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        (batch, self.next_event_id)
    }
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
        // The first committed key this transaction has not deleted…
        let mut from_tree = None;
        for k in self.tree.scan_prefix(prefix).keys() {
            let k = k.map_err(sled_err("scanning in a write"))?;
            if !matches!(self.overlay.get(k.as_ref()), Some(None)) {
                from_tree = Some(k.to_vec());
                break;
            }
        }
        // …against the first key it has put; the smaller one wins.
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
