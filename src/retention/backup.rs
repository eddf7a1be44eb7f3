//! Online backups: a point-in-time snapshot of the store written as one
//! checksummed file (`store::write_backup`), with the audit MAC key beside
//! the data so the restored chain verifies. Used by `GET /api/v1/backup` and
//! `forgeline backup`; `forgeline restore` reads it back.

use std::io::Write;

use serde_json::json;

use crate::clock::format_rfc3339;
use crate::config::Config;
use crate::pipeline::PipelineError;
use crate::store::{write_backup, Store, StoreError};

/// The name the audit key file has inside a backup.
pub const AUDIT_KEY_FILE: &str = "audit-key";

/// Writes a backup of `store` to `out`. `now` (ms) goes in the header.
/// A 409 `backup_running` while another backup of this store is running.
pub fn backup(
    store: &Store,
    config: &Config,
    now: u64,
    out: impl Write,
) -> Result<u64, PipelineError> {
    let snapshot = store.snapshot().ok_or(PipelineError::Conflict {
        code: "backup_running",
        message: "another backup of this store is running; try again when it ends".into(),
    })?;
    let header = json!({
        "created_at": format_rfc3339(now),
        "forgeline_version": crate::build_info::VERSION,
        "durable_event_id": store.durable().borrow().event_id,
    });
    let mut files = Vec::new();
    let key = crate::audit::key_path(config);
    match std::fs::read(&key) {
        Ok(bytes) => files.push((AUDIT_KEY_FILE.to_string(), bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(StoreError::Backup(format!("reading {}: {e}", key.display())).into());
        }
    }
    Ok(write_backup(&snapshot, header, &files, out)?)
}
