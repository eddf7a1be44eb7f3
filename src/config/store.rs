//! The `[store]` section: where the sled store lives and how durably an
//! acknowledged write is kept.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::store::{Durability, DEFAULT_CACHE_BYTES, DEFAULT_MIN_FREE_BYTES};

/// `[store]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Directory holding the sled store (created when missing).
    pub data_dir: PathBuf,
    /// `sync`: every acknowledged write is on stable storage (group commit).
    /// `relaxed`: sled's own periodic flush; a crash can lose the last ~500 ms.
    pub durability: Durability,
    /// sled's page cache in bytes: memory the store may use for records it
    /// has read or written (sled's own default, 1 GiB, is too much for a
    /// workstation).
    pub cache_bytes: u64,
    /// Writes are refused (503 `store_unavailable`) while the data
    /// directory's file system has fewer free bytes than this, so that a
    /// full disk never stalls the server; 0 turns the check off.
    pub min_free_bytes: u64,
    /// How often records and bytes by kind are counted for
    /// `forgeline_store_records` and `forgeline_store_bytes` (one walk of
    /// the store, off the request path).
    #[serde(with = "humantime_serde")]
    pub stats_interval: std::time::Duration,
}

impl StoreConfig {
    /// How the store is opened.
    pub fn options(&self) -> crate::store::StoreOptions {
        crate::store::StoreOptions {
            durability: self.durability,
            cache_bytes: self.cache_bytes,
            min_free_bytes: self.min_free_bytes,
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            data_dir: PathBuf::from("forgeline-data"),
            durability: Durability::Sync,
            cache_bytes: DEFAULT_CACHE_BYTES,
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
            stats_interval: std::time::Duration::from_secs(300),
        }
    }
}
