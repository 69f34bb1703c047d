//! The channel table (and the exchange keys' table): a chained hash table with linear
//! hashing. Buckets hold the handle of their first node (chained through the nodes); the bucket directory is
//! made of segments of 1024 heads (4 KiB, one slab page; the first segment starts at 16 heads
//! and doubles up to 1024). The table grows one bucket at a time (splitting one bucket's
//! chain): no allocation is ever bigger than one page and no growth rehashes the whole table.
//! Growth is best effort after an insert: when a segment cannot be allocated the chains just
//! get longer.

use allocator_api2::alloc::Allocator;
use allocator_api2::boxed::Box as ABox;
use allocator_api2::vec::Vec as AVec;

use super::pool::{try_boxed, Pool, Slot, NIL, PAGE};
use super::{StoreError, OOM};

/// Heads per full segment.
pub(super) const SEG: usize = PAGE / 4;
/// Buckets of an empty table (`2^LEVEL0`).
const LEVEL0: u32 = 4;
/// A bucket splits when the table holds more than this many channels per bucket.
const LOAD: usize = 2;

/// A node of a chained table: its hash and the link of its bucket's chain.
pub(super) trait Hashed {
    fn hash(&self) -> u32;
    fn chain(&self) -> u32;
    fn set_chain(&mut self, h: u32);
}

pub(super) struct Table<A: Allocator + Clone> {
    segs: AVec<ABox<[u32], A>, A>,
    level: u32,
    split: usize,
    len: usize,
}

impl<A: Allocator + Clone> Table<A> {
    pub(super) fn new_in(alloc: A) -> Self {
        Table {
            segs: AVec::new_in(alloc),
            level: LEVEL0,
            split: 0,
            len: 0,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Buckets in use.
    pub(super) fn buckets(&self) -> usize {
        (1usize << self.level) + self.split
    }

    pub(super) fn bucket(&self, hash: u32) -> usize {
        let h = hash as usize;
        let b = h & ((1usize << self.level) - 1);
        if b < self.split {
            h & ((2usize << self.level) - 1)
        } else {
            b
        }
    }

    pub(super) fn head(&self, b: usize) -> u32 {
        self.segs
            .get(b / SEG)
            .and_then(|s| s.get(b % SEG))
            .copied()
            .unwrap_or(NIL)
    }

    fn set_head(&mut self, b: usize, h: u32) {
        if let Some(x) = self.segs.get_mut(b / SEG).and_then(|s| s.get_mut(b % SEG)) {
            *x = h;
        }
    }

    /// Makes sure an insert needs no allocation (the first segment exists).
    pub(super) fn reserve(&mut self) -> Result<(), StoreError> {
        if self.segs.is_empty() {
            let alloc = self.segs.allocator().clone();
            let seg = try_boxed(&alloc, 1 << LEVEL0, |_| NIL)?;
            self.segs.try_reserve(1).map_err(|_| OOM)?;
            self.segs.push(seg);
        }
        Ok(())
    }

    /// Links node `h` (whose hash is set) into its bucket; `reserve` first.
    pub(super) fn insert<T: Slot<A> + Hashed>(&mut self, pool: &mut Pool<T, A>, h: u32) {
        let b = self.bucket(pool.get(h).hash());
        pool.get_mut(h).set_chain(self.head(b));
        self.set_head(b, h);
        self.len += 1;
    }

    /// Unlinks node `h` from its bucket (never allocates).
    pub(super) fn remove<T: Slot<A> + Hashed>(&mut self, pool: &mut Pool<T, A>, h: u32) {
        let b = self.bucket(pool.get(h).hash());
        let mut prev = NIL;
        let mut cur = self.head(b);
        while cur != NIL && cur != h {
            prev = cur;
            cur = pool.get(cur).chain();
        }
        if cur != NIL {
            self.unlink(pool, b, prev, h);
        }
    }

    /// Unlinks node `h` of bucket `b`, which follows `prev` there (NIL: first).
    pub(super) fn unlink<T: Slot<A> + Hashed>(
        &mut self,
        pool: &mut Pool<T, A>,
        b: usize,
        prev: u32,
        h: u32,
    ) {
        let next = pool.get(h).chain();
        if prev == NIL {
            self.set_head(b, next);
        } else {
            pool.get_mut(prev).set_chain(next);
        }
        pool.get_mut(h).set_chain(NIL);
        self.len -= 1;
    }

    /// Splits buckets while the load is above `LOAD` (best effort: stops when the directory
    /// cannot grow). At most a few splits per call.
    pub(super) fn grow<T: Slot<A> + Hashed>(&mut self, pool: &mut Pool<T, A>) {
        for _ in 0..2 {
            if self.len <= self.buckets() * LOAD || self.level >= 31 {
                return;
            }
            if self.room_for(self.buckets()).is_err() {
                return;
            }
            self.split_one(pool);
        }
    }

    /// Makes sure bucket `b` has a head word.
    fn room_for(&mut self, b: usize) -> Result<(), StoreError> {
        self.reserve()?;
        let alloc = self.segs.allocator().clone();
        let s = b / SEG;
        if s == 0 {
            let cur = self.segs[0].len();
            if b >= cur {
                let n = (cur * 2).clamp(b + 1, SEG);
                let old = &self.segs[0];
                let seg = try_boxed(&alloc, n, |i| old.get(i).copied().unwrap_or(NIL))?;
                self.segs[0] = seg;
            }
        } else if s >= self.segs.len() {
            let seg = try_boxed(&alloc, SEG, |_| NIL)?;
            self.segs.try_reserve(1).map_err(|_| OOM)?;
            self.segs.push(seg);
        }
        Ok(())
    }

    fn split_one<T: Slot<A> + Hashed>(&mut self, pool: &mut Pool<T, A>) {
        let from = self.split;
        let to = from + (1usize << self.level);
        let mask = (2usize << self.level) - 1;
        let mut cur = self.head(from);
        let (mut keep, mut moved) = (NIL, NIL);
        while cur != NIL {
            let next = pool.get(cur).chain();
            if (pool.get(cur).hash() as usize) & mask == to {
                pool.get_mut(cur).set_chain(moved);
                moved = cur;
            } else {
                pool.get_mut(cur).set_chain(keep);
                keep = cur;
            }
            cur = next;
        }
        self.set_head(from, keep);
        self.set_head(to, moved);
        self.split += 1;
        if self.split == 1usize << self.level {
            self.level += 1;
            self.split = 0;
        }
    }
}
