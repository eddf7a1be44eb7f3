//! Events over SSE: read from the store up to the durable watermark, then wait.
//!
//! A stream never holds events in memory beyond one read batch: each
//! subscriber reads the `E` (firehose) or `X` (one task) index from its cursor
//! up to the durable event id, and sleeps on the watermark when caught up. So
//! `Last-Event-ID` resumes exactly (ids are global and monotonic), a slow
//! client slows only itself, and an event is never shown before it is durable.
//!
//! The producer runs as its own task and forwards into a channel because warp's
//! SSE reply needs a `Sync` stream; it ends on `max_events`, `idle_timeout`,
//! the end of the task (task streams), client disconnect, or server shutdown.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::auth::{Sight, Viewer};
use crate::model::{format_event_id, EventKind, EventRecord, TaskId};
use crate::pipeline::{Pipeline, PipelineError};
use crate::store::keys;

/// What a stream covers.
#[derive(Debug, Clone)]
pub enum Scope {
    /// Every event, optionally filtered.
    All {
        /// Only this queue.
        queue: Option<String>,
        /// Only these types.
        types: Option<Vec<EventKind>>,
    },
    /// One task's events; ends after the task's final event.
    Task(TaskId),
}

/// A stream request.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    /// Which index it reads: `E` for every event, `X` for one task's.
    pub scope: Scope,
    /// Resume after this event id (0: from the start).
    pub after: u64,
    /// End after this many events.
    pub max_events: Option<usize>,
    /// End after this long without an event.
    pub idle_timeout: Option<Duration>,
    /// Who reads it: events of tasks the reader may not see are skipped, and
    /// content is withheld where it sees only metadata (`auth.visibility`).
    pub viewer: Viewer,
}

/// One item of a stream: an event, or a read failure that ends it.
pub type Item = Result<warp::sse::Event, Infallible>;

/// Opens a stream.
pub fn open(
    pipeline: Arc<Pipeline>,
    spec: StreamSpec,
) -> impl Stream<Item = Item> + Send + Sync + 'static {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let metrics = pipeline.metrics().clone();
        metrics.sse_subscribers.inc();
        if let Err(e) = produce(&pipeline, spec, &tx).await {
            tracing::warn!(error = %e, "event stream ended by a read error");
        }
        metrics.sse_subscribers.dec();
    });
    ReceiverStream::new(rx)
}

fn to_sse(e: &EventRecord, sight: Sight) -> warp::sse::Event {
    let mut envelope = e.envelope();
    if sight == Sight::Metadata {
        envelope.withhold_content();
    }
    let data = serde_json::to_string(&envelope).unwrap_or_else(|_| "{}".into());
    warp::sse::Event::default()
        .id(format_event_id(e.id))
        .event(e.kind.as_str())
        .data(data)
}

/// Whether a task stream has nothing more to send: the task has ended and
/// its last event has been sent (or was before the resume point), or it was
/// removed by retention. The record may be ahead of the durable watermark,
/// hence the event-id check.
fn task_stream_over(pipeline: &Pipeline, id: TaskId, cursor: u64) -> Result<bool, PipelineError> {
    let task = match pipeline.task(id) {
        Err(PipelineError::Gone { .. }) => return Ok(true),
        other => other?,
    };
    Ok(task.state.kind().is_terminal() && pipeline.last_event_id_of(id)? <= cursor)
}

/// Sends the `stream_gap` notice first when a firehose resumes before
/// removed events; `false` when the client has gone.
async fn announce_gap(
    pipeline: &Pipeline,
    spec: &StreamSpec,
    tx: &mpsc::Sender<Item>,
) -> Result<bool, PipelineError> {
    if let Scope::All { .. } = spec.scope {
        if let Some(gap) = pruned_gap(pipeline, spec.after)? {
            return Ok(tx.send(Ok(gap)).await.is_ok());
        }
    }
    Ok(true)
}

