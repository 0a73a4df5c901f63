//! The lookup index: one 64-byte cache line per slice of the hash space, so that most
//! lookups read one line of a table small enough to stay in cache, and never the points.
//!
//! A line holds up to 15 of its slice's points as 16-bit *residues* (the 16 bits of the
//! point just below the slice bits), each with its owner, then a sentinel slot holding the
//! owner of the first point after the slice. A hash's owner is the owner of the first
//! residue above the hash's residue. A slice of more than 15 points keeps 14 in its line
//! and the rest in continuation lines (same layout) after the slices' lines. A tie (the
//! 16 bits match) or a ring too large for `u16` owners falls back to an exact search of
//! the points. The index only narrows the search: placement is still defined by the sorted
//! points and their owners.

use crate::huge::HugeSlice;

/// Slots in a line: up to 15 points and at least one sentinel.
const SLOTS: usize = 16;

/// Points a line holds when the slice continues in another line: the last two slots say
/// where (owner [`NOT_HERE`], then the continuation's number).
const CHAINED: usize = SLOTS - 2;

/// An owner slot that holds no owner: the slice continues elsewhere (or, in the last slot
/// of a chained line, nowhere the index can tell).
const NOT_HERE: u16 = u16::MAX;

/// At least this many points per slice on average (and fewer than twice as many): at 8 to
/// 16 (Poisson-distributed), 1 to 4 % of lookups fall past a line's 14th point and read a
/// continuation line.
const POINTS_PER_SLICE: usize = 8;

/// One slice of the hash space (or the rest of one), one cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line {
    /// The residues of the points in order, then `i16::MAX` (the highest) up to the end.
    residues: [i16; SLOTS],
    /// The owner of each point, then the owner of the first point after the slice; or, in
    /// a chained line, [`NOT_HERE`] and the number of the continuation line.
    owners: [u16; SLOTS],
}

/// The start of a walk round the ring from a hash, as far as its line goes.
pub(crate) struct Walk<'a> {
    /// The owners of the first point at or after the hash and of the points after it that
    /// the line holds, in ring order. A final line ends with the owner of the point after
    /// the slice, repeated to the end of the line: repeats name the same member again.
    pub(crate) owners: &'a [u16],
    /// The slice of the hash.
    slice: usize,
    /// Lines of the slice before this one (continuations followed).
    chained: usize,
    /// Whether the slice continues in another line after this one.
    continues: bool,
}

/// The index of a ring: lines (when owners fit in a `u16`) and, for every slice, the index
/// of its first point.
pub(crate) struct Index {
    /// Slices are the top `bits` bits of a hash: `64 - bits` and `48 - bits`, the shifts
    /// that give a hash's slice and (cut to 16 bits) its residue, are kept so a lookup
    /// spends no instruction on them.
    slice_shift: u32,
    residue_shift: u32,
    /// `2^bits`: the number of the first continuation line.
    slices: usize,
    /// `start[s]` is the index of the first point of slice `s`; `start[2^bits]` the count.
    start: Vec<u32>,
    /// One line per slice, then the continuation lines; empty when a ring has no points or
    /// too many members. On huge pages when large (see [`HugeSlice`]).
    lines: HugeSlice<Line>,
}

impl Index {
    /// Builds the index of sorted `points` owned by `owners` (indexes below `members`).
    pub(crate) fn new(points: &[u64], owners: &[u32], members: usize) -> Index {
        Index::build(points, owners, members, usize::from(NOT_HERE))
    }

