//! A fallible FIFO ring buffer over the store's allocator.

use allocator_api2::alloc::Allocator;
use allocator_api2::vec::Vec as AVec;

use super::{StoreError, OOM};

/// A FIFO ring buffer over an allocator-backed vector whose length is the physical capacity.
/// Growth and shrinking build a new buffer fallibly; nothing here can abort.
pub(super) struct Ring<T: Copy + Default, A: Allocator + Clone> {
    pub(super) buf: AVec<T, A>,
    pub(super) head: usize,
    pub(super) len: usize,
}

impl<T: Copy + Default, A: Allocator + Clone> Ring<T, A> {
    pub(super) fn new_in(alloc: A) -> Self {
        Ring {
            buf: AVec::new_in(alloc),
            head: 0,
            len: 0,
        }
    }

    pub(super) fn get(&self, i: usize) -> Option<T> {
        (i < self.len).then(|| self.buf[(self.head + i) % self.buf.len()])
    }

    pub(super) fn front(&self) -> Option<T> {
        self.get(0)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = T> + '_ {
        (0..self.len).map(move |i| self.buf[(self.head + i) % self.buf.len()])
    }

    /// Makes room for `additional` more items (no allocation when there already is room).
    pub(super) fn try_reserve(&mut self, additional: usize) -> Result<(), StoreError> {
        let need = self.len.checked_add(additional).ok_or(OOM)?;
        if need <= self.buf.len() {
            return Ok(());
        }
        let cap = need.max(self.buf.len().saturating_mul(2)).max(4);
        self.rebuild(cap)
    }

    pub(super) fn rebuild(&mut self, cap: usize) -> Result<(), StoreError> {
        debug_assert!(cap >= self.len);
        let mut nb: AVec<T, A> = AVec::new_in(self.buf.allocator().clone());
        nb.try_reserve_exact(cap).map_err(|_| OOM)?;
        for v in self.iter() {
            nb.push(v);
        }
        nb.resize(cap, T::default());
        self.buf = nb;
        self.head = 0;
        Ok(())
    }

    /// Appends; only allocates when the ring is full.
    pub(super) fn push_back(&mut self, v: T) -> Result<(), StoreError> {
        self.try_reserve(1)?;
        let cap = self.buf.len();
        self.buf[(self.head + self.len) % cap] = v;
        self.len += 1;
        Ok(())
    }

    pub(super) fn pop_front(&mut self) -> Option<T> {
        let v = self.front()?;
        self.head = (self.head + 1) % self.buf.len();
        self.len -= 1;
        Some(v)
    }

    /// Gives memory back when the ring is much bigger than needed, keeping room for at least
    /// `keep` items (`len + reserved`). Best effort: a failed rebuild leaves it as it is.
    pub(super) fn shrink(&mut self, extra: usize) {
        let keep = self.len.saturating_add(extra);
        if keep == 0 {
            if !self.buf.is_empty() {
                self.buf = AVec::new_in(self.buf.allocator().clone());
                self.head = 0;
            }
            return;
        }
        let cap = self.buf.len();
        if cap >= 32 && keep.saturating_mul(4) <= cap {
            let _ = self.rebuild(keep.saturating_mul(2).max(4));
        }
    }
}
