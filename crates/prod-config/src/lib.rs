//! Shards and replicas on top of `ha-cluster`: placement, routing, rebalancing, recovery.
//!
//! The data is split into a fixed number of shards (`key → xxh3 % shards`), each copied to
//! `replication_factor` nodes placed by the zone-aware hash ring. The [`RoutingTable`]
//! (shard → primary, copies, epoch) lives in Consul KV; every node caches it with a
//! blocking watch and answers [`RoutingTable::route`] locally. The cluster leader runs the
//! controller: it moves the table toward the target one safe [`plan`] step at a time,
//! make-before-break and throttled, writing each step with `leader_txn` so a deposed leader
//! can never apply one.

mod config;
mod error;
mod manager;
pub mod plan;
mod table;

pub use config::ShardConfig;
pub use error::ShardError;
pub use manager::{
    HealthSnapshot, NodeLoad, Route, ShardHealth, ShardManager, ShardManagerOptions, health_of,
};
pub use plan::{NodeStatus, NodeView};
pub use table::{Replica, ReplicaState, RouteRef, RoutingTable, Shard, shard_for_key};
