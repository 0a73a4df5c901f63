//! Measuring a ring: load per member, balance, and keys moved between two rings.

use crate::ring::{Ring, hash_key};

/// Keys per member (by index into [`Ring::members`]) for a sample of keys.
pub fn load<'k>(ring: &Ring, keys: impl IntoIterator<Item = &'k [u8]>) -> Vec<usize> {
    let mut loads = vec![0usize; ring.members().len()];
    for key in keys {
        if let Some(i) = ring.owner_index(hash_key(key)) {
            loads[i] += 1;
        }
    }
    loads
}

/// The exact share of the hash space each member owns (by index into [`Ring::members`]);
/// the shares add up to 1.0. This is the load a uniform key stream converges to, measured
/// without sampling noise.
pub fn ownership(ring: &Ring) -> Vec<f64> {
    let mut share = vec![0.0; ring.members().len()];
    let points = ring.points();
    let Some(&last) = points.last() else { return share };
    let scale = 2f64.powi(64);
    let mut prev = last;
    for (i, &p) in points.iter().enumerate() {
        let o = ring.owner_at(i);
        // The arc (prev, p] belongs to p's owner; the first arc wraps round from the last point.
        share[o as usize] += p.wrapping_sub(prev) as f64 / scale;
        prev = p;
    }
    if points.len() == 1 {
        share[ring.owner_at(0) as usize] = 1.0;
    }
    share
}

/// The highest share over the mean share, from exact [`ownership`], weights ignored.
pub fn exact_peak_to_mean(ring: &Ring) -> f64 {
    let share = ownership(ring);
    if share.is_empty() {
        return 0.0;
    }
    let mean = 1.0 / share.len() as f64;
    share.iter().cloned().fold(0.0, f64::max) / mean
}

/// Load per unit of weight, so members of different weights compare directly.
pub fn load_per_weight(ring: &Ring, loads: &[usize]) -> Vec<f64> {
    ring.members().iter().zip(loads).map(|(m, &l)| l as f64 / f64::from(m.weight)).collect()
}

/// The highest load over the mean load; 1.0 is perfect balance, 0.0 for no load at all.
pub fn peak_to_mean(loads: &[usize]) -> f64 {
    let total: usize = loads.iter().sum();
    if loads.is_empty() || total == 0 {
        return 0.0;
    }
    let mean = total as f64 / loads.len() as f64;
    *loads.iter().max().unwrap_or(&0) as f64 / mean
}

/// How many of `keys` have a different owner (by name) on `after` than on `before`.
pub fn keys_moved<'k>(
    before: &Ring,
    after: &Ring,
    keys: impl IntoIterator<Item = &'k [u8]>,
) -> usize {
    keys.into_iter()
        .filter(|k| {
            before.node_for_key(k).map(|m| &m.name) != after.node_for_key(k).map(|m| &m.name)
        })
        .count()
}
