//! Granting leases and keeping them alive: the long-poll `lease`, the grant
//! of one ready task (fencing token, run, deadline), `heartbeat`, and the
//! fencing check every later call on a lease goes through. Finishing a lease
//! (complete, fail, release) is in `finish.rs`.

use std::time::Duration;

use futures_util::future::select_all;
use serde_json::json;

use crate::clock::{format_rfc3339, Millis};
use crate::model::{
    EventKind, EventRecord, LeaseId, LeaseRecord, LeaseRef, LeaseState, QueueName, RunId,
    RunRecord, TaskId, TaskRecord, TaskState, WorkerId, WorkerStatus,
};
use crate::pipeline::transition::{move_to, Move};
use crate::pipeline::{load_task, Pipeline, PipelineError};
use crate::store::{keys, Txn};
use crate::workers::{check_worker_owner, touch_worker};

/// A lease request.
#[derive(Debug, Clone)]
pub struct LeaseRequest {
    /// Queues to take from, in order of preference.
    pub queues: Vec<QueueName>,
    /// Who asks (the worker id it gives itself).
    pub worker: WorkerId,
    /// The authenticated principal asking; only it may use the leases.
    pub holder: String,
    /// Most tasks to take.
    pub max: usize,
    /// How long to wait for work when none is ready (long poll; 0 answers at
    /// once).
    pub wait: Duration,
    /// How long each granted lease lasts unless a heartbeat extends it; past
    /// it the reaper expires the lease.
    pub lease_for: Duration,
}

/// One granted lease.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The new lease: every later call names its `id` and `token`; it lapses
    /// at `deadline` unless a heartbeat extends it.
    pub lease: LeaseRecord,
    /// The task, now `running`.
    pub task: TaskRecord,
    /// The run it started.
    pub run: RunRecord,
}

impl Pipeline {
    /// Leases up to `max` tasks, waiting up to `wait` for the first one.
    pub async fn lease(&self, req: &LeaseRequest) -> Result<Vec<Grant>, PipelineError> {
        let until = tokio::time::Instant::now() + req.wait;
        loop {
            let notifiers = self.queue_notifiers(&req.queues);
            let mut waits: Vec<_> = notifiers.iter().map(|n| Box::pin(n.notified())).collect();
            // Register interest before looking, so a submit between the look and
            // the wait is not missed.
            for w in &mut waits {
                w.as_mut().enable();
            }
            let grants = self.try_lease(req).await?;
            if !grants.is_empty() || tokio::time::Instant::now() >= until {
                return Ok(grants);
            }
            tokio::select! {
                _ = select_all(waits) => {}
                _ = tokio::time::sleep_until(until) => return Ok(Vec::new()),
                _ = self.shutdown.cancelled() => return Ok(Vec::new()),
            }
        }
    }

