//! Shards and replicas on top of `ha-cluster`: placement, routing, rebalancing, recovery.
//!
//! The data is split into a fixed number of shards (`key → xxh3 % shards`), each copied to
//! `replication_factor` nodes placed by the zone-aware hash ring. The [`RoutingTable`]
//! (shard → primary, copies, epoch) lives in Consul KV; every node caches it with a
//! blocking watch and answers [`RoutingTable::route`] locally. The cluster leader runs the
//! controller: it moves the table toward the target one safe [`plan`] step at a time,
//! make-before-break and throttled, writing each step with `leader_txn` so a deposed leader
//! can never apply one.
//!
//! The planner is a pure function, so placement can be tried without any Consul:
//!
//! ```
//! use std::collections::HashSet;
//! use prod_config::plan::{PlanInput, plan};
//! use prod_config::{NodeStatus, NodeView, RoutingTable, ShardConfig};
//!
//! let nodes: Vec<NodeView> = ["a", "b", "c"]
//!     .iter()
//!     .enumerate()
//!     .map(|(i, id)| NodeView {
//!         id: id.to_string(),
//!         zone: Some(format!("zone-{i}")),
//!         weight: 1,
//!         status: NodeStatus::Live,
//!     })
//!     .collect();
//! let config = ShardConfig { shards: 8, replication_factor: 3, ..ShardConfig::default() };
//! let none = HashSet::new();
//! let input = PlanInput { config: &config, nodes: &nodes, caught_up: &none };
//! let table = plan(&RoutingTable::default(), &input).expect("a first placement");
//! let route = table.route(b"order:42").unwrap();
//! assert_eq!(route.replicas.len(), 3);
//! assert_eq!(route.epoch, 1);
//! assert!(plan(&table, &input).is_none(), "nothing left to do");
//! ```
//!
//! In a service, [`ShardManager::start`] runs all of this on a live cluster (see
//! `examples/production.rs`).

mod audit;
mod config;
mod error;
mod manager;
pub mod plan;
mod table;

pub use audit::TableAuditor;
pub use config::ShardConfig;
pub use error::ShardError;
pub use manager::{
    HealthSnapshot, NodeLoad, Route, ShardHealth, ShardManager, ShardManagerOptions, health_of,
};
pub use plan::{NodeStatus, NodeView};
pub use table::{Replica, ReplicaState, RouteRef, RoutingTable, Shard, shard_for_key};
