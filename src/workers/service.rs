//! The worker projection and the worker event intake.

use super::agent_event::{AgentEvent, AgentEventKind};
use super::status::StatusReport;
use crate::clock::Millis;
use crate::guardrails::Subject;
use crate::model::{
    Decision, EventKind, EventRecord, LeaseId, RunId, RunRecord, Stage, StepResult, TaskId,
    TaskRecord, TaskState, Verdict, WorkerId, WorkerRecord, WorkerStatus,
};
use crate::pipeline::transition::{append_event, move_to, Move, Note};
use crate::pipeline::{enforce, Pipeline, PipelineError};
use crate::store::{keys, StoreError, Txn};

/// What `report_events` stored and what the guardrails said.
#[derive(Debug, Clone)]
pub struct Reported {
    /// Ids of the stored events.
    pub event_ids: Vec<u64>,
    /// Flags raised by tool-stage policies (blocks are errors).
    pub guardrails: Vec<Decision>,
}

/// Refuses (403) when `worker` is owned by another principal: a worker id
/// belongs to the first principal that leases or reports under it, until it
/// reports itself `offline`.
pub fn check_worker_owner(
    txn: &Txn<'_>,
    worker: &WorkerId,
    principal: &str,
) -> Result<(), PipelineError> {
    match txn.get::<WorkerRecord>(&keys::worker(worker.as_str()))? {
        Some(rec) if !rec.usable_by(principal) => Err(PipelineError::Forbidden {
            message: format!(
                "worker {worker} belongs to another principal; use a worker id of your own"
            ),
        }),
        _ => Ok(()),
    }
}

/// Updates the projection from a lease call. When `finished` is given, the
/// worker only becomes idle if that was its current task. `owner` (the
/// leasing principal, already checked) takes the id when it has no owner.
pub fn touch_worker(
    txn: &mut Txn<'_>,
    worker: &WorkerId,
    status: WorkerStatus,
    current: Option<TaskId>,
    now: Millis,
    finished: Option<TaskId>,
    owner: Option<&str>,
) -> Result<(), StoreError> {
    let key = keys::worker(worker.as_str());
    let mut rec = txn.get::<WorkerRecord>(&key)?.unwrap_or(WorkerRecord {
        id: worker.to_string(),
        status,
        current_task: None,
        detail: None,
        last_seen: now,
        principal: String::new(),
    });
    if let Some(p) = owner {
        if rec.usable_by(p) {
            rec.principal = p.to_string();
        }
    }
    rec.last_seen = now;
    match finished {
        Some(done) if rec.current_task.is_some_and(|c| c != done) => {}
        _ => {
            rec.status = status;
            rec.current_task = current;
        }
    }
    txn.put(key, &rec)
}

/// The worker is done with `task` (completed, failed, expired, cancelled,
/// released): idle, unless it has moved on to another task.
pub fn worker_done(
    txn: &mut Txn<'_>,
    worker: &str,
    task: TaskId,
    now: Millis,
) -> Result<(), StoreError> {
    match WorkerId::parse(worker) {
        Ok(w) => touch_worker(txn, &w, WorkerStatus::Idle, None, now, Some(task), None),
        Err(_) => Ok(()),
    }
}

impl Pipeline {
    /// Records a worker's own status report, made by `principal` (refused
    /// with 403 when another principal owns the worker id).
    pub async fn report_status(
        &self,
        worker: &WorkerId,
        principal: &str,
        report: StatusReport,
    ) -> Result<WorkerRecord, PipelineError> {
        let now = self.now();
        self.commit(|txn, _| {
            check_worker_owner(txn, worker, principal)?;
            if let Some(t) = report.current_task {
                let task = txn.get::<TaskRecord>(&keys::task(&t.to_bytes()))?;
                if task.is_none() {
                    let msg = format!("no task with id {t}");
                    return Err(PipelineError::invalid("current_task", msg));
                }
            }
            let rec = WorkerRecord {
                id: worker.to_string(),
                status: report.status,
                current_task: report.current_task,
                detail: report
                    .detail
                    .as_deref()
                    .map(|d| crate::redact::redact(d).into_owned()),
                last_seen: now,
                principal: principal.to_string(),
            };
            txn.put(keys::worker(worker.as_str()), &rec)?;
            Ok(rec)
        })
        .await
    }

