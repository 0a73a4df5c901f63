//! A read-only slice kept on transparent huge pages where Linux offers them, so that a
//! table of many megabytes costs a handful of TLB entries instead of thousands.
//!
//! The lookup lines of a large ring (9.8 MB at 10,000 members × 160) are read at random:
//! on 4 KiB pages nearly every cold lookup also misses the TLB. On Linux a slice of at
//! least [`HUGE_MIN`] bytes is copied into its own anonymous mapping, aligned to 2 MiB and
//! marked `MADV_HUGEPAGE` before it is touched, so the kernel backs it with 2 MiB pages
//! when it has them (transparent huge pages in `madvise` or `always` mode). Anywhere else,
//! or when the mapping fails, it stays a `Vec`.
//!
//! The unsafe code here is `mmap`, `madvise`, `munmap`, one copy into the fresh mapping
//! and the slice over it; the crate's only other unsafe block is the SSE2 count of
//! `index.rs`.

use std::ops::Deref;
use std::ptr::NonNull;

/// The size of a huge page (x86-64 and aarch64 with 4 KiB base pages).
const HUGE_PAGE: usize = 2 << 20;

/// Slices smaller than this stay on the heap: a huge page holds 2 MiB whatever is stored in
/// it, so a 1 MB table would double its memory (1,000 members × 160 take 1.09 MB of lines).
pub(crate) const HUGE_MIN: usize = 2 * HUGE_PAGE;

/// An immutable slice of `T`, on huge pages when it is large and the system allows.
pub(crate) struct HugeSlice<T: Copy> {
    /// The items, wherever `store` keeps them: read without asking which (a lookup spends
    /// no branch on it).
    ptr: NonNull<T>,
    len: usize,
    store: Store<T>,
}

/// Who owns the memory at `ptr`.
enum Store<T> {
    /// The `Vec`'s buffer, never touched again (moving the `Vec` does not move it).
    Heap(Vec<T>),
    /// A private anonymous mapping of `mapped` bytes from `ptr`, 2 MiB-aligned, owned by
    /// this value alone and unmapped on drop.
    #[cfg(all(target_os = "linux", not(miri)))]
    Mapped { mapped: usize },
}

// SAFETY: a `HugeSlice` owns its items exactly as a `Vec<T>` would (no one else holds the
// pointer, and nothing writes through it after construction), so sending or sharing it is
// as safe as sending or sharing a `Vec<T>`.
#[allow(unsafe_code)]
unsafe impl<T: Copy + Send> Send for HugeSlice<T> {}
// SAFETY: as above; `&HugeSlice` only hands out `&[T]`.
#[allow(unsafe_code)]
unsafe impl<T: Copy + Sync> Sync for HugeSlice<T> {}

impl<T: Copy> HugeSlice<T> {
    /// Keeps `items`, moving them onto huge pages when they take at least [`HUGE_MIN`] bytes.
    pub(crate) fn new(items: Vec<T>) -> HugeSlice<T> {
        #[cfg(all(target_os = "linux", not(miri)))]
        if size_of_val(items.as_slice()) >= HUGE_MIN
            && let Some((ptr, mapped)) = map(&items)
        {
            return HugeSlice { ptr, len: items.len(), store: Store::Mapped { mapped } };
        }
        // `as_ptr` of a `Vec` is never null (dangling but aligned when it holds nothing).
        let ptr = NonNull::from(items.as_slice()).cast();
        HugeSlice { ptr, len: items.len(), store: Store::Heap(items) }
    }

    /// The bytes held: the whole mapping (huge pages are backed whole), or the `Vec`'s
    /// capacity.
    pub(crate) fn memory_bytes(&self) -> usize {
        match &self.store {
            Store::Heap(v) => v.capacity() * size_of::<T>(),
            #[cfg(all(target_os = "linux", not(miri)))]
            Store::Mapped { mapped } => *mapped,
        }
    }

    /// Whether the items live in a mapping marked for huge pages (whether the kernel gave
    /// it huge pages is for `/proc/self/smaps` to say).
    #[cfg(test)]
    fn is_mapped(&self) -> bool {
        !matches!(self.store, Store::Heap(_))
    }
}

impl<T: Copy> Deref for HugeSlice<T> {
    type Target = [T];

