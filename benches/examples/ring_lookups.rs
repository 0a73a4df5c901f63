//! Cold lookups of one implementation, for counting instructions and cache misses without
//! timing noise (the same keys and rings as `benches/ring.rs`):
//!
//! ```text
//! cargo build --profile bench -p consul-ha-benches --example ring_lookups
//! valgrind --tool=cachegrind --cache-sim=yes --D1=32768,8,64 --LL=1048576,8,64 \
//!     target/release/examples/ring_lookups 1000 ours 1000000
//! ```
//!
//! Arguments: members, `ours` | `replicas3` | `anchorhash`, lookups. Run once with 0 lookups
//! and subtract: the difference divided by the lookups is the cost of one.

use std::hint::black_box;

use consul_ha_benches::{anchor_ring, member_names, ring_keys};
use hashring::{Member, Ring};

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: ring_lookups <members> <ours|replicas3|anchorhash> <lookups>";
    let [_, n, which, lookups] = args.as_slice() else { return Err(usage.into()) };
    let n: usize = n.parse().map_err(|_| usage)?;
    let lookups: usize = lookups.parse().map_err(|_| usage)?;
    let keys = ring_keys(1 << 18);
    let mask = keys.len() - 1;
    match which.as_str() {
        "ours" | "replicas3" => {
            let ring = Ring::new(member_names(n).into_iter().map(Member::new))
                .map_err(|e| e.to_string())?;
            let mut out = Vec::with_capacity(3);
            for i in 0..lookups {
                let key = keys[i & mask].as_bytes();
                if which == "ours" {
                    black_box(ring.node_for_key(key));
                } else {
                    ring.replicas_into(key, 3, &mut out);
                    black_box(out.len());
                }
            }
        }
        "anchorhash" => {
            let anchor = anchor_ring(n);
            for i in 0..lookups {
                black_box(anchor.get_resource(keys[i & mask]));
            }
        }
        _ => return Err(usage.into()),
    }
    Ok(())
}
