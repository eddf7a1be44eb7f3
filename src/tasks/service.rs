//! Task operations: submit, read, list, cancel.

use std::collections::BTreeMap;

use serde_json::json;

use super::submit::NewTask;
use crate::clock::Millis;
use crate::guardrails::Subject;
use crate::model::{
    Decision, EventKind, EventRecord, IdempotencyRecord, RunId, RunOutcome, RunRecord,
    ScheduleReason, Stage, StateKind, TaskId, TaskRecord, TaskState,
};
use crate::pipeline::transition::{self, append_event, move_to, Move, Note};
use crate::pipeline::{end_lease, enforce, finish_run, load_task, Pipeline, PipelineError};
use crate::store::{keys, Txn};

/// Most rows one list page examines before it returns a cursor (so that a
/// sparse filter cannot turn one request into a full scan).
pub const LIST_SCAN_BUDGET: usize = 10_000;

/// A submission with its request context.
#[derive(Debug, Clone)]
pub struct Submission {
    /// The authenticated principal: becomes `submitted_by` and scopes the
    /// Idempotency-Key.
    pub principal: String,
    /// `Idempotency-Key` and the SHA-256 of the body.
    pub idempotency: Option<(String, [u8; 32])>,
    /// W3C traceparent of the submit request.
    pub traceparent: Option<String>,
    /// The validated task.
    pub task: NewTask,
}

/// What `submit` did.
#[derive(Debug, Clone)]
pub enum Submitted {
    /// A new task.
    Created(TaskRecord),
    /// The Idempotency-Key was seen with the same body: the first task.
    Replayed(TaskRecord),
}

/// Filters for listing tasks.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    /// Only this state.
    pub state: Option<StateKind>,
    /// Only this queue.
    pub queue: Option<String>,
    /// Only tasks carrying all these labels.
    pub labels: Vec<(String, String)>,
    /// Only tasks this principal submitted (the read model, `auth.visibility`).
    pub submitted_by: Option<String>,
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// Items, newest first.
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; `None` at the end.
    pub next_cursor: Option<String>,
}

impl Pipeline {
    /// Accepts a task: records it, queues or schedules it, and returns once the
    /// record is durable.
    pub async fn submit(&self, s: Submission) -> Result<Submitted, PipelineError> {
        let now = self.now();
        let decisions = self.screen_input(&s.task)?;
        self.commit(|txn, out| {
            // Looked up inside the write (writes are serialised), so two
            // submissions racing with one Idempotency-Key cannot both create.
            if let Some(task) = replayed(txn, &s)? {
                return Ok(Submitted::Replayed(task));
            }
            let id = TaskId::from_ulid(txn.new_ulid());
            let task = new_record(id, &s, now);
            transition::insert(txn, &task)?;
            if let Some((key, hash)) = &s.idempotency {
                txn.put(
                    keys::idempotency(&s.principal, key),
                    &IdempotencyRecord {
                        body_sha256: *hash,
                        task_id: id,
                    },
                )?;
            }
            record_submission(txn, out, &task, now)?;
            enforce::record(txn, out, &task, None, &decisions, now)?;
            Ok(Submitted::Created(task))
        })
        .await
    }

    /// Runs the input-stage guardrails over the payload and labels, counts
    /// their decisions, and refuses a blocked submission (422) before anything
    /// is written.
    fn screen_input(&self, task: &NewTask) -> Result<Vec<Decision>, PipelineError> {
        let text = format!("{}\n{}", task.payload, serde_json::json!(task.labels));
        let decisions = self.guardrails.evaluate(Subject {
            stage: Stage::Input,
            queue: task.queue.as_str(),
            text: &text,
            tool: None,
        });
        self.count_decisions(&decisions);
        if let Some(block) = enforce::blocking(&decisions) {
            return Err(enforce::blocked(block));
        }
        Ok(decisions)
    }

    /// One task, read outside any write (`not_found` when unknown).
    pub fn task(&self, id: TaskId) -> Result<TaskRecord, PipelineError> {
        self.store
            .get(&keys::task(&id.to_bytes()))?
            .ok_or_else(|| self.task_missing(id))
    }

    /// One run, read outside any write (`not_found` when unknown).
    pub fn run(&self, id: RunId) -> Result<RunRecord, PipelineError> {
        self.store
            .get(&keys::run(&id.to_bytes()))?
            .ok_or_else(|| PipelineError::not_found("run", id))
    }

    /// The runs of a task, oldest first.
    pub fn runs_of(&self, task: &TaskRecord) -> Result<Vec<RunRecord>, PipelineError> {
        task.runs.iter().map(|r| self.run(*r)).collect()
    }

    /// The last `n` events of a task (oldest first) and whether older ones exist.
    pub fn recent_events(
        &self,
        id: TaskId,
        n: usize,
    ) -> Result<(Vec<EventRecord>, bool), PipelineError> {
        let prefix = keys::task_events_prefix(&id.to_bytes());
        let mut ids = self.store.keys_rev(&prefix, None, n + 1)?;
        let truncated = ids.len() > n;
        ids.truncate(n);
        ids.reverse();
        let events = ids
            .iter()
            .filter_map(|k| keys::parse_task_event(k))
            .map(|e| self.event(e))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((events, truncated))
    }

