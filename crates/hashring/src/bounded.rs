//! Consistent hashing with bounded loads, for a known set of keys.

use crate::ring::{Ring, hash_key};

/// Keys placed on a ring so that no member exceeds its capacity.
///
/// Each key goes to the first member clockwise from it whose load is below
/// `ceil(factor × keys × weight / total weight)` (Mirrokni, Thorup and Zadimoghaddam,
/// "Consistent Hashing with Bounded Loads"). Keys are placed in order of their hash, so the
/// result depends only on the ring and the key set, not on the order keys are given in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoundedAssignment {
    /// `owners[i]` is the index (into [`Ring::members`]) of the owner of the `i`-th key.
    pub owners: Vec<usize>,
    /// Keys per member, by member index.
    pub loads: Vec<usize>,
    /// Each member's capacity, by member index.
    pub capacities: Vec<usize>,
}

impl BoundedAssignment {
    /// Peak load over mean load (1.0 is perfect balance), weights ignored.
    pub fn peak_to_mean(&self) -> f64 {
        crate::stats::peak_to_mean(&self.loads)
    }
}

impl Ring {
    /// Places `keys` with bounded loads; `factor` ≥ 1.0 (1.10 is a good default: 10 %
    /// above the fair share at most). Returns `None` on an empty ring.
    ///
    /// ```
    /// use hashring::{Member, Ring};
    /// let ring = Ring::new((0..10).map(|i| Member::new(format!("n{i}"))))?;
    /// let keys: Vec<Vec<u8>> = (0..1000u32).map(|k| k.to_le_bytes().to_vec()).collect();
    /// let placed = ring.bounded_assignment(keys.iter().map(|k| k.as_slice()), 1.10).unwrap();
    /// assert!(placed.loads.iter().all(|&l| l <= 110));
    /// # Ok::<(), hashring::RingError>(())
    /// ```
    pub fn bounded_assignment<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k [u8]>,
        factor: f64,
    ) -> Option<BoundedAssignment> {
        if self.is_empty() {
            return None;
        }
        let hashes: Vec<u64> = keys.into_iter().map(hash_key).collect();
        let members = self.members();
        let total_weight: u64 = members.iter().map(|m| u64::from(m.weight)).sum();
        let factor = if factor.is_finite() { factor.max(1.0) } else { 1.0 };
        let n = hashes.len() as f64;
        let capacities: Vec<usize> = members
            .iter()
            // The epsilon keeps float noise (1.1 × 200 = 220.00000000000003) from adding a slot.
            .map(|m| {
                (factor * n * f64::from(m.weight) / total_weight as f64 - 1e-9).ceil() as usize
            })
            .collect();

        let mut order: Vec<usize> = (0..hashes.len()).collect();
        order.sort_unstable_by_key(|&i| (hashes[i], i));
        let mut owners = vec![0usize; hashes.len()];
        let mut loads = vec![0usize; members.len()];
        for i in order {
            let owner = self.first_with_room(hashes[i], &loads, &capacities);
            owners[i] = owner;
            loads[owner] += 1;
        }
        Some(BoundedAssignment { owners, loads, capacities })
    }

    /// The first member clockwise from `hash` whose load is below its capacity. Capacities
    /// add up to at least the key count, so one always has room.
    fn first_with_room(&self, hash: u64, loads: &[usize], capacities: &[usize]) -> usize {
        let mut fallback = 0;
        for (i, owner) in self.owners_from(hash).enumerate() {
            if i == 0 {
                fallback = owner;
            }
            if loads[owner] < capacities[owner] {
                return owner;
            }
        }
        fallback
    }
}
