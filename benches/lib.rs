//! What the benches share: the ring benches' member names, keys and peer ring (the criterion benches
//! are under `benches/benches`, the cachegrind driver under `benches/examples`).

use std::fmt::Write as _;

/// Lookups timed together in the cold-lookup examples, between two reads of the clock.
pub const BLOCK: usize = 1 << 20;

/// What the cold-lookup examples compare at `n` members: the ring bench's 262,144 cold keys,
/// our ring and anchorhash's.
pub struct ColdRings {
    /// The keys, cycled in order.
    pub keys: Vec<&'static str>,
    /// Our ring.
    pub ours: hashring::Ring,
    /// anchorhash's.
    pub anchor:
        anchorhash::AnchorHash<&'static str, String, std::collections::hash_map::RandomState>,
}

/// [`ColdRings`] at `n` members.
pub fn cold_rings(n: usize) -> Result<ColdRings, String> {
    let members = member_names(n).into_iter().map(hashring::Member::new);
    let ours = hashring::Ring::new(members).map_err(|e| e.to_string())?;
    Ok(ColdRings { keys: ring_keys(1 << 18), ours, anchor: anchor_ring(n) })
}

/// anchorhash's ring of the same `n` members, the peer of every ring bench.
pub fn anchor_ring(
    n: usize,
) -> anchorhash::AnchorHash<&'static str, String, std::collections::hash_map::RandomState> {
    // AnchorHash needs a fixed capacity; twice the members leaves room to grow, as its docs
    // advise.
    anchorhash::Builder::default()
        .with_resources(member_names(n))
        .build((2 * n).min(usize::from(u16::MAX)) as u16)
}

/// `n` member names shaped like Consul node addresses.
pub fn member_names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("node-{i:05}.dc1.example:8300")).collect()
}

/// `count` distinct keys cut from one leaked string, so every ring can borrow them for
/// `'static` (anchorhash wants a sized key type) and they lie in memory in the order read.
pub fn ring_keys(count: usize) -> Vec<&'static str> {
    let mut text = String::new();
    let mut ends = Vec::with_capacity(count);
    for i in 0..count {
        let _ = write!(text, "user:{i}:session");
        ends.push(text.len());
    }
    let text: &'static str = Box::leak(text.into_boxed_str());
    let mut start = 0;
    ends.into_iter()
        .map(|end| {
            let key = text.get(start..end).unwrap_or_default();
            start = end;
            key
        })
        .collect()
}