    /// Events of a task after `after`, oldest first, at most `limit`.
    pub fn task_events_after(
        &self,
        id: TaskId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<EventRecord>, PipelineError> {
        let tb = id.to_bytes();
        let prefix = keys::task_events_prefix(&tb);
        let from = keys::task_event(&tb, after);
        self.store
            .keys(&prefix, Some(&from), limit)?
            .iter()
            .filter_map(|k| keys::parse_task_event(k))
            .map(|e| self.event(e))
            .collect()
    }

    /// The id of a task's latest event (0 when it has none).
    pub fn last_event_id_of(&self, id: TaskId) -> Result<u64, PipelineError> {
        let prefix = keys::task_events_prefix(&id.to_bytes());
        Ok(self
            .store
            .keys_rev(&prefix, None, 1)?
            .first()
            .and_then(|k| keys::parse_task_event(k))
            .unwrap_or(0))
    }

    /// One event by id.
    pub fn event(&self, id: u64) -> Result<EventRecord, PipelineError> {
        self.store
            .get(&keys::event(id))?
            .ok_or_else(|| PipelineError::not_found("event", id))
    }

    /// Lists tasks, newest first.
    pub fn list_tasks(
        &self,
        filter: &TaskFilter,
        cursor: Option<TaskId>,
        limit: usize,
    ) -> Result<Page<TaskRecord>, PipelineError> {
        let mut items = Vec::new();
        let mut scanned = 0;
        let mut last: Option<TaskId> = cursor;
        let matches = |t: &TaskRecord| {
            filter
                .queue
                .as_deref()
                .is_none_or(|q| t.queue.as_str() == q)
                && filter.state.is_none_or(|s| t.state.kind() == s)
                && filter
                    .labels
                    .iter()
                    .all(|(k, v)| t.labels.get(k).is_some_and(|x| x == v))
                && filter
                    .submitted_by
                    .as_deref()
                    .is_none_or(|p| t.submitted_by == p)
        };
        let chunk = 256;
        loop {
            let batch: Vec<TaskRecord> = match filter.state {
                Some(state) => {
                    let prefix = keys::state_prefix(state.code());
                    let before = last.map(|id| keys::state(state.code(), &id.to_bytes()));
                    let ks = self.store.keys_rev(&prefix, before.as_deref(), chunk)?;
                    let mut v = Vec::with_capacity(ks.len());
                    for k in ks {
                        if let Some(id) = keys::trailing_id(&k) {
                            if let Some(t) = self.store.get::<TaskRecord>(&keys::task(&id))? {
                                v.push(t);
                            }
                        }
                    }
                    v
                }
                None => {
                    let before = last.map(|id| keys::task(&id.to_bytes()));
                    self.store
                        .scan_rev::<TaskRecord>(&[keys::TASK], before.as_deref(), chunk)?
                        .into_iter()
                        .map(|(_, t)| t)
                        .collect()
                }
            };
            let exhausted = batch.len() < chunk;
            for t in batch {
                scanned += 1;
                last = Some(t.id);
                if matches(&t) {
                    items.push(t);
                    if items.len() == limit {
                        return Ok(Page {
                            items,
                            next_cursor: last.map(|l| l.to_string()),
                        });
                    }
                }
                if scanned >= LIST_SCAN_BUDGET {
                    return Ok(Page {
                        items,
                        next_cursor: last.map(|l| l.to_string()),
                    });
                }
            }
            if exhausted {
                return Ok(Page {
                    items,
                    next_cursor: None,
                });
            }
        }
    }

    /// Cancels a task that has not ended; a held lease ends with it.
    pub async fn cancel(
        &self,
        id: TaskId,
        by: &str,
        reason: Option<String>,
    ) -> Result<TaskRecord, PipelineError> {
        let now = self.now();
        let reason = reason.map(|r| crate::redact::redact(&r).into_owned());
        self.commit(|txn, out| {
            let mut task = load_task(txn, id)?;
            let lease = task.state.lease().cloned();
            // The ticket closes in the same write; left open it would stay in
            // the pending set, and on the SLA clock, for a task that no longer
            // waits for it.
            if task.state.kind() == StateKind::AwaitingReview {
                self.cancel_ticket_of(txn, id, now)?;
            }
            if let Some(l) = &lease {
                end_lease(txn, l.lease_id, now, "cancelled")?;
                crate::workers::worker_done(txn, &l.worker, id, now)?;
                finish_run(
                    txn,
                    l.run_id,
                    now,
                    RunOutcome::Cancelled,
                    Some("cancelled".into()),
                )?;
            }
            let to = TaskState::Cancelled {
                at: now,
                by: by.to_string(),
                reason: reason.clone(),
            };
            let run = lease.map(|l| l.run_id);
            move_to(
                txn,
                out,
                &mut task,
                Move {
                    to,
                    event: EventKind::TaskCancelled,
                    run,
                    at: now,
                    data: json!({"by": by, "reason": reason}),
                },
            )?;
            Ok(task)
        })
        .await
    }

    /// The `eligible_at` (ms) of the oldest ready task in each queue that has
    /// one: the first key of each priority band of the ready index.
    pub fn oldest_ready(&self) -> Result<Vec<(String, u64)>, PipelineError> {
        let mut out = Vec::new();
        for ((state, queue), n) in self.task_counts()? {
            if state != StateKind::Queued || n == 0 {
                continue;
            }
            let mut oldest: Option<u64> = None;
            for priority in 0..=9u8 {
                let band = keys::ready_band_prefix(&queue, priority);
                if let Some(k) = self.store.first_key(&band)? {
                    if let Some((at, _)) = keys::parse_ready_tail(&k) {
                        oldest = Some(oldest.map_or(at, |o| o.min(at)));
                    }
                }
            }
            if let Some(at) = oldest {
                out.push((queue, at));
            }
        }
        Ok(out)
    }

    /// Task counts by (state, queue), kept as counters in the store.
    pub fn task_counts(&self) -> Result<BTreeMap<(StateKind, String), u64>, PipelineError> {
        let mut out = BTreeMap::new();
        for (k, v) in self.store.scan_raw(&[keys::COUNT])? {
            if k.len() < 2 {
                continue;
            }
            let Some(state) = StateKind::ALL.into_iter().find(|s| s.code() == k[1]) else {
                continue;
            };
            let queue = String::from_utf8_lossy(&k[2..]).into_owned();
            out.insert(
                (state, queue),
                u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8])),
            );
        }
        Ok(out)
    }
}

