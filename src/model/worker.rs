//! Workers as forgeline remembers them: the status a worker reported last,
//! stored under `W id` (the projection behind `GET /api/v1/workers`).

use serde::{Deserialize, Serialize};

use super::ids::TaskId;
use crate::clock::Millis;
use crate::store::Record;

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
}

impl Record for WorkerRecord {
    const VERSION: u8 = 1;
}
