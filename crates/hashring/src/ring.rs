//! The ring itself: members, virtual-node points and lookups.

use std::fmt;
use std::sync::{Arc, OnceLock};

use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::index::Index;
use crate::owners::Owners;

/// The fixed seed of every hash on the ring (`"consulha"` in ASCII). Changing it moves data.
const SEED: u64 = 0x636f_6e73_756c_6861;

/// The most virtual nodes one ring may hold, so a typo in a weight cannot exhaust memory.
const MAX_POINTS: u64 = 1 << 26;

/// The stable hash of a key: xxh3-64 with a fixed seed.
///
/// Documented and pinned by golden vectors: the same bytes hash to the same value on every
/// platform and in every version of this crate.
///
/// ```
/// assert_eq!(hashring::hash_key(b"user:42"), hashring::hash_key(b"user:42"));
/// ```
#[inline]
pub fn hash_key(key: &[u8]) -> u64 {
    xxh3_64_with_seed(key, SEED)
}

/// The position of a member's `i`-th virtual node: a hash of the member's name hash and `i`.
fn point(name_hash: u64, i: u32) -> u64 {
    xxh3_64_with_seed(&i.to_le_bytes(), name_hash)
}

/// A member of the ring: a name, a weight and an optional zone.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Member {
    /// Unique name; placement depends on it, so it must be stable (a node id, not an address).
    pub name: String,
    /// Relative capacity: a member of weight 2 owns about twice the keys of one of weight 1.
    pub weight: u32,
    /// Failure domain (rack, availability zone); used by [`Ring::replicas_zone_aware`].
    /// Members without a zone share one anonymous zone.
    pub zone: Option<String>,
}

impl Member {
    /// A member of weight 1 and no zone.
    pub fn new(name: impl Into<String>) -> Self {
        Member { name: name.into(), weight: 1, zone: None }
    }

    /// Sets the weight.
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Sets the zone.
    pub fn zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = Some(zone.into());
        self
    }
}

/// How a ring is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingConfig {
    /// Virtual nodes per unit of weight. More points give a smoother balance and a larger
    /// ring; 160 keeps peak/mean load near 1.2 at a few MB for 1,000 members.
    pub vnodes_per_weight: u32,
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig { vnodes_per_weight: 160 }
    }
}

/// Why a ring could not be built or changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RingError {
    /// A member's name is empty.
    EmptyName,
    /// Two members share a name.
    DuplicateMember(String),
    /// A member has weight 0 (remove it instead).
    ZeroWeight(String),
    /// No member of that name exists.
    UnknownMember(String),
    /// `vnodes_per_weight` is 0.
    ZeroVnodes,
    /// The ring would hold more virtual nodes than allowed.
    TooManyPoints {
        /// Points the members and config ask for.
        requested: u64,
        /// The limit.
        limit: u64,
    },
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RingError::EmptyName => write!(f, "a ring member's name must not be empty"),
            RingError::DuplicateMember(n) => write!(f, "ring member {n:?} is listed twice"),
            RingError::ZeroWeight(n) => {
                write!(f, "ring member {n:?} has weight 0; remove it instead")
            }
            RingError::UnknownMember(n) => write!(f, "no ring member is named {n:?}"),
            RingError::ZeroVnodes => write!(f, "vnodes_per_weight must be at least 1"),
            RingError::TooManyPoints { requested, limit } => write!(
                f,
                "the ring would hold {requested} virtual nodes, more than the limit of {limit}; \
                 lower the weights or vnodes_per_weight"
            ),
        }
    }
}

impl std::error::Error for RingError {}

/// An immutable consistent-hash ring. Cloning is cheap (one `Arc`).
#[derive(Clone)]
pub struct Ring {
    inner: Arc<Inner>,
}