/// The task an earlier submission with the same `Idempotency-Key` created,
/// when there was one with the same body; a 409 when the key came with a
/// different body; `None` when the key is new (or none was given).
fn replayed(txn: &Txn<'_>, s: &Submission) -> Result<Option<TaskRecord>, PipelineError> {
    let Some((key, hash)) = &s.idempotency else {
        return Ok(None);
    };
    let ikey = keys::idempotency(&s.principal, key);
    let Some(seen) = txn.get::<IdempotencyRecord>(&ikey)? else {
        return Ok(None);
    };
    if &seen.body_sha256 != hash {
        return Err(PipelineError::Conflict {
            code: "idempotency_key_reused",
            message: format!(
                "Idempotency-Key {key:?} was already used with a different body (task {})",
                seen.task_id
            ),
        });
    }
    // The task may have been removed by retention before its key expired:
    // then the key is free again and this submit makes a new task.
    Ok(txn.get::<TaskRecord>(&keys::task(&seen.task_id.to_bytes()))?)
}

/// The record of a new task: `scheduled` when it has a future `eligible_at`,
/// otherwise `queued` now (`now` in Unix ms).
fn new_record(id: TaskId, s: &Submission, now: Millis) -> TaskRecord {
    let t = s.task.clone();
    let state = match t.eligible_at {
        Some(at) => TaskState::Scheduled {
            eligible_at: at,
            reason: ScheduleReason::Delayed,
        },
        None => TaskState::Queued { eligible_at: now },
    };
    TaskRecord {
        id,
        queue: t.queue,
        priority: t.priority,
        labels: t.labels,
        payload: t.payload,
        steps: t.steps,
        max_attempts: t.max_attempts,
        review: t.review,
        workdir: t.workdir,
        submitted_by: s.principal.clone(),
        idempotency_key: s.idempotency.as_ref().map(|(k, _)| k.clone()),
        traceparent: s.traceparent.clone(),
        created_at: now,
        updated_at: now,
        state,
        attempts: 0,
        budget_used: 0,
        runs: Vec::new(),
        last_error: None,
        result: None,
    }
}

/// Appends a new task's two first events: `task_submitted`, then the event
/// of the state it starts in (`task_queued` or `task_scheduled`).
fn record_submission(
    txn: &mut Txn<'_>,
    out: &mut Vec<EventRecord>,
    task: &TaskRecord,
    now: Millis,
) -> Result<(), PipelineError> {
    let submitted = json!({
        "priority": task.priority,
        "labels": task.labels,
        "steps": task.steps.iter().map(|s| s.name().as_str()).collect::<Vec<_>>(),
        "max_attempts": task.max_attempts,
        "review_required": task.review.required,
        "submitted_by": task.submitted_by,
    });
    append_event(
        txn,
        out,
        task,
        Note {
            kind: EventKind::TaskSubmitted,
            run: None,
            at: now,
            data: submitted,
        },
    )?;
    let (kind, data) = match &task.state {
        TaskState::Scheduled { eligible_at, .. } => (
            EventKind::TaskScheduled,
            json!({"reason": "delayed", "eligible_at": crate::clock::format_rfc3339(*eligible_at)}),
        ),
        _ => (EventKind::TaskQueued, json!({"reason": "submitted"})),
    };
    transition::entered(
        txn,
        out,
        task,
        Note {
            kind,
            run: None,
            at: now,
            data,
        },
    )?;
    Ok(())
}
