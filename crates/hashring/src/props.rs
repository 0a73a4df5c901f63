//! Property tests: the ring's invariants over random member lists.

use proptest::prelude::*;

use crate::{Member, Ring, RingConfig, hash_key, stats};

fn keys(n: u32) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("key-{i}").into_bytes()).collect()
}

fn member_names(max: usize) -> impl Strategy<Value = Vec<String>> {
    prop::collection::btree_set("[a-z]{1,6}", 1..max).prop_map(|s| s.into_iter().collect())
}

fn ring_of(names: &[String]) -> Ring {
    Ring::with_config(names.iter().map(Member::new), RingConfig { vnodes_per_weight: 40 })
        .expect("distinct non-empty names")
}

fn owner<'a>(ring: &'a Ring, key: &[u8]) -> &'a str {
    &ring.node_for_key(key).expect("non-empty ring").name
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn lookup_matches_a_linear_scan_model(names in member_names(12), probes in prop::collection::vec(any::<u64>(), 1..64)) {
        let ring = ring_of(&names);
        // The model: every (point, name) pair, sorted; the owner is the first point ≥ hash.
        let mut points = Vec::new();
        for name in &names {
            let nh = hash_key(name.as_bytes());
            for i in 0..40u32 {
                points.push((xxhash_rust::xxh3::xxh3_64_with_seed(&i.to_le_bytes(), nh), name.clone()));
            }
        }
        points.sort();
        let mut probes = probes;
        // Every point and its neighbours, and the edges of the lookup tables' slices.
        probes.extend(points.iter().flat_map(|p| [p.0, p.0.wrapping_sub(1), p.0.wrapping_add(1)]));
        probes.extend((0..64u64).flat_map(|s| [s << 58, (s << 58).wrapping_sub(1)]));
        probes.extend([0, u64::MAX]);
        for h in probes {
            let want = points.iter().find(|p| p.0 >= h).unwrap_or(&points[0]);
            prop_assert_eq!(&ring.node_for_hash(h).unwrap().name, &want.1);
        }
    }

    #[test]
    fn adding_a_member_moves_keys_only_to_it(names in member_names(16), new in "[A-Z]{1,6}") {
        let before = ring_of(&names);
        let after = before.with_member(Member::new(new.clone())).unwrap();
        for key in keys(500) {
            let (a, b) = (owner(&before, &key), owner(&after, &key));
            prop_assert!(a == b || b == new, "key moved from {} to {}, not to {}", a, b, new);
        }
    }

    #[test]
    fn removing_a_member_moves_only_its_keys(names in member_names(16), pick in any::<prop::sample::Index>()) {
        prop_assume!(names.len() >= 2);
        let gone = &names[pick.index(names.len())];
        let before = ring_of(&names);
        let after = before.without_member(gone).unwrap();
        for key in keys(500) {
            let (a, b) = (owner(&before, &key), owner(&after, &key));
            prop_assert!(a == b || a == gone, "key of surviving {} moved to {}", a, b);
        }
    }

    #[test]
    fn reweighting_moves_keys_only_to_or_from_that_member(names in member_names(10), pick in any::<prop::sample::Index>(), w in 1u32..5) {
        let changed = &names[pick.index(names.len())];
        let before = ring_of(&names);
        let after = before.with_weight(changed, w).unwrap();
        for key in keys(500) {
            let (a, b) = (owner(&before, &key), owner(&after, &key));
            prop_assert!(a == b || a == changed || b == changed);
        }
    }

    #[test]
    fn any_permutation_builds_the_identical_ring(names in member_names(12), seed in any::<u64>()) {
        let mut shuffled: Vec<Member> = names.iter().map(|n| Member::new(n.clone()).weight(1 + (n.len() as u32 % 3))).collect();
        let sorted = Ring::new(shuffled.clone()).unwrap();
        // A deterministic shuffle from the seed.
        let mut s = seed | 1;
        for i in (1..shuffled.len()).rev() {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            shuffled.swap(i, (s % (i as u64 + 1)) as usize);
        }
        prop_assert!(Ring::new(shuffled).unwrap() == sorted);
    }

    #[test]
    fn replicas_are_distinct_and_start_with_the_owner(names in member_names(12), n in 1usize..6) {
        let ring = ring_of(&names);
        for key in keys(100) {
            let r = ring.replicas(&key, n);
            prop_assert_eq!(r.len(), n.min(names.len()));
            prop_assert_eq!(&r[0].name, &ring.node_for_key(&key).unwrap().name);
            let mut distinct: Vec<&str> = r.iter().map(|m| m.name.as_str()).collect();
            distinct.sort();
            distinct.dedup();
            prop_assert_eq!(distinct.len(), r.len());
        }
    }

    #[test]
    fn zone_aware_replicas_use_distinct_zones_when_there_are_enough(
        names in member_names(15), zones in 1usize..5, n in 1usize..5,
    ) {
        let members: Vec<Member> = names.iter().enumerate()
            .map(|(i, name)| Member::new(name.clone()).zone(format!("z{}", i % zones)))
            .collect();
        let zone_count = zones.min(members.len());
        let ring = Ring::with_config(members, RingConfig { vnodes_per_weight: 40 }).unwrap();
        for key in keys(100) {
            let r = ring.replicas_zone_aware(&key, n);
            prop_assert_eq!(r.len(), n.min(names.len()));
            prop_assert_eq!(&r[0].name, &ring.node_for_key(&key).unwrap().name);
            let mut names_seen: Vec<&str> = r.iter().map(|m| m.name.as_str()).collect();
            names_seen.sort();
            names_seen.dedup();
            prop_assert_eq!(names_seen.len(), r.len(), "replicas must be distinct");
            let mut z: Vec<_> = r.iter().map(|m| m.zone.clone()).collect();
            z.sort();
            z.dedup();
            prop_assert_eq!(z.len(), r.len().min(zone_count), "zones not spread: {:?}", r);
        }
    }

    #[test]
    fn load_is_proportional_to_weight(weights in prop::collection::vec(1u32..4, 2..8)) {
        let members = weights.iter().enumerate().map(|(i, &w)| Member::new(format!("m{i}")).weight(w));
        let ring = Ring::new(members).unwrap();
        let sample = keys(40_000);
        let loads = stats::load(&ring, sample.iter().map(|k| k.as_slice()));
        let per_weight = stats::load_per_weight(&ring, &loads);
        let total_w: u32 = weights.iter().sum();
        let fair = sample.len() as f64 / f64::from(total_w);
        // 160 vnodes per unit weight: each member's share is within ±30 % of its fair share.
        for (m, lw) in ring.members().iter().zip(&per_weight) {
            prop_assert!((lw / fair - 1.0).abs() < 0.30, "{} (weight {}) has {:.0} per weight, fair {:.0}", m.name, m.weight, lw, fair);
        }
    }

    #[test]
    fn bounded_assignment_respects_capacity_and_ignores_key_order(names in member_names(12), nkeys in 1u32..600, factor in 1.0f64..1.5) {
        let ring = ring_of(&names);
        let ks = keys(nkeys);
        let placed = ring.bounded_assignment(ks.iter().map(|k| k.as_slice()), factor).unwrap();
        for (l, c) in placed.loads.iter().zip(&placed.capacities) {
            prop_assert!(l <= c);
        }
        prop_assert_eq!(placed.loads.iter().sum::<usize>(), ks.len());
        let reversed: Vec<&[u8]> = ks.iter().rev().map(|k| k.as_slice()).collect();
        let again = ring.bounded_assignment(reversed, factor).unwrap();
        for (i, o) in placed.owners.iter().enumerate() {
            prop_assert_eq!(*o, again.owners[ks.len() - 1 - i]);
        }
    }
}

