//! The audit log seen from the kernel: appending a request's record and the
//! pruning loop that applies `audit.max_age` and `audit.max_records`.

use crate::audit::{append, prune, AuditDraft};
use crate::store::{Commit, StoreError};

use super::Pipeline;

impl Pipeline {
    /// Appends an audit record (applied now; durable with the next commit
    /// round, which the caller waits for).
    pub fn audit(&self, draft: AuditDraft) -> Result<Commit, StoreError> {
        let draft = AuditDraft {
            detail: draft.detail.map(|d| crate::redact::redact(&d).into_owned()),
            ..draft
        };
        // The audit record of a request refused below the free-space reserve is
        // still written: the reserve keeps room for it.
        let (_, c) = self.store.write_in_reserve(|txn| append(txn, draft))?;
        Ok(c)
    }

    /// Prunes the audit log by `audit.max_age` and `audit.max_records` once.
    pub async fn prune_audit(&self) -> Result<u64, StoreError> {
        let cfg = &self.config().audit;
        let older_than = (!cfg.max_age.is_zero())
            .then(|| self.now().saturating_sub(cfg.max_age.as_millis() as u64));
        let keep = (cfg.max_records > 0).then_some(cfg.max_records);
        if older_than.is_none() && keep.is_none() {
            return Ok(0);
        }
        let (n, commit) = prune(self.store(), older_than, keep)?;
        if let Some(c) = commit {
            self.store().wait_durable(c).await?;
        }
        Ok(n)
    }

    /// Prunes every `audit.prune_interval` until shutdown.
    pub async fn run_audit_pruning(self: std::sync::Arc<Self>) {
        let every = self
            .config()
            .audit
            .prune_interval
            .max(std::time::Duration::from_secs(1));
        loop {
            match self.prune_audit().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(pruned = n, "audit log pruned"),
                Err(e) => tracing::error!(error = %e, "audit pruning failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = self.shutdown_token().cancelled() => return,
            }
        }
    }
}
