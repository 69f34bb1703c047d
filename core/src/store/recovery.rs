//! What a store rebuilt after a crash keeps of the one it replaces: the host-wide figures
//! that only grow (so tags, sequence numbers and stream offsets never go back), and the
//! subscriber counts each worker gives back from its own registry.
//!
//! The nginx layer copies [`Store::carry`] out after every store operation that completed
//! (when the store is known to be consistent) and gives it to [`Store::carry_over`] of the
//! store it builds when an operation did not complete (its worker died, or it panicked).
//! The damaged store itself is never read again.

use allocator_api2::alloc::Allocator;

use super::{Limits, Store, StoreError, TRASH_DELAY};

/// `poisoned` word: a store operation panicked halfway.
pub const POISONED: u64 = 1;
/// `poisoned` word: a rebuild failed; the store is not used again.
pub const UNUSABLE: u64 = 2;

/// What the marks around store operations (busy pid and slot, set after locking and cleared
/// before unlocking; the poisoned word) say to the next process that takes the lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// The last operation completed: use the store.
    Clean,
    /// Its process died inside an operation (the master force-unlocked the mutex): rebuild.
    DiedInside { pid: u64, slot: u64 },
    /// An operation panicked halfway: rebuild.
    Panicked,
    /// A rebuild failed before: do not use the store.
    Unusable,
}

impl Found {
    pub fn read(busy_pid: u64, busy_slot: u64, poisoned: u64) -> Found {
        match (poisoned, busy_pid) {
            (UNUSABLE, _) => Found::Unusable,
            (0, 0) => Found::Clean,
            (_, 0) => Found::Panicked,
            // A process that died inside wins over a panic mark: it is the later event.
            (_, pid) => Found::DiedInside {
                pid,
                slot: busy_slot,
            },
        }
    }

    /// The rebuild's log line (after `channels` channels and `stored` stored messages were
    /// lost with the old store).
    pub fn rebuilt_line(
        self,
        recovery: u64,
        generation: u64,
        channels: u64,
        stored: u64,
    ) -> String {
        let why = match self {
            Found::DiedInside { pid, slot } => {
                format!("worker {pid} (process slot {slot}) died while changing the shared store")
            }
            _ => "a change of the shared store failed halfway (a panic)".to_string(),
        };
        format!(
            "push_stream: {why}; the store was rebuilt empty (recovery {recovery}, generation {generation}): about {channels} channel(s) and {stored} stored message(s) were lost; subscribers are kept and the published count, message ids and tags continue"
        )
    }
}

/// Scalar figures of a consistent store that a rebuilt one starts from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Carry {
    pub created: i64,
    pub published: u64,
    pub last_seq: u64,
    pub last_time: i64,
    pub last_tag: u64,
    /// `u64::MAX`: none (the layout stays plain integers for shared memory).
    pub broker_offset: u64,
    pub ops_mark: u64,
    pub next_xoff: u64,
}

fn opt(v: Option<u64>) -> u64 {
    v.unwrap_or(u64::MAX)
}

fn unopt(v: u64) -> Option<u64> {
    (v != u64::MAX).then_some(v)
}

impl<A: Allocator + Clone> Store<A> {
    /// This store's carried figures (call it when the store is consistent).
    pub fn carry(&self) -> Carry {
        Carry {
            created: self.created,
            published: self.published,
            last_seq: self.last_seq,
            last_time: self.last_time,
            last_tag: self.last_tag,
            broker_offset: opt(self.broker_offset),
            ops_mark: opt(self.ops_mark),
            next_xoff: self.next_xoff,
        }
    }

    /// Makes a new, empty store continue from `c`: the log starts after `c.last_seq` (a
    /// worker's cursor from before stays valid, nothing below it is offered again), tags and
    /// times do not go back, `published_messages` and the uptime are kept.
    pub fn carry_over(&mut self, c: &Carry) {
        self.created = c.created;
        self.published = c.published;
        self.last_seq = c.last_seq;
        self.log_floor = c.last_seq;
        self.index.reset(c.last_seq.saturating_add(1));
        self.last_time = c.last_time;
        self.last_tag = c.last_tag;
        self.broker_offset = unopt(c.broker_offset);
        self.ops_mark = unopt(c.ops_mark);
        self.next_xoff = c.next_xoff;
    }

    /// Registers the worker `pid` in `slot` again after a rebuild (as `register_worker`),
    /// keeping its place in the log (its cursor `cursor` from before, raised to what the new
    /// store still holds) and counting the `subscribers` requests it holds. Their channel
    /// counts are given back with `restore_subscribers`.
    pub fn rejoin_worker(
        &mut self,
        slot: usize,
        pid: u32,
        cursor: Option<u64>,
        subscribers: u64,
        now: i64,
        limits: &Limits,
    ) -> Result<(), StoreError> {
        self.register_worker(slot, pid, now, limits)?;
        if let Some(w) = self
            .workers
            .iter_mut()
            .find(|w| w.slot == slot && w.pid == pid)
        {
            if let Some(c) = cursor {
                w.cursor = c.clamp(self.log_floor, self.last_seq);
            }
            w.subscribers = subscribers;
        }
        Ok(())
    }

