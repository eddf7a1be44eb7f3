//! `PipelineError`: why an operation was refused or failed. It is mapped to
//! an HTTP status and a JSON error in exactly one place (`http::error`).

use crate::store::StoreError;

/// Why a pipeline operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The named thing does not exist.
    #[error("{what} {id} not found")]
    NotFound {
        /// `task`, `run`, `lease`…
        what: &'static str,
        /// The id asked for.
        id: String,
    },
    /// The task is not in the store and its id is at or below the highest id
    /// retention removed: it was most likely removed (404 `gone`).
    #[error("task {id} is gone: removed by retention")]
    Gone {
        /// The id asked for.
        id: String,
    },
    /// The input is well-formed but not acceptable (422).
    #[error("{message}")]
    Invalid {
        /// The offending field (dotted path), when there is one.
        field: Option<String>,
        /// What is wrong and what is accepted.
        message: String,
    },
    /// A guardrail policy blocked it (422, naming the policy).
    #[error("{message}")]
    Blocked {
        /// The policy id.
        policy: String,
        /// The stage it was blocked at (`input`, `tool` or `output`).
        stage: &'static str,
        /// The policy, the stage and what matched (a description, never the
        /// matched text).
        message: String,
    },
    /// The caller is authenticated but may not do this to this object (403).
    #[error("{message}")]
    Forbidden {
        /// Why, naming the object (a lease or ticket held by another principal…).
        message: String,
    },
    /// The request conflicts with the current state (409).
    #[error("{message}")]
    Conflict {
        /// Machine-readable reason (`illegal_transition`, `idempotency_key_reused`…).
        code: &'static str,
        /// Human-readable explanation.
        message: String,
    },
    /// A review decision was made on a dossier that has changed since (409
    /// `stale_dossier`); the current hash goes in `details.current_hash` so a
    /// client can show the new dossier instead of failing silently.
    #[error("{message}")]
    StaleDossier {
        /// Human-readable explanation.
        message: String,
        /// The dossier's hash now, hex.
        current_hash: String,
    },
    /// A value exceeds a configured size limit (413).
    #[error("{message}")]
    TooLarge {
        /// Which limit, and the sizes.
        message: String,
    },
    /// A lease call whose lease ended or whose token is not the current one (409).
    #[error("{message}")]
    StaleLease {
        /// What made it stale.
        message: String,
    },
    /// Storage failed; the client should retry (503).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PipelineError {
    /// Shorthand for a 422 on one field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        PipelineError::Invalid {
            field: Some(field.into()),
            message: message.into(),
        }
    }
    /// Shorthand for a 404.
    pub fn not_found(what: &'static str, id: impl ToString) -> Self {
        PipelineError::NotFound {
            what,
            id: id.to_string(),
        }
    }
}