    /// [`new`](Self::new) with at most `max_chained` continuation lines.
    fn build(points: &[u64], owners: &[u32], members: usize, max_chained: usize) -> Index {
        let wanted = (points.len() / POINTS_PER_SLICE).max(2);
        // The largest power of two at most `wanted`, so the lines of 1,000 members × 160
        // points fit in 1 MiB.
        let slices = 1usize << (usize::BITS - 1 - wanted.leading_zeros());
        let bits = slices.trailing_zeros();
        let mut start = Vec::with_capacity(slices + 1);
        let mut p = 0usize;
        for slice in 0..slices {
            let lower = (slice as u64) << (64 - bits);
            while p < points.len() && points[p] < lower {
                p += 1;
            }
            start.push(p as u32);
        }
        start.push(points.len() as u32);

        if points.is_empty() || members >= usize::from(NOT_HERE) {
            return Index::with(bits, start, Vec::new());
        }
        let mut lines = Vec::with_capacity(slices);
        let mut chained = Vec::new();
        for s in 0..slices {
            let (mut lo, hi) = (start[s] as usize, start[s + 1] as usize);
            let next = owners[hi % points.len()] as u16;
            let mut into_chained = false;
            loop {
                let mut line = Line { residues: [i16::MAX; SLOTS], owners: [NOT_HERE; SLOTS] };
                let last = hi - lo < SLOTS;
                let stored = if last { hi - lo } else { CHAINED };
                for (k, at) in (lo..lo + stored).enumerate() {
                    line.residues[k] = residue(points[at], 48 - bits);
                    line.owners[k] = owners[at] as u16;
                }
                // The continuation's number: this line may be a continuation itself.
                let number = chained.len() + usize::from(into_chained);
                let more = !last && number < max_chained;
                if last {
                    // Past the slice's last point: the next point's owner, wrapping round.
                    line.owners[stored..].fill(next);
                } else if more {
                    line.owners[SLOTS - 1] = number as u16;
                }
                if into_chained {
                    chained.push(line)
                } else {
                    lines.push(line)
                }
                if !more {
                    break;
                }
                into_chained = true;
                lo += CHAINED;
            }
        }
        lines.reserve_exact(chained.len());
        lines.extend(chained);
        Index::with(bits, start, lines)
    }

    fn with(bits: u32, start: Vec<u32>, lines: Vec<Line>) -> Index {
        let (slice_shift, residue_shift) = (64 - bits, 48 - bits);
        let lines = HugeSlice::new(lines);
        Index { slice_shift, residue_shift, slices: 1 << bits, start, lines }
    }

    /// The heap bytes of the index.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.start.capacity() * 4 + self.lines.memory_bytes()
    }

    /// The slice of `hash`.
    #[inline]
    fn slice(&self, hash: u64) -> usize {
        (hash >> self.slice_shift) as usize
    }

    /// The range of point indexes in `hash`'s slice.
    #[inline]
    pub(crate) fn bounds(&self, hash: u64) -> (usize, usize) {
        let s = self.slice(hash);
        (self.start[s] as usize, self.start[s + 1] as usize)
    }

    /// The line after a chained `line`, if the index has it.
    #[inline]
    fn continuation(&self, line: &Line) -> Option<&Line> {
        self.lines.get(self.slices + usize::from(line.owners[SLOTS - 1]))
    }

    /// The owner of `hash` from its line alone, or `None` when the line cannot tell.
    #[inline]
    pub(crate) fn owner(&self, hash: u64) -> Option<u16> {
        let r = residue(hash, self.residue_shift);
        let mut line = self.lines.get(self.slice(hash))?;
        loop {
            let slot = line.find(r)?;
            match line.owners[slot] {
                NOT_HERE => line = self.continuation(line)?,
                owner => return Some(owner),
            }
        }
    }

    /// The owners `hash`'s line holds from where it falls, or `None` when the line cannot
    /// tell; [`after`](Self::after) says where the walk goes on.
    #[inline]
    pub(crate) fn walk(&self, hash: u64) -> Option<Walk<'_>> {
        let r = residue(hash, self.residue_shift);
        let slice = self.slice(hash);
        let mut line = self.lines.get(slice)?;
        let mut chained = 0;
        loop {
            let slot = line.find(r)?;
            if line.owners[slot] == NOT_HERE {
                line = self.continuation(line)?;
                chained += 1;
                continue;
            }
            let continues = line.owners[CHAINED] == NOT_HERE;
            let end = if continues { CHAINED } else { SLOTS };
            return Some(Walk { owners: &line.owners[slot..end], slice, chained, continues });
        }
    }

    /// The index of the first point after those `walk` holds, on a ring of `len` points.
    pub(crate) fn after(&self, walk: &Walk<'_>, len: usize) -> usize {
        let next = if walk.continues {
            self.start[walk.slice] as usize + CHAINED * (walk.chained + 1)
        } else {
            // The line ended with the point after the slice.
            self.start[walk.slice + 1] as usize + 1
        };
        next % len
    }
}

impl Line {
    /// The slot of the first point at or after a hash of residue `r` (the sentinel's past
    /// the last point), or `None` when the residues cannot tell.
    #[inline]
    fn find(&self, r: i16) -> Option<usize> {
        // That many points lie before the hash: residues are sorted, and the last slot is
        // `i16::MAX`, so the count stays below 16.
        let slot = below(&self.residues, r) & (SLOTS - 1);
        if self.residues[slot] == r { None } else { Some(slot) }
    }
}

