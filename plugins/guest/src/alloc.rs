//! The guest's memory allocator: small blocks come from free lists of
//! power-of-two sizes, everything else from the standard allocator.
//!
//! A JSON handler allocates a dozen small blocks per message (the message
//! itself, keys, strings, map nodes, the output) and frees them all before
//! the next one. Popping and pushing a free list costs a few instructions,
//! where the standard allocator for `wasm32` (dlmalloc) searches bins and
//! merges neighbours on every call; `host bench` shows the difference.
//!
//! Blocks of 16 to 4096 bytes with an alignment of at most 16 are carved
//! from 64 KiB chunks and, once freed, kept on the list of their size for
//! reuse; they are never handed back to the standard allocator, so a
//! handler's memory is the peak of what it used at once, per size. Larger
//! or more strictly aligned requests go straight to the standard allocator.
//! The memory limit applies as before: a chunk that cannot be had is a null
//! pointer, which Rust reports as an allocation failure.
//!
//! The kit installs it as the global allocator of a handler built for
//! `wasm32` (there is one thread there, so it takes no lock). A handler that
//! wants its own allocator turns off the kit's default `size-classes`
//! feature.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ptr;

/// The smallest block, as a power of two: 16 bytes.
const MIN_SHIFT: u32 = 4;
/// The largest block served from the free lists: 4096 bytes.
const MAX_SHIFT: u32 = 12;
const CLASSES: usize = (MAX_SHIFT - MIN_SHIFT + 1) as usize;
/// Every block is aligned to this (chunks are, and every size is a multiple).
const BLOCK_ALIGN: usize = 1 << MIN_SHIFT;
/// How much is taken from the standard allocator at a time.
const CHUNK: usize = 64 * 1024;

/// A freed block, linked into the list of its size.
struct FreeBlock {
    next: *mut FreeBlock,
}

struct Lists {
    /// Per size class, the first free block (null when empty).
    free: [*mut FreeBlock; CLASSES],
    /// The unused part of the current chunk.
    next: *mut u8,
    end: *mut u8,
}

/// Free lists of power-of-two sizes in front of the `backing` allocator.
///
/// Not thread-safe: it is meant for a single-threaded guest.
pub struct SizeClasses<B> {
    backing: B,
    lists: UnsafeCell<Lists>,
}

// SAFETY: wasm32 without the `atomics` feature has exactly one thread, so
// the lists are never touched from two threads at once.
#[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
unsafe impl<B: Sync> Sync for SizeClasses<B> {}

impl<B> SizeClasses<B> {
    /// An allocator with empty lists in front of `backing`.
    pub const fn new(backing: B) -> Self {
        Self {
            backing,
            lists: UnsafeCell::new(Lists {
                free: [ptr::null_mut(); CLASSES],
                next: ptr::null_mut(),
                end: ptr::null_mut(),
            }),
        }
    }
}

/// The size class that serves `layout`, if any.
fn class_of(layout: Layout) -> Option<usize> {
    if layout.align() > BLOCK_ALIGN || layout.size() > 1 << MAX_SHIFT {
        return None;
    }
    let size = layout.size().max(1 << MIN_SHIFT).next_power_of_two();
    Some((size.trailing_zeros() - MIN_SHIFT) as usize)
}

fn class_size(class: usize) -> usize {
    1 << (class as u32 + MIN_SHIFT)
}

impl<B: GlobalAlloc> SizeClasses<B> {
    /// A fresh block of `class`, carved from the current chunk or a new one.
    ///
    /// # Safety
    /// The caller has exclusive access to `lists`.
    unsafe fn carve(&self, lists: &mut Lists, class: usize) -> *mut u8 {
        let size = class_size(class);
        if (lists.end as usize) - (lists.next as usize) < size {
            // The rest of the old chunk (less than one block) is left unused.
            let chunk = Layout::from_size_align(CHUNK, BLOCK_ALIGN).expect("a valid chunk layout");
            // SAFETY: the layout has a non-zero size.
            let start = unsafe { self.backing.alloc(chunk) };
            if start.is_null() {
                return ptr::null_mut();
            }
            lists.next = start;
            // SAFETY: `start` points to CHUNK bytes.
            lists.end = unsafe { start.add(CHUNK) };
        }
        let block = lists.next;
        // SAFETY: at least `size` bytes remain in the chunk.
        lists.next = unsafe { block.add(size) };
        block
    }
}

