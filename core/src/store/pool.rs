//! Page-sized arenas: nodes of one type kept in pages of at most 4 KiB (one slab page each),
//! addressed by `u32` handles (`page * per_page + index`), with a free list threaded through
//! the vacant nodes; and the FIFO lists the store links through its nodes.
//!
//! Nothing here allocates more than one page at a time: a pool's page directory is itself
//! made of page-sized vectors (a top-level vector of them gets one entry per 170 pages). A
//! pool never gives its pages back (freed nodes are reused by the next insert of the pool).
//!
//! Every word of a node is written with a defined value (no `Option` of a fat pointer, no
//! uninitialised padding): the store lives in shared memory written by several processes, and
//! valgrind checks each process with its own view of which bytes were initialised.

use allocator_api2::alloc::Allocator;
use allocator_api2::boxed::Box as ABox;
use allocator_api2::vec::Vec as AVec;

use super::{StoreError, OOM};

/// No node (the end of a list, an empty bucket, no handle).
pub(super) const NIL: u32 = u32::MAX;

/// Nodes a pool may hold (handles stay below 2^31: the log index marks channel handles with
/// the top bit).
pub(super) const MAX_NODES: usize = 1 << 31;

/// Bytes of one page (one page of nginx's slab allocator).
pub(super) const PAGE: usize = 4096;

/// A node type of a pool: it can be made vacant (owning nothing), and has one link word used
/// by the lists it is on (and by the free list while it is vacant).
pub(super) trait Slot<A: Allocator>: Sized {
    fn vacant(alloc: &A) -> Self;
    fn is_vacant(&self) -> bool;
    fn link(&self) -> u32;
    fn set_link(&mut self, h: u32);
}

/// `Slot::link` and `Slot::set_link` through the `u32` field `$f` (inside an `impl Slot`).
macro_rules! link_through {
    ($f:ident) => {
        fn link(&self) -> u32 {
            self.$f
        }
        fn set_link(&mut self, h: u32) {
            self.$f = h;
        }
    };
}
pub(super) use link_through;

/// How many `T` one page holds.
pub(super) const fn per_page<T>() -> usize {
    let s = core::mem::size_of::<T>();
    if s == 0 || s >= PAGE {
        1
    } else {
        PAGE / s
    }
}

/// A boxed slice of exactly `n` (> 0) items made by `f`, in one allocation; `OutOfMemory` when
/// the allocator refuses (nothing here can abort). Never empty: a boxed slice is given back to
/// its allocator when dropped, and an empty one was never allocated.
pub(super) fn try_boxed<T, A: Allocator + Clone>(
    alloc: &A,
    n: usize,
    mut f: impl FnMut(usize) -> T,
) -> Result<ABox<[T], A>, StoreError> {
    debug_assert!(n > 0);
    let mut v = AVec::new_in(alloc.clone());
    v.try_reserve_exact(n).map_err(|_| OOM)?;
    for i in 0..n {
        v.push(f(i));
    }
    // `into_boxed_slice` would reallocate (infallibly) a vector with spare room.
    if v.capacity() != v.len() {
        return Err(OOM);
    }
    Ok(v.into_boxed_slice())
}

/// `parts` back to back in one exactly-sized allocation (none when they are empty). A vector
/// rather than a boxed slice: an empty one owns nothing and frees nothing.
pub(super) fn concat_in<A: Allocator + Clone>(
    alloc: &A,
    parts: &[&[u8]],
) -> Result<AVec<u8, A>, StoreError> {
    let total = parts
        .iter()
        .try_fold(0usize, |acc, p| acc.checked_add(p.len()))
        .ok_or(OOM)?;
    let mut v = AVec::new_in(alloc.clone());
    v.try_reserve_exact(total).map_err(|_| OOM)?;
    for p in parts {
        v.extend_from_slice(p);
    }
    Ok(v)
}

pub(super) struct Pool<T, A: Allocator + Clone> {
    alloc: A,
    /// Directory pages of node pages.
    dirs: AVec<AVec<ABox<[T], A>, A>, A>,
    pages: usize,
    free: u32,
    n_free: usize,
    live: usize,
}

impl<T: Slot<A>, A: Allocator + Clone> Pool<T, A> {
    const PER: usize = per_page::<T>();
    const DIR: usize = per_page::<ABox<[T], A>>();

    pub(super) fn new_in(alloc: A) -> Self {
        Pool {
            dirs: AVec::new_in(alloc.clone()),
            alloc,
            pages: 0,
            free: NIL,
            n_free: 0,
            live: 0,
        }
    }

