//! Dead-letter: tasks whose attempts ran out, and bringing them back.

use serde_json::json;

use crate::model::{EventKind, StateKind, TaskId, TaskRecord, TaskState};
use crate::pipeline::transition::{append_event, move_to, Move, Note};
use crate::pipeline::{load_task, Pipeline, PipelineError};
use crate::tasks::service::{Page, TaskFilter};

impl Pipeline {
    /// Dead tasks, newest first.
    pub fn dead_letter(
        &self,
        queue: Option<String>,
        cursor: Option<TaskId>,
        limit: usize,
    ) -> Result<Page<TaskRecord>, PipelineError> {
        let filter = TaskFilter {
            state: Some(StateKind::Dead),
            queue,
            labels: Vec::new(),
            submitted_by: None,
        };
        self.list_tasks(&filter, cursor, limit)
    }

    /// Puts a dead task back on its queue with a fresh attempt budget.
    pub async fn requeue_dead(&self, id: TaskId, by: &str) -> Result<TaskRecord, PipelineError> {
        let now = self.now();
        self.commit(|txn, out| {
            let mut task = load_task(txn, id)?;
            if task.state.kind() != StateKind::Dead {
                return Err(PipelineError::Conflict {
                    code: "not_dead",
                    message: format!(
                        "task {id} is {}, not dead; only dead-lettered tasks can be requeued",
                        task.state.kind().as_str()
                    ),
                });
            }
            task.budget_used = 0;
            let by = json!({"by": by});
            append_event(
                txn,
                out,
                &task,
                Note {
                    kind: EventKind::TaskRequeued,
                    run: None,
                    at: now,
                    data: by,
                },
            )?;
            let to = TaskState::Queued { eligible_at: now };
            let why = json!({"reason": "requeued"});
            move_to(
                txn,
                out,
                &mut task,
                Move {
                    to,
                    event: EventKind::TaskQueued,
                    run: None,
                    at: now,
                    data: why,
                },
            )?;
            Ok(task)
        })
        .await
    }
}
