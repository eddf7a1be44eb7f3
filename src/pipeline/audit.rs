//! The audit log seen from the kernel: appending a request's record, the
//! pruning loop that applies `audit.max_age` and `audit.max_records`, and
//! publishing the chain head outside the store.

use crate::audit::{append, prune, AuditDraft, AuditKeys, ChainPoint, Retention};
use crate::store::{keys, Commit, StoreError};

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
        let (_, c) = self
            .store
            .write_in_reserve(|txn| append(txn, &self.audit_keys, draft))?;
        Ok(c)
    }

    /// Prunes the audit log by `audit.max_age` and `audit.max_records` once.
    pub async fn prune_audit(&self) -> Result<u64, StoreError> {
        let rule = self.audit_retention();
        if rule == Retention::default() {
            return Ok(0);
        }
        let (n, commit) = prune(self.store(), &self.audit_keys, rule, self.now())?;
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

impl Pipeline {
    /// The retention rule `[audit]` sets.
    pub fn audit_retention(&self) -> Retention {
        let cfg = &self.config().audit;
        Retention {
            max_age_ms: cfg.max_age.as_millis() as u64,
            max_records: cfg.max_records,
        }
    }

    /// The audit MAC keys.
    pub fn audit_keys(&self) -> &AuditKeys {
        &self.audit_keys
    }

    /// The chain head: the last record's seq and hash (the anchor's when
    /// every record was pruned; zero before any).
    pub fn audit_head(&self) -> Result<ChainPoint, StoreError> {
        match self.store().get::<ChainPoint>(keys::AUDIT_HEAD)? {
            Some(h) => Ok(h),
            None => Ok(self
                .store()
                .get::<crate::audit::Anchor>(keys::AUDIT_ANCHOR)?
                .map(|a| a.point())
                .unwrap_or_default()),
        }
    }

    /// Writes the chain head to the log every `audit.head_log_interval` when
    /// it moved (and once at shutdown), so that an operator's log pipeline
    /// keeps a copy outside the store to verify against
    /// (`forgeline audit verify --expect-head SEQ:HASH`).
    pub async fn run_audit_head_log(self: std::sync::Arc<Self>) {
        let every = self
            .config()
            .audit
            .head_log_interval
            .max(std::time::Duration::from_secs(1));
        let mut last = None;
        loop {
            let stop = tokio::select! {
                _ = tokio::time::sleep(every) => false,
                _ = self.shutdown_token().cancelled() => true,
            };
            match self.audit_head() {
                Ok(h) if Some(h) != last => {
                    tracing::info!(
                        target: "forgeline::audit",
                        seq = h.seq,
                        hash = %hex::encode(h.hash),
                        head = %format!("{}:{}", h.seq, hex::encode(h.hash)),
                        "audit head"
                    );
                    last = Some(h);
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "reading the audit head failed"),
            }
            if stop {
                return;
            }
        }
    }
}
