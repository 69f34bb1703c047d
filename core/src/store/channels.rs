//! Channels: creation, lookup, listing and deletion.

use allocator_api2::alloc::Allocator;
use allocator_api2::boxed::Box as ABox;
use allocator_api2::vec::Vec as AVec;

use super::keys::{Key, KeyRef};
use super::record::{concat_in, Msg, QEntry};
use super::ring::Ring;
use super::subscribers::Subs;
use super::{ChannelInfo, Limits, Store, StoreError, OOM, TRASH_DELAY};
use crate::channel_path::is_wildcard;

pub(super) struct Channel<A: Allocator + Clone> {
    /// Creation order (for listings).
    pub(super) order: u64,
    pub(super) queue: Ring<QEntry, A>,
    pub(super) last_id: i64,
    pub(super) last_time: i64,
    pub(super) last_tag: u64,
    pub(super) subs: Subs<A>,
    /// Inactivity deadline.
    pub(super) inactive_at: i64,
    pub(super) wildcard: bool,
    pub(super) events: bool,
}

/// A deleted channel whose subscribers are still being told.
pub(super) struct Deleting<A: Allocator> {
    pub(super) id: Key<A>,
    pub(super) subs: Subs<A>,
}

impl<A: Allocator + Clone> Store<A> {
    /// Creates the events channel if `limits.events_channel_id` is set and it does not exist
    /// yet (for example when the option was only enabled on a reload; the C module crashes
    /// there). No-op otherwise. Not subject to the channel limits; counted in `channels`.
    pub fn ensure_events_channel(&mut self, now: i64, limits: &Limits) -> Result<(), StoreError> {
        if let Some(eid) = limits.events_channel_id.as_deref() {
            match self.channels.get_mut(&KeyRef(eid)) {
                Some(ch) => ch.events = true,
                None => self.create_channel(eid, now, limits, true)?,
            }
        }
        Ok(())
    }

    pub fn channel(&self, id: &[u8]) -> Option<ChannelInfo> {
        self.channels.get(&KeyRef(id)).map(|c| info(id, c))
    }

    pub fn get_or_create(
        &mut self,
        id: &[u8],
        now: i64,
        limits: &Limits,
    ) -> Result<ChannelInfo, StoreError> {
        if self.channels.get(&KeyRef(id)).is_none() {
            let events = limits.events_channel_id.as_deref() == Some(id);
            self.create_channel(id, now, limits, events)?;
        }
        self.channel(id).ok_or(OOM)
    }

    pub fn delete(
        &mut self,
        id: &[u8],
        text: &[u8],
        now: i64,
        limits: &Limits,
    ) -> Result<bool, StoreError> {
        let Some(ch) = self.channels.get(&KeyRef(id)) else {
            return Ok(false);
        };
        if ch.events {
            return Err(StoreError::EventsChannel);
        }
        let subscribers = ch.subs.total;
        // Reserve everything first.
        let data = concat_in(&self.alloc, &[id, text])?;
        let notice = Msg {
            seq: 0,
            id: -2,
            time: 0,
            tag: 0,
            deleted_notice: true,
            broker: false,
            published_ms: 0,
            chan_len: id.len(),
            eid_len: None,
            etype_len: None,
            data,
        };
        let mut boxed = ABox::try_new_in(notice, self.alloc.clone()).map_err(|_| OOM)?;
        self.msgs.try_reserve(1).map_err(|_| OOM)?;
        self.trash
            .try_reserve(self.queued_total + 1)
            .map_err(|_| OOM)?;
        if subscribers > 0 {
            self.deleting.try_reserve(1).map_err(|_| OOM)?;
        }
        // Commit (nothing below allocates).
        let Some((key, mut ch)) = self.channels.remove_entry(&KeyRef(id)) else {
            return Ok(false);
        };
        self.unlink_counts(&ch);
        let deadline = now.saturating_add(TRASH_DELAY);
        for e in ch.queue.iter() {
            self.queued_total -= 1;
            self.trash_record(e.seq, deadline, true);
            self.stored -= 1;
        }
        let subs = core::mem::replace(&mut ch.subs, Subs::new_in(self.alloc.clone()));
        drop(ch);
        self.last_seq += 1;
        boxed.seq = self.last_seq;
        self.msgs.insert(self.last_seq, boxed);
        self.trash_record(self.last_seq, deadline, false);
        if subscribers > 0 {
            self.deleting.push(Deleting { id: key, subs });
        } else {
            drop(key);
            self.channel_to_trash(now);
            self.emit("channel_destroyed", id, now, limits);
        }
        Ok(true)
    }

