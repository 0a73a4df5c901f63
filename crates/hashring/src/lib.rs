//! A fast, stable consistent-hash ring: keys to members, replicas over zones, bounded loads.
//!
//! A [`Ring`] is an immutable value built from a member list. Placement is a pure function
//! of the members (names, weights, zones) and the [`RingConfig`]: the order members are
//! given in does not matter, and the same list gives the same ring on every machine and in
//! every version, because the hash ([`hash_key`], xxh3-64 with a fixed seed) is pinned by
//! golden vectors in the tests. Changing membership returns a new ring with a higher
//! [`Ring::version`]; the old one stays valid, so readers never see a half-built ring.
//!
//! ```
//! use hashring::{Member, Ring};
//!
//! let ring = Ring::new([
//!     Member::new("node-a").zone("eu-1"),
//!     Member::new("node-b").zone("eu-2"),
//!     Member::new("node-c").zone("eu-3").weight(2),
//! ])?;
//! let owner = ring.node_for_key(b"user:42").expect("the ring has members");
//! let replicas = ring.replicas_zone_aware(b"user:42", 3);
//! assert_eq!(replicas[0].name, owner.name);
//! assert_eq!(replicas.len(), 3);
//!
//! // Adding a member moves keys only to the new member.
//! let bigger = ring.with_member(Member::new("node-d").zone("eu-1"))?;
//! let now = bigger.node_for_key(b"user:42").unwrap();
//! assert!(now.name == owner.name || now.name == "node-d");
//! assert_eq!(bigger.version(), ring.version() + 1);
//! # Ok::<(), hashring::RingError>(())
//! ```
//!
//! For tighter balance than virtual nodes give, [`Ring::bounded_assignment`] places a known
//! set of keys (shards, partitions) with consistent hashing with bounded loads: no member
//! takes more than `ceil(factor × its fair share)`.

mod bounded;
mod huge;
mod index;
mod owners;
mod ring;
pub mod stats;

pub use bounded::BoundedAssignment;
pub use ring::{Member, Ring, RingConfig, RingError, hash_key};

#[cfg(test)]
mod props;