/// The `stream_gap` notice for a firehose resumed after `cursor` when
/// retention has since removed an event after it (the highest removed id is
/// above the cursor): the stream goes on with what is left, and says so
/// instead of skipping in silence. It carries no `id`, so the client's
/// `Last-Event-ID` does not move.
fn pruned_gap(pipeline: &Pipeline, cursor: u64) -> Result<Option<warp::sse::Event>, PipelineError> {
    let pruned = pipeline
        .store()
        .get_raw_value(keys::PRUNED_EVENT)?
        .and_then(|v| v.try_into().ok())
        .map_or(0, u64::from_be_bytes);
    if pruned <= cursor {
        return Ok(None);
    }
    let data = serde_json::json!({
        "schema": "forgeline.stream-gap.v1",
        "type": "stream_gap",
        "after": format_event_id(cursor),
        "removed_through": format_event_id(pruned),
        "message": "events after the resume point, up to removed_through, were removed by retention \
                    with their tasks; the stream goes on with the events that remain",
    });
    Ok(Some(
        warp::sse::Event::default()
            .event("stream_gap")
            .data(data.to_string()),
    ))
}

fn wanted(scope: &Scope, e: &EventRecord) -> bool {
    match scope {
        Scope::All { queue, types } => {
            queue.as_deref().is_none_or(|q| e.queue.as_str() == q)
                && types.as_ref().is_none_or(|t| t.contains(&e.kind))
        }
        Scope::Task(id) => e.task_id == *id,
    }
}

/// What one stream's reader sees of each task, looked up once per task.
struct Sights {
    viewer: Viewer,
    known: HashMap<TaskId, Option<Sight>>,
}

impl Sights {
    /// Most tasks remembered before the memory starts over.
    const MAX_KNOWN: usize = 4096;

    fn of(&mut self, pipeline: &Pipeline, task: TaskId) -> Result<Option<Sight>, PipelineError> {
        if let Some(s) = self.viewer.uniform() {
            return Ok(Some(s));
        }
        if let Some(s) = self.known.get(&task) {
            return Ok(*s);
        }
        let sight = match pipeline.task(task) {
            Ok(t) => self.viewer.sight(&t.submitted_by),
            Err(PipelineError::NotFound { .. } | PipelineError::Gone { .. }) => None,
            Err(e) => return Err(e),
        };
        if self.known.len() >= Self::MAX_KNOWN {
            self.known.clear();
        }
        self.known.insert(task, sight);
        Ok(sight)
    }
}

async fn produce(
    pipeline: &Pipeline,
    spec: StreamSpec,
    tx: &mpsc::Sender<Item>,
) -> Result<(), PipelineError> {
    let batch = pipeline.config().events.read_batch;
    let mut durable = pipeline.store().durable();
    let mut cursor = spec.after;
    let mut sent = 0usize;
    let idle = spec.idle_timeout;
    let mut sights = Sights {
        viewer: spec.viewer.clone(),
        known: HashMap::new(),
    };
    let mut idle_deadline = idle.map(|d| tokio::time::Instant::now() + d);
    if !announce_gap(pipeline, &spec, tx).await? {
        return Ok(()); // client went away
    }
    loop {
        let upto = durable.borrow_and_update().event_id;
        while cursor < upto {
            let events: Vec<EventRecord> = match &spec.scope {
                Scope::All { .. } => pipeline
                    .store()
                    .scan::<EventRecord>(&[keys::EVENT], Some(&keys::event(cursor)), batch)?
                    .into_iter()
                    .map(|(_, e)| e)
                    .collect(),
                Scope::Task(id) => pipeline.task_events_after(*id, cursor, batch)?,
            };
            if events.is_empty() {
                cursor = upto;
                break;
            }
            for e in events {
                if e.id > upto {
                    cursor = upto;
                    break;
                }
                cursor = e.id;
                if !wanted(&spec.scope, &e) {
                    continue;
                }
                let Some(sight) = sights.of(pipeline, e.task_id)? else {
                    continue;
                };
                if tx.send(Ok(to_sse(&e, sight))).await.is_err() {
                    return Ok(()); // client went away
                }
                sent += 1;
                idle_deadline = idle.map(|d| tokio::time::Instant::now() + d);
                if spec.max_events.is_some_and(|m| sent >= m) {
                    return Ok(());
                }
            }
        }
        if let Scope::Task(id) = &spec.scope {
            if task_stream_over(pipeline, *id, cursor)? {
                return Ok(());
            }
        }
        let idle_sleep = async {
            match idle_deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = durable.changed() => if r.is_err() { return Ok(()) },
            _ = idle_sleep => return Ok(()),
            _ = pipeline.shutdown_token().cancelled() => return Ok(()),
            _ = tx.closed() => return Ok(()),
        }
    }
}
