//! The store report behind `forgeline store stats` and `GET /api/v1/store`:
//! records and bytes by kind with the oldest record, sled's size on disk and
//! cache, the file system, the retention rules and how far they have removed.

use serde_json::{json, Value};

use crate::clock::format_rfc3339;
use crate::config::Config;
use crate::model::{format_event_id, TaskId};
use crate::store::{keys, Store, StoreError};

/// A retention as the config spells it (`14d`, `24h`, `90s`), or `null`
/// for "kept forever".
fn span(d: std::time::Duration) -> Value {
    let s = d.as_secs();
    let text = match s {
        0 if d.is_zero() => return Value::Null,
        0 => format!("{}ms", d.as_millis()),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    };
    text.into()
}

/// Builds the report (walks the whole store: call it off the runtime).
pub fn store_report(store: &Store, config: &Config) -> Result<Value, StoreError> {
    let usage = store.usage()?;
    let mut kinds = serde_json::Map::new();
    let (mut records, mut bytes) = (0, 0);
    for kind in keys::KINDS {
        let u = usage.get(kind).copied().unwrap_or_default();
        records += u.records;
        bytes += u.bytes;
        kinds.insert(
            kind.to_string(),
            json!({
                "records": u.records,
                "bytes": u.bytes,
                "oldest": u.oldest_ms.map(format_rfc3339),
            }),
        );
    }
    let pruned_task = store
        .get_raw_value(keys::PRUNED_TASK)?
        .and_then(|v| <[u8; keys::ID_LEN]>::try_from(v.as_slice()).ok())
        .map(|b| TaskId::from_bytes(b).to_string());
    let pruned_event = store
        .get_raw_value(keys::PRUNED_EVENT)?
        .and_then(|v| v.try_into().ok())
        .map(|b: [u8; 8]| format_event_id(u64::from_be_bytes(b)));
    let disk = store.disk();
    let r = &config.retention;
    Ok(json!({
        "kinds": kinds,
        "total": {"records": records, "bytes": bytes},
        "sled": {
            "size_on_disk_bytes": store.size_on_disk(),
            "cache_capacity_bytes": config.store.cache_bytes,
        },
        "disk": {
            "path": store.dir().display().to_string(),
            "free_bytes": disk.map(|d| d.free),
            "size_bytes": disk.map(|d| d.size),
            "min_free_bytes": config.store.min_free_bytes,
        },
        "retention": {
            "completed": span(r.completed),
            "failed": span(r.failed),
            "dead": span(r.dead),
            "cancelled": span(r.cancelled),
            "idempotency": span(r.idempotency),
            "review_tickets": span(r.review_tickets),
            "removed_through_task": pruned_task,
            "removed_through_event": pruned_event,
        },
    }))
}
