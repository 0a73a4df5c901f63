//! prod-config: planning 10,000 shards × 3 copies on 100 nodes, and routing a key.
//!
//! `cargo bench -p consul-ha-benches --bench shards`. Goals: a plan step ≤ 50 ms,
//! `route(key)` ≤ 50 ns.

use std::collections::HashSet;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use prod_config::plan::{PlanInput, plan, plan_with_target, target};
use prod_config::{NodeStatus, NodeView, RoutingTable, ShardConfig};

fn nodes(n: usize) -> Vec<NodeView> {
    (0..n)
        .map(|i| NodeView {
            id: format!("node-{i:03}"),
            zone: Some(format!("zone-{}", i % 3)),
            weight: 1,
            status: NodeStatus::Live,
        })
        .collect()
}

fn config() -> ShardConfig {
    ShardConfig { shards: 10_000, replication_factor: 3, ..ShardConfig::default() }
}

fn bench(c: &mut Criterion) {
    let config = config();
    let hundred = nodes(100);
    let none = HashSet::new();
    let input = PlanInput { config: &config, nodes: &hundred, caught_up: &none };
    let placed = plan(&RoutingTable::default(), &input).expect("first placement");
    // One more node: the step that starts a rebalance.
    let more = nodes(101);
    let grown = PlanInput { config: &config, nodes: &more, caught_up: &none };
    let targets = target(&config, &more);

    let mut g = c.benchmark_group("shards");
    g.measurement_time(Duration::from_secs(5)).sample_size(20);
    g.bench_function("plan/initial/10000x3/100-nodes", |b| {
        b.iter(|| plan(black_box(&RoutingTable::default()), black_box(&input)))
    });
    g.bench_function("plan/rebalance-step/10000x3/101-nodes", |b| {
        b.iter(|| plan(black_box(&placed), black_box(&grown)))
    });
    g.bench_function("plan/step-given-target/10000x3/101-nodes", |b| {
        b.iter(|| plan_with_target(black_box(&placed), black_box(&grown), &targets))
    });
    g.bench_function("target/10000x3/101-nodes", |b| b.iter(|| target(black_box(&config), &more)));
    let keys: Vec<String> = (0..4096).map(|i| format!("user:{i}:session")).collect();
    g.sample_size(50);
    g.bench_function("route/10000-shards", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) & 4095;
            black_box(placed.route(black_box(keys[i].as_bytes())))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
