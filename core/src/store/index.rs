//! The delivery log's index: the handle of the message node (or, for a channel-deleted notice,
//! the deleted channel's node) of every sequence number still in the log, in segments of 1024 entries (4 KiB, one slab page). Entries at or below the
//! freeing floor are stale (their nodes may be reused); whole segments below it are freed.

use allocator_api2::alloc::Allocator;
use allocator_api2::boxed::Box as ABox;
use allocator_api2::vec::Vec as AVec;

use super::pool::{try_boxed, NIL, PAGE};
use super::{StoreError, OOM};

const SEG: usize = PAGE / 4;

/// Marks an entry that is a channel node (a deleted channel, whose notice has this seq)
/// rather than a message node.
pub(super) const CHANNEL: u32 = 1 << 31;

pub(super) struct LogIndex<A: Allocator + Clone> {
    segs: AVec<ABox<[u32], A>, A>,
    /// Sequence number of the first entry of the first segment.
    base: u64,
}

impl<A: Allocator + Clone> LogIndex<A> {
    pub(super) fn new_in(alloc: A, first: u64) -> Self {
        LogIndex {
            segs: AVec::new_in(alloc),
            base: first,
        }
    }

    /// Forgets everything; the next sequence number is `first`.
    pub(super) fn reset(&mut self, first: u64) {
        self.segs = AVec::new_in(self.segs.allocator().clone());
        self.base = first;
    }

    fn pos(&self, seq: u64) -> Option<(usize, usize)> {
        let off = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        Some((off / SEG, off % SEG))
    }

    pub(super) fn get(&self, seq: u64) -> u32 {
        self.pos(seq)
            .and_then(|(s, i)| self.segs.get(s).map(|seg| seg[i]))
            .unwrap_or(NIL)
    }

    /// Makes sure `seq` has an entry (allocates its segment when it is the first of one).
    pub(super) fn reserve(&mut self, seq: u64) -> Result<(), StoreError> {
        let (s, _) = self.pos(seq).ok_or(OOM)?;
        while self.segs.len() <= s {
            let seg = try_boxed(self.segs.allocator(), SEG, |_| NIL)?;
            self.segs.try_reserve(1).map_err(|_| OOM)?;
            self.segs.push(seg);
        }
        Ok(())
    }

    /// Records the node of `seq` (`reserve` first).
    pub(super) fn set(&mut self, seq: u64, h: u32) {
        if let Some((s, i)) = self.pos(seq) {
            if let Some(seg) = self.segs.get_mut(s) {
                seg[i] = h;
            }
        }
    }

    /// Frees the segments whose entries are all at or below `floor`, and all of them when
    /// `floor` is the last sequence number `last` (never allocates).
    pub(super) fn drop_to(&mut self, floor: u64, last: u64) {
        if floor == last {
            self.reset(last.saturating_add(1));
            return;
        }
        let mut n = 0;
        while n < self.segs.len() && self.base + ((n + 1) * SEG) as u64 <= floor + 1 {
            n += 1;
        }
        if n > 0 {
            self.segs.drain(..n);
            self.base += (n * SEG) as u64;
        }
    }
}
