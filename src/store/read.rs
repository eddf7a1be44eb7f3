//! Reads outside a write: typed and raw lookups and range scans over the data
//! tree with the write groups merged in (forwards from a cursor, backwards
//! before one), counts, and the rate-limit buckets' compare-and-swap.

use std::ops::Bound;

use super::codec::Record;
use super::db::Store;
use super::error::{decode_at, sled_err, StoreError};
use super::layers::{merge, prefix_end, read_layers};
use super::txn::decode_count;

impl Store {
    /// Reads and decodes one record.
    pub fn get<R: Record>(&self, key: &[u8]) -> Result<Option<R>, StoreError> {
        self.get_ivec(key)?.map(|v| decode_at(key, &v)).transpose()
    }

    /// The newest value of `key`: a write group's (see `layers`), else sled's.
    /// The groups are read first: a group leaves them only once sled has it.
    fn get_ivec(&self, key: &[u8]) -> Result<Option<sled::IVec>, StoreError> {
        if let Some(v) = read_layers(self.layers()).get(key) {
            return Ok(v);
        }
        self.data().get(key).map_err(sled_err("reading a record"))
    }

    /// Reads one raw value (single keys such as watermarks).
    pub fn get_raw_value(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.get_ivec(key)?.map(|v| v.to_vec()))
    }

    /// Keys under `prefix`, strictly after `after` when given, at most `limit`.
    pub fn keys(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<sled::IVec>, StoreError> {
        Ok(self
            .range(prefix, after, limit)?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    /// Records under `prefix`, strictly after `after` when given, at most `limit`.
    pub fn scan<R: Record>(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(sled::IVec, R)>, StoreError> {
        decode_all(self.range(prefix, after, limit)?)
    }

    /// Keys under `prefix` in descending order, strictly before `before` when
    /// given, at most `limit`.
    pub fn keys_rev(
        &self,
        prefix: &[u8],
        before: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<sled::IVec>, StoreError> {
        Ok(self
            .range_rev(prefix, before, limit)?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    /// Records under `prefix` in descending key order, strictly before `before`.
    pub fn scan_rev<R: Record>(
        &self,
        prefix: &[u8],
        before: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(sled::IVec, R)>, StoreError> {
        decode_all(self.range_rev(prefix, before, limit)?)
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
        self.range(prefix, after, limit)
    }

    /// Raw key/value pairs under `prefix` (counters and other small families).
    pub fn scan_raw(&self, prefix: &[u8]) -> Result<Vec<(sled::IVec, sled::IVec)>, StoreError> {
        self.range(prefix, None, usize::MAX)
    }

    /// Atomically updates one rate-limit bucket and returns its new state.
    /// Kept in memory and persisted by the commit thread: see `buckets`.
    pub fn update_bucket(
        &self,
        key: &[u8],
        f: impl FnOnce(Option<&[u8]>) -> Option<Vec<u8>>,
    ) -> Result<Option<sled::IVec>, StoreError> {
        self.buckets().update(key, f)
    }

    /// Reads a count stored by [`Txn::add_count`](super::Txn::add_count).
    pub fn count(&self, key: &[u8]) -> Result<u64, StoreError> {
        Ok(self.get_ivec(key)?.map(|v| decode_count(&v)).unwrap_or(0))
    }

    /// Pairs under `prefix` after `after` (a cursor outside the prefix is
    /// ignored, so a stale cursor cannot leak into a neighbouring family),
    /// the write groups merged over sled's.
    fn range(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(sled::IVec, sled::IVec)>, StoreError> {
        let end = prefix_end(prefix);
        let hi = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        let (lo, tree) = match after {
            Some(a) if a.starts_with(prefix) => (
                Bound::Excluded(a),
                self.data().range::<&[u8], _>((Bound::Excluded(a), hi)),
            ),
            _ => (Bound::Included(prefix), self.data().scan_prefix(prefix)),
        };
        // The groups before the tree: what leaves them is in sled by then.
        let groups = read_layers(self.layers()).range(lo, hi);
        merge(tree, groups, false, limit).map_err(sled_err("scanning"))
    }

    /// Pairs under `prefix` below `before` (a cursor outside the prefix is
    /// ignored), in descending order.
    fn range_rev(
        &self,
        prefix: &[u8],
        before: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(sled::IVec, sled::IVec)>, StoreError> {
        let end = prefix_end(prefix);
        let (hi, tree) = match before {
            Some(b) if b.starts_with(prefix) => (
                Bound::Excluded(b),
                self.data()
                    .range::<&[u8], _>((Bound::Included(prefix), Bound::Excluded(b))),
            ),
            _ => (
                end.as_deref().map_or(Bound::Unbounded, Bound::Excluded),
                self.data().scan_prefix(prefix),
            ),
        };
        let groups = read_layers(self.layers()).range(Bound::Included(prefix), hi);
        merge(tree.rev(), groups, true, limit).map_err(sled_err("scanning backwards"))
    }
}

/// Decodes scanned records, naming the key of a corrupt one.
fn decode_all<R: Record>(
    pairs: Vec<(sled::IVec, sled::IVec)>,
) -> Result<Vec<(sled::IVec, R)>, StoreError> {
    pairs
        .into_iter()
        .map(|(k, v)| {
            let r = decode_at(&k, &v)?;
            Ok((k, r))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Durability;

    #[test]
    fn keys_after_a_cursor_stay_inside_the_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), Durability::Relaxed).unwrap();
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
