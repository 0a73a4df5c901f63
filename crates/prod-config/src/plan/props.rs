//! Property tests of the planner over random joins, failures, returns, drains and config
//! changes, with every safety rule checked after every step.

use std::collections::{HashMap, HashSet};

use proptest::prelude::*;

use super::*;

#[derive(Clone, Debug)]
enum Op {
    Join(u8),
    Fail(u8),
    Expire(u8),
    Return(u8),
    Drain(u8),
    Undrain(u8),
    SetReplication(u32),
    CatchUp(u8),
    Leave(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..9).prop_map(Op::Join),
        2 => (0u8..9).prop_map(Op::Fail),
        2 => (0u8..9).prop_map(Op::Expire),
        2 => (0u8..9).prop_map(Op::Return),
        1 => (0u8..9).prop_map(Op::Drain),
        1 => (0u8..9).prop_map(Op::Undrain),
        1 => (1u32..4).prop_map(Op::SetReplication),
        4 => (0u8..4).prop_map(Op::CatchUp),
        1 => (0u8..9).prop_map(Op::Leave),
    ]
}

struct World {
    config: ShardConfig,
    nodes: Vec<NodeView>,
    caught_up: HashSet<(u32, String, u64)>,
    table: RoutingTable,
    /// (shard, epoch) → primary, over the whole history.
    primaries: HashMap<(usize, u64), String>,
    /// Copies added, for the movement bound.
    adds: usize,
}

fn name(n: u8) -> String {
    format!("n{n}")
}

impl World {
    fn new(shards: u32) -> World {
        let config = ShardConfig {
            shards,
            replication_factor: 3,
            min_live: 2,
            max_moving_fraction: 0.25,
            ..ShardConfig::default()
        };
        World {
            config,
            nodes: Vec::new(),
            caught_up: HashSet::new(),
            table: RoutingTable::default(),
            primaries: HashMap::new(),
            adds: 0,
        }
    }

