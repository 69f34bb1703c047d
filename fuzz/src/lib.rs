//! Helpers shared by the fuzz targets in `fuzz_targets/` (see `docs/fuzzing.md`).
//!
//! * [`Chunker`]: a tiny deterministic PRNG that cuts a byte stream into pieces, so a target can
//!   feed the same input whole and in pieces and compare.
//! * [`TrackingAlloc`]: a global allocator that records the largest single allocation made while
//!   tracking is on (the WebSocket target bounds the decoder's buffering with it).
//! * [`Budget`]: an `Allocator` with a byte budget and an optional "fail the n-th allocation",
//!   like the one in `core/src/store/tests.rs`, for the store target.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::Cell;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::alloc::System;
use std::rc::Rc;

use push_stream_core::store::{AllocError, Allocator, Global};

/// xorshift64*: deterministic piece sizes from a seed taken from the fuzz input.
pub struct Chunker(u64);

impl Chunker {
    pub fn new(seed: u64) -> Self {
        Chunker(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Splits `data` into pieces of 1 to `max` bytes (the last one may be shorter).
    pub fn pieces<'a>(&mut self, data: &'a [u8], max: usize) -> Vec<&'a [u8]> {
        let mut out = Vec::new();
        let mut rest = data;
        while !rest.is_empty() {
            let n = (1 + (self.next_u64() % max.max(1) as u64) as usize).min(rest.len());
            let (a, b) = rest.split_at(n);
            out.push(a);
            rest = b;
        }
        out
    }
}

/// Global allocator wrapper: while [`TrackingAlloc::start`] is active, remembers the largest
/// allocation (or reallocation) size requested. Single-threaded use (libFuzzer runs the target
/// on one thread).
pub struct TrackingAlloc;

static TRACKING: AtomicBool = AtomicBool::new(false);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

impl TrackingAlloc {
    /// Starts tracking from zero.
    pub fn start() {
        LARGEST.store(0, Ordering::Relaxed);
        TRACKING.store(true, Ordering::Relaxed);
    }

    /// Stops tracking and returns the largest allocation seen since [`start`](Self::start).
    pub fn stop() -> usize {
        TRACKING.store(false, Ordering::Relaxed);
        LARGEST.load(Ordering::Relaxed)
    }

    fn note(size: usize) {
        if TRACKING.load(Ordering::Relaxed) {
            LARGEST.fetch_max(size, Ordering::Relaxed);
        }
    }
}

// SAFETY: delegates every call to `System`, only recording sizes.
unsafe impl GlobalAlloc for TrackingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// A heap allocator with a byte budget: refuses anything that would go over it. Also fails
/// exactly the n-th allocation from now when [`Budget::fail_nth`] was called.
#[derive(Clone)]
pub struct Budget(Rc<BudgetState>);

pub struct BudgetState {
    used: Cell<usize>,
    limit: Cell<usize>,
    fail_in: Cell<Option<usize>>,
    live: Cell<usize>,
}

impl Budget {
    pub fn new(limit: usize) -> Self {
        Budget(Rc::new(BudgetState {
            used: Cell::new(0),
            limit: Cell::new(limit),
            fail_in: Cell::new(None),
            live: Cell::new(0),
        }))
    }
    pub fn fail_nth(&self, n: usize) {
        self.0.fail_in.set(Some(n))
    }
    pub fn clear_fail(&self) {
        self.0.fail_in.set(None)
    }
    /// Bytes currently allocated through this budget.
    pub fn used(&self) -> usize {
        self.0.used.get()
    }
    /// Blocks currently allocated through this budget.
    pub fn live_blocks(&self) -> usize {
        self.0.live.get()
    }
    pub fn set_limit(&self, limit: usize) {
        self.0.limit.set(limit)
    }
}

// SAFETY: delegates to `Global`, only counting bytes.
unsafe impl Allocator for Budget {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        let used = self.0.used.get();
        if used + layout.size() > self.0.limit.get() {
            return Err(AllocError);
        }
        match self.0.fail_in.get() {
            Some(0) => {
                self.0.fail_in.set(None);
                return Err(AllocError);
            }
            Some(n) => self.0.fail_in.set(Some(n - 1)),
            None => {}
        }
        let p = Global.allocate(layout)?;
        self.0.used.set(used + layout.size());
        self.0.live.set(self.0.live.get() + 1);
        Ok(p)
    }
    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        self.0.used.set(self.0.used.get() - layout.size());
        self.0.live.set(self.0.live.get() - 1);
        // SAFETY: `ptr` was allocated by `Global` with `layout` (see `allocate`).
        unsafe { Global.deallocate(ptr, layout) }
    }
}