    #[inline]
    fn deref(&self) -> &[T] {
        // SAFETY: `ptr` points to `len` initialized items, aligned for `T`, owned by `store`
        // (a `Vec`'s buffer, or a mapping `map` filled), which lives as long as `self` and
        // is never written again.
        #[allow(unsafe_code)]
        unsafe {
            std::slice::from_raw_parts(self.ptr.as_ptr(), self.len)
        }
    }
}

#[cfg(all(target_os = "linux", not(miri)))]
impl<T: Copy> Drop for HugeSlice<T> {
    fn drop(&mut self) {
        if let Store::Mapped { mapped } = self.store {
            // SAFETY: the mapping was made by `map`, is owned by `self` alone, and no slice
            // of it outlives `self`. A failure (impossible for a mapping we made) would
            // only leak it.
            #[allow(unsafe_code)]
            unsafe {
                libc::munmap(self.ptr.as_ptr().cast(), mapped);
            }
        }
    }
}

/// Copies `items` into a fresh 2 MiB-aligned anonymous mapping marked `MADV_HUGEPAGE`, or
/// `None` if the system refuses the mapping; returns the items' new place and the bytes
/// mapped.
#[cfg(all(target_os = "linux", not(miri)))]
#[allow(unsafe_code)]
fn map<T: Copy>(items: &[T]) -> Option<(NonNull<T>, usize)> {
    use std::ptr::null_mut;

    const { assert!(align_of::<T>() <= HUGE_PAGE) };
    let bytes = size_of_val(items);
    // Whole huge pages, plus one of slack to find a 2 MiB boundary in.
    let mapped = bytes.checked_next_multiple_of(HUGE_PAGE)?;
    let reserved = mapped.checked_add(HUGE_PAGE)?;
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
    // SAFETY: a new private anonymous mapping: it aliases nothing.
    let base = unsafe { libc::mmap(null_mut(), reserved, prot, flags, -1, 0) };
    if base == libc::MAP_FAILED {
        return None;
    }
    let head = base.addr().next_multiple_of(HUGE_PAGE) - base.addr();
    let start = base.wrapping_byte_add(head);
    // SAFETY: `head` and the tail are page-aligned parts of the mapping just made, outside
    // `start..start + mapped`, which is all we keep; nothing points into them. The calls
    // only fail on bad arguments (they are not), and a failure would only leak the slack.
    unsafe {
        if head > 0 {
            libc::munmap(base, head);
        }
        libc::munmap(start.wrapping_byte_add(mapped), HUGE_PAGE - head);
        // A hint: without transparent huge pages (mode `never`, or not built in) it fails
        // and the mapping simply stays on 4 KiB pages.
        libc::madvise(start, mapped, libc::MADV_HUGEPAGE);
    }
    let ptr = NonNull::new(start.cast::<T>())?;
    // SAFETY: `start..start + mapped` is writable, ours alone, and holds `bytes` bytes at an
    // alignment `T` accepts; `items` lies elsewhere (on the heap).
    unsafe { std::ptr::copy_nonoverlapping(items.as_ptr(), ptr.as_ptr(), items.len()) };
    Some((ptr, mapped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_slices_stay_on_the_heap() {
        let small = HugeSlice::new(vec![7u64; 1000]);
        assert!(!small.is_mapped());
        assert_eq!(&small[..], &[7u64; 1000][..]);
        assert_eq!(small.memory_bytes(), 8000);
        let empty = HugeSlice::<u8>::new(Vec::new());
        assert!(empty.is_empty());
    }

    #[test]
    fn large_slices_keep_their_items_on_aligned_whole_huge_pages() {
        let items: Vec<u64> = (0..(HUGE_MIN as u64 / 8 + 12_345)).map(|i| i * 31).collect();
        let huge = HugeSlice::new(items.clone());
        assert_eq!(&huge[..], &items[..]);
        if cfg!(all(target_os = "linux", not(miri))) {
            assert!(huge.is_mapped());
            assert_eq!(huge.as_ptr().addr() % HUGE_PAGE, 0);
            assert_eq!(huge.memory_bytes(), 3 * HUGE_PAGE);
        }
        // Shared between threads like any slice.
        let sum = std::thread::scope(|s| s.spawn(|| huge.iter().sum::<u64>()).join());
        assert_eq!(sum.ok(), Some(items.iter().sum()));
    }
}