    /// Stores a message read again from the broker's stream after a rebuild (offset `offset`,
    /// already delivered before the crash): kept like a consumed message, but outside the
    /// delivery log (nobody gets it again) and not counted again in `published_messages`.
    /// True when it was stored (false: the channel already has it or a later message).
    #[allow(clippy::too_many_arguments)]
    pub fn refill_broker(
        &mut self,
        id: &[u8],
        offset: u64,
        text: &[u8],
        event_id: &[u8],
        event_type: &[u8],
        time: i64,
        now: i64,
        limits: &Limits,
    ) -> Result<bool, StoreError> {
        let before = self.last_seq;
        self.insert_broker(
            id, offset, text, event_id, event_type, time, true, false, now, limits,
        )?;
        let stored = self.last_seq != before;
        if stored {
            self.published = self.published.saturating_sub(1);
        }
        Ok(stored)
    }

    /// A channel delete read again from the stream while refilling: the channel's messages
    /// stored so far leave the store quietly (its subscribers were told before the crash).
    pub fn refill_delete(&mut self, id: &[u8], now: i64) -> Result<(), StoreError> {
        let Some(h) = self.find(id) else {
            return Ok(());
        };
        if self.chans.get(h).events {
            return Ok(());
        }
        self.queue_to_trash(h, now.saturating_add(TRASH_DELAY));
        Ok(())
    }

