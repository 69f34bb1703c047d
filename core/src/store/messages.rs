//! Publishing, stored messages and the events channel.

use allocator_api2::alloc::Allocator;
use allocator_api2::vec::Vec as AVec;

use super::pool::{Fifo, Pool, Slot};
use super::record::{pack, MsgNode, MSG};
use super::{copy, Limits, Published, Store, StoreError, StoredMessage, OOM};
use crate::resume::{old_messages_start, Cursor, MessageMeta};

impl<A: Allocator + Clone> Store<A> {
    #[allow(clippy::too_many_arguments)]
    pub fn publish(
        &mut self,
        id: &[u8],
        text: &[u8],
        event_id: Option<&[u8]>,
        event_type: Option<&[u8]>,
        store: bool,
        now: i64,
        limits: &Limits,
    ) -> Result<Published, StoreError> {
        if limits.events_channel_id.as_deref() == Some(id) {
            return Err(StoreError::EventsChannel);
        }
        let (h, data) = match self.find(id) {
            Some(h) if self.chans.get(h).events => return Err(StoreError::EventsChannel),
            Some(h) => {
                // Publishing leaves the delete reserve alone.
                self.hold_reserve(limits)?;
                (h, self.message_room(1, id, text, event_id, event_type)?)
            }
            None => {
                // The message's memory first (and a record for the channel_created event): a
                // publish refused for lack of memory creates no channel.
                self.may_create(id, limits, false)?;
                let data = self.message_room(2, id, text, event_id, event_type)?;
                self.create_channel(id, now, limits, false)?;
                (self.find(id).ok_or(OOM)?, data)
            }
        };
        self.publish_packed(h, data, store, now, limits)
    }

    /// A message's packed bytes, with `nodes` message nodes and log index entries reserved.
    fn message_room(
        &mut self,
        nodes: usize,
        id: &[u8],
        text: &[u8],
        event_id: Option<&[u8]>,
        event_type: Option<&[u8]>,
    ) -> Result<AVec<u8, A>, StoreError> {
        let data = pack(&self.alloc, self.clock_ms, id, event_id, event_type, text)?;
        self.msgs.reserve(nodes)?;
        self.index.reserve(self.last_seq + nodes as u64)?;
        Ok(data)
    }

    /// The stored messages of `id` that a subscriber resuming at `cursor` gets, oldest first.
    /// The copies are made under the zone lock: Err when the process heap cannot hold them.
    pub fn old_messages(
        &self,
        id: &[u8],
        cursor: &Cursor,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let Some(h) = self.find(id) else {
            return Ok(Vec::new());
        };
        let queue = self.chans.get(h).queue;
        if queue.len == 0 {
            return Ok(Vec::new());
        }
        let want_eid = cursor
            .last_event_id
            .as_deref()
            .is_some_and(|e| !e.is_empty());
        let mut metas: Vec<MessageMeta> = copy::with_capacity(queue.len as usize)?;
        for m in queue.iter(&self.msgs) {
            let m = self.msgs.get(m);
            metas.push(MessageMeta {
                time: m.time,
                tag: m.tag,
                event_id: match m.event_id() {
                    Some(eid) if want_eid => Some(copy::bytes(eid)?),
                    _ => None,
                },
            });
        }
        let Some(start) = old_messages_start(&metas, cursor) else {
            return Ok(Vec::new());
        };
        let mut out = copy::with_capacity((queue.len as usize).saturating_sub(start))?;
        for m in queue.iter(&self.msgs).skip(start) {
            out.push(self.msgs.get(m).stored()?);
        }
        Ok(out)
    }

    /// Sets the millisecond clock that the next publishes record as their publish time (the
    /// records carry it as `published_ms`, for delivery-latency metrics).
    pub fn set_clock_ms(&mut self, ms: i64) {
        self.clock_ms = ms;
    }

