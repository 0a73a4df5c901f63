//! Membership, leader election with fencing, and failover for a service on Consul.
//!
//! Each member registers itself as an instance of one Consul service with a TTL check,
//! heartbeats it, and holds a session bound to that check. Members discover each other
//! with blocking health queries and all build the same [`hashring::Ring`] from the healthy
//! set. One member leads: it holds the leader key with its session; the key's `LockIndex`
//! is its fencing token. A leader acts only while its lease (last confirmed renewal plus
//! the TTL, minus a margin) runs, so it stops before Consul could let anyone else take the
//! lock; [`Cluster::leader_txn`] makes Consul itself reject a deposed leader's writes.
//!
//! ```no_run
//! use ha_cluster::{Cluster, ClusterConfig};
//!
//! # async fn run() -> Result<(), ha_cluster::ClusterError> {
//! let client = consul_api::Client::from_env()?;
//! let config = ClusterConfig::new("orders", "node-1", "10.0.0.1:7000");
//! let cluster = Cluster::builder(client, config).start().await?;
//! if let Some(owner) = cluster.node_for_key(b"order:42") {
//!     println!("order 42 lives on {} at {}", owner.id, owner.address);
//! }
//! if cluster.is_leader() {
//!     let ops = vec![consul_api::txn::KvOp::set("orders/epoch", "7")];
//!     let done = cluster.leader_txn(ops).await?;
//!     println!("written under fencing token {}", done.fencing_token.0);
//! }
//! cluster.stop().await?;
//! # Ok(())
//! # }
//! ```

mod backoff;
mod cluster;
mod config;
mod error;
mod member;

pub use cluster::{
    Cluster, ClusterBuilder, Event, LeaderInfo, LeaderTxn, read_leader, read_members,
};
pub use config::ClusterConfig;
pub use error::ClusterError;
pub use member::{Health, Member, membership_version};
