//! Our ring against the crates users would pick, same keys and member counts, one run.
//!
//! `cargo bench -p consul-ha-benches --bench ring` then `cargo xtask bench-report` prints
//! the ratios (ours / peer), then our ring's memory and balance (written by this bench to
//! `criterion/ring-memory.md` under the target dir).
//!
//! Two key sets, both 16–22 byte strings (`user:{i}:session`) that every crate hashes
//! itself, cycled in order by every timed loop:
//! - *warm*: 2,048 keys, so each ring's hot lines stay in L1/L2 (a benchmark's usual set);
//! - *cold*: 262,144 distinct keys, the way a router sees traffic. The keys are one
//!   contiguous string read in order (the prefetcher streams them), so what misses the
//!   cache is each crate's own state: points, tables, lines.

use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use consul_ha_benches::{anchor_ring, member_names, ring_keys};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use hashring::{Member, Ring, RingConfig, stats};

const VNODES: usize = 160;
const WARM: usize = 2048;
const COLD: usize = 1 << 18;

fn ours(n: usize) -> Ring {
    Ring::new(member_names(n).into_iter().map(Member::new)).expect("valid members")
}

fn peer_hashring(n: usize) -> hashring_peer::HashRing<String> {
    let mut ring = hashring_peer::HashRing::new();
    let vnodes =
        member_names(n).into_iter().flat_map(|m| (0..VNODES).map(move |v| format!("{m}#{v}")));
    ring.batch_add(vnodes.collect());
    ring
}

fn peer_chr(n: usize) -> consistent_hash_ring::Ring<String> {
    consistent_hash_ring::RingBuilder::default().vnodes(VNODES).nodes_iter(member_names(n)).build()
}

/// consistent_hash_ring at 1,000 members, built once (seconds) and timed then: its build
/// is too slow for criterion's ten samples.
fn chr_1000() -> &'static (consistent_hash_ring::Ring<String>, Duration) {
    static RING: OnceLock<(consistent_hash_ring::Ring<String>, Duration)> = OnceLock::new();
    RING.get_or_init(|| {
        let t = Instant::now();
        let ring = peer_chr(1000);
        (ring, t.elapsed())
    })
}

/// consistent_hash_ring at `n` members: the one built once at 1,000, built afresh below.
fn with_chr<R>(n: usize, f: impl FnOnce(&consistent_hash_ring::Ring<String>) -> R) -> R {
    if n == 1000 { f(&chr_1000().0) } else { f(&peer_chr(n)) }
}

/// Our ring's memory, build time and balance, printed and written beside criterion's
/// results for `cargo xtask bench-report`.
fn memory_and_balance() {
    let sample: Vec<String> = (0..200_000).map(|i| format!("key-{i}")).collect();
    let slices = || sample.iter().map(|k| k.as_bytes());
    let mut table = String::from(
        "ring memory, build time and balance (200,000 keys)\n\n\
         | members | vnodes | ours memory | ours build (best of 5) | ours exact peak/mean | ours sampled | ours bounded(1.10) | consistent_hash_ring sampled |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for (n, vnodes) in [(10, 160), (100, 160), (1000, 160), (10_000, 160), (10_000, 40)] {
        let members: Vec<Member> = member_names(n).into_iter().map(Member::new).collect();
        let config = RingConfig { vnodes_per_weight: vnodes };
        let build = (0..5)
            .map(|_| {
                let t = Instant::now();
                black_box(Ring::with_config(members.iter().cloned(), config).expect("valid"));
                t.elapsed()
            })
            .min()
            .unwrap_or_default();
        let ring = Ring::with_config(members, config).expect("valid");
        let plain = stats::peak_to_mean(&stats::load(&ring, slices()));
        let bounded = ring.bounded_assignment(slices(), 1.10).expect("members").peak_to_mean();
        let chr_balance = if n <= 1000 {
            with_chr(n, |chr| {
                let mut counts = std::collections::HashMap::<&String, usize>::new();
                for k in &sample {
                    *counts.entry(chr.get(k.as_str())).or_default() += 1;
                }
                let mut chr_loads: Vec<usize> = counts.into_values().collect();
                chr_loads.resize(n, 0);
                format!("{:.3}", stats::peak_to_mean(&chr_loads))
            })
        } else {
            "—".to_string()
        };
        let _ = writeln!(
            table,
            "| {n} | {vnodes} | {:.2} MB | {:.2} ms | {:.3} | {plain:.3} | {bounded:.3} | {chr_balance} |",
            ring.memory_bytes() as f64 / 1e6,
            build.as_secs_f64() * 1e3,
            stats::exact_peak_to_mean(&ring),
        );
    }
    let _ = writeln!(
        table,
        "\nconsistent_hash_ring's build at 1,000 members (once, too slow for criterion): {:.2} s",
        chr_1000().1.as_secs_f64()
    );
    println!("\n{table}");
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/../target").into())
        .join("criterion");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("ring-memory.md"), table);
}

