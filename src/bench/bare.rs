//! A bare warp server answering `/health/live`: the reference that
//! forgeline's probe, with all its middleware, is compared with.

use serde_json::json;

use super::client::BenchError;

/// A warp server with one route, `/health/live`, answering what forgeline's
/// does but with no middleware: the reference the real probe is compared
/// with. It runs on its own 2-thread runtime, like a server process would.
pub struct BareWarp {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BareWarp {
    /// Its base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Starts it on 127.0.0.1 and a free port.
    pub fn start() -> Result<BareWarp, BenchError> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| BenchError::Target(format!("bare warp server: cannot listen: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| BenchError::Target(format!("bare warp server: {e}")))?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| BenchError::Target(format!("bare warp server: {e}")))?;
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                use warp::Filter;
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                let live = warp::path!("health" / "live")
                    .and(warp::get())
                    .map(|| warp::reply::json(&json!({"status": "ok"})));
                warp::serve(live)
                    .incoming(listener)
                    .graceful(async {
                        let _ = rx.await;
                    })
                    .run()
                    .await;
            });
        });
        Ok(BareWarp {
            url: format!("http://{addr}"),
            stop: Some(tx),
            thread: Some(thread),
        })
    }

    /// Stops it and waits for its thread (blocking).
    pub fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