struct Inner {
    config: RingConfig,
    version: u64,
    /// Members sorted by name; `owners` index into it.
    members: Vec<Member>,
    /// Zone number of each member (members without a zone share one).
    zone_of: Vec<u32>,
    zone_count: u32,
    /// Virtual-node positions, sorted; ties ordered by member name.
    points: Vec<u64>,
    /// The member index owning each point of `points`.
    owners: Owners,
    /// `owners` as `u32`s, made on the first call of [`Ring::owners`] only.
    owners_wide: OnceLock<Vec<u32>>,
    /// Narrows every lookup; most end in one cache line of it.
    index: Index,
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("version", &self.inner.version)
            .field("members", &self.inner.members.len())
            .field("points", &self.inner.points.len())
            .finish()
    }
}

impl PartialEq for Ring {
    /// Two rings are equal when they place every key identically (the version aside).
    fn eq(&self, other: &Self) -> bool {
        self.inner.config == other.inner.config
            && self.inner.members == other.inner.members
            && self.inner.points == other.inner.points
            && self.inner.owners == other.inner.owners
    }
}

impl Ring {
    /// Builds a ring with the default [`RingConfig`] (160 virtual nodes per unit weight).
    pub fn new(members: impl IntoIterator<Item = Member>) -> Result<Ring, RingError> {
        Ring::with_config(members, RingConfig::default())
    }

    /// Builds a ring with `config`. The order of `members` does not matter.
    pub fn with_config(
        members: impl IntoIterator<Item = Member>,
        config: RingConfig,
    ) -> Result<Ring, RingError> {
        Ring::build(members.into_iter().collect(), config, 1)
    }

    fn build(
        mut members: Vec<Member>,
        config: RingConfig,
        version: u64,
    ) -> Result<Ring, RingError> {
        if config.vnodes_per_weight == 0 {
            return Err(RingError::ZeroVnodes);
        }
        members.sort_by(|a, b| a.name.cmp(&b.name));
        let mut total: u64 = 0;
        for (i, m) in members.iter().enumerate() {
            if m.name.is_empty() {
                return Err(RingError::EmptyName);
            }
            if i > 0 && members[i - 1].name == m.name {
                return Err(RingError::DuplicateMember(m.name.clone()));
            }
            if m.weight == 0 {
                return Err(RingError::ZeroWeight(m.name.clone()));
            }
            total += u64::from(m.weight) * u64::from(config.vnodes_per_weight);
        }
        if total > MAX_POINTS {
            return Err(RingError::TooManyPoints { requested: total, limit: MAX_POINTS });
        }

        // Sort (point, owner) pairs packed into one u128 key: owners are name-ordered, so
        // equal points break ties by member name.
        let mut pairs: Vec<(u64, u32)> = Vec::with_capacity(total as usize);
        for (idx, m) in members.iter().enumerate() {
            let name_hash = hash_key(m.name.as_bytes());
            let n = m.weight * config.vnodes_per_weight;
            pairs.extend((0..n).map(|i| (point(name_hash, i), idx as u32)));
        }
        pairs.sort_unstable();
        let (points, owners): (Vec<u64>, Vec<u32>) = pairs.into_iter().unzip();

        let index = Index::new(&points, &owners, members.len());
        let owners = Owners::new(owners, members.len());

        let mut zones: Vec<Option<&str>> = members.iter().map(|m| m.zone.as_deref()).collect();
        zones.sort_unstable();
        zones.dedup();
        let zone_of = members
            .iter()
            .map(|m| zones.binary_search(&m.zone.as_deref()).unwrap_or(0) as u32)
            .collect();

        Ok(Ring {
            inner: Arc::new(Inner {
                config,
                version,
                zone_count: zones.len() as u32,
                zone_of,
                members,
                points,
                owners,
                owners_wide: OnceLock::new(),
                index,
            }),
        })
    }

    /// The members, sorted by name.
    pub fn members(&self) -> &[Member] {
        &self.inner.members
    }

    /// The config the ring was built with.
    pub fn config(&self) -> RingConfig {
        self.inner.config
    }

