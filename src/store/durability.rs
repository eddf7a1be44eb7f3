//! How far an acknowledged write is guaranteed to have travelled: the one
//! store setting every writer obeys (`store.durability` in the config).

use serde::{Deserialize, Serialize};

/// How far an acknowledged write is guaranteed to have travelled.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Flushed and fdatasync'd before the response (group commit).
    Sync,
    /// Left to sled's background flush (every 500 ms).
    Relaxed,
}

impl Durability {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Sync => "sync",
            Durability::Relaxed => "relaxed",
        }
    }
}
