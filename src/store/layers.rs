//! Write groups: what transactions have written but sled has not applied yet.
//!
//! A write does not apply its own sled batch. Its transaction's writes join
//! the *pending* group; the committer thread (see `commit`) takes the whole
//! group, applies it as one sled batch while it is visible as the *applying*
//! group, then makes it durable. Why: sled 0.34 writes its log buffer out on
//! every applied batch (`pin_log` rolls the buffer), so a batch per write
//! costs disk writes per request; one batch per group costs them per round,
//! and the tokio workers never run `apply_batch` (or wait inside it when the
//! disk stalls).
//!
//! Every read sees the groups over the tree, newest first: pending, then
//! applying, then sled. Nothing in a group has been acknowledged (a write is
//! acknowledged once durable, and durable implies applied), so a reader that
//! sees a pending write sees one that will be applied in order or, if its
//! group fails, that is reported as failed to its writer.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, RwLock};

use sled::IVec;

/// Writes by key: `Some(value)` to put, `None` to delete.
pub(super) type Overlay = BTreeMap<Vec<u8>, Option<IVec>>;

/// The groups between the writers and sled.
#[derive(Debug, Default)]
pub(super) struct Layers {
    /// Written, not yet taken by a commit round.
    pub pending: Overlay,
    /// The sequence number of the newest write in `pending` (or of the newest
    /// write at all when `pending` is empty).
    pub pending_seq: u64,
    /// The id of the newest event written so far.
    pub pending_event_id: u64,
    /// The group a round is applying right now.
    pub applying: Option<Arc<Overlay>>,
}

impl Layers {
    /// What the groups hold for `key`: `None` when neither has it,
    /// `Some(None)` when the newest one deletes it.
    pub fn get(&self, key: &[u8]) -> Option<Option<IVec>> {
        if let Some(v) = self.pending.get(key) {
            return Some(v.clone());
        }
        self.applying.as_ref().and_then(|a| a.get(key).cloned())
    }

    /// The groups' entries within the bounds, newest winning, ascending.
    pub fn range(&self, lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> Overlay {
        let mut out = Overlay::new();
        if !valid(lo, hi) {
            return out;
        }
        if let Some(a) = &self.applying {
            for (k, v) in a.range::<[u8], _>((lo, hi)) {
                out.insert(k.clone(), v.clone());
            }
        }
        for (k, v) in self.pending.range::<[u8], _>((lo, hi)) {
            out.insert(k.clone(), v.clone());
        }
        out
    }
}

/// Reads the groups (a poisoned lock still holds consistent maps: every
/// change to them is a single insert, extend or swap).
pub(super) fn read_layers(l: &RwLock<Layers>) -> std::sync::RwLockReadGuard<'_, Layers> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

/// The smallest key greater than every key starting with `prefix`.
pub(super) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Whether `BTreeMap::range` accepts the bounds (it panics on a start above
/// the end, or on equal excluded bounds).
fn valid(lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> bool {
    match (lo, hi) {
        (Bound::Included(a), Bound::Included(b)) => a <= b,
        (Bound::Included(a) | Bound::Excluded(a), Bound::Excluded(b))
        | (Bound::Excluded(a), Bound::Included(b)) => a < b,
        _ => true,
    }
}

/// Merges a sled scan with the groups' entries over the same range (both in
/// the scan's direction): on equal keys the group wins, and a group's
/// deletion hides the key. At most `limit` pairs.
pub(super) fn merge<I>(
    tree: I,
    groups: Overlay,
    descending: bool,
    limit: usize,
) -> sled::Result<Vec<(IVec, IVec)>>
where
    I: Iterator<Item = sled::Result<(IVec, IVec)>>,
{
    let mut out = Vec::new();
    let mut tree = tree.peekable();
    let mut groups: Box<dyn Iterator<Item = (Vec<u8>, Option<IVec>)>> = if descending {
        Box::new(groups.into_iter().rev())
    } else {
        Box::new(groups.into_iter())
    };
    let mut group = groups.next();
    while out.len() < limit {
        let tree_key = match tree.peek() {
            Some(Ok((k, _))) => Some(k.clone()),
            Some(Err(_)) => {
                return Err(tree.next().and_then(Result::err).unwrap_or_else(|| {
                    sled::Error::ReportableBug("sled iterator error vanished".into())
                }));
            }
            None => None,
        };
        let take_group = match (&tree_key, &group) {
            (None, None) => break,
            (None, Some(_)) => true,
            (Some(_), None) => false,
            (Some(t), Some((g, _))) => {
                let ord = g.as_slice().cmp(t.as_ref());
                let ord = if descending { ord.reverse() } else { ord };
                if ord == std::cmp::Ordering::Equal {
                    // The group's entry replaces the tree's.
                    tree.next();
                }
                ord != std::cmp::Ordering::Greater
            }
        };
        if take_group {
            if let Some((k, Some(v))) = group.take() {
                out.push((IVec::from(k), v));
            }
            group = groups.next();
        } else if let Some(Ok(pair)) = tree.next() {
            out.push(pair);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(keys: &[&str]) -> Vec<sled::Result<(IVec, IVec)>> {
        keys.iter()
            .map(|k| Ok((IVec::from(k.as_bytes()), IVec::from(b"t".as_ref()))))
            .collect()
    }

    fn groups(entries: &[(&str, Option<&str>)]) -> Overlay {
        entries
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.map(|v| IVec::from(v.as_bytes()))))
            .collect()
    }

    fn keys(v: &[(IVec, IVec)]) -> Vec<String> {
        v.iter()
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    String::from_utf8_lossy(k),
                    String::from_utf8_lossy(v)
                )
            })
            .collect()
    }

    #[test]
    fn groups_replace_hide_and_add_keys_in_both_directions() {
        let g = groups(&[("a2", Some("g")), ("a3", None), ("a5", Some("g"))]);
        let up = merge(
            tree(&["a1", "a2", "a3", "a4"]).into_iter(),
            g.clone(),
            false,
            10,
        )
        .unwrap();
        assert_eq!(keys(&up), ["a1=t", "a2=g", "a4=t", "a5=g"]);
        let down = merge(tree(&["a4", "a3", "a2", "a1"]).into_iter(), g, true, 3).unwrap();
        assert_eq!(keys(&down), ["a5=g", "a4=t", "a2=g"]);
    }

    #[test]
    fn pending_wins_over_applying() {
        let l = Layers {
            applying: Some(Arc::new(groups(&[("k", Some("old")), ("j", Some("x"))]))),
            pending: groups(&[("k", None)]),
            ..Layers::default()
        };
        assert_eq!(l.get(b"k"), Some(None));
        assert_eq!(l.get(b"j"), Some(Some(IVec::from(b"x".as_ref()))));
        assert_eq!(l.get(b"z"), None);
        let r = l.range(Bound::Included(b"a".as_ref()), Bound::Unbounded);
        assert_eq!(r.get(b"k".as_ref()), Some(&None));
        // Bounds BTreeMap::range would panic on give nothing instead.
        assert!(l
            .range(
                Bound::Excluded(b"k".as_ref()),
                Bound::Excluded(b"k".as_ref())
            )
            .is_empty());
    }
}