    /// The membership version: 1 for a new ring, one more for each change made through
    /// [`with_member`](Self::with_member), [`without_member`](Self::without_member) or
    /// [`with_weight`](Self::with_weight).
    pub fn version(&self) -> u64 {
        self.inner.version
    }

    /// True if the ring has no members.
    pub fn is_empty(&self) -> bool {
        self.inner.members.is_empty()
    }

    /// The number of virtual nodes.
    pub fn point_count(&self) -> usize {
        self.inner.points.len()
    }

    /// The heap memory the ring holds, in bytes (points, owners, lookup index, members).
    pub fn memory_bytes(&self) -> usize {
        let i = &self.inner;
        let members: usize = i
            .members
            .iter()
            .map(|m| {
                std::mem::size_of::<Member>()
                    + m.name.capacity()
                    + m.zone.as_ref().map_or(0, String::capacity)
            })
            .sum();
        let wide = i.owners_wide.get().map_or(0, |w| w.capacity() * 4);
        i.points.capacity() * 8 + i.owners.memory_bytes() + wide + i.index.memory_bytes() + members
    }

    /// The virtual-node positions, sorted.
    pub fn points(&self) -> &[u64] {
        &self.inner.points
    }

    /// The owner (index into [`members`](Self::members)) of each point in [`points`](Self::points).
    ///
    /// The ring stores owners more compactly: the first call makes this list (4 bytes a
    /// point) and keeps it.
    pub fn owners(&self) -> &[u32] {
        self.inner.owners_wide.get_or_init(|| self.inner.owners.widen())
    }

    /// The owner (index into [`members`](Self::members)) of the `i`-th point.
    #[inline]
    pub(crate) fn owner_at(&self, i: usize) -> u32 {
        self.inner.owners.get(i)
    }

    /// The index of the first point at or after `hash`, wrapping to 0 past the end.
    #[inline]
    fn position(&self, hash: u64) -> usize {
        let i = &*self.inner;
        let (lo, hi) = i.index.bounds(hash);
        // A slice holds a handful of points: scanning beats a binary search here.
        let slice = &i.points[lo..hi];
        let off = if slice.len() <= 8 {
            slice.iter().position(|&p| p >= hash).unwrap_or(slice.len())
        } else {
            slice.partition_point(|&p| p < hash)
        };
        let pos = lo + off;
        if pos == i.points.len() { 0 } else { pos }
    }

    /// The member owning `key`, or `None` on an empty ring.
    #[inline]
    pub fn node_for_key(&self, key: &[u8]) -> Option<&Member> {
        self.node_for_hash(hash_key(key))
    }

    /// The member owning a hash (the first virtual node clockwise from it).
    #[inline]
    pub fn node_for_hash(&self, hash: u64) -> Option<&Member> {
        let owner = self.owner_index(hash)?;
        Some(&self.inner.members[owner])
    }

    /// The index (into [`members`](Self::members)) of the member owning `hash`.
    #[inline]
    pub fn owner_index(&self, hash: u64) -> Option<usize> {
        let i = &*self.inner;
        if let Some(owner) = i.index.owner(hash) {
            return Some(usize::from(owner));
        }
        if i.points.is_empty() {
            return None;
        }
        Some(i.owners.get(self.position(hash)) as usize)
    }

