//! The routing table: for each shard, its primary, its replicas and their state, its epoch.

use serde::{Deserialize, Serialize};

use crate::ShardError;

/// Whether a replica holds the shard's data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReplicaState {
    /// Up to date: may serve and may become primary.
    InSync,
    /// Copying; promoted once its node reports it caught up.
    CatchingUp,
}

/// One copy of a shard.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Replica {
    /// The node holding it.
    pub node: String,
    /// In sync or catching up.
    pub state: ReplicaState,
    /// The table version at which this copy was added: a node's "caught up" report names
    /// it, so a report about an earlier copy cannot promote a new one.
    pub since: u64,
}

/// One shard's placement.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Shard {
    /// Grows every time the primary changes; at most one primary per epoch.
    pub epoch: u64,
    /// The node that takes writes; `None` before the first placement.
    pub primary: Option<String>,
    /// All copies, the primary's included.
    pub replicas: Vec<Replica>,
}

impl Shard {
    /// The in-sync copies.
    pub fn in_sync(&self) -> impl Iterator<Item = &Replica> {
        self.replicas.iter().filter(|r| r.state == ReplicaState::InSync)
    }

    /// Whether `node` holds a copy.
    pub fn holds(&self, node: &str) -> bool {
        self.replicas.iter().any(|r| r.node == node)
    }
}

/// The whole table. Its version grows with every change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoutingTable {
    /// Grows by one per applied plan step.
    pub version: u64,
    /// The config version the table was planned under.
    pub config_version: u64,
    /// The fencing token of the leader that wrote this version (0 before the first write):
    /// an outside checker can tell from Consul's KV alone which term committed each step.
    pub token: u64,
    /// The shards, by number.
    pub shards: Vec<Shard>,
}

/// Where a key goes, borrowed from the table (no allocation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteRef<'a> {
    /// The key's shard.
    pub shard: u32,
    /// Its primary, if it has one.
    pub primary: Option<&'a str>,
    /// All its copies.
    pub replicas: &'a [Replica],
    /// The shard's epoch.
    pub epoch: u64,
    /// The table version.
    pub version: u64,
}

/// The shard of `key` among `shards`: xxh3-64 (the ring's pinned hash) modulo the count.
pub fn shard_for_key(key: &[u8], shards: u32) -> u32 {
    (hashring::hash_key(key) % u64::from(shards.max(1))) as u32
}

/// The ring key of shard `i`, used to place its replicas.
pub(crate) fn shard_ring_key(i: u32) -> [u8; 10] {
    let mut k = *b"shard-\0\0\0\0";
    k[6..].copy_from_slice(&i.to_be_bytes());
    k
}

/// A shard on the wire: (epoch, primary node index or -1, its copies).
type WireShard = (u64, i64, Vec<WireReplica>);
/// A copy on the wire: (node index, 1 = in sync / 0 = catching up, since).
type WireReplica = (u32, u8, u64);

/// Compact wire form: node names once, shards as small arrays. 10,000 shards × 3 copies
/// take about 330 KB, under Consul's 512 KB value limit.
#[derive(Serialize, Deserialize)]
struct Wire {
    v: u64,
    cv: u64,
    #[serde(default)]
    t: u64,
    nodes: Vec<String>,
    shards: Vec<WireShard>,
}

impl RoutingTable {
    /// Routes `key`; `None` if the table has no shards yet.
    pub fn route(&self, key: &[u8]) -> Option<RouteRef<'_>> {
        if self.shards.is_empty() {
            return None;
        }
        let shard = shard_for_key(key, self.shards.len() as u32);
        let s = &self.shards[shard as usize];
        Some(RouteRef {
            shard,
            primary: s.primary.as_deref(),
            replicas: &s.replicas,
            epoch: s.epoch,
            version: self.version,
        })
    }

    /// The JSON stored in KV.
    pub fn encode(&self) -> Vec<u8> {
        let mut nodes: Vec<String> = self
            .shards
            .iter()
            .flat_map(|s| s.replicas.iter().map(|r| r.node.clone()).chain(s.primary.clone()))
            .collect();
        nodes.sort();
        nodes.dedup();
        let idx = |n: &str| nodes.binary_search_by(|x| x.as_str().cmp(n)).expect("listed") as u32;
        let shards = self
            .shards
            .iter()
            .map(|s| {
                let primary = s.primary.as_deref().map_or(-1, |p| i64::from(idx(p)));
                let replicas = s
                    .replicas
                    .iter()
                    .map(|r| (idx(&r.node), u8::from(r.state == ReplicaState::InSync), r.since))
                    .collect();
                (s.epoch, primary, replicas)
            })
            .collect();
        let wire = Wire {
            v: self.version,
            cv: self.config_version,
            t: self.token,
            nodes: nodes.clone(),
            shards,
        };
        serde_json::to_vec(&wire).expect("a table serializes")
    }

    /// Reads the JSON stored in KV.
    pub fn decode(bytes: &[u8]) -> Result<RoutingTable, ShardError> {
        let wire: Wire = serde_json::from_slice(bytes)
            .map_err(|e| ShardError::Table(format!("routing table is not valid JSON: {e}")))?;
        let node = |i: u32| {
            wire.nodes.get(i as usize).cloned().ok_or_else(|| {
                ShardError::Table(format!("routing table names node #{i}, which it does not list"))
            })
        };
        let mut shards = Vec::with_capacity(wire.shards.len());
        for (epoch, primary, replicas) in &wire.shards {
            let primary = if *primary < 0 { None } else { Some(node(*primary as u32)?) };
            let replicas = replicas
                .iter()
                .map(|&(n, s, since)| {
                    let state =
                        if s == 1 { ReplicaState::InSync } else { ReplicaState::CatchingUp };
                    Ok(Replica { node: node(n)?, state, since })
                })
                .collect::<Result<_, ShardError>>()?;
            shards.push(Shard { epoch: *epoch, primary, replicas });
        }
        Ok(RoutingTable { version: wire.v, config_version: wire.cv, token: wire.t, shards })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_form_round_trips_and_stays_under_consuls_value_limit() {
        let nodes: Vec<String> = (0..100).map(|i| format!("node-{i:03}")).collect();
        let shards = (0..10_000)
            .map(|i| Shard {
                epoch: 3,
                primary: Some(nodes[i % 100].clone()),
                replicas: (0..3)
                    .map(|k| Replica {
                        node: nodes[(i + k * 7) % 100].clone(),
                        state: if k == 2 { ReplicaState::CatchingUp } else { ReplicaState::InSync },
                        since: 12_345,
                    })
                    .collect(),
            })
            .collect();
        let t = RoutingTable { version: 9, config_version: 2, token: 4, shards };
        let bytes = t.encode();
        assert!(bytes.len() < 512 * 1024, "{} bytes", bytes.len());
        assert_eq!(RoutingTable::decode(&bytes).unwrap(), t);
        assert!(RoutingTable::decode(b"{\"v\":1}").is_err());
        let r = t.route(b"user:1").unwrap();
        assert_eq!(r.shard, shard_for_key(b"user:1", 10_000));
        assert_eq!(r.replicas.len(), 3);
    }
}
