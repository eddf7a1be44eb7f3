//! A point-in-time view of the data tree while writes go on, for online
//! backups.
//!
//! sled has no snapshots, so the store keeps one itself: while a snapshot is
//! open, the commit thread records the value every key had before the first
//! write to it after the snapshot began (its pre-image), then applies the
//! write as usual. A reader walks sled and, for each key that has a pre-image,
//! takes the pre-image instead; keys deleted since are taken from the
//! pre-images afterwards, keys created since are left out. Opening a snapshot
//! takes the same lock the commit thread holds around a batch, so it never
//! falls inside one. Writes never wait for the reader: the cost is one sled
//! read per first-touched key while a snapshot is open, and the memory of
//! the pre-images (bounded by what is written during the backup).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use sled::IVec;

use super::error::{sled_err, StoreError};
use super::layers::Overlay;

/// Pre-images: `Some(value)` for a key that existed, `None` for one created
/// after the snapshot began. `Err` once a pre-image could not be read: the
/// snapshot is then unusable.
type Preimages = Result<HashMap<Vec<u8>, Option<IVec>>, String>;

/// The open snapshot, if any.
#[derive(Debug, Default)]
pub(crate) struct Snapshots {
    active: Mutex<Option<Arc<Mutex<Preimages>>>>,
}

impl Snapshots {
    /// Runs `apply` (the commit thread's batch) after recording the
    /// pre-images of the group's keys when a snapshot is open.
    pub(crate) fn apply_with<R>(
        &self,
        data: &sled::Tree,
        group: &Overlay,
        apply: impl FnOnce() -> R,
    ) -> R {
        let active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pre) = active.as_ref() {
            let mut pre = pre.lock().unwrap_or_else(|e| e.into_inner());
            if let Ok(map) = pre.as_mut() {
                for k in group.keys() {
                    if map.contains_key(k) {
                        continue;
                    }
                    match data.get(k) {
                        Ok(old) => {
                            map.insert(k.clone(), old);
                        }
                        Err(e) => {
                            *pre = Err(e.to_string());
                            break;
                        }
                    }
                }
            }
        }
        apply()
    }
}

/// An open snapshot; closed when dropped.
pub struct Snapshot {
    owner: Arc<Snapshots>,
    data: sled::Tree,
    pre: Arc<Mutex<Preimages>>,
}

impl Snapshot {
    /// Opens a snapshot of `data`, or `None` while another one is open.
    pub(crate) fn open(owner: &Arc<Snapshots>, data: &sled::Tree) -> Option<Snapshot> {
        let mut active = owner.active.lock().unwrap_or_else(|e| e.into_inner());
        if active.is_some() {
            return None;
        }
        let pre = Arc::new(Mutex::new(Ok(HashMap::new())));
        *active = Some(pre.clone());
        Some(Snapshot {
            owner: owner.clone(),
            data: data.clone(),
            pre,
        })
    }

    fn preimage(&self, key: &[u8]) -> Result<Option<Option<IVec>>, StoreError> {
        let pre = self.pre.lock().unwrap_or_else(|e| e.into_inner());
        match pre.as_ref() {
            Ok(map) => Ok(map.get(key).cloned()),
            Err(e) => Err(StoreError::Snapshot(e.clone())),
        }
    }

    /// Calls `f` with every key and value as they were when the snapshot
    /// opened (in key order, then the keys deleted since). Returns how many.
    pub fn for_each(
        &self,
        mut f: impl FnMut(&[u8], &[u8]) -> std::io::Result<()>,
    ) -> Result<u64, StoreError> {
        let mut seen: HashSet<Vec<u8>> = HashSet::new();
        let mut n = 0;
        let io = |e: std::io::Error| StoreError::Snapshot(e.to_string());
        for kv in self.data.iter() {
            let (k, v) = kv.map_err(sled_err("walking a snapshot"))?;
            let value = match self.preimage(&k)? {
                None => v,
                Some(Some(old)) => old,
                Some(None) => continue, // created after the snapshot began
            };
            f(&k, &value).map_err(io)?;
            seen.insert(k.to_vec());
            n += 1;
        }
        let deleted: Vec<(Vec<u8>, IVec)> = {
            let pre = self.pre.lock().unwrap_or_else(|e| e.into_inner());
            let map = pre.as_ref().map_err(|e| StoreError::Snapshot(e.clone()))?;
            map.iter()
                .filter(|(k, _)| !seen.contains(*k))
                .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
                .collect()
        };
        for (k, v) in deleted {
            f(&k, &v).map_err(io)?;
            n += 1;
        }
        Ok(n)
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        let mut active = self.owner.active.lock().unwrap_or_else(|e| e.into_inner());
        *active = None;
    }
}
