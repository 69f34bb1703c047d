//! Subscriber counts per channel and worker slot.

use allocator_api2::alloc::Allocator;

use super::keys::try_copy;
use super::pool::{link_through, Slot, NIL};
use super::{Limits, Store, StoreError, OOM};

/// How many subscribers of one channel one worker slot holds (count 0: an unused entry).
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub(super) struct SlotCount {
    pub(super) slot: u32,
    pub(super) count: u32,
}

/// Pairs per subscriber node.
const PAIRS: usize = 7;

/// More (slot, count) pairs of a channel with subscribers on several workers (64 bytes),
/// chained from the channel's `more`. Entries with count 0 are unused; a node is freed only
/// with its channel (or when a collection finds it unused), so an unsubscribe never allocates
/// or frees.
#[derive(Clone, Copy, Default)]
pub(super) struct SubsNode {
    pub(super) next: u32,
    /// 1 while the node is in use.
    pub(super) used: u32,
    pub(super) pairs: [SlotCount; PAIRS],
}

impl<A: Allocator> Slot<A> for SubsNode {
    fn vacant(_: &A) -> Self {
        SubsNode {
            next: NIL,
            ..SubsNode::default()
        }
    }
    fn is_vacant(&self) -> bool {
        self.used == 0
    }
    link_through!(next);
}

/// Where a slot's count is.
#[derive(Clone, Copy)]
enum At {
    Inline(usize),
    More(u32, usize),
}

impl<A: Allocator + Clone> Store<A> {
    /// Where channel `h` counts `slot` (a used entry), or else the first unused entry.
    fn subs_at(&self, h: u32, slot: u32) -> (Option<At>, Option<At>) {
        let c = self.chans.get(h);
        let mut free = None;
        for (i, p) in c.s.iter().enumerate() {
            if p.count > 0 && p.slot == slot {
                return (Some(At::Inline(i)), None);
            }
            if p.count == 0 && free.is_none() {
                free = Some(At::Inline(i));
            }
        }
        let mut n = c.more;
        while n != NIL {
            let node = self.subs.get(n);
            for (i, p) in node.pairs.iter().enumerate() {
                if p.count > 0 && p.slot == slot {
                    return (Some(At::More(n, i)), None);
                }
                if p.count == 0 && free.is_none() {
                    free = Some(At::More(n, i));
                }
            }
            n = node.next;
        }
        (None, free)
    }

    fn pair_mut(&mut self, h: u32, at: At) -> &mut SlotCount {
        match at {
            At::Inline(i) => &mut self.chans.get_mut(h).s[i],
            At::More(n, i) => &mut self.subs.get_mut(n).pairs[i],
        }
    }

    /// Every (slot, count) entry of channel `h`, used or not.
    fn each_pair(&self, h: u32, mut f: impl FnMut(&SlotCount)) {
        let c = self.chans.get(h);
        c.s.iter().for_each(&mut f);
        let mut n = c.more;
        while n != NIL {
            let node = self.subs.get(n);
            node.pairs.iter().for_each(&mut f);
            n = node.next;
        }
    }

    /// Channel `h`'s subscribers (on every worker).
    pub(super) fn subs_total(&self, h: u32) -> u64 {
        let mut t = 0u64;
        self.each_pair(h, |p| t += u64::from(p.count));
        t
    }

    pub(super) fn subs_has(&self, h: u32, slot: u32) -> bool {
        self.subs_at(h, slot).0.is_some()
    }

    /// One more subscriber of channel `h` on `slot`; all or nothing (`OutOfMemory` when a new
    /// slot needs a subscriber node that cannot be allocated).
    pub(super) fn subs_add(&mut self, h: u32, slot: u32) -> Result<(), StoreError> {
        match self.subs_at(h, slot) {
            (Some(at), _) => {
                let p = self.pair_mut(h, at);
                p.count = p.count.checked_add(1).ok_or(StoreError::SubscribersLimit)?;
            }
            (None, Some(at)) => *self.pair_mut(h, at) = SlotCount { slot, count: 1 },
            (None, None) => {
                let mut node = SubsNode {
                    next: self.chans.get(h).more,
                    used: 1,
                    ..SubsNode::default()
                };
                node.pairs[0] = SlotCount { slot, count: 1 };
                let n = self.subs.insert(node)?;
                self.chans.get_mut(h).more = n;
            }
        }
        Ok(())
    }

    /// One subscriber fewer of channel `h` on `slot`; false (and nothing changes) when it has
    /// none there.
    pub(super) fn subs_remove_one(&mut self, h: u32, slot: u32) -> bool {
        let Some(at) = self.subs_at(h, slot).0 else {
            return false;
        };
        self.pair_mut(h, at).count -= 1;
        true
    }

    /// Removes all of `slot`'s subscribers of channel `h`; returns how many there were.
    pub(super) fn subs_take(&mut self, h: u32, slot: u32) -> u64 {
        let Some(at) = self.subs_at(h, slot).0 else {
            return 0;
        };
        let p = self.pair_mut(h, at);
        let n = u64::from(p.count);
        p.count = 0;
        n
    }

    /// Used (slot, count) pairs of channel `h`.
    pub(super) fn subs_list(&self, h: u32) -> Vec<(usize, u64)> {
        let mut v = Vec::new();
        self.each_pair(h, |p| {
            if p.count > 0 {
                v.push((p.slot as usize, u64::from(p.count)));
            }
        });
        v
    }