    /// Nodes in use.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.live
    }

    fn at(h: u32) -> (usize, usize, usize) {
        let h = h as usize;
        let page = h / Self::PER;
        (page / Self::DIR, page % Self::DIR, h % Self::PER)
    }

    pub(super) fn get(&self, h: u32) -> &T {
        let (d, p, i) = Self::at(h);
        &self.dirs[d][p][i]
    }

    pub(super) fn get_mut(&mut self, h: u32) -> &mut T {
        let (d, p, i) = Self::at(h);
        &mut self.dirs[d][p][i]
    }

    /// Makes sure `n` nodes can be inserted without allocating.
    pub(super) fn reserve(&mut self, n: usize) -> Result<(), StoreError> {
        while self.n_free < n {
            self.add_page()?;
        }
        Ok(())
    }

    fn add_page(&mut self) -> Result<(), StoreError> {
        let first = self
            .pages
            .checked_mul(Self::PER)
            .filter(|f| f + Self::PER <= MAX_NODES)
            .ok_or(OOM)?;
        let old_free = self.free;
        let a = self.alloc.clone();
        let page = try_boxed(&a, Self::PER, |i| {
            let mut t = T::vacant(&a);
            t.set_link(if i + 1 < Self::PER {
                (first + i + 1) as u32
            } else {
                old_free
            });
            t
        })?;
        if self.dirs.last().is_none_or(|d| d.len() == Self::DIR) {
            let mut d = AVec::new_in(a.clone());
            d.try_reserve_exact(Self::DIR).map_err(|_| OOM)?;
            self.dirs.try_reserve(1).map_err(|_| OOM)?;
            self.dirs.push(d);
        }
        if let Some(d) = self.dirs.last_mut() {
            d.push(page);
        }
        self.pages += 1;
        self.free = first as u32;
        self.n_free += Self::PER;
        Ok(())
    }

    /// Stores `v` in a free node (allocating a page if none is free).
    pub(super) fn insert(&mut self, v: T) -> Result<u32, StoreError> {
        self.reserve(1)?;
        let h = self.free;
        let slot = self.get_mut(h);
        let next = slot.link();
        *slot = v;
        self.free = next;
        self.n_free -= 1;
        self.live += 1;
        Ok(h)
    }

    /// Frees node `h` and returns what it held (never allocates).
    pub(super) fn remove(&mut self, h: u32) -> T {
        let mut vacant = T::vacant(&self.alloc);
        vacant.set_link(self.free);
        let v = core::mem::replace(self.get_mut(h), vacant);
        self.free = h;
        self.n_free += 1;
        self.live -= 1;
        v
    }
}

impl<T: Slot<A>, A: Allocator + Clone> Pool<T, A> {
    /// Gives back the pages at the end that hold no node in use (all of them when none is in
    /// use). Never allocates; walks the free list when there is something to give back.
    pub(super) fn trim(&mut self) {
        if self.live == 0 {
            if self.pages > 0 {
                self.dirs = AVec::new_in(self.alloc.clone());
                self.pages = 0;
                self.free = NIL;
                self.n_free = 0;
            }
            return;
        }
        let mut keep = self.pages;
        while keep > 0 && self.page_vacant(keep - 1) {
            keep -= 1;
        }
        if keep == self.pages {
            return;
        }
        // Unthread the nodes of the pages that go from the free list.
        let limit = (keep * Self::PER) as u32;
        let (mut head, mut tail, mut n) = (NIL, NIL, 0);
        let mut h = self.free;
        while h != NIL {
            let next = self.get(h).link();
            if h < limit {
                if tail == NIL {
                    head = h;
                } else {
                    self.get_mut(tail).set_link(h);
                }
                tail = h;
                n += 1;
            }
            h = next;
        }
        if tail != NIL {
            self.get_mut(tail).set_link(NIL);
        }
        self.free = head;
        self.n_free = n;
        while self.pages > keep {
            if let Some(d) = self.dirs.last_mut() {
                d.pop();
                if d.is_empty() {
                    self.dirs.pop();
                }
            }
            self.pages -= 1;
        }
    }

    fn page_vacant(&self, page: usize) -> bool {
        self.dirs[page / Self::DIR][page % Self::DIR]
            .iter()
            .all(T::is_vacant)
    }
}

/// A FIFO of nodes linked through their link word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Fifo {
    pub(super) head: u32,
    pub(super) tail: u32,
    pub(super) len: u32,
}

impl Fifo {
    pub(super) const EMPTY: Fifo = Fifo {
        head: NIL,
        tail: NIL,
        len: 0,
    };

    pub(super) fn push<T: Slot<A>, A: Allocator + Clone>(&mut self, pool: &mut Pool<T, A>, h: u32) {
        pool.get_mut(h).set_link(NIL);
        if self.tail == NIL {
            self.head = h;
        } else {
            pool.get_mut(self.tail).set_link(h);
        }
        self.tail = h;
        self.len += 1;
    }

    pub(super) fn pop<T: Slot<A>, A: Allocator + Clone>(
        &mut self,
        pool: &mut Pool<T, A>,
    ) -> Option<u32> {
        if self.head == NIL {
            return None;
        }
        let h = self.head;
        self.head = pool.get(h).link();
        pool.get_mut(h).set_link(NIL);
        if self.head == NIL {
            self.tail = NIL;
        }
        self.len -= 1;
        Some(h)
    }

    /// Unlinks `h`, which follows `prev` (NIL: `h` is the head).
    pub(super) fn unlink<T: Slot<A>, A: Allocator + Clone>(
        &mut self,
        pool: &mut Pool<T, A>,
        prev: u32,
        h: u32,
    ) {
        let next = pool.get(h).link();
        if prev == NIL {
            self.head = next;
        } else {
            pool.get_mut(prev).set_link(next);
        }
        if self.tail == h {
            self.tail = prev;
        }
        pool.get_mut(h).set_link(NIL);
        self.len -= 1;
    }

    pub(super) fn iter<'a, T: Slot<A>, A: Allocator + Clone>(
        &self,
        pool: &'a Pool<T, A>,
    ) -> impl Iterator<Item = u32> + 'a {
        let mut h = self.head;
        core::iter::from_fn(move || {
            if h == NIL {
                return None;
            }
            let cur = h;
            h = pool.get(h).link();
            Some(cur)
        })
    }
}
