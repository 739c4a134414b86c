//! The contract's global allocator (feature `heap`, on by default; wasm32 only).
//!
//! Every call runs in a fresh instance whose linear memory is reset afterwards, so the heap of a
//! call is short-lived. `trac contract build` links contracts with an initial memory that holds
//! a heap after the stack and the data (`--initial-heap`, 192 KiB, rounded up to whole pages);
//! this allocator hands it out, from `__heap_base` to the end of the initial memory, with a bump
//! pointer. Only when that is used up does it fall back to the standard library's allocator
//! (dlmalloc), which grows the memory.
//!
//! Why not the standard allocator alone: dlmalloc asks `memory.grow` for its first chunk even
//! when the initial memory has room, and a grown memory costs the host's pooling allocator two
//! `mprotect` calls (to grow, then to reset the slot), about half of a small call.
//!
//! Freed blocks are reused only when they are the last allocation (a stack discipline, which
//! covers temporaries and a growing `Vec` or `String` at the top); other freed blocks are left
//! until the call ends. A call that allocates more than the arena in total goes on in dlmalloc,
//! so a contract never runs out of memory earlier than with the standard allocator by more than
//! the arena's size.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;

unsafe extern "C" {
    /// The first byte after the stack and the data, defined by the linker (wasm-ld).
    static __heap_base: u8;
}

/// Bytes of a wasm page.
const PAGE: usize = 64 << 10;

/// The arena: `[base, end)`, of which `[base, next)` is handed out or lost.
struct Arena {
    base: usize,
    next: usize,
    end: usize,
    /// Nothing at or above this address was ever handed out: those bytes are still zero.
    clean: usize,
}

impl Arena {
    fn contains(&self, addr: usize) -> bool {
        (self.base..self.end).contains(&addr)
    }

    /// Takes `layout` from the top of the arena.
    fn bump(&mut self, layout: Layout) -> Option<usize> {
        let start = self.next.checked_add(layout.align() - 1)? & !(layout.align() - 1);
        let end = start.checked_add(layout.size())?;
        if end > self.end {
            return None;
        }
        self.next = end;
        self.clean = self.clean.max(end);
        Some(start)
    }
}

/// The allocator; `lib.rs` installs it as the `#[global_allocator]`.
pub struct Heap(UnsafeCell<Option<Arena>>);

// SAFETY: wasm32-unknown-unknown without the `atomics` feature runs one thread, so the arena is
// never accessed concurrently.
unsafe impl Sync for Heap {}

impl Heap {
    /// An allocator whose arena is set up on the first allocation.
    pub const fn new() -> Heap {
        Heap(UnsafeCell::new(None))
    }

    #[allow(clippy::mut_from_ref)]
    fn arena(&self) -> &mut Arena {
        // SAFETY: one thread, and no method holds the reference across a call that could come
        // back into the allocator (the fallback allocator never does).
        let arena = unsafe { &mut *self.0.get() };
        arena.get_or_insert_with(|| {
            // Nothing has grown the memory yet: every allocation so far came through here.
            let base = &raw const __heap_base as usize;
            let end = (core::arch::wasm32::memory_size(0) * PAGE).max(base);
            Arena {
                base,
                next: base,
                end,
                clean: base,
            }
        })
    }
}

impl Default for Heap {
    fn default() -> Heap {
        Heap::new()
    }
}

unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match self.arena().bump(layout) {
            Some(addr) => addr as *mut u8,
            // SAFETY: forwarded with the caller's guarantees.
            None => unsafe { System.alloc(layout) },
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let arena = self.arena();
        let clean = arena.clean;
        match arena.bump(layout) {
            Some(addr) => {
                let dirty = clean.min(addr + layout.size()).saturating_sub(addr);
                // SAFETY: `[addr, addr + size)` was just handed out.
                unsafe { std::ptr::write_bytes(addr as *mut u8, 0, dirty) };
                addr as *mut u8
            }
            // SAFETY: forwarded with the caller's guarantees.
            None => unsafe { System.alloc_zeroed(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let arena = self.arena();
        let addr = ptr as usize;
        if !arena.contains(addr) {
            // SAFETY: it came from the fallback allocator.
            return unsafe { System.dealloc(ptr, layout) };
        }
        if addr + layout.size() == arena.next {
            arena.next = addr;
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let arena = self.arena();
        let addr = ptr as usize;
        if !arena.contains(addr) {
            // SAFETY: it came from the fallback allocator.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        if addr + layout.size() == arena.next {
            // The last block grows or shrinks in place while it fits.
            if let Some(end) = addr.checked_add(new_size)
                && end <= arena.end
            {
                arena.next = end;
                arena.clean = arena.clean.max(end);
                return ptr;
            }
        } else if new_size <= layout.size() {
            return ptr;
        }
        // SAFETY: the caller guarantees that `new_size`, rounded up to the alignment, does not
        // overflow `isize`.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: `new_size` is not zero (a caller's guarantee).
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are live and distinct; the copy fits both.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}
