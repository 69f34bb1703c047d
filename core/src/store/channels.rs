//! Channels: creation, lookup, listing and deletion.

use allocator_api2::alloc::Allocator;
use allocator_api2::vec::Vec as AVec;

use super::index::CHANNEL;
use super::keys::try_copy;
use super::pool::{concat_in, link_through, Fifo, Slot, NIL};
use super::subscribers::SlotCount;
use super::table::Hashed;
use super::{copy, ChannelInfo, Limits, Store, StoreError, DELETE_HOLD, OOM};
use crate::channel_path::is_wildcard;

/// Channel ids up to this long are kept in the node.
pub(super) const INLINE: usize = 8;

/// A live channel.
pub(super) const LIVE: u8 = 1;
/// A deleted channel in delete (on the `deleting` list): it is its channel-deleted notice too
/// (the log record `order`, its text after the id in `long`).
pub(super) const DELETING: u8 = 2;
/// A channel in the channel trash (on `chan_trash`; `inactive_at` is when it is freed).
pub(super) const TRASHED: u8 = 3;

/// One channel (128 bytes with the zone's allocator).
pub(super) struct ChanNode<A: Allocator> {
    /// Its bucket's chain while live; the delete list or the channel trash after.
    pub(super) next: u32,
    pub(super) hash: u32,
    /// Stored messages, oldest first (linked through the message nodes).
    pub(super) queue: Fifo,
    pub(super) id_len: u32,
    /// The first two worker slots' subscriber counts (most channels have subscribers on one
    /// or two workers); further slots are in `more` (a chain of subscriber nodes).
    pub(super) s: [SlotCount; 2],
    pub(super) more: u32,
    pub(super) state: u8,
    pub(super) wildcard: bool,
    pub(super) events: bool,
    pub(super) _pad: u8,
    /// Creation order (for listings); in delete: the seq of its notice.
    pub(super) order: u64,
    pub(super) last_id: i64,
    pub(super) last_time: i64,
    pub(super) last_tag: u64,
    /// Inactivity deadline (in delete: when it may go to the trash; in the trash: when it is
    /// freed).
    pub(super) inactive_at: i64,
    pub(super) inline: [u8; INLINE],
    /// The id when it is longer than `INLINE` (empty otherwise), followed by the notice's
    /// text in delete.
    pub(super) long: AVec<u8, A>,
}

impl<A: Allocator + Clone> Slot<A> for ChanNode<A> {
    fn vacant(alloc: &A) -> Self {
        ChanNode {
            next: NIL,
            hash: 0,
            queue: Fifo::EMPTY,
            id_len: 0,
            s: [SlotCount::default(); 2],
            more: NIL,
            state: 0,
            wildcard: false,
            events: false,
            _pad: 0,
            order: 0,
            last_id: 0,
            last_time: 0,
            last_tag: 0,
            inactive_at: 0,
            inline: [0; INLINE],
            long: AVec::new_in(alloc.clone()),
        }
    }
    fn is_vacant(&self) -> bool {
        self.state == 0
    }
    link_through!(next);
}

impl<A: Allocator> Hashed for ChanNode<A> {
    fn hash(&self) -> u32 {
        self.hash
    }
    fn chain(&self) -> u32 {
        self.next
    }
    fn set_chain(&mut self, h: u32) {
        self.next = h;
    }
}

impl<A: Allocator> ChanNode<A> {
    pub(super) fn id(&self) -> &[u8] {
        let n = self.id_len as usize;
        if n <= INLINE {
            &self.inline[..n]
        } else {
            &self.long[..n]
        }
    }

    /// The text of its channel-deleted notice (in delete).
    pub(super) fn notice_text(&self) -> &[u8] {
        let n = self.id_len as usize;
        &self.long[if n <= INLINE { 0 } else { n }..]
    }
}

impl<A: Allocator + Clone> Store<A> {
    pub(super) fn hash_id(&self, id: &[u8]) -> u32 {
        use core::hash::BuildHasher;
        self.hasher.hash_one(id) as u32
    }

