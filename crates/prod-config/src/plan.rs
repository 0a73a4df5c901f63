//! The planner: a pure function from (table, nodes, config, progress reports) to the next
//! table. The controller applies one step at a time; each step is safe on its own.
//!
//! Rules, per shard:
//! 1. A shard never placed gets its target replicas at once, all in sync (no data yet).
//! 2. Copies whose node reported "caught up" (for this very copy) become in sync.
//! 3. If the primary is down or not in sync, an in-sync live copy takes over at once with a
//!    new epoch; otherwise the primary moves to the target's first node once that is in sync.
//! 4. A copy outside the target is dropped only when it is safe: catching-up copies at once;
//!    live in-sync copies only when every target copy is live and in sync (make-before-break)
//!    and at least `min_live` stay; dead copies only when another live in-sync copy exists.
//!    The primary and the last in-sync copy are never dropped.
//! 5. Missing target copies are added as catching up, under-replicated shards first, while
//!    fewer than `max_moving` shards are copying.
//!
//! The target comes from the hash ring of eligible nodes (live, or down for less than the
//! rebalance delay; never draining), zone-aware, so membership changes move few copies and a
//! node that comes back in time finds its shards where it left them.

use std::collections::{HashMap, HashSet};

use hashring::{Member, Ring, RingConfig};

use crate::ShardConfig;
use crate::table::{Replica, ReplicaState, RoutingTable, Shard, shard_ring_key};

/// A node's state as the planner sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeStatus {
    /// Healthy.
    Live,
    /// Failed; `expired` once it has been down longer than the rebalance delay.
    Down {
        /// Down longer than the rebalance delay.
        expired: bool,
    },
}

/// A node the planner may place copies on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    /// The node id.
    pub id: String,
    /// Its failure domain.
    pub zone: Option<String>,
    /// Its weight.
    pub weight: u32,
    /// Live or down.
    pub status: NodeStatus,
}

/// Everything a plan step depends on besides the table.
#[derive(Clone, Debug)]
pub struct PlanInput<'a> {
    /// The configuration.
    pub config: &'a ShardConfig,
    /// Known nodes (a node absent here has left).
    pub nodes: &'a [NodeView],
    /// "Caught up" reports: (shard, node, the copy's `since`).
    pub caught_up: &'a HashSet<(u32, String, u64)>,
}

/// The target replica set of every shard: zone-aware ring placement over eligible nodes.
pub fn target(config: &ShardConfig, nodes: &[NodeView]) -> Vec<Vec<String>> {
    let drain: HashSet<&str> = config.drain.iter().map(String::as_str).collect();
    let eligible = nodes.iter().filter(|n| {
        !drain.contains(n.id.as_str()) && !matches!(n.status, NodeStatus::Down { expired: true })
    });
    let members = eligible.map(|n| {
        let m = Member::new(n.id.clone()).weight(n.weight.max(1));
        match &n.zone {
            Some(z) => m.zone(z.clone()),
            None => m,
        }
    });
    let ring = Ring::with_config(members, RingConfig { vnodes_per_weight: 160 })
        .unwrap_or_else(|_| Ring::new([]).expect("an empty ring builds"));
    let r = config.replication_factor as usize;
    (0..config.shards)
        .map(|i| {
            ring.replicas_zone_aware(&shard_ring_key(i), r)
                .into_iter()
                .map(|m| m.name.clone())
                .collect()
        })
        .collect()
}

/// One plan step: the next table, or `None` when nothing needs to change.
pub fn plan(table: &RoutingTable, input: &PlanInput<'_>) -> Option<RoutingTable> {
    let targets = target(input.config, input.nodes);
    plan_with_target(table, input, &targets)
}

