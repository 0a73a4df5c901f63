//! Cold lookups of ours and anchorhash interleaved in one process, in short blocks, so the
//! noise of a shared host (other jobs flushing L3) falls on both alike:
//!
//! ```text
//! cargo build --profile bench -p consul-ha-benches --example ring_interleaved
//! target/release/examples/ring_interleaved 10000 40
//! ```
//!
//! Arguments: members, rounds. Each round times 2^20 lookups of each (the same keys as
//! `benches/ring.rs`, in the same order); prints the median, min and max ns per
//! lookup of each, and of the rounds' own ratios.

use std::hint::black_box;
use std::time::Instant;

use consul_ha_benches::{BLOCK, ColdRings, cold_rings};

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: ring_interleaved <members> <rounds>";
    let [_, n, rounds] = args.as_slice() else { return Err(usage.into()) };
    let n: usize = n.parse().map_err(|_| usage)?;
    let rounds: usize = rounds.parse().map_err(|_| usage)?;
    if rounds == 0 {
        return Err(usage.into());
    }
    let ColdRings { keys, ours: ring, anchor } = cold_rings(n)?;
    let (mask, block) = (keys.len() - 1, BLOCK);
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); 2];
    let mut i = 0usize;
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..block {
            i = (i + 1) & mask;
            black_box(ring.node_for_key(keys[i].as_bytes()));
        }
        times[0].push(t.elapsed().as_nanos() as f64 / block as f64);
        let t = Instant::now();
        for _ in 0..block {
            i = (i + 1) & mask;
            black_box(anchor.get_resource(keys[i]));
        }
        times[1].push(t.elapsed().as_nanos() as f64 / block as f64);
    }
    // Each round's own ratio: both halves of a round see nearly the same host.
    let mut ratios: Vec<f64> = times[0].iter().zip(&times[1]).map(|(o, a)| o / a).collect();
    for (name, t) in ["ours", "anchorhash"].iter().zip(&mut times) {
        t.sort_by(f64::total_cmp);
        let (median, min, max) = (t[t.len() / 2], t[0], t[t.len() - 1]);
        println!("{name:>10}: median {median:5.1} ns, min {min:5.1}, max {max:5.1}");
    }
    ratios.sort_by(f64::total_cmp);
    let (median, min, max) = (ratios[ratios.len() / 2], ratios[0], ratios[ratios.len() - 1]);
    let above = ratios.iter().filter(|&&r| r > 1.0).count();
    println!(
        "ours / anchorhash by round: median {median:.2}, min {min:.2}, max {max:.2}, {above} of {} rounds above 1",
        ratios.len()
    );
    Ok(())
}
