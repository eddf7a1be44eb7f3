//! Workers as forgeline remembers them: the status a worker reported last,
//! stored under `W id` (the projection behind `GET /api/v1/workers`).

use serde::{Deserialize, Serialize};

use super::ids::TaskId;
use crate::clock::Millis;
use crate::store::{CodecError, Record};

/// A worker's self-reported status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerStatus {
    /// Waiting for work.
    Idle,
    /// Working on `current_task`.
    Busy,
    /// Finishing its work before it stops.
    Draining,
    /// Stopped, as reported by the worker itself (never inferred by the server).
    Offline,
}

impl WorkerStatus {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerStatus::Idle => "idle",
            WorkerStatus::Busy => "busy",
            WorkerStatus::Draining => "draining",
            WorkerStatus::Offline => "offline",
        }
    }
}

/// A worker's last known status, stored under `W id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRecord {
    /// The id the worker gives itself (not its authenticated principal).
    pub id: String,
    /// As last reported, or as leasing (`busy`) and finishing (`idle`) set it.
    pub status: WorkerStatus,
    /// The task it works on.
    pub current_task: Option<TaskId>,
    /// Free text from its last report.
    pub detail: Option<String>,
    /// Last report or lease call.
    pub last_seen: Millis,
    /// The principal that owns this worker id: the first to lease or report
    /// under it (empty for records written before v2, until one does). Only
    /// it may lease or report as this worker while the worker is not
    /// `offline`.
    pub principal: String,
}

impl WorkerRecord {
    /// Whether `principal` may act as this worker: it owns the id, the id
    /// has no owner yet, or its owner reported it `offline`.
    pub fn usable_by(&self, principal: &str) -> bool {
        self.principal.is_empty()
            || self.principal == principal
            || self.status == WorkerStatus::Offline
    }
}

/// Version 1 of the record, before workers had an owner.
#[derive(Deserialize)]
struct WorkerRecordV1 {
    id: String,
    status: WorkerStatus,
    current_task: Option<TaskId>,
    detail: Option<String>,
    last_seen: Millis,
}

impl Record for WorkerRecord {
    const VERSION: u8 = 2;

    fn decode_old(version: u8, body: &[u8]) -> Result<Self, CodecError> {
        match version {
            1 => {
                let (v1, _): (WorkerRecordV1, _) =
                    bincode::serde::decode_from_slice(body, bincode::config::standard())?;
                Ok(WorkerRecord {
                    id: v1.id,
                    status: v1.status,
                    current_task: v1.current_task,
                    detail: v1.detail,
                    last_seen: v1.last_seen,
                    principal: String::new(),
                })
            }
            v => Err(CodecError::UnknownVersion(v)),
        }
    }
}