/// [`plan`] with the target already computed (it only depends on config and nodes).
pub fn plan_with_target(
    table: &RoutingTable,
    input: &PlanInput<'_>,
    targets: &[Vec<String>],
) -> Option<RoutingTable> {
    let config = input.config;
    let status: HashMap<&str, NodeStatus> =
        input.nodes.iter().map(|n| (n.id.as_str(), n.status)).collect();
    let live = |n: &str| status.get(n) == Some(&NodeStatus::Live);
    let waiting = |n: &str| status.get(n) == Some(&NodeStatus::Down { expired: false });
    let next_version = table.version + 1;

    let mut new = table.clone();
    new.config_version = config.version;
    if new.shards.len() < config.shards as usize {
        new.shards.resize(config.shards as usize, Shard::default());
    }

    for (i, s) in new.shards.iter_mut().enumerate() {
        let tgt = &targets[i];
        // 1. First placement.
        if s.replicas.is_empty() && s.primary.is_none() {
            let live_tgt: Vec<&String> = tgt.iter().filter(|n| live(n)).collect();
            if let Some(first) = live_tgt.first() {
                s.replicas = live_tgt
                    .iter()
                    .map(|n| Replica {
                        node: (*n).clone(),
                        state: ReplicaState::InSync,
                        since: next_version,
                    })
                    .collect();
                s.primary = Some((*first).clone());
                s.epoch += 1;
            }
            continue;
        }
        // 2. Caught-up copies.
        for r in &mut s.replicas {
            if r.state == ReplicaState::CatchingUp
                && live(&r.node)
                && input.caught_up.contains(&(i as u32, r.node.clone(), r.since))
            {
                r.state = ReplicaState::InSync;
            }
        }
        let in_sync_live = |s: &Shard, n: &str| {
            live(n) && s.replicas.iter().any(|r| r.node == n && r.state == ReplicaState::InSync)
        };
        // 3. The primary.
        let primary_ok = s.primary.as_deref().is_some_and(|p| in_sync_live(s, p));
        let preferred = tgt.iter().find(|n| in_sync_live(s, n)).cloned().or_else(|| {
            let mut c: Vec<&Replica> = s.in_sync().filter(|r| live(&r.node)).collect();
            c.sort_by(|a, b| a.node.cmp(&b.node));
            c.first().map(|r| r.node.clone())
        });
        let first_target_ready = tgt.first().is_some_and(|t| in_sync_live(s, t));
        if (!primary_ok || (first_target_ready && s.primary.as_ref() != tgt.first()))
            && let Some(p) = preferred
            && s.primary.as_ref() != Some(&p)
        {
            s.primary = Some(p);
            s.epoch += 1;
        }
        // 4. Drops.
        let target_ready = !tgt.is_empty() && tgt.iter().all(|n| in_sync_live(s, n));
        let min_live = config.min_live as usize;
        let mut k = 0;
        while k < s.replicas.len() {
            let r = &s.replicas[k];
            let keep = if s.primary.as_deref() == Some(r.node.as_str()) || tgt.contains(&r.node) {
                true
            } else if r.state == ReplicaState::CatchingUp {
                false
            } else if live(&r.node) {
                let others = s
                    .replicas
                    .iter()
                    .filter(|o| o.node != r.node && in_sync_live(s, &o.node))
                    .count();
                !(target_ready && others >= min_live)
            } else if waiting(&r.node) && !input.config.drain.contains(&r.node) {
                true
            } else {
                // Dead for good (or left, or draining while down): drop once a live copy exists.
                !s.replicas.iter().any(|o| o.node != r.node && in_sync_live(s, &o.node))
            };
            if keep {
                k += 1;
            } else {
                s.replicas.remove(k);
            }
        }
    }

    // 5. Adds, under-replicated shards first, throttled.
    let limit = config.max_moving();
    let copying = |s: &Shard| s.replicas.iter().any(|r| r.state == ReplicaState::CatchingUp);
    let mut moving = new.shards.iter().filter(|s| copying(s)).count();
    let mut order: Vec<(usize, usize)> = new
        .shards
        .iter()
        .enumerate()
        .map(|(i, s)| (s.in_sync().filter(|r| live(&r.node)).count(), i))
        .collect();
    order.sort_unstable();
    for (live_copies, i) in order {
        let s = &mut new.shards[i];
        let missing: Vec<String> =
            targets[i].iter().filter(|n| live(n) && !s.holds(n)).cloned().collect();
        if missing.is_empty() || live_copies == 0 {
            continue; // nothing to add, or no live source to copy from
        }
        if !copying(s) {
            if moving >= limit {
                continue;
            }
            moving += 1;
        }
        for node in missing {
            s.replicas.push(Replica { node, state: ReplicaState::CatchingUp, since: next_version });
        }
    }

    if new.shards == table.shards && new.config_version == table.config_version {
        return None;
    }
    new.version = next_version;
    Some(new)
}

#[cfg(test)]
mod props;
