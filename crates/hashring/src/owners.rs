//! The owner of each point, in the narrowest integer that holds every member index.

/// Member indexes per point: `u16` for rings of fewer than 65,536 members (half the
/// memory, and half the cache lines a replica walk reads), `u32` beyond.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Owners {
    Narrow(Vec<u16>),
    Wide(Vec<u32>),
}

impl Owners {
    /// Stores `owners`, all below `members`.
    pub(crate) fn new(owners: Vec<u32>, members: usize) -> Owners {
        if members <= usize::from(u16::MAX) + 1 {
            Owners::Narrow(owners.into_iter().map(|o| o as u16).collect())
        } else {
            Owners::Wide(owners)
        }
    }

    /// The owner of the `i`-th point.
    #[inline]
    pub(crate) fn get(&self, i: usize) -> u32 {
        match self {
            Owners::Narrow(v) => u32::from(v[i]),
            Owners::Wide(v) => v[i],
        }
    }

    /// Every owner as a `u32`.
    pub(crate) fn widen(&self) -> Vec<u32> {
        match self {
            Owners::Narrow(v) => v.iter().map(|&o| u32::from(o)).collect(),
            Owners::Wide(v) => v.clone(),
        }
    }

    /// The heap bytes held.
    pub(crate) fn memory_bytes(&self) -> usize {
        match self {
            Owners::Narrow(v) => v.capacity() * 2,
            Owners::Wide(v) => v.capacity() * 4,
        }
    }
}