    async fn try_lease(&self, req: &LeaseRequest) -> Result<Vec<Grant>, PipelineError> {
        if self.shutdown.is_cancelled() {
            return Ok(Vec::new());
        }
        let now = self.now();
        let grants = self
            .commit(|txn, out| {
                check_worker_owner(txn, &req.worker, &req.holder)?;
                let mut grants = Vec::new();
                'take: while grants.len() < req.max {
                    for q in &req.queues {
                        let Some(key) = txn.first_key(&keys::ready_prefix(q.as_str()))? else {
                            continue;
                        };
                        match grant_one(txn, out, &key, req, now)? {
                            Some(g) => grants.push(g),
                            // A stale index entry: dropped, look again.
                            None => txn.delete(key),
                        }
                        continue 'take;
                    }
                    break;
                }
                if let Some(last) = grants.last() {
                    touch_worker(
                        txn,
                        &req.worker,
                        WorkerStatus::Busy,
                        Some(last.task.id),
                        now,
                        None,
                        Some(&req.holder),
                    )?;
                }
                Ok(grants)
            })
            .await?;
        for g in &grants {
            self.metrics
                .observe_queue_wait(g.task.queue.as_str(), g.run.queue_wait_ms);
        }
        Ok(grants)
    }

    /// Extends a lease by `extend` from now (not from the old deadline, so a
    /// late heartbeat does not earn extra time); returns the new deadline, in
    /// milliseconds since the Unix epoch.
    pub async fn heartbeat(
        &self,
        lease_id: LeaseId,
        token: u64,
        holder: Option<&str>,
        extend: Duration,
    ) -> Result<Millis, PipelineError> {
        let now = self.now();
        self.commit(|txn, _| {
            let (mut lease, _) = self.check_lease(txn, lease_id, token, holder, now)?;
            let lb = lease_id.to_bytes();
            // The deadline index is keyed by the deadline: move the entry, or
            // the reaper would still expire the lease at the old time.
            txn.delete(keys::deadline(lease.deadline, &lb));
            lease.deadline = now + extend.as_millis() as u64;
            txn.put_raw(keys::deadline(lease.deadline, &lb), &[]);
            txn.put(keys::lease(&lb), &lease)?;
            let w = WorkerId::parse(&lease.worker).ok();
            if let Some(w) = w {
                touch_worker(
                    txn,
                    &w,
                    WorkerStatus::Busy,
                    Some(lease.task_id),
                    now,
                    None,
                    None,
                )?;
            }
            Ok(lease.deadline)
        })
        .await
    }

    /// Checks that `holder` (None: the server itself) took the lease, that
    /// `token` is its current token, and that it is active on a task still
    /// running under it. Stale calls are counted.
    pub(crate) fn check_lease(
        &self,
        txn: &Txn<'_>,
        lease_id: LeaseId,
        token: u64,
        holder: Option<&str>,
        now: Millis,
    ) -> Result<(LeaseRecord, TaskRecord), PipelineError> {
        let lease = txn
            .get::<LeaseRecord>(&keys::lease(&lease_id.to_bytes()))?
            .ok_or_else(|| PipelineError::not_found("lease", lease_id))?;
        if let Some(h) = holder {
            if !lease.holder.is_empty() && lease.holder != h {
                return Err(PipelineError::Forbidden {
                    message: format!("lease {lease_id} belongs to another principal"),
                });
            }
        }
        let stale = |message: String| {
            self.metrics.stale_ack(lease.queue.as_str());
            PipelineError::StaleLease { message }
        };
        // Fencing: a worker that lost its lease (paused past the deadline,
        // partitioned, its task expired and leased again) may still be running
        // and call in late. Its token is not the lease's, or the lease has
        // ended, or the task has moved on: each of those is refused so that a
        // late call can never overwrite what the task's current holder did.
        if lease.token != token {
            return Err(stale(format!(
                "token {token} is not the fencing token of lease {lease_id}"
            )));
        }
        if let LeaseState::Ended { at, how } = &lease.state {
            return Err(stale(format!(
                "lease {lease_id} ended ({how}) at {}; the task may have been redelivered",
                format_rfc3339(*at)
            )));
        }
        // Past its deadline the lease is as good as expired, even if the
        // reaper has not run yet: the task may be handed out again any moment.
        if lease.deadline <= now {
            return Err(stale(format!(
                "lease {lease_id} expired at {}",
                format_rfc3339(lease.deadline)
            )));
        }
        let task = load_task(txn, lease.task_id)?;
        if task.state.lease().map(|l| l.lease_id) != Some(lease_id) {
            return Err(stale(format!(
                "task {} is no longer held by lease {lease_id}",
                task.id
            )));
        }
        Ok((lease, task))
    }
}