    /// Every known worker, by id.
    pub fn workers(&self, limit: usize) -> Result<Vec<WorkerRecord>, PipelineError> {
        Ok(self
            .store
            .scan::<WorkerRecord>(&[keys::WORKER], None, limit)?
            .into_iter()
            .map(|(_, w)| w)
            .collect())
    }

    /// Appends a leased worker's agent and verification events to its run.
    /// Returns the ids of the stored events.
    pub async fn report_events(
        &self,
        lease_id: LeaseId,
        token: u64,
        holder: Option<&str>,
        events: Vec<AgentEvent>,
    ) -> Result<Reported, PipelineError> {
        let now = self.now();
        // The guardrails judge what the worker sent; what is stored is
        // redacted (after the verdict), so a secret in step output is both
        // caught and kept out of the store.
        let raw = events;
        let events: Vec<AgentEvent> = raw.iter().cloned().map(AgentEvent::redacted).collect();
        let (ids, decisions) = self
            .commit(|txn, out| {
                let (lease, mut task) = self.check_lease(txn, lease_id, token, holder, now)?;
                let mut decisions = self.tool_stage(&task, &raw);
                decisions.extend(self.step_output_stage(&task, &raw));
                // The decisions are recorded even when one blocks; a block
                // stores none of the batch's events.
                enforce::record(txn, out, &task, Some(lease.run_id), &decisions, now)?;
                if enforce::blocking(&decisions).is_some() {
                    return Ok((Vec::new(), decisions));
                }
                let ids = store_events(txn, out, &mut task, lease.run_id, &events, now)?;
                Ok((ids, decisions))
            })
            .await?;
        self.count_decisions(&decisions);
        if let Some(b) = enforce::blocking(&decisions) {
            return Err(enforce::blocked(b));
        }
        self.observe_verifications(&events);
        Ok(Reported {
            event_ids: ids,
            guardrails: decisions
                .into_iter()
                .filter(|d| d.verdict != Verdict::Allow)
                .collect(),
        })
    }

    /// The tool stage: every reported tool call is checked against the
    /// task's queue's policies now, so the agent can stop.
    fn tool_stage(&self, task: &TaskRecord, events: &[AgentEvent]) -> Vec<Decision> {
        let mut decisions = Vec::new();
        for e in events
            .iter()
            .filter(|e| e.kind == AgentEventKind::ToolInvoked)
        {
            let text = e.to_json().to_string();
            decisions.extend(self.guardrails.evaluate(Subject {
                stage: Stage::Tool,
                queue: task.queue.as_str(),
                text: &text,
                tool: e.tool_name.as_deref(),
            }));
        }
        decisions
    }

