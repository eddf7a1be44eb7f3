//! Wake-ups for long-polling lessees: one `Notify` per queue, poked by the
//! commit that made work ready in it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// Wakes long-polling lessees when their queue gets work.
#[derive(Debug, Default)]
pub struct QueueWakers {
    map: Mutex<HashMap<String, Arc<Notify>>>,
}

impl QueueWakers {
    /// The notifier of one queue (created on first use).
    pub fn get(&self, queue: &str) -> Arc<Notify> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(queue.to_string()).or_default().clone()
    }

    /// Wakes every lessee waiting on `queue`.
    pub fn wake(&self, queue: &str) {
        let n = {
            let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            map.get(queue).cloned()
        };
        if let Some(n) = n {
            n.notify_waiters();
        }
    }
}
