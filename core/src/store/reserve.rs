//! The delete reserve: a few pages held back from publishing, so that deleting channels (the
//! way an operator frees a full zone) still works when publishing has filled it. Publishes,
//! channel creations and broker inserts first make sure the reserve is held (and refuse with
//! `OutOfMemory` when it cannot be); a delete that finds no memory frees it and tries again;
//! every collection takes it back when it can.

use allocator_api2::alloc::Allocator;
use allocator_api2::vec::Vec as AVec;

use super::{Limits, Store, StoreError, OOM};

/// Bytes of one reserve page (one page of nginx's slab: held pages need not be contiguous).
pub const RESERVE_PAGE: usize = 4096;

/// The most pages the reserve holds.
pub const MAX_RESERVE_PAGES: usize = 4;

impl<A: Allocator + Clone> Store<A> {
    /// Makes sure the reserve holds `limits.delete_reserve_pages` pages; `OutOfMemory` when
    /// the zone cannot give them (whatever was taken stays held).
    pub(super) fn hold_reserve(&mut self, limits: &Limits) -> Result<(), StoreError> {
        let want = limits.delete_reserve_pages.min(MAX_RESERVE_PAGES);
        for page in self.reserve.iter_mut().take(want) {
            if page.capacity() == 0 {
                page.try_reserve_exact(RESERVE_PAGE).map_err(|_| OOM)?;
            }
        }
        Ok(())
    }

    /// Frees the reserve for a delete; false when none was held.
    pub(super) fn release_reserve(&mut self) -> bool {
        let mut freed = false;
        for page in self.reserve.iter_mut() {
            if page.capacity() > 0 {
                *page = AVec::new_in(self.alloc.clone());
                freed = true;
            }
        }
        freed
    }

    /// Pages the reserve holds now.
    pub fn reserve_pages(&self) -> usize {
        self.reserve.iter().filter(|p| p.capacity() > 0).count()
    }
}
