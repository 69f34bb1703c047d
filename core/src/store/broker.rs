//! Messages consumed from a broker: idempotent inserts by stream offset, claimed control
//! messages, and the host numbers of exchange messages.

use allocator_api2::alloc::Allocator;

use super::pool::{link_through, Slot, NIL};
use super::record::{pack, BROKER, MSG};
use super::table::Hashed;
use super::{Limits, Store, StoreError, OOM};

/// One remembered exchange message (56 bytes): found through the exchange keys' table,
/// forgotten at `expires` (the keys are on a FIFO in the order they were drawn).
pub(super) struct XNode {
    pub(super) key: [u64; 2],
    pub(super) off: u64,
    pub(super) expires: i64,
    pub(super) occurrence: u32,
    pub(super) hash: u32,
    /// Its bucket's chain.
    pub(super) chain: u32,
    /// The FIFO of keys by expiry (or the free list).
    pub(super) later: u32,
    /// 1 while in use.
    pub(super) used: u32,
    pub(super) _pad: u32,
}

impl<A: Allocator> Slot<A> for XNode {
    fn vacant(_: &A) -> Self {
        XNode {
            key: [0; 2],
            off: 0,
            expires: 0,
            occurrence: 0,
            hash: 0,
            chain: NIL,
            later: NIL,
            used: 0,
            _pad: 0,
        }
    }
    fn is_vacant(&self) -> bool {
        self.used == 0
    }
    link_through!(later);
}

impl Hashed for XNode {
    fn hash(&self) -> u32 {
        self.hash
    }
    fn chain(&self) -> u32 {
        self.chain
    }
    fn set_chain(&mut self, h: u32) {
        self.chain = h;
    }
}

fn split(key: u128) -> [u64; 2] {
    [key as u64, (key >> 64) as u64]
}

impl<A: Allocator + Clone> Store<A> {
    /// The highest broker offset inserted (a starting worker resumes after it).
    pub fn broker_offset(&self) -> Option<u64> {
        self.broker_offset
    }

