//! The shard manager's error type.

/// Why a shard-manager operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// The configuration is invalid; `field` names what is wrong.
    #[error("invalid shard config: {field}: {reason}")]
    Config {
        /// The field (or `(json)`, `(file)` for the whole document).
        field: String,
        /// Why.
        reason: String,
    },
    /// The routing table in KV could not be read.
    #[error("{0}")]
    Table(String),
    /// A cluster operation failed.
    #[error(transparent)]
    Cluster(#[from] ha_cluster::ClusterError),
    /// Consul refused or could not be reached.
    #[error(transparent)]
    Consul(#[from] consul_api::Error),
}
