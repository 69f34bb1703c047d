//! Channels: creation, lookup, listing and deletion.

use allocator_api2::alloc::Allocator;
use allocator_api2::boxed::Box as ABox;
use allocator_api2::vec::Vec as AVec;

use super::keys::{Key, KeyRef};
use super::record::{concat_in, QEntry};
use super::ring::Ring;
use super::subscribers::Subs;
use super::{copy, ChannelInfo, Limits, Store, StoreError, DELETE_HOLD, OOM};
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

/// A deleted channel, counted in `channels_in_delete`, with its deleted-channel notice (the
/// log record `seq`): it goes to the channel trash once its subscribers have been told, every
/// worker has read the notice and `ready_at` has passed (see [`DELETE_HOLD`]). One small
/// allocation per delete (boxed, its text apart), and no growth of the message map or the
/// trash, so that a delete still fits when publishing has filled the zone.
pub(super) struct Deleting<A: Allocator> {
    pub(super) id: Key<A>,
    pub(super) subs: Subs<A>,
    pub(super) ready_at: i64,
    pub(super) seq: u64,
    pub(super) text: AVec<u8, A>,
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
        // One small copy (the id, bounded by the channel id length limit); the listings,
        // which copy many, are fallible.
        self.channels.get(&KeyRef(id)).map(|c| info(id.to_vec(), c))
    }

    /// A channel's last publish time and tag (no copy: usable under the lock).
    pub fn last_time_tag(&self, id: &[u8]) -> Option<(i64, u64)> {
        self.channels
            .get(&KeyRef(id))
            .map(|c| (c.last_time, c.last_tag))
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

    /// Deletes a live channel: its id is free at once, its stored messages go to the trash,
    /// the deleted-channel notice (with `text`) goes into the delivery log for its
    /// subscribers, and the channel is counted in `channels_in_delete` until [`Store::gc`]
    /// moves it to the trash (after its subscribers left and [`DELETE_HOLD`]), emitting
    /// `channel_destroyed` then. Ok(false): no such channel. A delete may use the delete
    /// reserve (see `reserve`) when the zone is otherwise full.
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
        // Reserve everything first (the stored messages move into the trash, which has room
        // for everything queued); when the zone is full, once more with the reserve freed.
        let mut entry = match self.delete_entry(text) {
            Ok(e) => e,
            Err(_) if self.release_reserve() => self.delete_entry(text)?,
            Err(e) => return Err(e),
        };
        // Commit (nothing below allocates).
        let Some((key, mut ch)) = self.channels.remove_entry(&KeyRef(id)) else {
            return Ok(false);
        };
        self.unlink_counts(&ch);
        let deadline = now.saturating_add(limits.trash_delay());
        for e in ch.queue.iter() {
            self.queued_total -= 1;
            self.trash_record(e.seq, deadline);
            self.stored -= 1;
        }
        entry.subs = core::mem::replace(&mut ch.subs, Subs::new_in(self.alloc.clone()));
        drop(ch);
        self.last_seq += 1;
        entry.id = key;
        entry.seq = self.last_seq;
        entry.ready_at = now.saturating_add(DELETE_HOLD);
        self.deleting.push(entry);
        Ok(true)
    }

    /// The memory of one delete: its entry (with the notice's text) and its place in the list.
    fn delete_entry(&mut self, text: &[u8]) -> Result<ABox<Deleting<A>, A>, StoreError> {
        let entry = Deleting {
            id: Key(AVec::new_in(self.alloc.clone())),
            subs: Subs::new_in(self.alloc.clone()),
            ready_at: 0,
            seq: 0,
            text: concat_in(&self.alloc, &[text])?,
        };
        let entry = ABox::try_new_in(entry, self.alloc.clone()).map_err(|_| OOM)?;
        self.deleting.try_reserve(1).map_err(|_| OOM)?;
        Ok(entry)
    }

    /// The deleted-channel notice with log sequence number `seq`, while its channel is in
    /// delete (the log reads it from there).
    /// Its channel id and text, borrowed (the log copies them, see `copy`).
    pub(super) fn deleted_notice(&self, seq: u64) -> Option<(&[u8], &[u8])> {
        let i = self.deleting.binary_search_by_key(&seq, |d| d.seq).ok()?;
        let d = &self.deleting[i];
        Some((&d.id.0, &d.text))
    }

    /// The live channels whose id starts with `prefix` (all: None), in creation order. The
    /// copy is made under the zone lock: when the process heap cannot hold it, Err and no
    /// listing (see `copy`).
    pub fn channels(&self, prefix: Option<&[u8]>) -> Result<Vec<ChannelInfo>, StoreError> {
        let prefix = prefix.unwrap_or_default();
        let mut v: Vec<(u64, ChannelInfo)> = copy::with_capacity(
            self.channels
                .keys()
                .filter(|k| k.0.starts_with(prefix))
                .count(),
        )?;
        for (k, c) in self
            .channels
            .iter()
            .filter(|(k, _)| k.0.starts_with(prefix))
        {
            v.push((c.order, info(copy::bytes(&k.0)?, c)));
        }
        v.sort_unstable_by_key(|(o, _)| *o);
        let mut out = copy::with_capacity(v.len())?;
        out.extend(v.into_iter().map(|(_, i)| i));
        Ok(out)
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
            // Creating channels leaves the delete reserve alone.
            self.hold_reserve(limits)?;
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

    /// A channel leaves for the trash (room is guaranteed by the capacity invariant).
    pub(super) fn channel_to_trash(&mut self, now: i64, limits: &Limits) {
        let _ = self
            .chan_trash
            .push_back(now.saturating_add(limits.trash_delay()));
    }

    pub(super) fn unlink_counts(&mut self, ch: &Channel<A>) {
        if ch.wildcard {
            self.n_wildcard -= 1;
        } else {
            self.n_channels -= 1;
        }
    }

    /// Moves the deleted channels that no subscriber waits on and whose hold has passed to
    /// the channel trash, oldest delete first, each with its `channel_destroyed` event.
    /// Returns how many moved.
    pub(super) fn collect_deleted(&mut self, now: i64, limits: &Limits) -> u64 {
        let floor = self.log_floor;
        let ready = |d: &Deleting<A>| d.subs.total == 0 && d.ready_at <= now && d.seq <= floor;
        if !self.deleting.iter().any(|d| ready(d)) {
            return 0;
        }
        // Taken out while the events go into the events channel (`emit` does not touch it;
        // the trash room reserved for these channels stays reserved).
        let mut del = core::mem::replace(&mut self.deleting, AVec::new_in(self.alloc.clone()));
        let mut moved = 0;
        for d in del.iter().filter(|d| ready(d)) {
            self.channel_to_trash(now, limits);
            self.emit("channel_destroyed", &d.id.0, now, limits);
            moved += 1;
        }
        del.retain(|d| !ready(d));
        if !del.is_empty() {
            self.deleting = del;
        }
        moved
    }
}

/// A channel's info, with `id` (its copied id).
pub(super) fn info<A: Allocator + Clone>(id: Vec<u8>, c: &Channel<A>) -> ChannelInfo {
    ChannelInfo {
        id,
        published_messages: c.last_id.max(0) as u64,
        stored_messages: c.queue.len() as u64,
        subscribers: c.subs.total,
        wildcard: c.wildcard,
        events: c.events,
        last_time: c.last_time,
        last_tag: c.last_tag,
    }
}
