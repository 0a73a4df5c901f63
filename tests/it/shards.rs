//! prod-config on consul-sim (paused time): five nodes in three zones place 32 shards ×3;
//! a sixth node joins, and the leader is killed in the middle of the rebalance. The new
//! leader finishes it: no copy is made twice, no shard ever lacks an in-sync copy, and the
//! end state is all healthy.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use consul_api::{Index, QueryOptions};
use consul_sim::{Sim, SimConfig};
use ha_cluster::Cluster;
use prod_config::{
    ReplicaState, RoutingTable, ShardConfig, ShardManager, ShardManagerOptions, TableAuditor,
};

use crate::cluster::{config, eventually};

struct Node {
    manager: ShardManager,
}

async fn start(sim: &Sim, id: &str, zone: &str, shards: &ShardConfig) -> Node {
    let cluster = Cluster::builder(sim.client(id), config(id, zone)).start().await.unwrap();
    let mut opts = ShardManagerOptions::new("orders");
    opts.auto_catch_up = Some(Duration::from_secs(3));
    let manager =
        ShardManager::start(Arc::new(cluster), sim.client(id), shards.clone(), opts).await.unwrap();
    Node { manager }
}

/// Every table version an observer saw, checked as it arrives.
#[derive(Default)]
struct History {
    versions: Vec<u64>,
    /// prod-config's auditor: versions grow by one, tokens never go back, an in-sync copy
    /// per shard, one primary per shard per epoch.
    audit: TableAuditor,
    /// (shard, node) → how many times a copy was added.
    adds: HashMap<(usize, String), usize>,
    last: Option<RoutingTable>,
    moving_seen: usize,
}

impl History {
    fn observe(&mut self, t: RoutingTable) {
        self.audit.observe(&t);
        assert!(self.audit.violations().is_empty(), "{:?}", self.audit.violations());
        if self.last.as_ref().is_some_and(|l| l.version >= t.version) {
            return;
        }
        self.versions.push(t.version);
        for (i, s) in t.shards.iter().enumerate() {
            let before = self.last.as_ref().map(|l| &l.shards[i]);
            for r in &s.replicas {
                if before.is_some_and(|b| !b.holds(&r.node)) {
                    *self.adds.entry((i, r.node.clone())).or_default() += 1;
                }
            }
        }
        self.moving_seen = self.moving_seen.max(
            t.shards
                .iter()
                .filter(|s| s.replicas.iter().any(|r| r.state == ReplicaState::CatchingUp))
                .count(),
        );
        self.last = Some(t);
    }
}