    /// Inserts a message consumed from the broker, idempotently by stream offset: the first
    /// worker to see an offset stores it (id and tag = offset + 1, since push-stream ids start
    /// at 1; time = `time`); the others get the stored message's time and tag back. With `to_log`
    /// false (every worker consumes) the message is not part of the host delivery log
    /// (`records_after` skips it); with `to_log` true (one worker consumes for the host) it is,
    /// once, like an HTTP publish. Returns the message's (time, tag).
    #[allow(clippy::too_many_arguments)]
    pub fn insert_broker(
        &mut self,
        id: &[u8],
        offset: u64,
        text: &[u8],
        event_id: &[u8],
        event_type: &[u8],
        time: i64,
        store: bool,
        to_log: bool,
        now: i64,
        limits: &Limits,
    ) -> Result<(i64, u64), StoreError> {
        if limits.events_channel_id.as_deref() == Some(id) {
            return Err(StoreError::EventsChannel);
        }
        let off = i64::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(1))
            .ok_or(OOM)?;
        let tag = off as u64;
        match self.find(id) {
            Some(h) if self.chans.get(h).events => return Err(StoreError::EventsChannel),
            Some(h) if off <= self.chans.get(h).last_id => {
                let q = self.chans.get(h).queue;
                let found = q
                    .iter(&self.msgs)
                    .map(|m| self.msgs.get(m))
                    .find(|m| m.id == off)
                    .map(|m| (m.time, m.tag));
                return Ok(found.unwrap_or((time, tag)));
            }
            Some(_) => {}
            None => self.create_channel(id, now, limits, false)?,
        }
        // Inserting leaves the delete reserve alone.
        self.hold_reserve(limits)?;
        let h = self.find(id).ok_or(OOM)?;
        // Reserve everything first.
        let ms = if to_log { self.clock_ms } else { 0 };
        let eid = (!event_id.is_empty()).then_some(event_id);
        let ety = (!event_type.is_empty()).then_some(event_type);
        let data = pack(&self.alloc, ms, id, eid, ety, text)?;
        self.msgs.reserve(1)?;
        self.index.reserve(self.last_seq + 1)?;
        // Commit (nothing below allocates).
        let ch = self.chans.get_mut(h);
        ch.last_id = off;
        ch.last_time = time;
        ch.last_tag = tag;
        ch.inactive_at = now.saturating_add(limits.channel_inactivity_time);
        self.published += 1;
        self.broker_offset = Some(self.broker_offset.map_or(offset, |b| b.max(offset)));
        let kind = if to_log { MSG } else { BROKER };
        self.add_record(h, off, time, tag, kind, data, store, now, limits)?;
        Ok((time, tag))
    }

    /// Claims a control message (a channel delete) consumed from the stream at `offset`: true
    /// for the first worker of the host to present it, false for every later one and for
    /// anything at or below an offset already claimed (the first worker to reach an offset is
    /// the one furthest ahead, so it applies the operation in stream order).
    pub fn claim_broker_op(&mut self, offset: u64) -> bool {
        if self.ops_mark.is_some_and(|m| offset <= m) {
            return false;
        }
        self.ops_mark = Some(offset);
        self.broker_offset = Some(self.broker_offset.map_or(offset, |b| b.max(offset)));
        true
    }

    /// Exchange source (each worker consumes its own copy of every message from its own
    /// queue): the host-wide sequence number of the `occurrence`-th message with dedupe `key`.
    /// The first worker to present it draws the next number (`true`); the others get the same
    /// number back (`false`) for `window` seconds. The number is then used like a stream offset
    /// (`insert_broker`, id = number + 1). If the zone is too full to remember the key, the
    /// message still gets a fresh number (it is delivered; a later worker may store it again).
    pub fn exchange_offset(
        &mut self,
        key: u128,
        occurrence: u32,
        now: i64,
        window: i64,
    ) -> (u64, bool) {
        use core::hash::BuildHasher;
        let hv = self.hasher.hash_one((key, occurrence)) as u32;
        let k = split(key);
        let mut h = self.xtable.head(self.xtable.bucket(hv));
        while h != NIL {
            let x = self.xnodes.get(h);
            if x.hash == hv && x.key == k && x.occurrence == occurrence {
                return (x.off, false);
            }
            h = x.chain;
        }
        // Above any offset already used (e.g. a stream source before a reload).
        let o = self
            .next_xoff
            .max(self.broker_offset.map_or(0, |b| b.saturating_add(1)));
        self.next_xoff = o.saturating_add(1);
        if self.xtable.reserve().is_ok() && self.xnodes.reserve(1).is_ok() {
            let node = XNode {
                key: k,
                off: o,
                expires: now.saturating_add(window),
                occurrence,
                hash: hv,
                chain: NIL,
                later: NIL,
                used: 1,
                _pad: 0,
            };
            if let Ok(x) = self.xnodes.insert(node) {
                self.xtable.insert(&mut self.xnodes, x);
                self.xorder.push(&mut self.xnodes, x);
                self.xtable.grow(&mut self.xnodes);
            }
        }
        (o, true)
    }

    /// Forgets the exchange keys whose window has passed (never allocates).
    /// Forgets at most `max` exchange keys whose window passed, oldest first.
    pub(super) fn expire_exchange_keys(&mut self, now: i64, max: usize) {
        let mut budget = max;
        while budget > 0
            && self.xorder.head != NIL
            && self.xnodes.get(self.xorder.head).expires <= now
        {
            budget -= 1;
            if let Some(x) = self.xorder.pop(&mut self.xnodes) {
                self.xtable.remove(&mut self.xnodes, x);
                self.xnodes.remove(x);
            }
        }
    }

    /// Exchange keys remembered now (statistics, tests).
    pub fn exchange_keys(&self) -> usize {
        self.xtable.len()
    }
}
