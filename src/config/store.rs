//! The `[store]` section: where the sled store lives and how durably an
//! acknowledged write is kept.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::store::Durability;

/// `[store]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Directory holding the sled store (created when missing).
    pub data_dir: PathBuf,
    /// `sync`: every acknowledged write is on stable storage (group commit).
    /// `relaxed`: sled's own periodic flush; a crash can lose the last ~500 ms.
    pub durability: Durability,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            data_dir: PathBuf::from("forgeline-data"),
            durability: Durability::Sync,
        }
    }
}