#[tokio::test(start_paused = true)]
async fn a_new_leader_finishes_a_rebalance_its_predecessor_started() {
    let sim = Sim::new(SimConfig::default());
    let shards = ShardConfig {
        shards: 32,
        replication_factor: 3,
        min_live: 2,
        rebalance_delay: Duration::from_secs(10),
        max_moving_fraction: 0.25,
        ..ShardConfig::default()
    };
    // Observe every table version as it is written.
    let history = Arc::new(Mutex::new(History::default()));
    let (h, observer) = (history.clone(), sim.client("observer"));
    let watcher = tokio::spawn(async move {
        let mut index = Index(0);
        loop {
            let opts = QueryOptions::blocking(index, Duration::from_secs(30));
            let Ok((pair, meta)) = observer.kv().get_with("prod-config/orders/table", &opts).await
            else {
                continue;
            };
            index = meta.last_index;
            if let Some(p) = pair {
                h.lock()
                    .unwrap()
                    .observe(RoutingTable::decode(p.value.as_deref().unwrap()).unwrap());
            }
        }
    });

    let mut nodes: HashMap<&str, Node> = HashMap::new();
    for (id, zone) in [("n1", "z1"), ("n2", "z2"), ("n3", "z3"), ("n4", "z1"), ("n5", "z2")] {
        nodes.insert(id, start(&sim, id, zone, &shards).await);
    }
    eventually(Duration::from_secs(30), "32 healthy shards", || {
        nodes.values().all(|n| n.manager.health().all_healthy())
    })
    .await;
    let placed = nodes["n1"].manager.table();
    assert_eq!(placed.shards.len(), 32);

    // A sixth node joins; wait until copies to it are in flight, then kill the leader.
    nodes.insert("n6", start(&sim, "n6", "z3", &shards).await);
    eventually(Duration::from_secs(30), "the rebalance is under way", || {
        nodes["n1"].manager.table().shards.iter().any(|s| {
            s.replicas.iter().any(|r| r.node == "n6" && r.state == ReplicaState::CatchingUp)
        })
    })
    .await;
    let leader = nodes
        .iter()
        .find(|(_, n)| n.manager.cluster().is_leader())
        .map(|(id, _)| *id)
        .expect("a leader");
    let killed = nodes.remove(leader).unwrap();
    drop(killed); // a crash: no cleanup

    // The new leader takes over, re-replicates the dead node's copies after the delay, and
    // finishes moving copies to n6.
    eventually(Duration::from_secs(120), "all healthy again without the killed node", || {
        nodes.values().all(|n| {
            let h = n.manager.health();
            h.all_healthy() && h.nodes.iter().all(|l| l.node != leader || l.replicas == 0)
        })
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    watcher.abort();

    let h = history.lock().unwrap();
    let twice: Vec<_> = h.adds.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "copies made twice: {twice:?}");
    assert!(h.moving_seen <= shards.max_moving(), "throttle: {} shards copying", h.moving_seen);
    let last = h.last.as_ref().unwrap();
    let on_n6 = last.shards.iter().filter(|s| s.holds("n6")).count();
    assert!(on_n6 >= 10, "n6 took its share: {on_n6} of 32 shards");
    assert_eq!(last.shards.len(), 32);
    for (i, s) in last.shards.iter().enumerate() {
        let copies: HashSet<&str> = s.in_sync().map(|r| r.node.as_str()).collect();
        assert_eq!(copies.len(), 3, "shard {i} ends with three in-sync copies: {s:?}");
        assert!(!copies.contains(leader), "shard {i} still counts on the killed node");
        assert!(s.primary.as_deref().is_some_and(|p| copies.contains(p)), "shard {i}: {s:?}");
    }
    // Every node routes every key the same way.
    let tables: Vec<_> = nodes.values().map(|n| n.manager.table()).collect();
    for i in 0..1000 {
        let key = format!("order:{i}");
        let first = tables[0].route(key.as_bytes()).unwrap();
        for t in &tables[1..] {
            assert_eq!(t.route(key.as_bytes()).unwrap(), first);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn an_invalid_config_update_is_rejected_and_the_old_one_stays() {
    let sim = Sim::new(SimConfig::default());
    let node = start(
        &sim,
        "n1",
        "z1",
        &ShardConfig { shards: 8, replication_factor: 1, min_live: 1, ..ShardConfig::default() },
    )
    .await;
    let kv = sim.client("operator");
    kv.kv().put("prod-config/orders/config", r#"{"version": 5, "shards": 8}"#).await.unwrap();
    eventually(Duration::from_secs(5), "the bad update is rejected", || {
        node.manager.rejected_config().is_some()
    })
    .await;
    assert_eq!(node.manager.config().version, 1);
    let mut next = node.manager.config();
    next.version = 2;
    next.shards = 16;
    let err = node.manager.update_config(&next).await.unwrap_err();
    assert!(err.to_string().contains("shards"), "{err}");
    next.shards = 8;
    next.max_moving_fraction = 0.5;
    node.manager.update_config(&next).await.unwrap();
    eventually(Duration::from_secs(5), "the good update applies", || {
        node.manager.config().version == 2
    })
    .await;
    assert!(node.manager.rejected_config().is_none());
}

#[tokio::test(start_paused = true)]
async fn draining_a_node_moves_its_copies_away_before_dropping_them() {
    let sim = Sim::new(SimConfig::default());
    let shards = ShardConfig {
        shards: 16,
        replication_factor: 2,
        min_live: 2,
        max_moving_fraction: 0.25,
        ..ShardConfig::default()
    };
    let mut nodes = Vec::new();
    for (id, zone) in [("n1", "z1"), ("n2", "z2"), ("n3", "z1"), ("n4", "z2")] {
        nodes.push(start(&sim, id, zone, &shards).await);
    }
    eventually(Duration::from_secs(30), "healthy", || {
        nodes.iter().all(|n| n.manager.health().all_healthy())
    })
    .await;
    let held = nodes[0].manager.table().shards.iter().filter(|s| s.holds("n4")).count();
    assert!(held > 0, "n4 holds copies before the drain");
    let mut next = nodes[0].manager.config();
    next.version += 1;
    next.drain = vec!["n4".into()];
    nodes[0].manager.update_config(&next).await.unwrap();
    let mut lowest_in_sync = usize::MAX;
    eventually(Duration::from_secs(60), "n4 drained and everything healthy", || {
        let t = nodes[0].manager.table();
        for s in &t.shards {
            lowest_in_sync = lowest_in_sync.min(s.in_sync().count());
        }
        t.shards.iter().all(|s| !s.holds("n4"))
            && nodes.iter().all(|n| n.manager.health().all_healthy())
    })
    .await;
    assert!(
        lowest_in_sync >= 2,
        "never below min_live in-sync copies while draining: {lowest_in_sync}"
    );
    assert_eq!(nodes[3].manager.config().drain, ["n4"], "every node applied the update");
}