    /// The output stage over each finished step's own output and error,
    /// unredacted, as it is reported (the result is screened at complete).
    fn step_output_stage(&self, task: &TaskRecord, events: &[AgentEvent]) -> Vec<Decision> {
        let mut decisions = Vec::new();
        for e in events
            .iter()
            .filter(|e| e.kind == AgentEventKind::VerificationFinished)
        {
            let text = [e.output_tail.as_deref(), e.error.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join("\n");
            if text.is_empty() {
                continue;
            }
            decisions.extend(self.guardrails.evaluate(Subject {
                stage: Stage::Output,
                queue: task.queue.as_str(),
                text: &text,
                tool: None,
            }));
        }
        decisions
    }

    /// Feeds finished verification steps (with a step, outcome and duration)
    /// to the verification metrics; only called once the events are stored.
    fn observe_verifications(&self, events: &[AgentEvent]) {
        for e in events {
            if e.kind == AgentEventKind::VerificationFinished {
                if let (Some(step), Some(outcome), Some(ms)) = (&e.step, &e.outcome, e.duration_ms)
                {
                    self.metrics.observe_verification(step, outcome, ms);
                }
            }
        }
    }
}

/// Folds the events into the lease's run and appends one task event each;
/// returns the ids of the appended events, in order.
fn store_events(
    txn: &mut Txn<'_>,
    out: &mut Vec<EventRecord>,
    task: &mut TaskRecord,
    run_id: RunId,
    events: &[AgentEvent],
    now: Millis,
) -> Result<Vec<u64>, PipelineError> {
    let run_key = keys::run(&run_id.to_bytes());
    let mut run = txn
        .get::<RunRecord>(&run_key)?
        .ok_or_else(|| PipelineError::not_found("run", run_id))?;
    let mut ids = Vec::with_capacity(events.len());
    for e in events {
        apply_to_run(&mut run, e, now);
        append_agent_event(txn, out, task, run.id, e, now)?;
        ids.push(out.last().map(|r| r.id).unwrap_or_default());
    }
    txn.put(run_key, &run)?;
    Ok(ids)
}

/// Appends the task event for `e`. The first `verification_started` of a
/// running task also moves it to verifying (the event records the move).
fn append_agent_event(
    txn: &mut Txn<'_>,
    out: &mut Vec<EventRecord>,
    task: &mut TaskRecord,
    run_id: RunId,
    e: &AgentEvent,
    now: Millis,
) -> Result<(), PipelineError> {
    let kind = event_kind(e.kind);
    let data = e.to_json();
    let start_verifying = e.kind == AgentEventKind::VerificationStarted
        && matches!(task.state, TaskState::Running(_));
    if start_verifying {
        let l = task
            .state
            .lease()
            .cloned()
            .expect("running tasks hold a lease");
        move_to(
            txn,
            out,
            task,
            Move {
                to: TaskState::Verifying(l),
                event: kind,
                run: Some(run_id),
                at: now,
                data,
            },
        )
    } else {
        append_event(
            txn,
            out,
            task,
            Note {
                kind,
                run: Some(run_id),
                at: now,
                data,
            },
        )?;
        Ok(())
    }
}

fn event_kind(k: AgentEventKind) -> EventKind {
    match k {
        AgentEventKind::AgentStarted => EventKind::AgentStarted,
        AgentEventKind::ToolInvoked => EventKind::ToolInvoked,
        AgentEventKind::AgentFinished => EventKind::AgentFinished,
        AgentEventKind::VerificationStarted => EventKind::VerificationStarted,
        AgentEventKind::VerificationFinished => EventKind::VerificationFinished,
    }
}

/// Folds an event into the run: agents seen, step results.
fn apply_to_run(run: &mut RunRecord, e: &AgentEvent, now: Millis) {
    match e.kind {
        AgentEventKind::AgentStarted => {
            if let Some(a) = &e.agent_name {
                if !run.agents.contains(a) && run.agents.len() < 64 {
                    run.agents.push(a.clone());
                }
            }
        }
        AgentEventKind::VerificationStarted => {
            run.steps.push(StepResult {
                name: e.step.clone().unwrap_or_default(),
                started_at: e.timestamp.unwrap_or(now),
                finished_at: None,
                duration_ms: None,
                outcome: None,
                exit_code: None,
                output_tail: None,
            });
        }
        AgentEventKind::VerificationFinished => {
            let name = e.step.clone().unwrap_or_default();
            let idx = run
                .steps
                .iter()
                .rposition(|s| s.name == name && s.finished_at.is_none());
            let step = match idx {
                Some(i) => &mut run.steps[i],
                None => {
                    let started = e.timestamp.unwrap_or(now);
                    run.steps.push(StepResult {
                        name,
                        started_at: started,
                        finished_at: None,
                        duration_ms: None,
                        outcome: None,
                        exit_code: None,
                        output_tail: None,
                    });
                    run.steps.last_mut().expect("just pushed")
                }
            };
            let finished = e.timestamp.unwrap_or(now);
            step.finished_at = Some(finished);
            // A reported duration is the worker's own measure: the step
            // started that long before it finished (a start reported in the
            // same batch, without a timestamp, was stamped at arrival).
            match e.duration_ms {
                Some(ms) => {
                    step.started_at = finished.saturating_sub(ms);
                    step.duration_ms = Some(ms);
                }
                None => step.duration_ms = Some(finished.saturating_sub(step.started_at)),
            }
            step.outcome = e.outcome.clone();
            step.exit_code = e.exit_code.map(|c| c as i32);
            step.output_tail = e.output_tail.clone();
        }
        AgentEventKind::ToolInvoked | AgentEventKind::AgentFinished => {}
    }
}
