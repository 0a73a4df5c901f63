//! The cluster's error type.

use consul_api::txn::TxnError;

/// Why a cluster operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A configuration field is invalid.
    #[error("invalid cluster config: {field}: {reason}")]
    Config {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Consul could not be reached or refused a request.
    #[error(transparent)]
    Consul(#[from] consul_api::Error),
    /// This member is not the leader (or could not confirm it still is), so the write was
    /// not attempted or Consul rejected it.
    #[error("not the leader: {0}")]
    NotLeader(String),
    /// The leader's transaction was rolled back for a reason other than leadership.
    #[error("transaction rolled back: {}", describe(.0))]
    Rejected(Vec<TxnError>),
}

fn describe(errors: &[TxnError]) -> String {
    errors.iter().map(|e| format!("op {}: {}", e.op_index, e.what)).collect::<Vec<_>>().join("; ")
}

impl ClusterError {
    pub(crate) fn config(field: &'static str, reason: impl Into<String>) -> Self {
        ClusterError::Config { field, reason: reason.into() }
    }
}