    /// The live channel `id`.
    pub(super) fn find(&self, id: &[u8]) -> Option<u32> {
        let hv = self.hash_id(id);
        let mut h = self.table.head(self.table.bucket(hv));
        while h != NIL {
            let c = self.chans.get(h);
            if c.hash == hv && c.id() == id {
                return Some(h);
            }
            h = c.next;
        }
        None
    }

    /// Every live channel's handle, bucket by bucket (`f` may not change the table). (Tests:
    /// the store itself never walks all channels but in `drop_slot`.)
    #[cfg(test)]
    pub(super) fn each_channel(&self, mut f: impl FnMut(u32, &ChanNode<A>)) {
        for b in 0..self.table.buckets() {
            let mut h = self.table.head(b);
            while h != NIL {
                let c = self.chans.get(h);
                f(h, c);
                h = c.next;
            }
        }
    }

    /// Creates the events channel if `limits.events_channel_id` is set and it does not exist
    /// yet (for example when the option was only enabled on a reload; the C module crashes
    /// there). No-op otherwise. Not subject to the channel limits; counted in `channels`.
    pub fn ensure_events_channel(&mut self, now: i64, limits: &Limits) -> Result<(), StoreError> {
        if let Some(eid) = limits.events_channel_id.as_deref() {
            match self.find(eid) {
                Some(h) => self.chans.get_mut(h).events = true,
                None => self.create_channel(eid, now, limits, true)?,
            }
        }
        Ok(())
    }

    pub fn channel(&self, id: &[u8]) -> Option<ChannelInfo> {
        // One small copy (the id, bounded by the channel id length limit); the listings,
        // which copy many, are fallible.
        self.find(id).map(|h| self.info(h))
    }

    /// A channel's last publish time and tag (no copy: usable under the lock).
    pub fn last_time_tag(&self, id: &[u8]) -> Option<(i64, u64)> {
        self.find(id).map(|h| {
            let c = self.chans.get(h);
            (c.last_time, c.last_tag)
        })
    }

