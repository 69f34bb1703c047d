//! Messages consumed from a broker: idempotent inserts by stream offset, claimed control
//! messages, and the host numbers of exchange messages.

use std::collections::hash_map::RandomState;

use allocator_api2::alloc::Allocator;
use hashbrown::HashMap;

use super::record::{pack, BROKER, MSG};
use super::{Limits, Store, StoreError, OOM};

/// One remembered exchange message: forgotten at `expires`.
#[derive(Clone, Copy, Default)]
pub(super) struct XEntry {
    pub(super) expires: i64,
    pub(super) key: u128,
    pub(super) occurrence: u32,
}

pub(super) type XKeys<A> = HashMap<(u128, u32), u64, RandomState, A>;

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
        if let Some(&o) = self.xkeys.get(&(key, occurrence)) {
            return (o, false);
        }
        // Above any offset already used (e.g. a stream source before a reload).
        let o = self
            .next_xoff
            .max(self.broker_offset.map_or(0, |b| b.saturating_add(1)));
        self.next_xoff = o.saturating_add(1);
        if self.xkeys.try_reserve(1).is_ok() && self.xorder.try_reserve(1).is_ok() {
            self.xkeys.insert((key, occurrence), o);
            let _ = self.xorder.push_back(XEntry {
                expires: now.saturating_add(window),
                key,
                occurrence,
            });
        }
        (o, true)
    }

    /// Exchange keys remembered now (statistics, tests).
    pub fn exchange_keys(&self) -> usize {
        self.xkeys.len()
    }
}