    /// Gives back `n` subscribers of `id` held by the worker in `slot` (after a rebuild: the
    /// worker's own registry is the truth). Creates the channel if needed; no events are
    /// emitted and the per-channel limit is not applied (they were admitted before).
    pub fn restore_subscribers(
        &mut self,
        id: &[u8],
        slot: usize,
        n: u64,
        now: i64,
        limits: &Limits,
    ) -> Result<(), StoreError> {
        let sk = u32::try_from(slot).map_err(|_| StoreError::SubscribersLimit)?;
        if self.find(id).is_none() {
            let events = limits.events_channel_id.as_deref() == Some(id);
            // Re-creating it announces nothing (and copies nothing under the lock).
            self.create_channel_as(id, now, limits, events, false)?;
        }
        let Some(h) = self.find(id) else {
            return Err(StoreError::OutOfMemory);
        };
        for _ in 0..n {
            self.subs_add(h, sk)?;
        }
        self.chans.get_mut(h).inactive_at = now.saturating_add(limits.channel_inactivity_time);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Record;
    use allocator_api2::alloc::Global;

    fn limits() -> Limits {
        Limits::default()
    }

    #[test]
    fn a_rebuilt_store_continues_the_old_ones_sequence_tags_and_counters() {
        let l = limits();
        let mut old = Store::new_in(Global, 100, &l).unwrap();
        for i in 0..5 {
            old.publish(b"a", format!("m{i}").as_bytes(), None, None, true, 200, &l)
                .unwrap();
        }
        let c = old.carry();
        assert_eq!(c.published, 5);
        let mut new = Store::new_in(Global, 300, &l).unwrap();
        new.carry_over(&c);
        assert_eq!(new.counters().created, 100);
        assert_eq!(new.counters().published_messages, 5);
        assert_eq!(new.counters().channels, 0);
        // A cursor from the old store (its last record) sees only what comes after.
        let cursor = c.last_seq;
        assert!(new.records_after(cursor, 10).records.is_empty());
        new.publish(b"a", b"after", None, None, true, 200, &l)
            .unwrap();
        let b = new.records_after(cursor, 10);
        assert_eq!(b.lost, 0);
        assert_eq!(b.records.len(), 1);
        match &b.records[0] {
            Record::Message { seq, .. } => assert_eq!(*seq, cursor + 1),
            r => panic!("{r:?}"),
        }
        assert_eq!(new.counters().published_messages, 6);
        // An older cursor counts what was lost with the old store.
        assert_eq!(new.records_after(cursor - 2, 10).lost, 2);
    }

    #[test]
    fn restored_subscribers_are_counted_without_limits_or_events() {
        let l = Limits {
            max_subscribers_per_channel: Some(1),
            events_channel_id: Some(b"ev".to_vec()),
            ..limits()
        };
        let mut s = Store::new_in(Global, 0, &l).unwrap();
        s.restore_subscribers(b"x", 3, 2, 10, &l).unwrap();
        s.restore_subscribers(b"x", 4, 1, 10, &l).unwrap();
        let info = s.channel(b"x").unwrap();
        assert_eq!(info.subscribers, 3);
        let mut slots = s.channel_slots(b"x");
        slots.sort();
        assert_eq!(slots, vec![(3, 2), (4, 1)]);
        // No client_subscribed event was queued on the events channel.
        assert_eq!(s.channel(b"ev").map(|c| c.stored_messages), Some(0));
    }

    #[test]
    fn a_rejoining_worker_keeps_its_place_in_the_log() {
        let l = limits();
        let mut s = Store::new_in(Global, 0, &l).unwrap();
        s.carry_over(&Carry {
            last_seq: 10,
            ..s.carry()
        });
        s.publish(b"a", b"x", None, None, true, 1, &l).unwrap();
        s.rejoin_worker(0, 7, Some(4), 3, 1, &l).unwrap();
        s.rejoin_worker(1, 8, None, 0, 1, &l).unwrap();
        let w = s.workers();
        // Below the rebuilt log's floor: raised to it; no cursor: the end of the log.
        assert_eq!((w[0].slot, w[0].cursor, w[0].subscribers), (0, 10, 3));
        assert_eq!((w[1].slot, w[1].cursor, w[1].subscribers), (1, 11, 0));
        assert_eq!(s.counters().subscribers, 3);
    }

    #[test]
    fn the_marks_say_what_the_next_locker_must_do() {
        assert_eq!(Found::read(0, 0, 0), Found::Clean);
        assert_eq!(
            Found::read(0, 3, 0),
            Found::Clean,
            "a stale slot means nothing"
        );
        assert_eq!(
            Found::read(42, 3, 0),
            Found::DiedInside { pid: 42, slot: 3 }
        );
        assert_eq!(Found::read(0, 0, POISONED), Found::Panicked);
        assert_eq!(
            Found::read(42, 3, POISONED),
            Found::DiedInside { pid: 42, slot: 3 }
        );
        assert_eq!(Found::read(42, 3, UNUSABLE), Found::Unusable);
        let l = Found::read(42, 3, 0).rebuilt_line(1, 2, 10, 20);
        assert!(l.contains("worker 42 (process slot 3) died"), "{l}");
        assert!(l.contains("the store was rebuilt"), "{l}");
        assert!(l.contains("10 channel(s) and 20 stored message(s)"), "{l}");
        assert!(Found::Panicked.rebuilt_line(1, 1, 0, 0).contains("a panic"));
    }

    #[test]
    fn a_refill_stores_without_delivering_or_counting_again() {
        let l = limits();
        let mut s = Store::new_in(Global, 0, &l).unwrap();
        s.carry_over(&Carry {
            published: 3,
            last_seq: 10,
            ..s.carry()
        });
        assert!(s.refill_broker(b"r", 0, b"a", b"", b"", 5, 6, &l).unwrap());
        assert!(s.refill_broker(b"r", 1, b"b", b"", b"", 5, 6, &l).unwrap());
        // Already there: not stored twice.
        assert!(!s.refill_broker(b"r", 1, b"b", b"", b"", 5, 6, &l).unwrap());
        assert!(s.refill_broker(b"q", 2, b"c", b"", b"", 5, 6, &l).unwrap());
        let c = s.counters();
        assert_eq!((c.published_messages, c.stored_messages), (3, 3));
        // Outside the delivery log: a worker reading from before gets nothing.
        let b = s.records_after(10, 10);
        assert!(b.records.is_empty(), "{b:?}");
        // Ids are the stream's (offset + 1), as before the crash.
        assert_eq!(s.channel(b"r").unwrap().published_messages, 2);
        // A delete read again: the channel's stored messages go, quietly.
        s.refill_delete(b"r", 7).unwrap();
        assert_eq!(s.channel(b"r").map(|c| c.stored_messages), Some(0));
        assert_eq!(s.counters().stored_messages, 1);
        assert!(s.records_after(10, 10).records.is_empty());
        s.refill_delete(b"unknown", 7).unwrap();
    }

    #[test]
    fn a_dead_workers_pid_reused_by_a_later_worker_does_not_pin_the_log() {
        let l = limits();
        let mut s = Store::new_in(Global, 0, &l).unwrap();
        s.register_worker(0, 100, 10, &l).unwrap();
        s.add_subscriber(b"a", 0, 10, &l).unwrap();
        // Worker 100 died without unregistering; the kernel gave pid 100 to a worker that
        // started later in slot 3. The pid is alive, but no longer slot 0's.
        s.register_worker(3, 100, 20, &l).unwrap();
        let r = s.gc(21, &l, &|_| true);
        assert_eq!(r.dead_workers, vec![100]);
        let w = s.workers();
        assert_eq!((w.len(), w[0].slot), (1, 3));
        assert_eq!(s.channel(b"a").map_or(0, |c| c.subscribers), 0);
        // The live one stays.
        assert!(s.gc(22, &l, &|_| true).dead_workers.is_empty());
    }

    #[test]
    fn none_offsets_survive_the_carry() {
        let l = limits();
        let s = Store::new_in(Global, 0, &l).unwrap();
        let c = s.carry();
        let mut n = Store::new_in(Global, 0, &l).unwrap();
        n.carry_over(&c);
        assert_eq!(n.broker_offset(), None);
    }
}