    pub fn get_or_create(
        &mut self,
        id: &[u8],
        now: i64,
        limits: &Limits,
    ) -> Result<ChannelInfo, StoreError> {
        if self.find(id).is_none() {
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
        let Some(h) = self.find(id) else {
            return Ok(false);
        };
        if self.chans.get(h).events {
            return Err(StoreError::EventsChannel);
        }
        // Reserve everything first (the channel node stays, on the delete list, and holds the
        // notice; its stored messages move to the trash through their own links); when the
        // zone is full, once more with the reserve freed.
        let long = match self.notice_room(h, text) {
            Ok(d) => d,
            Err(_) if self.release_reserve() => self.notice_room(h, text)?,
            Err(e) => return Err(e),
        };
        // Commit (nothing below allocates).
        self.table.remove(&mut self.chans, h);
        self.unlink_counts(h);
        let deadline = now.saturating_add(limits.trash_delay());
        self.queue_to_trash(h, deadline);
        self.last_seq += 1;
        let seq = self.last_seq;
        self.index.set(seq, h | CHANNEL);
        let c = self.chans.get_mut(h);
        c.state = DELETING;
        c.order = seq;
        if let Some(long) = long {
            c.long = long;
        }
        c.inactive_at = now.saturating_add(DELETE_HOLD);
        self.deleting.push(&mut self.chans, h);
        Ok(true)
    }

    /// The memory of channel `h`'s delete: a log index entry for its notice, and unless the
    /// text is empty, the id kept outside the node followed by the text (in one allocation).
    fn notice_room(&mut self, h: u32, text: &[u8]) -> Result<Option<AVec<u8, A>>, StoreError> {
        self.index.reserve(self.last_seq + 1)?;
        if text.is_empty() {
            return Ok(None);
        }
        let c = self.chans.get(h);
        let kept = if c.id_len as usize <= INLINE {
            &[][..]
        } else {
            c.id()
        };
        Ok(Some(concat_in(&self.alloc, &[kept, text])?))
    }

    /// Moves channel `h`'s stored messages to the trash, to be freed at `deadline`.
    pub(super) fn queue_to_trash(&mut self, h: u32, deadline: i64) {
        self.unqueue(h, deadline, |_, _| true);
    }

    /// The live channels whose id starts with `prefix` (all: None), in creation order, in one
    /// call (tests; the nginx layer reads them a page at a time, see [`ChannelPages`]). The
    /// copy is made under the zone lock: when the process heap cannot hold it, Err and no
    /// listing (see `copy`).
    pub fn channels(&self, prefix: Option<&[u8]>) -> Result<Vec<ChannelInfo>, StoreError> {
        let mut pages = ChannelPages::default();
        while !pages.done() {
            pages.read(self, prefix)?;
        }
        pages.finish()
    }

    /// Up to `GC_BUCKETS` buckets of the channel table from `from`: the live channels whose
    /// id starts with `prefix`, with their creation order, appended to `out` (room taken
    /// fallibly); the next bucket, or None at the end of the table.
    fn channels_page(
        &self,
        prefix: &[u8],
        from: usize,
        out: &mut Vec<(u64, ChannelInfo)>,
    ) -> Result<Option<usize>, StoreError> {
        let end = self
            .table
            .buckets()
            .min(from.saturating_add(super::GC_BUCKETS));
        for b in from..end {
            let mut h = self.table.head(b);
            while h != NIL {
                let c = self.chans.get(h);
                if c.id().starts_with(prefix) {
                    copy::push(out, (c.order, self.info_with(copy::bytes(c.id())?, h)))?;
                }
                h = c.next;
            }
        }
        Ok((end < self.table.buckets()).then_some(end))
    }

    /// Whether channel `id` may be created: `ChannelsLimit` at the configured limits (not for
    /// the events channel), `OutOfMemory` when the delete reserve cannot be held (creating
    /// channels leaves it alone). Ok: whether it is a wildcard channel.
    pub(super) fn may_create(
        &mut self,
        id: &[u8],
        limits: &Limits,
        events: bool,
    ) -> Result<bool, StoreError> {
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
            self.hold_reserve(limits)?;
        }
        Ok(wildcard)
    }

    pub(super) fn create_channel(
        &mut self,
        id: &[u8],
        now: i64,
        limits: &Limits,
        events: bool,
    ) -> Result<(), StoreError> {
        self.create_channel_as(id, now, limits, events, true)
    }

    /// [`Store::create_channel`]; `announce`: emit `channel_created` on the events channel
    /// (not when a rebuilt store gets back its subscribers' channels).
    pub(super) fn create_channel_as(
        &mut self,
        id: &[u8],
        now: i64,
        limits: &Limits,
        events: bool,
        announce: bool,
    ) -> Result<(), StoreError> {
        let wildcard = self.may_create(id, limits, events)?;
        let id_len = u32::try_from(id.len()).map_err(|_| OOM)?;
        let mut node = ChanNode::vacant(&self.alloc);
        if id.len() <= INLINE {
            node.inline[..id.len()].copy_from_slice(id);
        } else {
            node.long = concat_in(&self.alloc, &[id])?;
        }
        self.table.reserve()?;
        self.chans.reserve(1)?;
        // Commit.
        node.hash = self.hash_id(id);
        node.id_len = id_len;
        node.state = LIVE;
        node.wildcard = wildcard;
        node.events = events;
        node.order = self.next_order;
        node.inactive_at = now.saturating_add(limits.channel_inactivity_time);
        let Ok(h) = self.chans.insert(node) else {
            return Err(OOM); // reserved above: cannot happen
        };
        self.table.insert(&mut self.chans, h);
        self.next_order += 1;
        if wildcard {
            self.n_wildcard += 1;
        } else {
            self.n_channels += 1;
        }
        // Best effort, never needed for correctness.
        self.table.grow(&mut self.chans);
        if announce && !events {
            self.emit("channel_created", id, now, limits);
        }
        Ok(())
    }

