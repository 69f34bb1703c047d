//! Subscriber counts per channel and worker slot.

use allocator_api2::alloc::Allocator;
use allocator_api2::vec::Vec as AVec;

use super::keys::{try_copy, KeyRef};
use super::{Limits, Store, StoreError, OOM};

/// How many subscribers of one channel one worker slot holds.
#[derive(Clone, Copy)]
pub(super) struct SlotCount {
    pub(super) slot: u32,
    pub(super) count: u32,
}

/// The subscribers of a channel, per worker slot (most channels have subscribers on few
/// workers: a short unsorted vector), and their sum. No entry has a zero count.
pub(super) struct Subs<A: Allocator> {
    pub(super) slots: AVec<SlotCount, A>,
    pub(super) total: u64,
}

impl<A: Allocator> Subs<A> {
    pub(super) fn new_in(alloc: A) -> Self {
        Subs {
            slots: AVec::new_in(alloc),
            total: 0,
        }
    }

    pub(super) fn position(&self, slot: u32) -> Option<usize> {
        self.slots.iter().position(|e| e.slot == slot)
    }

    pub(super) fn has(&self, slot: u32) -> bool {
        self.position(slot).is_some()
    }

    /// One more subscriber on `slot`; all or nothing.
    pub(super) fn try_add(&mut self, slot: u32) -> Result<(), StoreError> {
        match self.position(slot) {
            Some(i) => {
                let e = &mut self.slots[i];
                e.count = e.count.checked_add(1).ok_or(StoreError::SubscribersLimit)?;
            }
            None => {
                self.slots.try_reserve(1).map_err(|_| OOM)?;
                self.slots.push(SlotCount { slot, count: 1 });
            }
        }
        self.total += 1;
        Ok(())
    }

    /// One subscriber fewer on `slot`; false (and nothing changes) when it has none.
    pub(super) fn remove_one(&mut self, slot: u32) -> bool {
        let Some(i) = self.position(slot) else {
            return false;
        };
        self.slots[i].count -= 1;
        if self.slots[i].count == 0 {
            self.slots.swap_remove(i);
        }
        self.total -= 1;
        true
    }

    /// Removes all of `slot`'s subscribers; returns how many there were.
    pub(super) fn take_slot(&mut self, slot: u32) -> u64 {
        let Some(i) = self.position(slot) else {
            return 0;
        };
        let n = u64::from(self.slots.swap_remove(i).count);
        self.total -= n;
        n
    }
}

impl<A: Allocator + Clone> Store<A> {
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
        if self.channels.get(&KeyRef(id)).is_none() {
            // The caller normally created it; be forgiving and create it with the usual rules.
            // The slot entry is reserved first: running out of memory creates nothing.
            let mut subs = Subs::new_in(self.alloc.clone());
            subs.slots.try_reserve(1).map_err(|_| OOM)?;
            let events = limits.events_channel_id.as_deref() == Some(id);
            self.create_channel(id, now, limits, events)?;
            if let Some(ch) = self.channels.get_mut(&KeyRef(id)) {
                ch.subs = subs;
            }
        }
        let Some(ch) = self.channels.get_mut(&KeyRef(id)) else {
            return Err(OOM);
        };
        if limits
            .max_subscribers_per_channel
            .is_some_and(|m| ch.subs.total >= m)
        {
            return Err(StoreError::SubscribersLimit);
        }
        ch.subs.try_add(sk)?;
        ch.inactive_at = now.saturating_add(limits.channel_inactivity_time);
        let events = ch.events;
        if !events {
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
        if let Some(i) = self
            .deleting
            .iter()
            .position(|d| d.subs.total > 0 && d.id.0[..] == *id && d.subs.has(sk))
        {
            self.deleting[i].subs.remove_one(sk);
            self.emit("client_unsubscribed", id, now, limits);
            return;
        }
        if let Some(ch) = self.channels.get_mut(&KeyRef(id)) {
            if ch.subs.remove_one(sk) && !ch.events {
                self.emit("client_unsubscribed", id, now, limits);
            }
        }
    }

    /// Per-slot subscriber counts of a live channel, by slot (empty for an unknown channel).
    pub fn channel_slots(&self, id: &[u8]) -> Vec<(usize, u64)> {
        let Some(ch) = self.channels.get(&KeyRef(id)) else {
            return Vec::new();
        };
        let mut v: Vec<(usize, u64)> = ch
            .subs
            .slots
            .iter()
            .map(|e| (e.slot as usize, u64::from(e.count)))
            .collect();
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
        // Live channels first: counts change in place; the events go into the events channel,
        // so they are emitted once the iteration is over. Temporary list on the process heap.
        let mut gone: Vec<(Vec<u8>, u64)> = Vec::new();
        let mut lost = 0u64;
        for (k, ch) in self.channels.iter_mut() {
            let n = ch.subs.take_slot(sk);
            if n == 0 || ch.events {
                continue;
            }
            match try_copy(&k.0) {
                Some(id) if gone.try_reserve(1).is_ok() => gone.push((id, n)),
                _ => lost = lost.saturating_add(n),
            }
        }
        for (id, n) in &gone {
            for _ in 0..*n {
                self.emit("client_unsubscribed", id, now, limits);
            }
        }
        drop(gone);
        // Deleted channels: taken out while the events go into the events channel (`emit`
        // does not touch them).
        let mut del = core::mem::replace(&mut self.deleting, AVec::new_in(self.alloc.clone()));
        for d in del.iter_mut() {
            let n = d.subs.take_slot(sk);
            for _ in 0..n {
                self.emit("client_unsubscribed", &d.id.0, now, limits);
            }
        }
        if !del.is_empty() {
            self.deleting = del;
        }
        // Only when an events channel would have received them.
        let ev = limits.events_channel_id.as_deref();
        if ev.is_some_and(|e| self.channels.get(&KeyRef(e)).is_some_and(|c| c.events)) {
            self.dropped_events = self.dropped_events.saturating_add(lost);
        }
    }
}
