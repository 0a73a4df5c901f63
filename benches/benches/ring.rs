//! Our ring against the crates users would pick, same keys and member counts, one run.
//!
//! `cargo bench -p consul-ha-benches --bench ring` then `cargo xtask bench-report` prints
//! the ratios (ours / peer). Balance and memory are printed once, before the timings.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use hashring::{Member, Ring, stats};

const VNODES: usize = 160;

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("node-{i:05}.dc1.example:8300")).collect()
}

/// The lookup keys, leaked so every ring can borrow them for `'static` (anchorhash wants a
/// sized key type).
fn keys() -> Vec<&'static str> {
    (0..4096).map(|i| &*Box::leak(format!("user:{i}:session").into_boxed_str())).collect()
}

fn ours(n: usize) -> Ring {
    Ring::new(names(n).into_iter().map(Member::new)).expect("valid members")
}

fn peer_hashring(n: usize) -> hashring_peer::HashRing<String> {
    let mut ring = hashring_peer::HashRing::new();
    let vnodes = names(n).into_iter().flat_map(|m| (0..VNODES).map(move |v| format!("{m}#{v}")));
    ring.batch_add(vnodes.collect());
    ring
}

fn peer_chr(n: usize) -> consistent_hash_ring::Ring<String> {
    consistent_hash_ring::RingBuilder::default().vnodes(VNODES).nodes_iter(names(n)).build()
}

fn peer_anchor(
    n: usize,
) -> anchorhash::AnchorHash<&'static str, String, std::collections::hash_map::RandomState> {
    // AnchorHash needs a fixed capacity; twice the members leaves room to grow, as its docs advise.
    anchorhash::Builder::default()
        .with_resources(names(n))
        .build((2 * n).min(u16::MAX as usize) as u16)
}

fn balance_and_memory() {
    let sample: Vec<String> = (0..200_000).map(|i| format!("key-{i}")).collect();
    let slices = || sample.iter().map(|k| k.as_bytes());
    println!("\nring balance (200,000 keys) and memory, 160 vnodes per member");
    println!(
        "| members | ours exact peak/mean | ours sampled | ours bounded(1.10) | consistent_hash_ring sampled | ours memory |"
    );
    println!("|---|---|---|---|---|---|");
    for n in [10, 100, 1000] {
        let ring = ours(n);
        let plain = stats::peak_to_mean(&stats::load(&ring, slices()));
        let bounded = ring.bounded_assignment(slices(), 1.10).expect("members").peak_to_mean();
        let chr = peer_chr(n);
        let mut counts = std::collections::HashMap::<&String, usize>::new();
        for k in &sample {
            *counts.entry(chr.get(k.as_str())).or_default() += 1;
        }
        let mut chr_loads: Vec<usize> = counts.into_values().collect();
        chr_loads.resize(n, 0);
        let chr_balance = stats::peak_to_mean(&chr_loads);
        println!(
            "| {n} | {:.3} | {plain:.3} | {bounded:.3} | {chr_balance:.3} | {:.2} MB |",
            stats::exact_peak_to_mean(&ring),
            ring.memory_bytes() as f64 / 1e6
        );
    }
    println!();
}

fn lookup(c: &mut Criterion) {
    balance_and_memory();
    let keys = keys();
    let mut group = c.benchmark_group("lookup");
    for n in [10, 100, 1000, 10_000] {
        let ring = ours(n);
        let mut i = 0usize;
        group.bench_function(BenchmarkId::new("ours", n), |b| {
            b.iter(|| {
                i = (i + 1) & 4095;
                black_box(ring.node_for_key(keys[i].as_bytes()))
            })
        });
        let anchor = peer_anchor(n);
        group.bench_function(BenchmarkId::new("anchorhash", n), |b| {
            b.iter(|| {
                i = (i + 1) & 4095;
                black_box(anchor.get_resource(keys[i]))
            })
        });
        if n <= 1000 {
            // 10,000 members × 160 vnodes takes these two peers minutes to build: skipped.
            let chr = peer_chr(n);
            group.bench_function(BenchmarkId::new("consistent_hash_ring", n), |b| {
                b.iter(|| {
                    i = (i + 1) & 4095;
                    black_box(chr.try_get(keys[i]))
                })
            });
            let peer = peer_hashring(n);
            group.bench_function(BenchmarkId::new("hashring-0.3", n), |b| {
                b.iter(|| {
                    i = (i + 1) & 4095;
                    black_box(peer.get(&keys[i]))
                })
            });
        }
    }
    group.finish();
}

fn replicas(c: &mut Criterion) {
    let keys = keys();
    let mut group = c.benchmark_group("replicas3");
    let n = 1000;
    let ring = ours(n);
    let mut out = Vec::with_capacity(3);
    let mut i = 0usize;
    group.bench_function(BenchmarkId::new("ours", n), |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            ring.replicas_into(keys[i].as_bytes(), 3, &mut out);
            black_box(out.len())
        })
    });
    group.bench_function(BenchmarkId::new("ours-zone-aware", n), |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            black_box(ring.replicas_zone_aware(keys[i].as_bytes(), 3).len())
        })
    });
    let chr = peer_chr(n);
    group.bench_function(BenchmarkId::new("consistent_hash_ring", n), |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            black_box(chr.replicas(keys[i]).take(3).count())
        })
    });
    let peer = peer_hashring(n);
    group.bench_function(BenchmarkId::new("hashring-0.3", n), |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            black_box(peer.get_with_replicas(&keys[i], 2).map(|v| v.len()))
        })
    });
    group.finish();
}

fn rebuild(c: &mut Criterion) {
    let mut group = c.benchmark_group("rebuild");
    group.sample_size(10);
    let n = 1000;
    let members: Vec<Member> = names(n).into_iter().map(Member::new).collect();
    group.bench_function(BenchmarkId::new("ours", n), |b| {
        b.iter(|| black_box(Ring::new(members.iter().cloned()).expect("valid")))
    });
    group.bench_function(BenchmarkId::new("consistent_hash_ring", n), |b| {
        b.iter(|| black_box(peer_chr(n)))
    });
    group.bench_function(BenchmarkId::new("hashring-0.3", n), |b| {
        b.iter(|| black_box(peer_hashring(n)))
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! { name = benches; config = config(); targets = lookup, replicas, rebuild }
criterion_main!(benches);
