//! The on-disk layout constants: the schema version this build writes and the
//! names of the sled trees and meta keys. A leaf file, so that both the error
//! type (which names the version) and the handle can use it.

/// The schema version this build writes. Bump it with a migration when the key
/// layout changes (record formats carry their own version byte).
pub const SCHEMA_VERSION: u32 = 1;

/// Meta-tree key holding the schema version (a big-endian u32).
pub(super) const META_SCHEMA: &[u8] = b"schema_version";
/// The tree holding every pipeline record (one atomic batch per write).
pub(super) const DATA_TREE: &[u8] = b"pipeline";
/// The tree holding store metadata (the schema version).
pub(super) const META_TREE: &[u8] = b"meta";
/// The tree holding rate-limit buckets (never part of a write batch).
pub(super) const RATELIMIT_TREE: &[u8] = b"ratelimit";