/// Times one lookup per iteration, cycling through `keys` in order.
fn lookups(c: &mut Criterion, group: &str, keys: &[&'static str], sizes: &[usize]) {
    let mask = keys.len() - 1;
    assert!(keys.len().is_power_of_two());
    let mut group = c.benchmark_group(group);
    for &n in sizes {
        let mut i = 0usize;
        let ring = ours(n);
        group.bench_function(BenchmarkId::new("ours", n), |b| {
            b.iter(|| {
                i = (i + 1) & mask;
                black_box(ring.node_for_key(keys[i].as_bytes()))
            })
        });
        drop(ring);
        if n == 10_000 {
            // The other way to a small index: fewer points per member (40, not 160). Not the
            // same placement; balance from `bounded_assignment` when the keys are known.
            let config = RingConfig { vnodes_per_weight: 40 };
            let ring = Ring::with_config(member_names(n).into_iter().map(Member::new), config)
                .expect("valid members");
            group.bench_function(BenchmarkId::new("ours-vnodes40", n), |b| {
                b.iter(|| {
                    i = (i + 1) & mask;
                    black_box(ring.node_for_key(keys[i].as_bytes()))
                })
            });
        }
        let anchor = anchor_ring(n);
        group.bench_function(BenchmarkId::new("anchorhash", n), |b| {
            b.iter(|| {
                i = (i + 1) & mask;
                black_box(anchor.get_resource(keys[i]))
            })
        });
        drop(anchor);
        let peer = peer_hashring(n);
        group.bench_function(BenchmarkId::new("hashring-0.3", n), |b| {
            b.iter(|| {
                i = (i + 1) & mask;
                black_box(peer.get(&keys[i]))
            })
        });
        drop(peer);
        if n <= 1000 {
            // consistent_hash_ring's build grows faster than the square of the points
            // (3.4 s at 1,000 members × 160, 41 s at 2,000): skipped at 10,000.
            with_chr(n, |chr| {
                group.bench_function(BenchmarkId::new("consistent_hash_ring", n), |b| {
                    b.iter(|| {
                        i = (i + 1) & mask;
                        black_box(chr.try_get(keys[i]))
                    })
                });
            });
        }
    }
    group.finish();
}

fn lookup(c: &mut Criterion) {
    memory_and_balance();
    lookups(c, "lookup-warm", &ring_keys(WARM), &[10, 100, 1000, 10_000]);
    lookups(c, "lookup-cold", &ring_keys(COLD), &[1000, 10_000]);
}

fn replicas(c: &mut Criterion) {
    for (group, keys) in [("replicas3-warm", ring_keys(WARM)), ("replicas3-cold", ring_keys(COLD))]
    {
        let mask = keys.len() - 1;
        let mut group = c.benchmark_group(group);
        let n = 1000;
        let ring = ours(n);
        let mut out = Vec::with_capacity(3);
        let mut i = 0usize;
        group.bench_function(BenchmarkId::new("ours", n), |b| {
            b.iter(|| {
                i = (i + 1) & mask;
                ring.replicas_into(keys[i].as_bytes(), 3, &mut out);
                black_box(out.len())
            })
        });
        group.bench_function(BenchmarkId::new("ours-zone-aware", n), |b| {
            b.iter(|| {
                i = (i + 1) & mask;
                black_box(ring.replicas_zone_aware(keys[i].as_bytes(), 3).len())
            })
        });
        let chr = &chr_1000().0;
        group.bench_function(BenchmarkId::new("consistent_hash_ring", n), |b| {
            b.iter(|| {
                i = (i + 1) & mask;
                black_box(chr.replicas(keys[i]).take(3).count())
            })
        });
        group.finish();
    }
    // hashring 0.3's `get_with_replicas` copies its whole ring (18 ms a call): timed once,
    // with the warm keys only.
    let keys = ring_keys(WARM);
    let mut group = c.benchmark_group("replicas3-warm");
    group.sample_size(10);
    let peer = peer_hashring(1000);
    let mut i = 0usize;
    group.bench_function(BenchmarkId::new("hashring-0.3", 1000), |b| {
        b.iter(|| {
            i = (i + 1) & (WARM - 1);
            black_box(peer.get_with_replicas(&keys[i], 2).map(|v| v.len()))
        })
    });
    group.finish();
}

fn rebuild(c: &mut Criterion) {
    let mut group = c.benchmark_group("rebuild");
    group.sample_size(10);
    for n in [1000, 10_000] {
        let members: Vec<Member> = member_names(n).into_iter().map(Member::new).collect();
        group.bench_function(BenchmarkId::new("ours", n), |b| {
            b.iter(|| black_box(Ring::new(members.iter().cloned()).expect("valid")))
        });
    }
    let n = 1000;
    group.bench_function(BenchmarkId::new("hashring-0.3", n), |b| {
        b.iter(|| black_box(peer_hashring(n)))
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
}

criterion_group! { name = benches; config = config(); targets = lookup, replicas, rebuild }
criterion_main!(benches);