    /// Channel `h` (no longer live nor in delete) goes to the channel trash until its trash
    /// delay has passed: what it owns is freed now, its node then (never allocates).
    pub(super) fn channel_to_trash(&mut self, h: u32, now: i64, limits: &Limits) {
        self.free_subs(h);
        let c = self.chans.get_mut(h);
        c.state = TRASHED;
        c.queue = Fifo::EMPTY;
        c.long = AVec::new_in(self.alloc.clone());
        c.inactive_at = now.saturating_add(limits.trash_delay());
        self.chan_trash.push(&mut self.chans, h);
    }

    pub(super) fn unlink_counts(&mut self, h: u32) {
        if self.chans.get(h).wildcard {
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
        let mut moved = 0;
        let mut prev = NIL;
        let mut h = self.deleting.head;
        while h != NIL {
            let c = self.chans.get(h);
            let next = c.next;
            let ready = c.inactive_at <= now && c.order <= floor && self.subs_total(h) == 0;
            if !ready {
                prev = h;
                h = next;
                continue;
            }
            let id = try_copy(c.id());
            self.deleting.unlink(&mut self.chans, prev, h);
            self.channel_to_trash(h, now, limits);
            match id {
                Some(id) => self.emit("channel_destroyed", &id, now, limits),
                None => self.lost_event(limits, 1),
            }
            moved += 1;
            h = next;
        }
        moved
    }

    /// `n` events that could not be built (the process heap refused a temporary copy).
    pub(super) fn lost_event(&mut self, limits: &Limits, n: u64) {
        let ev = limits.events_channel_id.as_deref();
        if ev.is_some_and(|e| self.find(e).is_some_and(|h| self.chans.get(h).events)) {
            self.dropped_events = self.dropped_events.saturating_add(n);
        }
    }
}

impl<A: Allocator + Clone> Store<A> {
    pub(super) fn info(&self, h: u32) -> ChannelInfo {
        self.info_with(self.chans.get(h).id().to_vec(), h)
    }

    /// Channel `h`'s info, with `id` (its copied id).
    pub(super) fn info_with(&self, id: Vec<u8>, h: u32) -> ChannelInfo {
        let c = self.chans.get(h);
        ChannelInfo {
            id,
            published_messages: c.last_id.max(0) as u64,
            stored_messages: u64::from(c.queue.len),
            subscribers: self.subs_total(h),
            wildcard: c.wildcard,
            events: c.events,
            last_time: c.last_time,
            last_tag: c.last_tag,
        }
    }
}

/// A listing of channels read a page of the channel table at a time (one zone lock hold per
/// page, so listing a big store never holds the lock for all of it). Between pages the table
/// may change: a channel created meanwhile may or may not appear, one removed meanwhile may
/// still appear, and a channel that a table split moved is listed once (by its creation
/// order).
#[derive(Default)]
pub struct ChannelPages {
    next: Option<usize>,
    started: bool,
    got: Vec<(u64, ChannelInfo)>,
}

impl ChannelPages {
    /// Whether the whole table was read.
    pub fn done(&self) -> bool {
        self.started && self.next.is_none()
    }

    /// Reads the next page (under the zone lock).
    pub fn read<A: Allocator + Clone>(
        &mut self,
        store: &Store<A>,
        prefix: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let from = if self.started {
            self.next.unwrap_or(usize::MAX)
        } else {
            0
        };
        self.started = true;
        self.next = store.channels_page(prefix.unwrap_or_default(), from, &mut self.got)?;
        Ok(())
    }

    /// The channels, in creation order (after the lock: the sort allocates nothing more).
    pub fn finish(mut self) -> Result<Vec<ChannelInfo>, StoreError> {
        self.got.sort_unstable_by_key(|(o, _)| *o);
        self.got.dedup_by_key(|(o, _)| *o);
        let mut out = copy::with_capacity(self.got.len())?;
        out.extend(self.got.into_iter().map(|(_, i)| i));
        Ok(out)
    }
}
