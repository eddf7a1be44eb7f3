//! Dead-letter: tasks whose attempts ran out, and bringing them back.

use serde_json::json;

use crate::events::EventKind;
use crate::pipeline::{Pipeline, PipelineError};
use crate::tasks::service::{load_task, Page, TaskFilter};
use crate::tasks::transition::{append_event, move_to};
use crate::tasks::{StateKind, TaskId, TaskRecord, TaskState};

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
                EventKind::TaskRequeued,
                None,
                now,
                by,
                false,
            )?;
            let to = TaskState::Queued { eligible_at: now };
            let why = json!({"reason": "requeued"});
            move_to(
                txn,
                out,
                &mut task,
                to,
                EventKind::TaskQueued,
                None,
                now,
                why,
            )?;
            Ok(task)
        })
        .await
    }
}
