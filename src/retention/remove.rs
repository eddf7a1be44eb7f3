//! Removing one task (with everything that hangs off it), one closed ticket
//! or one idempotency record inside a write, tallying records and bytes per
//! kind. The removal keeps every index and counter in step with the records:
//! `check` verifies exactly that.

use std::collections::BTreeMap;

use crate::model::{IdempotencyRecord, RunRecord, TaskRecord, Ticket};
use crate::pipeline::PipelineError;
use crate::store::{keys, Txn};

/// Records and bytes (key + value) removed, by kind.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    /// `kind → (records, bytes)`; kinds as [`keys::kind_of`] names them.
    pub removed: BTreeMap<&'static str, (u64, u64)>,
    /// Keys deleted (indexes included), to bound one write.
    pub keys: usize,
    /// The highest task id and event id removed.
    pub(super) last_task: Option<[u8; keys::ID_LEN]>,
    pub(super) last_event: u64,
}

impl Tally {
    /// Adds another tally's counts.
    pub fn add(&mut self, other: &Tally) {
        for (kind, (n, b)) in &other.removed {
            let e = self.removed.entry(kind).or_default();
            e.0 += n;
            e.1 += b;
        }
        self.keys += other.keys;
    }

    /// Deletes `key` when present. A record counts under `kind`; an index
    /// entry (`kind = None`) only adds its bytes to the record's kind.
    fn delete(
        &mut self,
        txn: &mut Txn<'_>,
        key: Vec<u8>,
        kind: &'static str,
        record: bool,
    ) -> Result<(), PipelineError> {
        let Some(v) = txn.get_raw(&key)? else {
            return Ok(());
        };
        let e = self.removed.entry(kind).or_default();
        e.0 += u64::from(record);
        e.1 += (key.len() + v.len()) as u64;
        self.keys += 1;
        txn.delete(key);
        Ok(())
    }
}

/// Removes a finished task: its record, state index entry and count, runs,
/// leases, events, guardrail decisions and its idempotency record.
pub(super) fn remove_task(
    txn: &mut Txn<'_>,
    task: &TaskRecord,
    tally: &mut Tally,
) -> Result<(), PipelineError> {
    let id = task.id.to_bytes();
    let state = task.state.kind().code();
    tally.delete(txn, keys::task(&id), "task", true)?;
    tally.delete(txn, keys::state(state, &id), "task", false)?;
    txn.add_count(keys::count(state, task.queue.as_str()), -1)?;
    for run_id in &task.runs {
        let rk = keys::run(&run_id.to_bytes());
        if let Some(run) = txn.get::<RunRecord>(&rk)? {
            tally.delete(txn, keys::lease(&run.lease_id.to_bytes()), "lease", true)?;
        }
        tally.delete(txn, rk, "run", true)?;
    }
    for (k, _) in txn.scan_prefix(&keys::task_events_prefix(&id), usize::MAX)? {
        if let Some(event) = keys::parse_task_event(&k) {
            tally.delete(txn, keys::event(event), "event", true)?;
            tally.last_event = tally.last_event.max(event);
        }
        tally.delete(txn, k.to_vec(), "event", false)?;
    }
    for (k, _) in txn.scan_prefix(&keys::guardrail_prefix(&id), usize::MAX)? {
        tally.delete(txn, k.to_vec(), "guardrail_decision", true)?;
    }
    if let Some(key) = &task.idempotency_key {
        let ik = keys::idempotency(&task.submitted_by, key);
        // The key may have been reused for a newer task once this record
        // expired: only this task's record goes.
        if txn
            .get::<IdempotencyRecord>(&ik)?
            .is_some_and(|r| r.task_id == task.id)
        {
            tally.delete(txn, ik, "idempotency", true)?;
        }
    }
    tally.last_task = tally.last_task.max(Some(id));
    Ok(())
}

/// Removes a closed ticket and its index entries.
pub(super) fn remove_ticket(
    txn: &mut Txn<'_>,
    ticket: &Ticket,
    closed_at: u64,
    tally: &mut Tally,
) -> Result<(), PipelineError> {
    let id = ticket.id.to_bytes();
    tally.delete(txn, keys::ticket(&id), "ticket", true)?;
    tally.delete(txn, keys::closed_ticket(closed_at, &id), "ticket", false)?;
    let tk = keys::task_ticket(&ticket.task_id.to_bytes(), &id);
    tally.delete(txn, tk, "ticket", false)?;
    tally.delete(txn, keys::pending_ticket(&id), "ticket", false)
}

/// Removes an idempotency record.
pub(super) fn remove_idempotency(
    txn: &mut Txn<'_>,
    key: Vec<u8>,
    tally: &mut Tally,
) -> Result<(), PipelineError> {
    tally.delete(txn, key, "idempotency", true)
}

/// Raises the watermarks (`rT`, `rE`) to what this write removed, so a
/// missing task at or below the first is answered as `gone`, a stream
/// resumed below the second is told it missed events, and event ids are
/// never reused after the newest events were removed.
pub(super) fn raise_watermarks(txn: &mut Txn<'_>, tally: &Tally) -> Result<(), PipelineError> {
    if let Some(id) = tally.last_task {
        let old = txn.get_raw(keys::PRUNED_TASK)?;
        if old.as_deref().is_none_or(|o| o < id.as_slice()) {
            txn.put_raw(keys::PRUNED_TASK.to_vec(), &id);
        }
    }
    if tally.last_event > 0 {
        let old = txn
            .get_raw(keys::PRUNED_EVENT)?
            .and_then(|v| v.try_into().ok())
            .map_or(0, u64::from_be_bytes);
        if old < tally.last_event {
            txn.put_raw(keys::PRUNED_EVENT.to_vec(), &tally.last_event.to_be_bytes());
        }
    }
    Ok(())
}
