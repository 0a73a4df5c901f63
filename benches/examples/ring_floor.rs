//! What a cold lookup costs at the least, by the size of the table it reads: the key's hash
//! and one random 64-byte line of a table of each size, beside our ring and anchorhash, in
//! one process, in alternating blocks of 2^20 lookups (the keys of `benches/ring.rs`):
//!
//! ```text
//! cargo build --profile bench -p consul-ha-benches --example ring_floor
//! target/release/examples/ring_floor 10000 15 [pressure-MiB]
//! ```
//!
//! Arguments: members, rounds, and optionally the MiB another thread streams through for
//! the whole run, as a neighbour on the host flushing the shared L3 would. No layout of our
//! ring's index can beat the line of its size; where that line is above anchorhash, which
//! keeps its state in L2, no layout of that size can meet it.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use consul_ha_benches::{BLOCK, ColdRings, cold_rings};

/// A cache line of a table.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u16; 32]);

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: ring_floor <members> <rounds> [pressure-MiB]";
    let number = |i: usize| args.get(i).map(|a| a.parse::<usize>().map_err(|_| usage));
    let (Some(n), Some(rounds)) = (number(1).transpose()?, number(2).transpose()?) else {
        return Err(usage.into());
    };
    let pressure = number(3).transpose()?.unwrap_or(0);
    if rounds == 0 {
        return Err(usage.into());
    }
    let ColdRings { keys, ours: ring, anchor } = cold_rings(n)?;
    let (mask, block) = (keys.len() - 1, BLOCK);
    let sizes_mib = [1usize, 2, 4, 7, 10, 20];
    let tables: Vec<Vec<Line>> =
        sizes_mib.iter().map(|mib| vec![Line([1; 32]); (mib << 20) / 64]).collect();

    let stop = Arc::new(AtomicBool::new(false));
    let neighbour = (pressure > 0).then(|| {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut buffer = vec![1u64; pressure << 17];
            let mut x = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for v in buffer.iter_mut().step_by(8) {
                    *v = v.wrapping_add(x);
                    x ^= *v;
                }
            }
            black_box(x);
        })
    });

    // One row per table, then ours, then anchorhash: ns per lookup, each round.
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); tables.len() + 2];
    let mut i = 0usize;
    let mut time = |f: &mut dyn FnMut(&str)| {
        let t = Instant::now();
        for _ in 0..block {
            i = (i + 1) & mask;
            f(keys[i]);
        }
        t.elapsed().as_nanos() as f64 / block as f64
    };
    for _ in 0..rounds {
        for (row, table) in tables.iter().enumerate() {
            let lines = table.len() as u128;
            times[row].push(time(&mut |key| {
                let h = hashring::hash_key(key.as_bytes());
                let line = ((u128::from(h) * lines) >> 64) as usize;
                black_box(table.get(line).map(|l| l.0[(h & 31) as usize]));
            }));
        }
        times[tables.len()].push(time(&mut |key| {
            black_box(ring.node_for_key(key.as_bytes()));
        }));
        times[tables.len() + 1].push(time(&mut |key| {
            black_box(anchor.get_resource(key));
        }));
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(t) = neighbour {
        t.join().map_err(|_| "the neighbour thread panicked")?;
    }

    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let peer = median(&mut times[tables.len() + 1].clone());
    let lines_mb = ring.memory_bytes() as f64 / 1e6;
    println!("{n} members ({lines_mb:.1} MB in all), {rounds} rounds, pressure {pressure} MiB");
    for (row, t) in times.iter_mut().enumerate() {
        let name = match sizes_mib.get(row) {
            Some(mib) => format!("hash + 1 line of {mib} MiB"),
            None if row == tables.len() => "ours".to_string(),
            None => "anchorhash".to_string(),
        };
        let m = median(t);
        println!("{name:>24}: median {m:5.1} ns ({:.2} of anchorhash)", m / peer);
    }
    Ok(())
}
