//! The durable store: one sled database behind a small typed API.
//!
//! Every sled call in forgeline lives under this module, so that a soak test can
//! catch an engine hang in one place and the engine could be swapped without
//! touching the domains. Writes go through [`Store::write`]: a closure builds an
//! atomic batch under the single writer lock, and [`Store::wait_durable`] waits for
//! the group committer (see `commit`) to put it on stable storage.

mod backup;
mod buckets;
mod codec;
mod commit;
mod db;
mod durability;
mod error;
pub mod keys;
mod layers;
mod read;
mod schema;
mod snapshot;
mod space;
mod stats;
mod txn;

pub use backup::{restore, write_backup, Restored, BACKUP_FORMAT};
pub use codec::{decode, encode, CodecError, Record};
pub use commit::{Durable, STALL_AFTER};
pub use db::{Commit, Store, StoreOptions, DEFAULT_CACHE_BYTES, DEFAULT_MIN_FREE_BYTES};
pub use durability::Durability;
pub use error::StoreError;
pub use schema::SCHEMA_VERSION;
pub use snapshot::Snapshot;
pub use stats::{Disk, KindUsage};
pub use txn::Txn;