/// How many of the sorted `residues` are below `r`. The residues are sorted, so the lanes
/// below `r` come first and the count is the trailing ones of the compare mask: on x86-64
/// two signed compares of 8 lanes, a pack, a move of the mask and a bit scan (SSE2, always
/// there). Portable code gets the same compares from LLVM but then a popcount of the mask,
/// a dozen more instructions without POPCNT (not in the baseline target), and the work a
/// cold lookup does after its line arrives is what limits how many lookups overlap.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline]
#[allow(unsafe_code)]
fn below(residues: &[i16; SLOTS], r: i16) -> usize {
    use std::arch::x86_64::{
        _mm_cmpgt_epi16, _mm_loadu_si128, _mm_movemask_epi8, _mm_packs_epi16, _mm_set1_epi16,
    };
    // SAFETY: SSE2 is enabled (the cfg above), and the two unaligned 16-byte loads read
    // `residues[0..8]` and `residues[8..16]`, inside the array.
    let mask = unsafe {
        let low = _mm_loadu_si128(residues.as_ptr().cast());
        let high = _mm_loadu_si128(residues.as_ptr().add(8).cast());
        let r = _mm_set1_epi16(r);
        // Lane k of the packed compare is all ones when residue k is below `r`.
        _mm_movemask_epi8(_mm_packs_epi16(_mm_cmpgt_epi16(r, low), _mm_cmpgt_epi16(r, high)))
    };
    (!mask).trailing_zeros() as usize
}

/// How many of the sorted `residues` are below `r` (the portable count).
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline]
fn below(residues: &[i16; SLOTS], r: i16) -> usize {
    residues.iter().map(|&x| usize::from(x < r)).sum()
}