/// Grants a lease on the task behind ready-index `key`; `None` when the entry
/// is stale (the caller drops it).
fn grant_one(
    txn: &mut Txn<'_>,
    out: &mut Vec<EventRecord>,
    key: &[u8],
    req: &LeaseRequest,
    now: Millis,
) -> Result<Option<Grant>, PipelineError> {
    let Some((id, mut task, eligible_at)) = queued_task(txn, key)? else {
        return Ok(None);
    };
    let lease_id = LeaseId::from_ulid(txn.new_ulid());
    let run_id = RunId::from_ulid(txn.new_ulid());
    // The fencing token comes from one global, increasing sequence, so every
    // grant carries a token no earlier lease of the task ever had.
    let token = txn.next_sequence(keys::FENCE)?;
    // The attempt is charged now, not when the run fails: a run that never
    // reports back (its lease expires) must still use up an attempt.
    task.attempts += 1;
    task.budget_used += 1;
    task.runs.push(run_id);
    let queue_wait_ms = now.saturating_sub(eligible_at);
    let run = new_run(id, &task, run_id, lease_id, req, now, queue_wait_ms);
    let lease = new_lease(id, &task, lease_id, run_id, token, req, now);
    txn.put(keys::run(&run_id.to_bytes()), &run)?;
    txn.put(keys::lease(&lease_id.to_bytes()), &lease)?;
    txn.put_raw(keys::deadline(lease.deadline, &lease_id.to_bytes()), &[]);
    start_running(txn, out, &mut task, &lease, queue_wait_ms, now)?;
    Ok(Some(Grant { lease, task, run }))
}

/// The task behind ready-index `key`, with the `eligible_at` (ms) it was
/// queued at; `None` when the entry is malformed or its task is gone or no
/// longer queued (an index entry left behind).
fn queued_task(
    txn: &Txn<'_>,
    key: &[u8],
) -> Result<Option<(TaskId, TaskRecord, Millis)>, PipelineError> {
    let Some((_, idb)) = keys::parse_ready_tail(key) else {
        return Ok(None);
    };
    let id = TaskId::from_bytes(idb);
    let Some(task) = txn.get::<TaskRecord>(&keys::task(&idb))? else {
        return Ok(None);
    };
    let TaskState::Queued { eligible_at } = task.state else {
        return Ok(None);
    };
    Ok(Some((id, task, eligible_at)))
}

/// The record of the run a grant starts (attempt number already counted).
fn new_run(
    id: TaskId,
    task: &TaskRecord,
    run_id: RunId,
    lease_id: LeaseId,
    req: &LeaseRequest,
    now: Millis,
    queue_wait_ms: u64,
) -> RunRecord {
    RunRecord {
        id: run_id,
        task_id: id,
        attempt: task.attempts,
        lease_id,
        worker: req.worker.to_string(),
        started_at: now,
        queue_wait_ms,
        ended_at: None,
        outcome: None,
        error: None,
        steps: Vec::new(),
        agents: Vec::new(),
    }
}

/// The record of a new, active lease; its deadline is `req.lease_for` from now.
fn new_lease(
    id: TaskId,
    task: &TaskRecord,
    lease_id: LeaseId,
    run_id: RunId,
    token: u64,
    req: &LeaseRequest,
    now: Millis,
) -> LeaseRecord {
    LeaseRecord {
        id: lease_id,
        task_id: id,
        run_id,
        queue: task.queue.clone(),
        token,
        worker: req.worker.to_string(),
        holder: req.holder.clone(),
        granted_at: now,
        deadline: now + req.lease_for.as_millis() as u64,
        state: LeaseState::Active,
    }
}

/// Moves the task to `running` under `lease` (event `task_leased`).
fn start_running(
    txn: &mut Txn<'_>,
    out: &mut Vec<EventRecord>,
    task: &mut TaskRecord,
    lease: &LeaseRecord,
    queue_wait_ms: u64,
    now: Millis,
) -> Result<(), PipelineError> {
    let to = TaskState::Running(LeaseRef {
        lease_id: lease.id,
        run_id: lease.run_id,
        token: lease.token,
        worker: lease.worker.clone(),
    });
    let data = json!({
        "lease_id": lease.id.to_string(),
        "worker": lease.worker.as_str(),
        "token": lease.token,
        "deadline": format_rfc3339(lease.deadline),
        "queue_wait_ms": queue_wait_ms,
    });
    move_to(
        txn,
        out,
        task,
        Move {
            to,
            event: EventKind::TaskLeased,
            run: Some(lease.run_id),
            at: now,
            data,
        },
    )
}
