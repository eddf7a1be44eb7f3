//! The end of a lease and of a run, and loading a task inside a write: the
//! pieces every finishing operation (complete, fail, cancel, expire, release)
//! shares, so that a lease's deadline entry and a run's outcome are always
//! written the same way.

use super::PipelineError;
use crate::model::{
    LeaseId, LeaseRecord, LeaseState, RunId, RunOutcome, RunRecord, TaskId, TaskRecord,
};
use crate::store::{keys, Txn};

/// Loads a task inside a write.
pub(crate) fn load_task(txn: &Txn<'_>, id: TaskId) -> Result<TaskRecord, PipelineError> {
    match txn.get::<TaskRecord>(&keys::task(&id.to_bytes()))? {
        Some(t) => Ok(t),
        None => Err(missing_task(txn.get_raw(keys::PRUNED_TASK)?.as_deref(), id)),
    }
}

/// The error for a task that is not stored: `gone` when its id is at or
/// below `pruned` (the highest task id retention removed, `rT`), else
/// `not_found`. Ids are ULIDs, so "at or below" means "created no later".
pub fn missing_task(pruned: Option<&[u8]>, id: TaskId) -> PipelineError {
    match pruned {
        Some(p) if id.to_bytes().as_slice() <= p => PipelineError::Gone { id: id.to_string() },
        _ => PipelineError::not_found("task", id),
    }
}

/// Marks a lease ended and drops its deadline entry.
pub(crate) fn end_lease(
    txn: &mut Txn<'_>,
    lease_id: LeaseId,
    now: u64,
    how: &str,
) -> Result<Option<LeaseRecord>, PipelineError> {
    let key = keys::lease(&lease_id.to_bytes());
    let Some(mut lease) = txn.get::<LeaseRecord>(&key)? else {
        return Ok(None);
    };
    if lease.state == LeaseState::Active {
        txn.delete(keys::deadline(lease.deadline, &lease_id.to_bytes()));
        lease.state = LeaseState::Ended {
            at: now,
            how: how.to_string(),
        };
        txn.put(key, &lease)?;
    }
    Ok(Some(lease))
}

/// Records how a run ended.
pub(crate) fn finish_run(
    txn: &mut Txn<'_>,
    run_id: RunId,
    now: u64,
    outcome: RunOutcome,
    error: Option<String>,
) -> Result<Option<RunRecord>, PipelineError> {
    let key = keys::run(&run_id.to_bytes());
    let Some(mut run) = txn.get::<RunRecord>(&key)? else {
        return Ok(None);
    };
    run.ended_at = Some(now);
    run.outcome = Some(outcome);
    run.error = error;
    txn.put(key, &run)?;
    super::note_run_ended(&run);
    Ok(Some(run))
}