    fn node(&mut self, n: u8) -> Option<&mut NodeView> {
        self.nodes.iter_mut().find(|x| x.id == name(n))
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Join(n) => {
                if self.node(n).is_none() {
                    self.nodes.push(NodeView {
                        id: name(n),
                        zone: Some(format!("z{}", n % 3)),
                        weight: 1,
                        status: NodeStatus::Live,
                    });
                }
            }
            Op::Fail(n) => {
                if let Some(x) = self.node(n) {
                    x.status = NodeStatus::Down { expired: false };
                }
            }
            Op::Expire(n) => {
                if let Some(x) = self.node(n).filter(|x| x.status != NodeStatus::Live) {
                    x.status = NodeStatus::Down { expired: true };
                }
            }
            Op::Return(n) => {
                if let Some(x) = self.node(n) {
                    x.status = NodeStatus::Live;
                }
            }
            Op::Leave(n) => self.nodes.retain(|x| x.id != name(n)),
            Op::Drain(n) => {
                if !self.config.drain.contains(&name(n)) {
                    self.config.drain.push(name(n));
                    self.config.version += 1;
                }
            }
            Op::Undrain(n) => {
                self.config.drain.retain(|x| *x != name(n));
                self.config.version += 1;
            }
            Op::SetReplication(r) => {
                self.config.replication_factor = r;
                self.config.min_live = self.config.min_live.min(r);
                self.config.version += 1;
            }
            Op::CatchUp(every) => {
                // Live nodes report some (every k-th) or all of their copies caught up.
                let live: HashSet<&str> = self
                    .nodes
                    .iter()
                    .filter(|n| n.status == NodeStatus::Live)
                    .map(|n| n.id.as_str())
                    .collect();
                for (i, s) in self.table.shards.iter().enumerate() {
                    for r in &s.replicas {
                        if r.state == ReplicaState::CatchingUp
                            && live.contains(r.node.as_str())
                            && (every == 0 || i % usize::from(every) == 0)
                        {
                            self.caught_up.insert((i as u32, r.node.clone(), r.since));
                        }
                    }
                }
            }
        }
    }

    /// One plan step with every rule checked; false when there was nothing to do.
    fn step(&mut self) -> bool {
        let input =
            PlanInput { config: &self.config, nodes: &self.nodes, caught_up: &self.caught_up };
        let Some(next) = plan(&self.table, &input) else { return false };
        self.check(&next);
        self.table = next;
        true
    }

    fn check(&mut self, next: &RoutingTable) {
        let prev = &self.table;
        assert!(next.version > prev.version, "the version only grows");
        let live = |n: &str| self.nodes.iter().any(|x| x.id == n && x.status == NodeStatus::Live);
        let moving = next
            .shards
            .iter()
            .filter(|s| s.replicas.iter().any(|r| r.state == ReplicaState::CatchingUp))
            .count();
        let before = prev
            .shards
            .iter()
            .filter(|s| s.replicas.iter().any(|r| r.state == ReplicaState::CatchingUp))
            .count();
        assert!(
            moving <= self.config.max_moving().max(before),
            "throttle: {moving} shards copying, limit {}",
            self.config.max_moving()
        );
        for (i, s) in next.shards.iter().enumerate() {
            let nodes: HashSet<&str> = s.replicas.iter().map(|r| r.node.as_str()).collect();
            assert_eq!(nodes.len(), s.replicas.len(), "shard {i}: copies on distinct nodes");
            if let Some(p) = &s.primary {
                let previous = self.primaries.entry((i, s.epoch)).or_insert_with(|| p.clone());
                assert_eq!(previous, p, "shard {i}: one primary per epoch");
                assert!(s.holds(p), "shard {i}: the primary holds a copy");
            }
            let Some(old) = prev.shards.get(i) else { continue };
            if old.in_sync().next().is_some() {
                assert!(s.in_sync().next().is_some(), "shard {i}: lost its last in-sync copy");
            }
            let live_before = old.in_sync().filter(|r| live(&r.node)).count();
            let live_after = s.in_sync().filter(|r| live(&r.node)).count();
            assert!(
                live_after >= live_before.min(self.config.min_live as usize),
                "shard {i}: live in-sync copies dropped from {live_before} to {live_after} on purpose"
            );
            for r in &s.replicas {
                if !old.holds(&r.node) && !old.replicas.is_empty() {
                    self.adds += 1;
                }
            }
        }
    }

    /// Steps (with every copy catching up in between) until nothing changes.
    fn settle(&mut self) {
        for _ in 0..200 {
            self.apply(&Op::CatchUp(0));
            if !self.step() {
                return;
            }
        }
        panic!("the plan did not settle in 200 steps");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn every_step_keeps_the_rules(ops in prop::collection::vec(op(), 1..40)) {
        let mut w = World::new(48);
        for n in 0..4 {
            w.apply(&Op::Join(n));
        }
        w.settle();
        for op in &ops {
            w.apply(op);
            w.step();
            w.step();
        }
        // Everyone back and caught up: the table reaches the target, zones spread.
        for n in 0..9 {
            w.apply(&Op::Return(n));
        }
        w.settle();
        let targets = target(&w.config, &w.nodes);
        let zones: HashSet<_> = w.nodes.iter().filter(|n| !w.config.drain.contains(&n.id)).map(|n| n.zone.clone()).collect();
        for (i, s) in w.table.shards.iter().enumerate() {
            let live = |n: &str| w.nodes.iter().any(|x| x.id == n && x.status == NodeStatus::Live);
            if !s.in_sync().any(|r| live(&r.node)) {
                // Every holder of its data left: unavailable, and kept that way (never
                // re-created empty behind the operator's back).
                prop_assert!(s.in_sync().next().is_some(), "shard {} keeps its record", i);
                continue;
            }
            let mut held: Vec<_> = s.replicas.iter().map(|r| r.node.clone()).collect();
            let mut want = targets[i].clone();
            held.sort();
            want.sort();
            prop_assert!(s.replicas.iter().all(|r| r.state == ReplicaState::InSync));
            prop_assert!(want.iter().all(|n| held.contains(n)), "shard {} holds its target {:?}: {:?}", i, want, held);
            if held != want {
                // Copies outside the target stay only where dropping them would leave fewer
                // than min_live (e.g. a drain with too few other nodes left), or where there
                // is no target at all (every live node drains): with nothing to make, make-
                // before-break never breaks, so the data stays where it is.
                prop_assert!(
                    held.len() <= w.config.min_live as usize || want.is_empty(),
                    "shard {} keeps extra copies {:?} beyond its target {:?}", i, held, want
                );
                continue;
            }
            let r = w.config.replication_factor as usize;
            if zones.len() >= r {
                let zs: HashSet<_> = s.replicas.iter().map(|r| w.nodes.iter().find(|n| n.id == r.node).unwrap().zone.clone()).collect();
                prop_assert_eq!(zs.len(), s.replicas.len(), "shard {} spreads over zones", i);
            }
        }
    }

    #[test]
    fn movement_stays_near_the_optimum(changes in prop::collection::vec((any::<bool>(), 0u8..9), 1..12)) {
        let mut w = World::new(64);
        for n in 0..5 {
            w.apply(&Op::Join(n));
        }
        w.settle();
        w.adds = 0;
        let mut optimal = 0;
        for (join, n) in changes {
            let before = target(&w.config, &w.nodes);
            if join {
                w.apply(&Op::Join(n));
            } else if w.nodes.len() > 3 {
                w.apply(&Op::Fail(n));
                w.apply(&Op::Expire(n));
            }
            let after = target(&w.config, &w.nodes);
            optimal += before
                .iter()
                .zip(&after)
                .map(|(b, a)| a.iter().filter(|n| !b.contains(n)).count())
                .sum::<usize>();
            w.settle();
            for n in 0..9 {
                w.nodes.retain(|x| !(x.id == name(n) && x.status != NodeStatus::Live));
            }
        }
        prop_assert!(w.adds as f64 <= 1.2 * optimal as f64, "{} copies moved, optimum {}", w.adds, optimal);
    }
}

#[test]
fn a_failed_primary_is_replaced_at_once_and_its_node_gets_its_shards_back_in_time() {
    let mut w = World::new(16);
    for n in 0..5 {
        w.apply(&Op::Join(n));
    }
    w.settle();
    let before = w.table.clone();
    w.apply(&Op::Fail(0));
    w.step();
    for (i, s) in w.table.shards.iter().enumerate() {
        assert_ne!(s.primary.as_deref(), Some("n0"), "shard {i} promoted a live copy");
        if before.shards[i].primary.as_deref() == Some("n0") {
            assert_eq!(s.epoch, before.shards[i].epoch + 1);
        }
    }
    assert!(
        w.table.shards.iter().all(|s| s.replicas.iter().all(|r| r.state == ReplicaState::InSync)),
        "no copying before the rebalance delay"
    );
    w.apply(&Op::Return(0));
    w.settle();
    w.adds = 0;
    for (i, s) in w.table.shards.iter().enumerate() {
        let mut a: Vec<_> = s.replicas.iter().map(|r| &r.node).collect();
        let mut b: Vec<_> = before.shards[i].replicas.iter().map(|r| &r.node).collect();
        a.sort();
        b.sort();
        assert_eq!(a, b, "shard {i}: the returning node kept its copies");
    }
}
