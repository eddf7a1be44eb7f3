//! `StoreError`, the one failure type of the store, and the helpers that wrap
//! sled and codec failures into it.

use std::path::PathBuf;
use std::sync::Arc;

use super::codec::{decode, CodecError, Record};
use super::schema::SCHEMA_VERSION;

/// A storage failure. Callers add context; clients see only "store unavailable".
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled reported an error.
    #[error("store i/o while {context}: {source}")]
    Sled {
        /// What the store was doing, as a phrase ("reading a record") that
        /// completes the message.
        context: &'static str,
        /// sled's error.
        source: sled::Error,
    },
    /// A stored value could not be decoded.
    #[error("corrupt record under key {key:?}: {source}")]
    Codec {
        /// The key, lossily converted to UTF-8 (keys are mostly binary).
        key: String,
        /// The codec error.
        source: CodecError,
    },
    /// A value could not be encoded.
    #[error("record does not encode: {0}")]
    Encode(CodecError),
    /// The store was written by a newer forgeline.
    #[error("store schema version {found} is newer than this build's {SCHEMA_VERSION}; upgrade forgeline")]
    NewerSchema {
        /// The version found on disk.
        found: u32,
    },
    /// A snapshot (online backup) could not be read consistently.
    #[error("snapshot failed: {0}")]
    Snapshot(String),
    /// A backup file is not one this build can restore, or is damaged.
    #[error("backup: {0}")]
    Backup(String),
    /// The commit round covering this write failed.
    #[error("commit failed: {0}")]
    Commit(Arc<str>),
    /// The data directory's file system is below `store.min_free_bytes`:
    /// the write was refused before it was applied (see `space`).
    #[error("the data directory's file system has {free} bytes free, below the {reserve}-byte reserve (store.min_free_bytes); writes resume once space is freed")]
    NoSpace {
        /// Free bytes at the last reading.
        free: u64,
        /// `store.min_free_bytes`.
        reserve: u64,
    },
    /// A commit round has been running for longer than the stall limit (the
    /// disk does not answer): the write was refused before it was applied.
    #[error(
        "the store's disk has not finished a commit for {secs} s; writes are refused until it does"
    )]
    Stalled {
        /// How long the round has run, in seconds.
        secs: u64,
    },
    /// The committer has stopped (shutting down).
    #[error("store is closed")]
    Closed,
    /// Opening the directory failed.
    #[error("cannot open store at {path}: {source}")]
    Open {
        /// The data directory.
        path: PathBuf,
        /// The file-system error (creating the directory, starting the
        /// committer, or syncing the log file).
        source: std::io::Error,
    },
}

/// Wraps a sled error with what the store was doing (for `map_err`).
pub(super) fn sled_err(context: &'static str) -> impl FnOnce(sled::Error) -> StoreError {
    move |source| StoreError::Sled { context, source }
}

fn printable(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

/// Decodes the value stored under `key`, naming the key when it is corrupt.
pub(super) fn decode_at<R: Record>(key: &[u8], value: &[u8]) -> Result<R, StoreError> {
    decode(value).map_err(|source| StoreError::Codec {
        key: printable(key),
        source,
    })
}