// SAFETY: blocks of a class never overlap (each is carved once from a chunk,
// or reused after its owner freed it), are `class_size` bytes long and
// aligned to 16, which covers every layout `class_of` maps to that class.
unsafe impl<B: GlobalAlloc> GlobalAlloc for SizeClasses<B> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(class) = class_of(layout) else {
            // SAFETY: the caller's contract, passed on.
            return unsafe { self.backing.alloc(layout) };
        };
        // SAFETY: single-threaded, and no call into `self` is in progress.
        let lists = unsafe { &mut *self.lists.get() };
        let head = lists.free[class];
        if head.is_null() {
            // SAFETY: exclusive access, as above.
            return unsafe { self.carve(lists, class) };
        }
        // SAFETY: `head` is a freed block of this class holding a link.
        lists.free[class] = unsafe { (*head).next };
        head.cast()
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        let Some(class) = class_of(layout) else {
            // SAFETY: the block came from the backing allocator with `layout`.
            return unsafe { self.backing.dealloc(block, layout) };
        };
        // SAFETY: single-threaded, and no call into `self` is in progress.
        let lists = unsafe { &mut *self.lists.get() };
        let freed = block.cast::<FreeBlock>();
        // SAFETY: the block is at least 16 bytes, aligned to 16, and its
        // owner gave it up.
        unsafe {
            freed.write(FreeBlock {
                next: lists.free[class],
            })
        };
        lists.free[class] = freed;
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size` makes a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (class_of(layout), class_of(new_layout)) {
            // Still fits its block.
            (Some(old), Some(new)) if old == new => block,
            // SAFETY: neither is a class block: the backing allocator's own.
            (None, None) => unsafe { self.backing.realloc(block, layout, new_size) },
            _ => {
                // SAFETY: `new_layout` is valid and non-zero (as `layout` was).
                let moved = unsafe { self.alloc(new_layout) };
                if !moved.is_null() {
                    // SAFETY: both blocks hold at least the copied length and
                    // are distinct; the old one is then given up.
                    unsafe {
                        ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
                        self.dealloc(block, layout);
                    }
                }
                moved
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::System;
    use std::cell::Cell;

    /// The system allocator, counting what it was asked for.
    #[derive(Default)]
    struct Counting {
        allocations: Cell<usize>,
        bytes: Cell<usize>,
    }

    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            self.allocations.set(self.allocations.get() + 1);
            self.bytes.set(self.bytes.get() + layout.size());
            unsafe { System.alloc(layout) }
        }

        unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
            unsafe { System.dealloc(block, layout) }
        }
    }

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn sizes_map_to_power_of_two_classes() {
        assert_eq!(class_of(layout(1, 1)), Some(0));
        assert_eq!(class_of(layout(16, 8)), Some(0));
        assert_eq!(class_of(layout(17, 1)), Some(1));
        assert_eq!(class_of(layout(100, 4)), Some(3));
        assert_eq!(class_of(layout(4096, 16)), Some(CLASSES - 1));
        assert_eq!(class_of(layout(4097, 1)), None);
        assert_eq!(class_of(layout(8, 32)), None);
    }

    #[test]
    fn blocks_are_aligned_distinct_and_writable() {
        let heap = SizeClasses::new(System);
        let mut blocks = Vec::new();
        for size in [1, 7, 16, 24, 100, 500, 1000, 4096, 5000, 70_000] {
            for _ in 0..50 {
                let layout = layout(size, 16);
                let block = unsafe { heap.alloc(layout) };
                assert!(!block.is_null());
                assert_eq!(block as usize % 16, 0, "size {size}");
                unsafe { ptr::write_bytes(block, size as u8, size) };
                blocks.push((block, layout));
            }
        }
        let mut spans: Vec<(usize, usize)> = blocks
            .iter()
            .map(|(block, layout)| (*block as usize, *block as usize + layout.size()))
            .collect();
        spans.sort();
        assert!(
            spans.windows(2).all(|pair| pair[0].1 <= pair[1].0),
            "blocks overlap"
        );
        for (block, layout) in &blocks {
            let bytes = unsafe { std::slice::from_raw_parts(*block, layout.size()) };
            assert!(bytes.iter().all(|b| *b == layout.size() as u8));
        }
        for (block, layout) in blocks {
            unsafe { heap.dealloc(block, layout) };
        }
    }

    #[test]
    fn a_freed_block_is_reused_for_its_class() {
        let heap = SizeClasses::new(Counting::default());
        let first = unsafe { heap.alloc(layout(40, 8)) };
        unsafe { heap.dealloc(first, layout(40, 8)) };
        // 33..=64 bytes share a class.
        let second = unsafe { heap.alloc(layout(64, 8)) };
        assert_eq!(first, second);
        let other_class = unsafe { heap.alloc(layout(16, 8)) };
        assert_ne!(other_class, first);
        assert_eq!(heap.backing.allocations.get(), 1, "one chunk serves both");
    }

    #[test]
    fn repeated_messages_take_no_new_memory() {
        let heap = SizeClasses::new(Counting::default());
        let sizes = [5, 60, 60, 13, 90, 128, 300, 16, 2000];
        for _ in 0..10_000 {
            let blocks: Vec<_> = sizes
                .iter()
                .map(|&size| (unsafe { heap.alloc(layout(size, 1)) }, layout(size, 1)))
                .collect();
            for (block, layout) in blocks.into_iter().rev() {
                unsafe { heap.dealloc(block, layout) };
            }
        }
        assert_eq!(heap.backing.allocations.get(), 1);
        assert_eq!(heap.backing.bytes.get(), CHUNK);
    }

    #[test]
    fn large_and_overaligned_requests_go_to_the_backing_allocator() {
        let heap = SizeClasses::new(Counting::default());
        let big = unsafe { heap.alloc(layout(10_000, 8)) };
        let aligned = unsafe { heap.alloc(layout(32, 64)) };
        assert_eq!(aligned as usize % 64, 0);
        assert_eq!(heap.backing.bytes.get(), 10_000 + 32);
        unsafe {
            heap.dealloc(big, layout(10_000, 8));
            heap.dealloc(aligned, layout(32, 64));
        }
    }

    #[test]
    fn realloc_keeps_the_contents() {
        let heap = SizeClasses::new(System);
        let mut block = unsafe { heap.alloc(layout(3, 1)) };
        unsafe { ptr::copy_nonoverlapping(b"abc".as_ptr(), block, 3) };
        // Within the class: the same block.
        let same = unsafe { heap.realloc(block, layout(3, 1), 16) };
        assert_eq!(same, block);
        // Growing through classes and past them, then shrinking back.
        let mut size = 16;
        for new_size in [17, 1000, 4096, 9000, 50_000, 20, 3] {
            block = unsafe { heap.realloc(block, layout(size, 1), new_size) };
            let kept = unsafe { std::slice::from_raw_parts(block, 3) };
            assert_eq!(kept, b"abc", "after growing to {new_size}");
            size = new_size;
        }
        unsafe { heap.dealloc(block, layout(size, 1)) };
    }

    #[test]
    fn a_failing_backing_allocator_gives_null() {
        struct Exhausted;
        unsafe impl GlobalAlloc for Exhausted {
            unsafe fn alloc(&self, _: Layout) -> *mut u8 {
                ptr::null_mut()
            }
            unsafe fn dealloc(&self, _: *mut u8, _: Layout) {}
        }
        let heap = SizeClasses::new(Exhausted);
        assert!(unsafe { heap.alloc(layout(32, 8)) }.is_null());
        assert!(unsafe { heap.alloc(layout(100_000, 8)) }.is_null());
    }
}
