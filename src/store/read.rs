//! Reads outside a write: typed and raw lookups and range scans over the data
//! tree (forwards from a cursor, backwards before one), committed counts, and
//! the rate-limit buckets' compare-and-swap.

use std::ops::Bound;

use super::codec::Record;
use super::db::Store;
use super::error::{decode_at, sled_err, StoreError};
use super::txn::decode_count;

impl Store {
    /// Reads and decodes one record.
    pub fn get<R: Record>(&self, key: &[u8]) -> Result<Option<R>, StoreError> {
        let raw = self.data().get(key).map_err(sled_err("reading a record"))?;
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

    /// The keys under `prefix` below `before` (a cursor outside the prefix is
    /// ignored); callers iterate it backwards.
    fn range_rev(&self, prefix: &[u8], before: Option<&[u8]>) -> sled::Iter {
        match before {
            Some(b) if b.starts_with(prefix) => self.data().range::<Vec<u8>, _>((
                Bound::Included(prefix.to_vec()),
                Bound::Excluded(b.to_vec()),
            )),
            _ => self.data().scan_prefix(prefix),
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
        self.data()
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
        self.ratelimit_tree()
            .update_and_fetch(key, f)
            .map_err(sled_err("updating a rate-limit bucket"))
    }

    /// Reads a count stored by [`Txn::add_count`](super::Txn::add_count).
    pub fn count(&self, key: &[u8]) -> Result<u64, StoreError> {
        let v = self.data().get(key).map_err(sled_err("reading a count"))?;
        Ok(v.map(|v| decode_count(&v)).unwrap_or(0))
    }

    /// The keys under `prefix` after `after` (a cursor outside the prefix is
    /// ignored, so a stale cursor cannot leak into a neighbouring family).
    fn range(&self, prefix: &[u8], after: Option<&[u8]>) -> sled::Iter {
        match after {
            Some(a) if a.starts_with(prefix) => {
                let end = match prefix_end(prefix) {
                    Some(e) => Bound::Excluded(e),
                    None => Bound::Unbounded,
                };
                self.data()
                    .range::<Vec<u8>, _>((Bound::Excluded(a.to_vec()), end))
            }
            _ => self.data().scan_prefix(prefix),
        }
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
