//! `GET /api/v1/backup`: an online backup of the store, streamed as it is
//! written (see `retention::backup`). Writes go on meanwhile.

use std::sync::Arc;

use bytes::Bytes;
use tokio_stream::wrappers::ReceiverStream;
use warp::http::{HeaderValue, StatusCode};
use warp::reply::Response;
use warp::{Filter, Reply};

use crate::auth::matrix::BACKUP;
use crate::http::{endpoint, serve, Api, ApiError, Call};

/// The backup route.
pub fn routes(
    api: &Arc<Api>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "backup")
        .and(warp::get())
        .and(endpoint(api, &BACKUP))
        .then(|c| serve(&BACKUP, c, stream))
}

/// Chunks of the backup go through a channel from the blocking thread that
/// walks the snapshot; a client that goes away ends the walk.
struct ChannelWriter(tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::other("the client went away"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn stream(c: Call) -> Result<Response, ApiError> {
    c.query().only(&[])?;
    let p = c.p().clone();
    // Taken here, so a second backup is refused with 409 before any body.
    let snapshot_free = p.store().snapshot();
    drop(
        snapshot_free.ok_or(crate::pipeline::PipelineError::Conflict {
            code: "backup_running",
            message: "another backup of this store is running; try again when it ends".into(),
        })?,
    );
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let now = p.now();
    tokio::task::spawn_blocking(move || {
        let out = std::io::BufWriter::with_capacity(256 * 1024, ChannelWriter(tx.clone()));
        match crate::retention::backup::backup(p.store(), p.config(), now, out) {
            Ok(frames) => tracing::info!(frames, "backup streamed"),
            Err(e) => {
                tracing::error!(error = %e, "backup failed");
                // The body ends without its checksum: restore refuses it.
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
        }
    });
    let mut resp = warp::reply::stream(ReceiverStream::new(rx)).into_response();
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_static("application/octet-stream"),
    );
    let name = format!(
        "attachment; filename=\"forgeline-{}.backup\"",
        crate::clock::format_rfc3339(now).replace(':', "-")
    );
    if let Ok(v) = HeaderValue::from_str(&name) {
        h.insert("content-disposition", v);
    }
    Ok(resp)
}