    /// Frees channel `h`'s subscriber nodes when none of them counts anyone (or `all`).
    pub(super) fn free_subs_if(&mut self, h: u32, all: bool) {
        let c = self.chans.get(h);
        let inline: u64 = c.s.iter().map(|p| u64::from(p.count)).sum();
        if c.more == NIL || (!all && self.subs_total(h) != inline) {
            return;
        }
        let mut n = c.more;
        self.chans.get_mut(h).more = NIL;
        while n != NIL {
            n = self.subs.remove(n).next;
        }
    }

    pub(super) fn free_subs(&mut self, h: u32) {
        self.free_subs_if(h, true);
    }

    /// One more subscriber to `id`, held by the worker in `slot`. Creates the channel with the
    /// usual rules if it does not exist. Refreshes the inactivity deadline. Fails with
    /// `SubscribersLimit` at `max_subscribers_per_channel` (or, never in practice, when `slot`
    /// does not fit in 32 bits or holds `u32::MAX` subscribers of the channel), and with
    /// `OutOfMemory` — having changed nothing — when the slot's entry cannot be allocated.
    pub fn add_subscriber(
        &mut self,
        id: &[u8],
        slot: usize,
        now: i64,
        limits: &Limits,
    ) -> Result<(), StoreError> {
        let sk = u32::try_from(slot).map_err(|_| StoreError::SubscribersLimit)?;
        if self.find(id).is_none() {
            // The caller normally created it; be forgiving and create it with the usual rules
            // (a new channel's first slot is kept in its node: nothing more to allocate).
            let events = limits.events_channel_id.as_deref() == Some(id);
            self.create_channel(id, now, limits, events)?;
        }
        let Some(h) = self.find(id) else {
            return Err(OOM);
        };
        if limits
            .max_subscribers_per_channel
            .is_some_and(|m| self.subs_total(h) >= m)
        {
            return Err(StoreError::SubscribersLimit);
        }
        self.subs_add(h, sk)?;
        let ch = self.chans.get_mut(h);
        ch.inactive_at = now.saturating_add(limits.channel_inactivity_time);
        if !ch.events {
            self.emit("client_subscribed", id, now, limits);
        }
        Ok(())
    }

    /// One subscription to `id` held by the worker in `slot` ended; nothing happens when that
    /// slot counts no subscriber there. A deleted channel still in delete takes precedence
    /// over a live channel of the same id (recreated after the delete) when it still counts
    /// subscribers of `slot`: those that existed at delete time are the ones leaving while it
    /// waits. A deleted channel left without subscribers goes to the trash at the next
    /// [`Store::gc`] after its hold.
    pub fn remove_subscriber(&mut self, id: &[u8], slot: usize, now: i64, limits: &Limits) {
        let Ok(sk) = u32::try_from(slot) else {
            return;
        };
        let deleted = self
            .deleting
            .iter(&self.chans)
            .find(|&d| self.chans.get(d).id() == id && self.subs_has(d, sk));
        if let Some(d) = deleted {
            self.subs_remove_one(d, sk);
            self.emit("client_unsubscribed", id, now, limits);
            return;
        }
        if let Some(h) = self.find(id) {
            if self.subs_remove_one(h, sk) && !self.chans.get(h).events {
                self.emit("client_unsubscribed", id, now, limits);
            }
        }
    }

    /// Per-slot subscriber counts of a live channel, by slot (empty for an unknown channel).
    pub fn channel_slots(&self, id: &[u8]) -> Vec<(usize, u64)> {
        let Some(h) = self.find(id) else {
            return Vec::new();
        };
        let mut v = self.subs_list(h);
        v.sort_unstable();
        v
    }

    /// Removes every subscriber counted for `slot` (its worker is gone), from live and deleted
    /// channels, emitting the events of as many unsubscribes (a deleted channel left without
    /// subscribers goes to the trash at the next [`Store::gc`] after its hold). Inactivity
    /// deadlines do not change. O(channels).
    /// Never fails: the events are best effort (counted in `dropped_events` when the process
    /// heap cannot hold the list of channels they are about).
    pub(super) fn drop_slot(&mut self, slot: usize, now: i64, limits: &Limits) {
        let Ok(sk) = u32::try_from(slot) else {
            return;
        };
        // Counts change in place; the events go into the events channel, so they are emitted
        // once the walk is over. Temporary list on the process heap.
        let mut gone: Vec<(Vec<u8>, u64)> = Vec::new();
        let mut lost = 0u64;
        let mut take = |s: &mut Self, h: u32, live: bool| {
            let n = s.subs_take(h, sk);
            if n == 0 || (live && s.chans.get(h).events) {
                return;
            }
            match try_copy(s.chans.get(h).id()) {
                Some(id) if gone.try_reserve(1).is_ok() => gone.push((id, n)),
                _ => lost = lost.saturating_add(n),
            }
        };
        for b in 0..self.table.buckets() {
            let mut h = self.table.head(b);
            while h != NIL {
                take(self, h, true);
                h = self.chans.get(h).next;
            }
        }
        let mut h = self.deleting.head;
        while h != NIL {
            take(self, h, false);
            h = self.chans.get(h).next;
        }
        for (id, n) in &gone {
            for _ in 0..*n {
                self.emit("client_unsubscribed", id, now, limits);
            }
        }
        // Only when an events channel would have received them.
        self.lost_event(limits, lost);
    }
}