    /// Member indexes of every point clockwise from `hash`, once round the ring.
    pub(crate) fn owners_from(&self, hash: u64) -> impl Iterator<Item = usize> + '_ {
        let i = &*self.inner;
        let len = i.points.len();
        let start = if len == 0 { 0 } else { self.position(hash) };
        (0..len).map(move |step| i.owners.get((start + step) % len) as usize)
    }

    /// `n` distinct members for `key` in ring order; the first is [`node_for_key`]'s answer.
    /// Fewer than `n` if the ring has fewer members.
    ///
    /// [`node_for_key`]: Self::node_for_key
    pub fn replicas(&self, key: &[u8], n: usize) -> Vec<&Member> {
        let mut out = Vec::with_capacity(n.min(self.inner.members.len()));
        self.replicas_into(key, n, &mut out);
        out
    }

    /// Like [`replicas`](Self::replicas), writing into `out` (cleared first) so a hot loop
    /// allocates nothing.
    pub fn replicas_into<'a>(&'a self, key: &[u8], n: usize, out: &mut Vec<&'a Member>) {
        out.clear();
        let i = &*self.inner;
        let n = n.min(i.members.len());
        if n == 0 {
            return;
        }
        let len = i.points.len();
        let hash = hash_key(key);
        // Adds `owner` unless taken (`out` itself says who is; no allocation besides
        // `out`); true once `out` is full.
        let mut add = |owner: u32| {
            let m = &i.members[owner as usize];
            if !out.iter().any(|o| std::ptr::eq(*o, m)) {
                out.push(m);
            }
            out.len() == n
        };
        if n <= 16 {
            // The key's line holds the owners of the next few points: most walks end there.
            let mut at = match i.index.walk(hash) {
                Some(walk) => {
                    for &o in walk.owners {
                        if add(u32::from(o)) {
                            return;
                        }
                    }
                    i.index.after(&walk, len)
                }
                None => self.position(hash),
            };
            for _ in 0..len {
                if add(i.owners.get(at)) {
                    return;
                }
                at = if at + 1 == len { 0 } else { at + 1 };
            }
            return;
        }
        let mut at = self.position(hash);
        let mut seen = Seen::new(i.members.len(), n);
        for _ in 0..len {
            let owner = i.owners.get(at);
            if seen.insert(owner) {
                out.push(&i.members[owner as usize]);
                if out.len() == n {
                    return;
                }
            }
            at = if at + 1 == len { 0 } else { at + 1 };
        }
    }

    /// `n` distinct members for `key`, spread over as many distinct zones as possible.
    ///
    /// Walks the ring from the key's owner; a member whose zone is already used is skipped
    /// until every zone has one replica, then the skipped members fill the rest in ring
    /// order. The first replica is always [`node_for_key`](Self::node_for_key)'s answer.
    pub fn replicas_zone_aware(&self, key: &[u8], n: usize) -> Vec<&Member> {
        let i = &*self.inner;
        let n = n.min(i.members.len());
        let mut out: Vec<&Member> = Vec::with_capacity(n);
        if n == 0 {
            return out;
        }
        let mut seen = Seen::new(i.members.len(), n.max(8));
        let mut zones_used = vec![false; i.zone_count as usize];
        let mut zones_left = i.zone_count;
        let mut deferred: Vec<u32> = Vec::new();
        let start = self.position(hash_key(key));
        let len = i.points.len();
        for step in 0..len {
            let owner = i.owners.get((start + step) % len);
            if !seen.insert(owner) {
                continue;
            }
            let zone = i.zone_of[owner as usize] as usize;
            if zones_left == 0 {
                out.push(&i.members[owner as usize]);
            } else if !zones_used[zone] {
                zones_used[zone] = true;
                zones_left -= 1;
                out.push(&i.members[owner as usize]);
                if zones_left == 0 {
                    // Every zone has a replica: the skipped members come next, in ring order.
                    let room = n - out.len().min(n);
                    out.extend(deferred.drain(..).take(room).map(|d| &i.members[d as usize]));
                }
            } else {
                deferred.push(owner);
            }
            if out.len() >= n {
                out.truncate(n);
                return out;
            }
        }
        // Fewer zones than replicas asked for and the ring is exhausted.
        let room = n - out.len();
        out.extend(deferred.into_iter().take(room).map(|d| &i.members[d as usize]));
        out
    }

    /// A new ring with `member` added (version + 1).
    pub fn with_member(&self, member: Member) -> Result<Ring, RingError> {
        if self.inner.members.iter().any(|m| m.name == member.name) {
            return Err(RingError::DuplicateMember(member.name));
        }
        let mut members = self.inner.members.clone();
        members.push(member);
        Ring::build(members, self.inner.config, self.inner.version + 1)
    }

    /// A new ring without the member named `name` (version + 1).
    pub fn without_member(&self, name: &str) -> Result<Ring, RingError> {
        let mut members = self.inner.members.clone();
        let before = members.len();
        members.retain(|m| m.name != name);
        if members.len() == before {
            return Err(RingError::UnknownMember(name.to_string()));
        }
        Ring::build(members, self.inner.config, self.inner.version + 1)
    }

    /// A new ring where the member named `name` has `weight` (version + 1).
    pub fn with_weight(&self, name: &str, weight: u32) -> Result<Ring, RingError> {
        let mut members = self.inner.members.clone();
        let m = members
            .iter_mut()
            .find(|m| m.name == name)
            .ok_or_else(|| RingError::UnknownMember(name.to_string()))?;
        m.weight = weight;
        Ring::build(members, self.inner.config, self.inner.version + 1)
    }
}

