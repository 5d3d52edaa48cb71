//! The per-call allocator, [`PerCall`].

use std::alloc::{GlobalAlloc, Layout, System};

/// An allocator for plugins that live for one hook call.
///
/// The gateway gives every hook call a fresh instance and throws it away
/// afterwards, so nothing a plugin frees is ever needed again by a later
/// call. [`PerCall`] hands out memory by moving a pointer forward and frees
/// by doing nothing (or by moving the pointer back, for the most recent
/// allocation): no free lists to search, and no freeing the call record and
/// the config one field at a time at the end of the call. Once its region
/// ([`PerCall::BUMP_BYTES`]) is used up it hands further requests to the
/// system allocator, so a plugin that churns through memory on a large
/// result still reuses what it frees instead of running into its memory
/// limit.
///
/// Opt in from a plugin crate:
///
/// ```
/// #[global_allocator]
/// static ALLOCATOR: warden_policy_sdk::PerCall = warden_policy_sdk::PerCall;
/// ```
///
/// On targets other than `wasm32` (unit tests) it is the system allocator.
#[derive(Debug, Clone, Copy, Default)]
pub struct PerCall;

impl PerCall {
    /// The bump region's size. It is part of the plugin's initial memory;
    /// pages it does not touch cost nothing.
    pub const BUMP_BYTES: usize = 256 << 10;
}

#[cfg(target_arch = "wasm32")]
mod bump {
    use std::cell::Cell;

    /// The bump region: a zeroed static array, so it is part of the
    /// instance's initial memory (growing memory at run time costs the host
    /// a call and the pages' protection change). `next` is the offset of its
    /// first free byte.
    pub struct Region {
        bytes: std::cell::UnsafeCell<[u8; super::PerCall::BUMP_BYTES]>,
        next: Cell<usize>,
    }

    // SAFETY: a component instance runs on one thread; nothing shares the region.
    #[allow(unsafe_code)]
    unsafe impl Sync for Region {}

    pub static REGION: Region =
        Region { bytes: std::cell::UnsafeCell::new([0; super::PerCall::BUMP_BYTES]), next: Cell::new(0) };

    impl Region {
        fn start(&self) -> usize {
            self.bytes.get() as usize
        }

        fn end(&self) -> usize {
            self.start() + super::PerCall::BUMP_BYTES
        }

        /// `size` bytes aligned to `align` from the region, or `None` when it
        /// has no room.
        pub fn take(&self, size: usize, align: usize) -> Option<usize> {
            let at = (self.start() + self.next.get()).checked_add(align - 1)? & !(align - 1);
            let end = at.checked_add(size)?;
            (end <= self.end()).then(|| {
                self.next.set(end - self.start());
                at
            })
        }

        pub fn owns(&self, ptr: usize) -> bool {
            self.start() <= ptr && ptr < self.end()
        }

        /// Whether `[ptr, ptr + size)` is the most recent allocation.
        pub fn is_last(&self, ptr: usize, size: usize) -> bool {
            ptr + size == self.start() + self.next.get()
        }

        /// Move the end of the most recent allocation, at `ptr`, to `ptr + size`, if there is room.
        pub fn resize_last(&self, ptr: usize, size: usize) -> bool {
            let fits = ptr.checked_add(size).is_some_and(|end| end <= self.end());
            if fits {
                self.next.set(ptr + size - self.start());
            }
            fits
        }
    }
}

#[cfg(target_arch = "wasm32")]
// SAFETY: every pointer handed out is `layout.size()` bytes of linear memory
// aligned to `layout.align()` that no other live allocation overlaps: the
// bump region only moves forward, except to give back or resize the most
// recent allocation, and pointers outside it belong to `System`.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for PerCall {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match bump::REGION.take(layout.size(), layout.align()) {
            Some(at) => at as *mut u8,
            None => unsafe { System.alloc(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let (region, at) = (&bump::REGION, ptr as usize);
        if !region.owns(at) {
            unsafe { System.dealloc(ptr, layout) }
        } else if region.is_last(at, layout.size()) {
            region.resize_last(at, 0);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let (region, at) = (&bump::REGION, ptr as usize);
        if !region.owns(at) {
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        if region.is_last(at, layout.size()) && region.resize_last(at, new_size) {
            return ptr;
        }
        if new_size <= layout.size() {
            return ptr;
        }
        // SAFETY: the caller guarantees `new_size`, rounded up to the
        // alignment, does not overflow.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both are valid for `layout.size()` bytes and distinct.
            unsafe { std::ptr::copy_nonoverlapping(ptr, new, layout.size()) };
        }
        new
    }
}

#[cfg(not(target_arch = "wasm32"))]
#[allow(unsafe_code)]
// SAFETY: forwards to the system allocator.
unsafe impl GlobalAlloc for PerCall {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
