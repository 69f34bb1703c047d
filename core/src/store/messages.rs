//! Publishing, stored messages and the events channel.

use allocator_api2::alloc::Allocator;
use allocator_api2::boxed::Box as ABox;

use super::keys::KeyRef;
use super::record::{concat_in, Msg, QEntry, TrashEntry};
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
        match self.channels.get(&KeyRef(id)) {
            Some(c) if c.events => return Err(StoreError::EventsChannel),
            Some(_) => {}
            None => self.create_channel(id, now, limits, false)?,
        }
        // Publishing leaves the delete reserve alone.
        self.hold_reserve(limits)?;
        self.publish_inner(id, text, event_id, event_type, store, now, limits)
    }

    /// The stored messages of `id` that a subscriber resuming at `cursor` gets, oldest first.
    /// The copies are made under the zone lock: Err when the process heap cannot hold them.
    pub fn old_messages(
        &self,
        id: &[u8],
        cursor: &Cursor,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let Some(ch) = self.channels.get(&KeyRef(id)) else {
            return Ok(Vec::new());
        };
        if ch.queue.is_empty() {
            return Ok(Vec::new());
        }
        let want_eid = cursor
            .last_event_id
            .as_deref()
            .is_some_and(|e| !e.is_empty());
        let mut metas: Vec<MessageMeta> = copy::with_capacity(ch.queue.len())?;
        for e in ch.queue.iter() {
            metas.push(match self.msgs.get(&e.seq) {
                Some(m) => MessageMeta {
                    time: m.time,
                    tag: m.tag,
                    event_id: match m.event_id() {
                        Some(eid) if want_eid => Some(copy::bytes(eid)?),
                        _ => None,
                    },
                },
                None => MessageMeta::default(),
            });
        }
        let Some(start) = old_messages_start(&metas, cursor) else {
            return Ok(Vec::new());
        };
        let mut out = copy::with_capacity(ch.queue.len() - start)?;
        for e in ch.queue.iter().skip(start) {
            if let Some(m) = self.msgs.get(&e.seq) {
                out.push(m.stored()?);
            }
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
        if self.channels.get(&KeyRef(id)).is_none() {
            return Err(OOM);
        }
        // Reserve everything first.
        let data = concat_in(
            &self.alloc,
            &[
                id,
                event_id.unwrap_or_default(),
                event_type.unwrap_or_default(),
                text,
            ],
        )?;
        let msg = Msg {
            seq: 0,
            id: 0,
            time: 0,
            tag: 0,
            broker: false,
            published_ms: 0,
            chan_len: id.len(),
            eid_len: event_id.map(<[u8]>::len),
            etype_len: event_type.map(<[u8]>::len),
            data,
        };
        let mut boxed = ABox::try_new_in(msg, self.alloc.clone()).map_err(|_| OOM)?;
        self.msgs.try_reserve(1).map_err(|_| OOM)?;
        // The new message ends up queued or trashed: keep room for it in the trash.
        self.trash.try_reserve(self.queued_total + 1)?;
        let ch = self.channels.get_mut(&KeyRef(id)).ok_or(OOM)?;
        if store {
            ch.queue.try_reserve(1)?;
        }

        // Commit (nothing below allocates).
        let time = now.max(self.last_time);
        let tag = if time == self.last_time {
            self.last_tag + 1
        } else {
            1
        };
        self.last_time = time;
        self.last_tag = tag;
        self.last_seq += 1;
        let seq = self.last_seq;
        let mid = ch.last_id + 1;
        ch.last_id = mid;
        ch.last_time = time;
        ch.last_tag = tag;
        ch.inactive_at = now.saturating_add(limits.channel_inactivity_time);
        let events = ch.events;
        boxed.seq = seq;
        boxed.id = mid;
        boxed.time = time;
        boxed.tag = tag;
        boxed.published_ms = self.clock_ms;
        self.msgs.insert(seq, boxed);
        if !events {
            self.published += 1;
        }
        let deadline = now.saturating_add(limits.trash_delay());
        if store {
            let expires = time.saturating_add(limits.message_ttl);
            let _ = ch.queue.push_back(QEntry { seq, expires }); // room reserved above
            self.queued_total += 1;
            if !events {
                self.stored += 1;
            }
            let max = limits.max_messages_stored_per_channel.unwrap_or(u64::MAX);
            while ch.queue.len() as u64 > max {
                let Some(old) = ch.queue.pop_front() else {
                    break;
                };
                self.queued_total -= 1;
                if !events {
                    self.stored -= 1;
                }
                let _ = self.trash.push_back(TrashEntry {
                    seq: old.seq,
                    deadline,
                });
                self.messages_in_trash += 1;
            }
        } else {
            self.trash_record(seq, deadline);
        }
        Ok(Published {
            seq,
            id: mid,
            time,
            tag,
        })
    }

    /// Appends a message to the trash (room is guaranteed by the capacity invariant).
    pub(super) fn trash_record(&mut self, seq: u64, deadline: i64) {
        let _ = self.trash.push_back(TrashEntry { seq, deadline });
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
        if !self.channels.get(&KeyRef(eid)).is_some_and(|c| c.events) {
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