/// Keys moved when a member joins or leaves, averaged over many member lists, stay within
/// 1.15 × the optimal fraction (1/n of the keys).
#[test]
fn keys_moved_on_add_and_remove_are_near_optimal_on_average() {
    let sample = keys(20_000);
    let slices = || sample.iter().map(|k| k.as_slice());
    let (mut moved, mut optimal) = (0.0, 0.0);
    for n in 4..40usize {
        let ring = Ring::new((0..n).map(|i| Member::new(format!("node-{n}-{i}")))).unwrap();
        let grown = ring.with_member(Member::new(format!("new-{n}"))).unwrap();
        moved += stats::keys_moved(&ring, &grown, slices()) as f64;
        optimal += sample.len() as f64 / (n + 1) as f64;
        let shrunk = ring.without_member(&format!("node-{n}-0")).unwrap();
        moved += stats::keys_moved(&ring, &shrunk, slices()) as f64;
        optimal += sample.len() as f64 / n as f64;
    }
    let ratio = moved / optimal;
    assert!(ratio <= 1.15, "moved {ratio:.3} × optimal");
}

#[test]
fn exact_ownership_adds_up_and_stays_balanced_at_a_thousand_members() {
    let ring = Ring::new((0..1000).map(|i| Member::new(format!("node-{i}")))).unwrap();
    let share = stats::ownership(&ring);
    assert!((share.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    let peak = stats::exact_peak_to_mean(&ring);
    assert!(peak <= 1.30, "exact peak/mean {peak:.3}");
}

#[test]
fn bounded_mode_keeps_peak_to_mean_within_its_factor() {
    let ring = Ring::new((0..100).map(|i| Member::new(format!("node-{i}")))).unwrap();
    let sample = keys(10_000);
    let placed = ring.bounded_assignment(sample.iter().map(|k| k.as_slice()), 1.10).unwrap();
    assert!(placed.peak_to_mean() <= 1.10, "{}", placed.peak_to_mean());
    let plain = stats::load(&ring, sample.iter().map(|k| k.as_slice()));
    assert!(stats::peak_to_mean(&plain) > placed.peak_to_mean());
}