    pub fn channels(&self, prefix: Option<&[u8]>) -> Vec<ChannelInfo> {
        let mut v: Vec<(u64, ChannelInfo)> = self
            .channels
            .iter()
            .filter(|(k, _)| k.0.starts_with(prefix.unwrap_or_default()))
            .map(|(k, c)| (c.order, info(&k.0, c)))
            .collect();
        v.sort_unstable_by_key(|(o, _)| *o);
        v.into_iter().map(|(_, i)| i).collect()
    }

    pub(super) fn create_channel(
        &mut self,
        id: &[u8],
        now: i64,
        limits: &Limits,
        events: bool,
    ) -> Result<(), StoreError> {
        let wildcard = is_wildcard(id, limits.wildcard_prefix.as_deref());
        if !events {
            let (count, max) = if wildcard {
                (self.n_wildcard, limits.max_number_of_wildcard_channels)
            } else {
                (self.n_channels, limits.max_number_of_channels)
            };
            if max.is_some_and(|m| count >= m) {
                return Err(StoreError::ChannelsLimit);
            }
        }
        let key = Key(concat_in(&self.alloc, &[id])?);
        self.channels.try_reserve(1).map_err(|_| OOM)?;
        self.chan_trash
            .try_reserve(self.channels.len() + self.deleting.len() + 1)?;
        let ch = Channel {
            order: self.next_order,
            queue: Ring::new_in(self.alloc.clone()),
            last_id: 0,
            last_time: 0,
            last_tag: 0,
            subs: Subs::new_in(self.alloc.clone()),
            inactive_at: now.saturating_add(limits.channel_inactivity_time),
            wildcard,
            events,
        };
        self.next_order += 1;
        self.channels.insert(key, ch);
        if wildcard {
            self.n_wildcard += 1;
        } else {
            self.n_channels += 1;
        }
        if !events {
            self.emit("channel_created", id, now, limits);
        }
        Ok(())
    }

    pub(super) fn channel_to_trash(&mut self, now: i64) {
        let _ = self.chan_trash.push_back(now.saturating_add(TRASH_DELAY));
    }

    pub(super) fn unlink_counts(&mut self, ch: &Channel<A>) {
        if ch.wildcard {
            self.n_wildcard -= 1;
        } else {
            self.n_channels -= 1;
        }
    }

    /// The deleted channel `deleting[i]` has no subscriber left: it goes to the channel trash.
    pub(super) fn finish_deleting(&mut self, i: usize, now: i64, limits: &Limits) {
        let d = self.deleting.swap_remove(i);
        if self.deleting.is_empty() {
            self.deleting = AVec::new_in(self.alloc.clone());
        }
        self.channel_to_trash(now);
        self.emit("channel_destroyed", &d.id.0, now, limits);
    }
}

pub(super) fn info<A: Allocator + Clone>(id: &[u8], c: &Channel<A>) -> ChannelInfo {
    ChannelInfo {
        id: id.to_vec(),
        published_messages: c.last_id.max(0) as u64,
        stored_messages: c.queue.len() as u64,
        subscribers: c.subs.total,
        wildcard: c.wildcard,
        events: c.events,
        last_time: c.last_time,
        last_tag: c.last_tag,
    }
}