/// The 16 bits of `x` from bit `shift` up (the 16 just below a slice's bits when `shift`
/// is `48 - bits`), shifted down by 2^15 into an `i16`: the order is the same, and a
/// signed compare is one instruction where an unsigned one is three.
#[inline]
fn residue(x: u64, shift: u32) -> i16 {
    ((x >> shift) as u16 ^ 0x8000) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exact answer: the first point at or after `hash`, wrapping round.
    fn exact(points: &[u64], hash: u64) -> usize {
        let p = points.partition_point(|&p| p < hash);
        if p == points.len() { 0 } else { p }
    }

    /// A small deterministic generator (splitmix64), so the test needs no dependency.
    fn next(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Checks every answer the index gives against the exact search, at the points, beside
    /// them and at random hashes; returns how many of the 4,000 random hashes the lines
    /// answered.
    fn check(points: &[u64], owners: &[u32], members: usize) -> usize {
        check_index(&Index::new(points, owners, members), points, owners)
    }

    fn check_index(index: &Index, points: &[u64], owners: &[u32]) -> usize {
        let mut state = 7;
        let mut probes: Vec<u64> = (0..4000).map(|_| next(&mut state)).collect();
        probes.extend(points.iter().flat_map(|&p| [p, p.wrapping_sub(1), p.wrapping_add(1)]));
        probes.extend([0, u64::MAX, 1 << 63, (1 << 63) - 1]);
        let mut answered = 0;
        for (i, h) in probes.into_iter().enumerate() {
            let want = exact(points, h);
            if let Some(owner) = index.owner(h) {
                assert_eq!(u32::from(owner), owners[want], "owner of {h:#x}");
                answered += usize::from(i < 4000);
            }
            if let Some(walk) = index.walk(h) {
                // The walk (the line's owners, then the owner list from `after`) meets
                // the members in the order the points do.
                let len = points.len();
                let after = index.after(&walk, len);
                let walked = walk.owners.iter().map(|&o| u32::from(o));
                // The walk covers the points from `want` to `after + 63`, at most `want + 79`.
                let walked = walked.chain((0..64).map(|k| owners[(after + k) % len]));
                let exact = first_sightings((0..80).map(|k| owners[(want + k) % len]));
                let walked = first_sightings(walked);
                assert!(exact.starts_with(&walked), "walk from {h:#x}: {walked:?} {exact:?}");
                assert_eq!(u32::from(walk.owners[0]), owners[want]);
            }
            let (lo, hi) = index.bounds(h);
            assert!(
                points[lo..hi].iter().all(|&p| (p >> index.slice_shift) == h >> index.slice_shift)
            );
        }
        answered
    }

    /// Members in the order they first appear.
    fn first_sightings(owners: impl Iterator<Item = u32>) -> Vec<u32> {
        let mut seen = Vec::new();
        for o in owners {
            if !seen.contains(&o) {
                seen.push(o);
            }
        }
        seen
    }

    fn sorted(mut pairs: Vec<(u64, u32)>) -> (Vec<u64>, Vec<u32>) {
        pairs.sort_unstable();
        pairs.into_iter().unzip()
    }

    #[test]
    fn lines_agree_with_an_exact_search_on_random_points() {
        let mut state = 1;
        let pairs = (0..5000).map(|i| (next(&mut state), i % 37)).collect();
        let (points, owners) = sorted(pairs);
        let answered = check(&points, &owners, 37);
        assert!(answered > 3900, "the lines answered only {answered} lookups");
    }

    #[test]
    fn crowded_slices_ties_and_equal_residues_fall_back() {
        let mut state = 3;
        // 40 points in one slice (more than a line holds), points sharing their top 16
        // residue bits, equal points owned by two members, and the ends of the hash space.
        let mut pairs: Vec<(u64, u32)> =
            (0..40).map(|i| (0x1000 + i * 0x10, i as u32 % 5)).collect();
        pairs.extend((0..20).map(|i| (0x8000_0000_0000_0000 + i, 1 + i as u32 % 3)));
        pairs.extend([
            (0x4000_0000_0000_0000, 2),
            (0x4000_0000_0000_0000, 4),
            (u64::MAX, 3),
            (0, 0),
        ]);
        pairs.extend((0..100).map(|i| (next(&mut state), i % 5)));
        let (points, owners) = sorted(pairs);
        check(&points, &owners, 5);
        // Continuation lines running out: the rest of a slice falls back.
        for max_chained in [0, 1, 2] {
            check_index(&Index::build(&points, &owners, 5, max_chained), &points, &owners);
        }
    }

    #[test]
    fn crowded_slices_continue_in_chained_lines() {
        // 100 points 2^45 apart (residues 2 apart) in each of two of 16 slices: eight lines
        // each (7 × 14 points, then 2), and every point answered.
        let mut pairs: Vec<(u64, u32)> =
            (0..100).map(|i| (0x10_0000 + (i << 45), i as u32 % 7)).collect();
        pairs.extend((0..100).map(|i| (0xc000_0000_0000_0000 + (i << 45), i as u32 % 3)));
        let (points, owners) = sorted(pairs);
        let index = Index::new(&points, &owners, 7);
        assert_eq!(index.lines.len(), 16 + 2 * 7);
        for (i, &p) in points.iter().enumerate() {
            let between = p + (1 << 44); // one residue above p, one below the next point
            assert_eq!(index.owner(between).map(u32::from), Some(owners[(i + 1) % points.len()]));
        }
        check(&points, &owners, 7);
    }

    #[test]
    fn below_counts_the_residues_under_a_residue() {
        let mut state = 11;
        for round in 0..20_000 {
            // Sorted residues, dense in a narrow range every other round so that equal
            // residues and exact hits are common, padded with `i16::MAX` as in a line.
            let spread = if round % 2 == 0 { 64 } else { 65_536 };
            let used = (next(&mut state) % 16) as usize;
            let mut residues = [i16::MAX; SLOTS];
            for x in &mut residues[..used] {
                *x = (next(&mut state) % spread) as u16 as i16;
            }
            residues[..used].sort_unstable();
            let r = (next(&mut state) % spread) as u16 as i16;
            for r in [r, i16::MIN, i16::MAX, residues[0]] {
                let want = residues.iter().filter(|&&x| x < r).count();
                assert_eq!(below(&residues, r), want, "{residues:?} below {r}");
            }
        }
    }

    #[test]
    fn tiny_and_huge_rings_answer_or_fall_back() {
        check(&[42], &[0], 1);
        check(&[5, u64::MAX], &[1, 0], 2);
        // Owners past `u16`: no lines, every lookup falls back.
        let index = Index::new(&[1, 2], &[0, 70_000], 70_001);
        assert_eq!(index.owner(2), None);
        assert!(index.walk(2).is_none());
        assert_eq!(Index::new(&[], &[], 0).owner(9), None);
    }
}