    /// Publishes into an existing channel (events channel included).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn publish_inner(
        &mut self,
        id: &[u8],
        text: &[u8],
        event_id: Option<&[u8]>,
        event_type: Option<&[u8]>,
        store: bool,
        now: i64,
        limits: &Limits,
    ) -> Result<Published, StoreError> {
        let Some(h) = self.find(id) else {
            return Err(OOM);
        };
        let data = self.message_room(1, id, text, event_id, event_type)?;
        self.publish_packed(h, data, store, now, limits)
    }

    /// Publishes `data` (packed by `message_room`) into channel `h`.
    fn publish_packed(
        &mut self,
        h: u32,
        data: AVec<u8, A>,
        store: bool,
        now: i64,
        limits: &Limits,
    ) -> Result<Published, StoreError> {
        // Reserved by `message_room` (again in case an event took the room).
        self.msgs.reserve(1)?;
        self.index.reserve(self.last_seq + 1)?;

        // Commit (nothing below allocates).
        let time = now.max(self.last_time);
        let tag = if time == self.last_time {
            self.last_tag + 1
        } else {
            1
        };
        self.last_time = time;
        self.last_tag = tag;
        let ch = self.chans.get_mut(h);
        let mid = ch.last_id + 1;
        ch.last_id = mid;
        ch.last_time = time;
        ch.last_tag = tag;
        ch.inactive_at = now.saturating_add(limits.channel_inactivity_time);
        if !ch.events {
            self.published += 1;
        }
        let seq = self.add_record(h, mid, time, tag, MSG, data, store, now, limits)?;
        Ok(Published {
            seq,
            id: mid,
            time,
            tag,
        })
    }

    /// Adds a message record of channel `h` (its node and log index entry reserved): into the
    /// log, then into the channel's queue (`store`, trimmed to the channel's limit) or the
    /// trash. Returns its seq. Never allocates.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn add_record(
        &mut self,
        h: u32,
        mid: i64,
        time: i64,
        tag: u64,
        kind: u8,
        data: AVec<u8, A>,
        store: bool,
        now: i64,
        limits: &Limits,
    ) -> Result<u64, StoreError> {
        let mut node = MsgNode::vacant(&self.alloc);
        node.seq = self.last_seq + 1;
        node.id = mid;
        node.time = time;
        node.tag = tag;
        node.kind = kind;
        node.data = data;
        let m = self.msgs.insert(node)?; // reserved by the caller: cannot fail
        self.last_seq += 1;
        let seq = self.last_seq;
        self.index.set(seq, m);
        let deadline = now.saturating_add(limits.trash_delay());
        if !store {
            self.trash_record(m, deadline);
            return Ok(seq);
        }
        let events = self.chans.get(h).events;
        self.msgs.get_mut(m).when = time.max(now).saturating_add(limits.message_ttl);
        let mut q = self.chans.get(h).queue;
        q.push(&mut self.msgs, m);
        self.queued_total += 1;
        if !events {
            self.stored += 1;
        }
        self.chans.get_mut(h).queue = q;
        let max = limits.max_messages_stored_per_channel.unwrap_or(u64::MAX);
        self.unqueue(h, deadline, |_, q| u64::from(q.len) > max);
        Ok(seq)
    }

    /// Moves channel `h`'s stored messages to the trash (to be freed at `deadline`), oldest
    /// first, while `more(messages, queue)`; returns how many moved. Never allocates.
    pub(super) fn unqueue(
        &mut self,
        h: u32,
        deadline: i64,
        more: impl Fn(&Pool<MsgNode<A>, A>, &Fifo) -> bool,
    ) -> u64 {
        let mut q = self.chans.get(h).queue;
        let events = self.chans.get(h).events;
        let mut n = 0;
        while more(&self.msgs, &q) {
            let Some(m) = q.pop(&mut self.msgs) else {
                break;
            };
            self.queued_total -= 1;
            if !events {
                self.stored -= 1;
            }
            self.trash_record(m, deadline);
            n += 1;
        }
        self.chans.get_mut(h).queue = q;
        n
    }

    /// Appends message node `m` to the trash (linked through the node: never allocates).
    pub(super) fn trash_record(&mut self, m: u32, deadline: i64) {
        self.msgs.get_mut(m).when = deadline;
        self.trash.push(&mut self.msgs, m);
        self.messages_in_trash += 1;
    }

    /// Publishes an event into the events channel, if there is one. Failures are counted.
    pub(super) fn emit(&mut self, ty: &str, channel: &[u8], now: i64, limits: &Limits) {
        let Some(eid) = limits.events_channel_id.as_deref() else {
            return;
        };
        if eid == channel {
            return;
        }
        if !self.find(eid).is_some_and(|h| self.chans.get(h).events) {
            return;
        }
        // Under the zone lock: reserved fallibly (an escaped id is at most 6 bytes per byte);
        // an event that does not fit is counted as dropped.
        let mut text = Vec::new();
        let cap = 34usize
            .saturating_add(ty.len())
            .saturating_add(channel.len().saturating_mul(6));
        if text.try_reserve_exact(cap).is_err() {
            self.dropped_events += 1;
            return;
        }
        text.extend_from_slice(b"{\"type\": \"");
        text.extend_from_slice(ty.as_bytes());
        text.extend_from_slice(b"\", \"channel\": \"");
        crate::escape::json_escape_into(&mut text, channel);
        text.extend_from_slice(b"\"}");
        if self
            .publish_inner(eid, &text, None, Some(ty.as_bytes()), true, now, limits)
            .is_err()
        {
            self.dropped_events += 1;
        }
    }
}