/// The members already picked by a replica walk: a short list for small `n`, a bitmap for
/// large ones.
enum Seen {
    Few(Vec<u32>),
    Many(Vec<bool>),
}

impl Seen {
    fn new(members: usize, n: usize) -> Seen {
        if n <= 16 { Seen::Few(Vec::with_capacity(n)) } else { Seen::Many(vec![false; members]) }
    }

    /// Records `owner`; false if it was already there.
    #[inline]
    fn insert(&mut self, owner: u32) -> bool {
        match self {
            Seen::Few(v) => {
                if v.contains(&owner) {
                    false
                } else {
                    v.push(owner);
                    true
                }
            }
            Seen::Many(bits) => !std::mem::replace(&mut bits[owner as usize], true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(ms: &[&Member]) -> Vec<String> {
        ms.iter().map(|m| m.name.clone()).collect()
    }

    #[test]
    fn hash_is_pinned_by_golden_vectors() {
        // If these change, every deployed ring moves its data: never update them casually.
        // Cross-checked against Python's `xxhash.xxh3_64_intdigest(key, seed=SEED)`.
        let got = [hash_key(b""), hash_key(b"user:42"), hash_key("clé-ü".as_bytes())];
        assert_eq!(got, [0x4975_f8a1_cf9d_cf89, 0x786b_1146_0f54_b7ec, 0x04b2_9ec5_f85c_ce38]);
    }

    #[test]
    fn owners_are_pinned_by_golden_vectors() {
        let ring = Ring::new((0..5).map(|i| Member::new(format!("node-{i}")))).unwrap();
        let owners: Vec<&str> = ["alpha", "beta", "gamma", "delta", "epsilon", "user:42"]
            .iter()
            .map(|k| ring.node_for_key(k.as_bytes()).unwrap().name.as_str())
            .collect();
        // Cross-checked against a 20-line Python model of the ring (xxhash + bisect).
        assert_eq!(owners, ["node-3", "node-4", "node-4", "node-3", "node-0", "node-4"]);
    }

    #[test]
    fn empty_ring_has_no_owner() {
        let ring = Ring::new([]).unwrap();
        assert!(ring.is_empty());
        assert!(ring.node_for_key(b"k").is_none());
        assert!(ring.replicas(b"k", 3).is_empty());
        assert!(ring.replicas_zone_aware(b"k", 3).is_empty());
    }

    #[test]
    fn bad_members_are_rejected_by_name() {
        let err = Ring::new([Member::new("a"), Member::new("a")]).unwrap_err();
        assert_eq!(err, RingError::DuplicateMember("a".into()));
        assert_eq!(err.to_string(), "ring member \"a\" is listed twice");
        assert_eq!(Ring::new([Member::new("")]).unwrap_err(), RingError::EmptyName);
        assert_eq!(
            Ring::new([Member::new("z").weight(0)]).unwrap_err(),
            RingError::ZeroWeight("z".into())
        );
        let ring = Ring::new([Member::new("a")]).unwrap();
        assert_eq!(ring.without_member("b").unwrap_err(), RingError::UnknownMember("b".into()));
        assert!(matches!(
            Ring::new([Member::new("huge").weight(u32::MAX)]),
            Err(RingError::TooManyPoints { .. })
        ));
        assert_eq!(
            Ring::with_config([], RingConfig { vnodes_per_weight: 0 }).unwrap_err(),
            RingError::ZeroVnodes
        );
    }

    #[test]
    fn replicas_match_a_naive_walk_for_few_and_many() {
        let ring = Ring::new((0..40).map(|i| Member::new(format!("m{i:02}")))).unwrap();
        for key in ["a", "b", "user:42", "order:7"] {
            // Naive: walk every point from the owner, keep first sightings.
            let start = ring.position(hash_key(key.as_bytes()));
            let mut naive: Vec<&str> = Vec::new();
            for step in 0..ring.points().len() {
                let owner = ring.owners()[(start + step) % ring.points().len()] as usize;
                let name = ring.members()[owner].name.as_str();
                if !naive.contains(&name) {
                    naive.push(name);
                }
            }
            for n in [1, 3, 16, 17, 30, 40, 50] {
                let got: Vec<&str> =
                    ring.replicas(key.as_bytes(), n).iter().map(|m| m.name.as_str()).collect();
                assert_eq!(got, naive[..n.min(40)], "key {key}, n {n}");
            }
        }
    }

    #[test]
    fn zone_aware_replicas_cover_every_zone_first() {
        let ring = Ring::new([
            Member::new("a1").zone("a"),
            Member::new("a2").zone("a"),
            Member::new("a3").zone("a"),
            Member::new("b1").zone("b"),
            Member::new("c1").zone("c"),
        ])
        .unwrap();
        for k in 0..200u32 {
            let key = k.to_le_bytes();
            let r = ring.replicas_zone_aware(&key, 3);
            let mut zones: Vec<_> = r.iter().map(|m| m.zone.clone()).collect();
            zones.sort();
            zones.dedup();
            assert_eq!(zones.len(), 3, "replicas {:?}", names(&r));
            assert_eq!(r[0].name, ring.node_for_key(&key).unwrap().name);
            assert_eq!(ring.replicas_zone_aware(&key, 5).len(), 5);
        }
    }

    #[test]
    fn versions_count_changes() {
        let ring = Ring::new([Member::new("a")]).unwrap();
        let r2 = ring.with_member(Member::new("b")).unwrap();
        let r3 = r2.with_weight("b", 3).unwrap();
        let r4 = r3.without_member("a").unwrap();
        assert_eq!([ring.version(), r2.version(), r3.version(), r4.version()], [1, 2, 3, 4]);
        assert_eq!(r4.members().len(), 1);
    }

    #[test]
    fn rings_too_big_for_u16_owners_place_by_the_points() {
        // 70,000 members: no lines, `u32` owners; every answer comes from the exact search.
        let config = RingConfig { vnodes_per_weight: 1 };
        let ring =
            Ring::with_config((0..70_000).map(|i| Member::new(format!("m{i}"))), config).unwrap();
        for k in 0..2000u32 {
            let h = hash_key(&k.to_le_bytes());
            let first = ring.points().partition_point(|&p| p < h) % ring.point_count();
            let want = &ring.members()[ring.owners()[first] as usize];
            assert_eq!(ring.node_for_hash(h), Some(want));
            assert_eq!(ring.replicas(&k.to_le_bytes(), 2)[0], want);
        }
    }

    #[test]
    fn memory_stays_small_at_a_thousand_members() {
        let ring = Ring::new((0..1000).map(|i| Member::new(format!("node-{i:04}")))).unwrap();
        assert_eq!(ring.point_count(), 160_000);
        assert!(ring.memory_bytes() < 3 << 20, "{} bytes", ring.memory_bytes());
    }
}
