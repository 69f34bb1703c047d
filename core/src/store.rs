//! The host-wide channel registry and message store.
//!
//! The store lives inside an nginx shared-memory zone: every worker maps it at the same address
//! and the caller holds the zone's lock around every call. So every collection here allocates
//! through the allocator `A` (the zone's slab in nginx, a budgeted heap in tests), nothing uses
//! the process heap, and no allocation failure may abort: each operation reserves everything it
//! needs first and returns [`StoreError::OutOfMemory`] with the store unchanged when it cannot.
//!
//! Layout:
//! * every record (published message or channel-deleted notice) lives once, boxed, in `msgs`,
//!   keyed by its host-wide sequence number `seq`;
//! * a channel's queue holds `(seq, expires)` of its stored messages, oldest first;
//! * the trash is a FIFO of `(seq, deadline)` of records that are in no queue (removed messages,
//!   unstored messages, channel-deleted notices);
//! * the delivery log is implicit: every record with `seq` in `(log_floor, last_seq]` is kept
//!   (a record is freed only from the trash, only when its deadline passed and its seq is at or
//!   below `log_floor`, the lowest cursor acknowledged by every registered worker).
//!
//! Capacity invariants that let GC and unsubscribe move things around without allocating:
//! * `trash` has room for everything queued: `trash.cap >= trash.len + queued_total`;
//! * `chan_trash` has room for every live or deleting channel:
//!   `chan_trash.cap >= chan_trash.len + channels.len + deleting.len`.
//!
//! Subscriber counts are kept per worker slot: every live channel (and every deleted channel
//! whose subscribers are still being told) holds `(slot, count)` pairs, and its `subscribers`
//! is their sum. When a worker goes away — found dead by [`Store::gc`], replaced in its slot by
//! [`Store::register_worker`] (a respawn after a crash), or leaving with
//! [`Store::unregister_worker`] — whatever its slot still counts is removed everywhere, as if
//! each of those subscribers had unsubscribed, so the counts never outlive the process that
//! holds the subscribers.

use core::hash::{BuildHasher, Hash, Hasher};
use std::collections::hash_map::RandomState;

pub use allocator_api2::alloc::{AllocError, Allocator, Global};
use allocator_api2::boxed::Box as ABox;
use allocator_api2::vec::Vec as AVec;
use hashbrown::{Equivalent, HashMap};

use crate::channel_path::is_wildcard;
use crate::resume::{old_messages_start, Cursor, MessageMeta};

/// How long removed messages and channels stay in the trash (seconds), as in the C module.
pub const TRASH_DELAY: i64 = 10;

/// Limits and names from the configuration, passed to every call that needs them.
#[derive(Clone, Debug, Default)]
pub struct Limits {
    pub message_ttl: i64,
    pub max_messages_stored_per_channel: Option<u64>,
    pub max_number_of_channels: Option<u64>,
    pub max_number_of_wildcard_channels: Option<u64>,
    pub max_subscribers_per_channel: Option<u64>,
    pub channel_inactivity_time: i64,
    pub wildcard_prefix: Option<Vec<u8>>,
    pub events_channel_id: Option<Vec<u8>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelInfo {
    pub id: Vec<u8>,
    pub published_messages: u64,
    pub stored_messages: u64,
    pub subscribers: u64,
    pub wildcard: bool,
    pub events: bool,
    pub last_time: i64,
    pub last_tag: u64,
}

/// The host's counters as the statistics and metrics show them (one list, read by both).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub channels: u64,
    pub wildcard_channels: u64,
    pub published_messages: u64,
    pub stored_messages: u64,
    pub messages_in_trash: u64,
    pub channels_in_delete: u64,
    pub channels_in_trash: u64,
    pub subscribers: u64,
    pub created: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreError {
    OutOfMemory,
    ChannelsLimit,
    SubscribersLimit,
    EventsChannel,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Published {
    pub seq: u64,
    pub id: i64,
    pub time: i64,
    pub tag: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Message {
        seq: u64,
        channel: Vec<u8>,
        id: i64,
        time: i64,
        tag: u64,
        event_id: Vec<u8>,
        event_type: Vec<u8>,
        text: Vec<u8>,
        /// When it was published, in milliseconds since the epoch (0: unknown).
        published_ms: i64,
    },
    ChannelDeleted {
        seq: u64,
        channel: Vec<u8>,
        text: Vec<u8>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    pub id: i64,
    pub time: i64,
    pub tag: u64,
    pub event_id: Vec<u8>,
    pub event_type: Vec<u8>,
    pub text: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerSlot {
    pub slot: usize,
    pub pid: u32,
    pub started: i64,
    pub subscribers: u64,
    pub cursor: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    pub records: Vec<Record>,
    pub cursor: u64,
    pub lost: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    pub expired_messages: u64,
    pub removed_channels: u64,
    pub freed_messages: u64,
    pub dead_workers: Vec<u32>,
}

// ---------------------------------------------------------------------------------------------
// Private building blocks
// ---------------------------------------------------------------------------------------------

const OOM: StoreError = StoreError::OutOfMemory;

/// A FIFO ring buffer over an allocator-backed vector whose length is the physical capacity.
/// Growth and shrinking build a new buffer fallibly; nothing here can abort.
struct Ring<T: Copy + Default, A: Allocator + Clone> {
    buf: AVec<T, A>,
    head: usize,
    len: usize,
}

impl<T: Copy + Default, A: Allocator + Clone> Ring<T, A> {
    fn new_in(alloc: A) -> Self {
        Ring {
            buf: AVec::new_in(alloc),
            head: 0,
            len: 0,
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.buf.len()
    }

    fn get(&self, i: usize) -> Option<T> {
        (i < self.len).then(|| self.buf[(self.head + i) % self.buf.len()])
    }

    fn front(&self) -> Option<T> {
        self.get(0)
    }

    fn iter(&self) -> impl Iterator<Item = T> + '_ {
        (0..self.len).map(move |i| self.buf[(self.head + i) % self.buf.len()])
    }

    /// Makes room for `additional` more items (no allocation when there already is room).
    fn try_reserve(&mut self, additional: usize) -> Result<(), StoreError> {
        let need = self.len.checked_add(additional).ok_or(OOM)?;
        if need <= self.buf.len() {
            return Ok(());
        }
        let cap = need.max(self.buf.len().saturating_mul(2)).max(4);
        self.rebuild(cap)
    }

    fn rebuild(&mut self, cap: usize) -> Result<(), StoreError> {
        debug_assert!(cap >= self.len);
        let mut nb: AVec<T, A> = AVec::new_in(self.buf.allocator().clone());
        nb.try_reserve_exact(cap).map_err(|_| OOM)?;
        for v in self.iter() {
            nb.push(v);
        }
        nb.resize(cap, T::default());
        self.buf = nb;
        self.head = 0;
        Ok(())
    }

    /// Appends; only allocates when the ring is full.
    fn push_back(&mut self, v: T) -> Result<(), StoreError> {
        self.try_reserve(1)?;
        let cap = self.buf.len();
        self.buf[(self.head + self.len) % cap] = v;
        self.len += 1;
        Ok(())
    }

    fn pop_front(&mut self) -> Option<T> {
        let v = self.front()?;
        self.head = (self.head + 1) % self.buf.len();
        self.len -= 1;
        Some(v)
    }

    /// Gives memory back when the ring is much bigger than needed, keeping room for at least
    /// `keep` items (`len + reserved`). Best effort: a failed rebuild leaves it as it is.
    fn shrink(&mut self, extra: usize) {
        let keep = self.len.saturating_add(extra);
        if keep == 0 {
            if !self.buf.is_empty() {
                self.buf = AVec::new_in(self.buf.allocator().clone());
                self.head = 0;
            }
            return;
        }
        let cap = self.buf.len();
        if cap >= 32 && keep.saturating_mul(4) <= cap {
            let _ = self.rebuild(keep.saturating_mul(2).max(4));
        }
    }
}

/// A channel id owned by the store.
struct Key<A: Allocator>(AVec<u8, A>);

impl<A: Allocator> Hash for Key<A> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0[..].hash(state)
    }
}

impl<A: Allocator> PartialEq for Key<A> {
    fn eq(&self, other: &Self) -> bool {
        self.0[..] == other.0[..]
    }
}

impl<A: Allocator> Eq for Key<A> {}

/// Looks a [`Key`] up by its bytes.
#[derive(Hash)]
struct KeyRef<'a>(&'a [u8]);

impl<A: Allocator> Equivalent<Key<A>> for KeyRef<'_> {
    fn equivalent(&self, key: &Key<A>) -> bool {
        self.0 == &key.0[..]
    }
}

/// Hasher state for the seq-keyed map: plain data, no per-process state. Sequence numbers are
/// ours (not attacker-chosen), so a multiplicative hash is enough.
#[derive(Clone, Copy, Default)]
struct SeqHash;

struct SeqHasher(u64);

impl BuildHasher for SeqHash {
    type Hasher = SeqHasher;
    fn build_hasher(&self) -> SeqHasher {
        SeqHasher(0)
    }
}

impl Hasher for SeqHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

#[derive(Clone, Copy, Default)]
struct QEntry {
    seq: u64,
    expires: i64,
}

/// One remembered exchange message: forgotten at `expires`.
#[derive(Clone, Copy, Default)]
struct XEntry {
    expires: i64,
    key: u128,
    occurrence: u32,
}

type XKeys<A> = HashMap<(u128, u32), u64, RandomState, A>;

#[derive(Clone, Copy, Default)]
struct TrashEntry {
    seq: u64,
    deadline: i64,
}

/// How many subscribers of one channel one worker slot holds.
#[derive(Clone, Copy)]
struct SlotCount {
    slot: u32,
    count: u32,
}

/// The subscribers of a channel, per worker slot (most channels have subscribers on few
/// workers: a short unsorted vector), and their sum. No entry has a zero count.
struct Subs<A: Allocator> {
    slots: AVec<SlotCount, A>,
    total: u64,
}

impl<A: Allocator> Subs<A> {
    fn new_in(alloc: A) -> Self {
        Subs {
            slots: AVec::new_in(alloc),
            total: 0,
        }
    }

    fn position(&self, slot: u32) -> Option<usize> {
        self.slots.iter().position(|e| e.slot == slot)
    }

    fn has(&self, slot: u32) -> bool {
        self.position(slot).is_some()
    }

    /// One more subscriber on `slot`; all or nothing.
    fn try_add(&mut self, slot: u32) -> Result<(), StoreError> {
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
    fn remove_one(&mut self, slot: u32) -> bool {
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
    fn take_slot(&mut self, slot: u32) -> u64 {
        let Some(i) = self.position(slot) else {
            return 0;
        };
        let n = u64::from(self.slots.swap_remove(i).count);
        self.total -= n;
        n
    }
}

struct Channel<A: Allocator + Clone> {
    /// Creation order (for listings).
    order: u64,
    queue: Ring<QEntry, A>,
    last_id: i64,
    last_time: i64,
    last_tag: u64,
    subs: Subs<A>,
    /// Inactivity deadline.
    inactive_at: i64,
    wildcard: bool,
    events: bool,
}

/// A deleted channel whose subscribers are still being told.
struct Deleting<A: Allocator> {
    id: Key<A>,
    subs: Subs<A>,
}

/// One record: a published message or a channel-deleted notice. `data` holds, back to back,
/// the channel id, the event id, the event type and the text.
struct Msg<A: Allocator> {
    seq: u64,
    id: i64,
    time: i64,
    tag: u64,
    deleted_notice: bool,
    /// Consumed from the broker and not part of the host delivery log (every worker consumes
    /// the broker itself). False for a broker message that one worker consumed for the host
    /// (`push_stream_amqp_consumer host`): the others deliver it from the log.
    broker: bool,
    /// Publish time in milliseconds (see `Store::set_clock_ms`), for delivery latency.
    published_ms: i64,
    chan_len: usize,
    eid_len: Option<usize>,
    etype_len: Option<usize>,
    data: AVec<u8, A>,
}

impl<A: Allocator> Msg<A> {
    fn channel(&self) -> &[u8] {
        &self.data[..self.chan_len]
    }
    fn eid_end(&self) -> usize {
        self.chan_len + self.eid_len.unwrap_or(0)
    }
    fn etype_end(&self) -> usize {
        self.eid_end() + self.etype_len.unwrap_or(0)
    }
    fn event_id(&self) -> Option<&[u8]> {
        self.eid_len
            .map(|_| &self.data[self.chan_len..self.eid_end()])
    }
    fn event_type(&self) -> Option<&[u8]> {
        self.etype_len
            .map(|_| &self.data[self.eid_end()..self.etype_end()])
    }
    fn text(&self) -> &[u8] {
        &self.data[self.etype_end()..]
    }

    fn record(&self) -> Record {
        if self.deleted_notice {
            Record::ChannelDeleted {
                seq: self.seq,
                channel: self.channel().to_vec(),
                text: self.text().to_vec(),
            }
        } else {
            Record::Message {
                seq: self.seq,
                channel: self.channel().to_vec(),
                id: self.id,
                time: self.time,
                tag: self.tag,
                event_id: self.event_id().unwrap_or_default().to_vec(),
                event_type: self.event_type().unwrap_or_default().to_vec(),
                text: self.text().to_vec(),
                published_ms: self.published_ms,
            }
        }
    }

    fn stored(&self) -> StoredMessage {
        StoredMessage {
            id: self.id,
            time: self.time,
            tag: self.tag,
            event_id: self.event_id().unwrap_or_default().to_vec(),
            event_type: self.event_type().unwrap_or_default().to_vec(),
            text: self.text().to_vec(),
        }
    }
}

#[derive(Clone, Copy)]
struct WorkerEntry {
    slot: usize,
    pid: u32,
    started: i64,
    subscribers: u64,
    cursor: u64,
}

/// Copies `b` onto the process heap (temporary lists), or `None` when it is short of memory.
fn try_copy(b: &[u8]) -> Option<Vec<u8>> {
    let mut v = Vec::new();
    v.try_reserve_exact(b.len()).ok()?;
    v.extend_from_slice(b);
    Some(v)
}

/// Copies `parts` back to back into one exactly-sized allocator vector.
fn concat_in<A: Allocator + Clone>(alloc: &A, parts: &[&[u8]]) -> Result<AVec<u8, A>, StoreError> {
    let total = parts
        .iter()
        .try_fold(0usize, |acc, p| acc.checked_add(p.len()))
        .ok_or(OOM)?;
    let mut v = AVec::new_in(alloc.clone());
    v.try_reserve_exact(total).map_err(|_| OOM)?;
    for p in parts {
        v.extend_from_slice(p);
    }
    Ok(v)
}

type MsgMap<A> = HashMap<u64, ABox<Msg<A>, A>, SeqHash, A>;
type ChannelMap<A> = HashMap<Key<A>, Channel<A>, RandomState, A>;

// ---------------------------------------------------------------------------------------------
// The store
// ---------------------------------------------------------------------------------------------

pub struct Store<A: Allocator + Clone> {
    alloc: A,
    created: i64,
    channels: ChannelMap<A>,
    next_order: u64,
    /// Live non-wildcard channels (events channel included) and live wildcard channels.
    n_channels: u64,
    n_wildcard: u64,
    deleting: AVec<Deleting<A>, A>,
    /// Inactivity deadlines of trashed channels, FIFO.
    chan_trash: Ring<i64, A>,
    msgs: MsgMap<A>,
    trash: Ring<TrashEntry, A>,
    /// Sum of all queue lengths (events channel included).
    queued_total: usize,
    /// Message records (not channel-deleted notices) in the trash.
    messages_in_trash: u64,
    /// Global counters, events channel excluded.
    published: u64,
    stored: u64,
    last_time: i64,
    last_tag: u64,
    last_seq: u64,
    /// Every record with a seq above this is still available to `records_after`.
    log_floor: u64,
    workers: AVec<WorkerEntry, A>,
    dropped_events: u64,
    /// The highest broker (stream) offset inserted.
    broker_offset: Option<u64>,
    /// The highest broker offset of a control message (channel delete) claimed.
    ops_mark: Option<u64>,
    /// Exchange source: (dedupe key, occurrence) -> host sequence number, for a window.
    xkeys: XKeys<A>,
    xorder: Ring<XEntry, A>,
    next_xoff: u64,
    /// Milliseconds clock the caller sets before publishing (delivery latency).
    clock_ms: i64,
}

impl<A: Allocator + Clone> Store<A> {
    pub fn new_in(alloc: A, now: i64, limits: &Limits) -> Result<Self, StoreError> {
        let mut s = Store {
            channels: HashMap::with_hasher_in(RandomState::new(), alloc.clone()),
            next_order: 0,
            n_channels: 0,
            n_wildcard: 0,
            deleting: AVec::new_in(alloc.clone()),
            chan_trash: Ring::new_in(alloc.clone()),
            msgs: HashMap::with_hasher_in(SeqHash, alloc.clone()),
            trash: Ring::new_in(alloc.clone()),
            queued_total: 0,
            messages_in_trash: 0,
            published: 0,
            stored: 0,
            last_time: i64::MIN,
            last_tag: 0,
            last_seq: 0,
            log_floor: 0,
            workers: AVec::new_in(alloc.clone()),
            dropped_events: 0,
            broker_offset: None,
            ops_mark: None,
            xkeys: HashMap::with_hasher_in(RandomState::new(), alloc.clone()),
            xorder: Ring::new_in(alloc.clone()),
            next_xoff: 0,
            clock_ms: 0,
            created: now,
            alloc,
        };
        s.ensure_events_channel(now, limits)?;
        Ok(s)
    }

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

    /// Events that could not be stored for lack of memory (dropped silently).
    pub fn dropped_events(&self) -> u64 {
        self.dropped_events
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
        self.publish_inner(id, text, event_id, event_type, store, now, limits)
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

    pub fn counters(&self) -> Counters {
        Counters {
            channels: self.n_channels,
            wildcard_channels: self.n_wildcard,
            published_messages: self.published,
            stored_messages: self.stored,
            messages_in_trash: self.messages_in_trash,
            channels_in_delete: self.deleting.len() as u64,
            channels_in_trash: self.chan_trash.len() as u64,
            subscribers: self.workers.iter().map(|w| w.subscribers).sum(),
            created: self.created,
        }
    }

    pub fn old_messages(&self, id: &[u8], cursor: &Cursor) -> Vec<StoredMessage> {
        let Some(ch) = self.channels.get(&KeyRef(id)) else {
            return Vec::new();
        };
        if ch.queue.is_empty() {
            return Vec::new();
        }
        let want_eid = cursor
            .last_event_id
            .as_deref()
            .is_some_and(|e| !e.is_empty());
        let metas: Vec<MessageMeta> = ch
            .queue
            .iter()
            .map(|e| match self.msgs.get(&e.seq) {
                Some(m) => MessageMeta {
                    time: m.time,
                    tag: m.tag,
                    event_id: if want_eid {
                        m.event_id().map(<[u8]>::to_vec)
                    } else {
                        None
                    },
                },
                None => MessageMeta::default(),
            })
            .collect();
        let Some(start) = old_messages_start(&metas, cursor) else {
            return Vec::new();
        };
        ch.queue
            .iter()
            .skip(start)
            .filter_map(|e| self.msgs.get(&e.seq).map(|m| m.stored()))
            .collect()
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
    /// slot counts no subscriber there. A deleted channel whose subscribers are still being
    /// told takes precedence over a live channel of the same id (recreated after the delete)
    /// when it still counts subscribers of `slot`: those that existed at delete time are the
    /// ones leaving while it waits.
    pub fn remove_subscriber(&mut self, id: &[u8], slot: usize, now: i64, limits: &Limits) {
        let Ok(sk) = u32::try_from(slot) else {
            return;
        };
        if let Some(i) = self
            .deleting
            .iter()
            .position(|d| d.id.0[..] == *id && d.subs.has(sk))
        {
            self.deleting[i].subs.remove_one(sk);
            self.emit("client_unsubscribed", id, now, limits);
            if self.deleting[i].subs.total == 0 {
                self.finish_deleting(i, now, limits);
            }
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

    /// Registers the worker `pid` in `slot` (replacing whatever the slot held) and returns the
    /// cursor it starts reading the log from. Unless the slot was already registered to this
    /// same `pid`, the subscriber counts the slot still holds belong to a process that is gone
    /// (a respawn after a crash, or one whose registration failed): they are removed as by
    /// [`Store::gc`] for a dead worker. `OutOfMemory` changes nothing.
    pub fn register_worker(
        &mut self,
        slot: usize,
        pid: u32,
        now: i64,
        limits: &Limits,
    ) -> Result<u64, StoreError> {
        let pos = self.workers.iter().position(|w| w.slot >= slot);
        let existing = pos.filter(|&i| self.workers[i].slot == slot);
        if existing.is_none() {
            self.workers.try_reserve(1).map_err(|_| OOM)?;
        }
        if existing.is_none_or(|i| self.workers[i].pid != pid) {
            self.drop_slot(slot, now, limits);
        }
        // `drop_slot` does not touch `workers`: `pos` and `existing` still hold. The cursor is
        // taken after it, past the events it emitted.
        let entry = WorkerEntry {
            slot,
            pid,
            started: now,
            subscribers: 0,
            cursor: self.last_seq,
        };
        match existing {
            Some(i) => self.workers[i] = entry,
            None => self
                .workers
                .insert(pos.unwrap_or(self.workers.len()), entry),
        }
        Ok(self.last_seq)
    }

    /// The worker `pid` leaves `slot` cleanly (it has removed its subscribers already). Any
    /// count its slot still holds is removed as for a dead worker, so nothing can leak. A
    /// `pid` that does not own the slot changes nothing (the slot's owner is someone else).
    pub fn unregister_worker(&mut self, slot: usize, pid: u32, now: i64, limits: &Limits) {
        match self.workers.iter().position(|w| w.slot == slot) {
            Some(i) if self.workers[i].pid == pid => {
                self.workers.remove(i);
            }
            Some(_) => return,
            None => {}
        }
        self.drop_slot(slot, now, limits);
    }

    pub fn set_worker_subscribers(&mut self, slot: usize, pid: u32, subscribers: u64) {
        if let Some(w) = self
            .workers
            .iter_mut()
            .find(|w| w.slot == slot && w.pid == pid)
        {
            w.subscribers = subscribers;
        }
    }

    pub fn workers(&self) -> Vec<WorkerSlot> {
        self.workers
            .iter()
            .map(|w| WorkerSlot {
                slot: w.slot,
                pid: w.pid,
                started: w.started,
                subscribers: w.subscribers,
                cursor: w.cursor,
            })
            .collect()
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Log records after `cursor`, oldest first, at most `max`. Records at or below the freeing
    /// floor are no longer available: they are skipped and counted in `lost`. The returned
    /// cursor is the last seq consumed (returned or counted lost), or `cursor` when nothing was.
    pub fn records_after(&self, cursor: u64, max: usize) -> Batch {
        let mut batch = Batch {
            records: Vec::new(),
            cursor,
            lost: 0,
        };
        if cursor >= self.last_seq {
            return batch;
        }
        let mut s = cursor;
        if s < self.log_floor {
            batch.lost = self.log_floor - s;
            s = self.log_floor;
        }
        while s < self.last_seq && batch.records.len() < max {
            s += 1;
            match self.msgs.get(&s) {
                Some(m) if m.broker => {}
                Some(m) => batch.records.push(m.record()),
                None => batch.lost += 1,
            }
        }
        batch.cursor = s;
        batch
    }

    /// Sets the millisecond clock that the next publishes record as their publish time (the
    /// records carry it as `published_ms`, for delivery-latency metrics).
    pub fn set_clock_ms(&mut self, ms: i64) {
        self.clock_ms = ms;
    }

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
        match self.channels.get(&KeyRef(id)) {
            Some(c) if c.events => return Err(StoreError::EventsChannel),
            Some(c) if off <= c.last_id => {
                let found = c
                    .queue
                    .iter()
                    .filter_map(|q| self.msgs.get(&q.seq))
                    .find(|m| m.id == off)
                    .map(|m| (m.time, m.tag));
                return Ok(found.unwrap_or((time, tag)));
            }
            Some(_) => {}
            None => self.create_channel(id, now, limits, false)?,
        }
        // Reserve everything first.
        let data = concat_in(&self.alloc, &[id, event_id, event_type, text])?;
        let msg = Msg {
            seq: 0,
            id: off,
            time,
            tag,
            deleted_notice: false,
            broker: !to_log,
            published_ms: if to_log { self.clock_ms } else { 0 },
            chan_len: id.len(),
            eid_len: (!event_id.is_empty()).then_some(event_id.len()),
            etype_len: (!event_type.is_empty()).then_some(event_type.len()),
            data,
        };
        let mut boxed = ABox::try_new_in(msg, self.alloc.clone()).map_err(|_| OOM)?;
        self.msgs.try_reserve(1).map_err(|_| OOM)?;
        self.trash.try_reserve(self.queued_total + 1)?;
        let ch = self.channels.get_mut(&KeyRef(id)).ok_or(OOM)?;
        if store {
            ch.queue.try_reserve(1)?;
        }
        // Commit (nothing below allocates).
        self.last_seq += 1;
        let seq = self.last_seq;
        ch.last_id = off;
        ch.last_time = time;
        ch.last_tag = tag;
        ch.inactive_at = now.saturating_add(limits.channel_inactivity_time);
        boxed.seq = seq;
        self.msgs.insert(seq, boxed);
        self.published += 1;
        self.broker_offset = Some(self.broker_offset.map_or(offset, |b| b.max(offset)));
        let deadline = now.saturating_add(TRASH_DELAY);
        if store {
            let expires = time.max(now).saturating_add(limits.message_ttl);
            let _ = ch.queue.push_back(QEntry { seq, expires }); // room reserved above
            self.queued_total += 1;
            self.stored += 1;
            let max = limits.max_messages_stored_per_channel.unwrap_or(u64::MAX);
            while ch.queue.len() as u64 > max {
                let Some(old) = ch.queue.pop_front() else {
                    break;
                };
                self.queued_total -= 1;
                self.stored -= 1;
                let _ = self.trash.push_back(TrashEntry {
                    seq: old.seq,
                    deadline,
                });
                self.messages_in_trash += 1;
            }
        } else {
            self.trash_record(seq, deadline, true);
        }
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

    pub fn ack(&mut self, slot: usize, pid: u32, cursor: u64) {
        let last = self.last_seq;
        if let Some(w) = self
            .workers
            .iter_mut()
            .find(|w| w.slot == slot && w.pid == pid)
        {
            w.cursor = w.cursor.max(cursor.min(last));
        }
    }

    pub fn gc(&mut self, now: i64, limits: &Limits, is_alive: &dyn Fn(u32) -> bool) -> GcReport {
        let mut report = GcReport::default();

        // (1) Dead workers stop pinning the log, and their subscribers are gone.
        let mut i = 0;
        while i < self.workers.len() {
            let w = self.workers[i];
            if is_alive(w.pid) {
                i += 1;
            } else {
                self.workers.remove(i);
                report.dead_workers.push(w.pid);
                self.drop_slot(w.slot, now, limits);
            }
        }

        // (2) Expire stored messages from the head of each queue.
        let deadline = now.saturating_add(TRASH_DELAY);
        for ch in self.channels.values_mut() {
            while let Some(e) = ch.queue.front() {
                if e.expires > now {
                    break;
                }
                // Cannot fail: the trash always has room for everything queued.
                if self
                    .trash
                    .push_back(TrashEntry {
                        seq: e.seq,
                        deadline,
                    })
                    .is_err()
                {
                    break;
                }
                ch.queue.pop_front();
                self.queued_total -= 1;
                self.messages_in_trash += 1;
                if !ch.events {
                    self.stored -= 1;
                }
                report.expired_messages += 1;
            }
        }

        // (3) Remove inactive channels.
        let mut removed: Vec<Vec<u8>> = Vec::new();
        for (k, ch) in self.channels.extract_if(|_, c| {
            !c.events && c.queue.is_empty() && c.subs.total == 0 && c.inactive_at <= now
        }) {
            if ch.wildcard {
                self.n_wildcard -= 1;
            } else {
                self.n_channels -= 1;
            }
            // Cannot fail (chan_trash has room for every live channel); if it did, the channel
            // is simply freed at once.
            let _ = self.chan_trash.push_back(deadline);
            removed.push(k.0[..].to_vec());
        }
        report.removed_channels = removed.len() as u64;
        for id in &removed {
            self.emit("channel_destroyed", id, now, limits);
        }

        // (4) Free trashed records whose delay passed and that every live worker has seen.
        let floor = self
            .workers
            .iter()
            .map(|w| w.cursor)
            .min()
            .unwrap_or(self.last_seq);
        self.log_floor = self.log_floor.max(floor.min(self.last_seq));
        while let Some(e) = self.trash.front() {
            if e.deadline > now || e.seq > self.log_floor {
                break;
            }
            self.trash.pop_front();
            if let Some(m) = self.msgs.remove(&e.seq) {
                if !m.deleted_notice {
                    self.messages_in_trash -= 1;
                    report.freed_messages += 1;
                }
            }
        }

        // (5) Drop trashed channels.
        while self.chan_trash.front().is_some_and(|d| d <= now) {
            self.chan_trash.pop_front();
        }

        // (6) Forget exchange keys whose window passed.
        while let Some(x) = self.xorder.front() {
            if x.expires > now {
                break;
            }
            self.xorder.pop_front();
            self.xkeys.remove(&(x.key, x.occurrence));
        }

        self.shrink();
        report
    }

    // -----------------------------------------------------------------------------------------
    // Internals
    // -----------------------------------------------------------------------------------------

    fn create_channel(
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

    /// Publishes into an existing channel (events channel included).
    #[allow(clippy::too_many_arguments)]
    fn publish_inner(
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
            deleted_notice: false,
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
        let deadline = now.saturating_add(TRASH_DELAY);
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
            self.trash_record(seq, deadline, true);
        }
        Ok(Published {
            seq,
            id: mid,
            time,
            tag,
        })
    }

    /// Appends to the trash (room is guaranteed by the capacity invariant).
    fn trash_record(&mut self, seq: u64, deadline: i64, message: bool) {
        let _ = self.trash.push_back(TrashEntry { seq, deadline });
        if message {
            self.messages_in_trash += 1;
        }
    }

    fn channel_to_trash(&mut self, now: i64) {
        let _ = self.chan_trash.push_back(now.saturating_add(TRASH_DELAY));
    }

    fn unlink_counts(&mut self, ch: &Channel<A>) {
        if ch.wildcard {
            self.n_wildcard -= 1;
        } else {
            self.n_channels -= 1;
        }
    }

    /// The deleted channel `deleting[i]` has no subscriber left: it goes to the channel trash.
    fn finish_deleting(&mut self, i: usize, now: i64, limits: &Limits) {
        let d = self.deleting.swap_remove(i);
        if self.deleting.is_empty() {
            self.deleting = AVec::new_in(self.alloc.clone());
        }
        self.channel_to_trash(now);
        self.emit("channel_destroyed", &d.id.0, now, limits);
    }

    /// Removes every subscriber counted for `slot` (its worker is gone), from live and deleted
    /// channels, emitting the events of as many unsubscribes; a deleted channel left without
    /// subscribers goes to the channel trash. Inactivity deadlines do not change. O(channels).
    /// Never fails: the events are best effort (counted in `dropped_events` when the process
    /// heap cannot hold the list of channels they are about).
    fn drop_slot(&mut self, slot: usize, now: i64, limits: &Limits) {
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
        // Deleted channels: `emit` does not touch `deleting`, so events go out as we walk.
        let mut i = 0;
        while i < self.deleting.len() {
            let n = self.deleting[i].subs.take_slot(sk);
            if n == 0 {
                i += 1;
                continue;
            }
            if self.deleting[i].subs.total == 0 {
                let d = self.deleting.swap_remove(i);
                for _ in 0..n {
                    self.emit("client_unsubscribed", &d.id.0, now, limits);
                }
                self.channel_to_trash(now);
                self.emit("channel_destroyed", &d.id.0, now, limits);
                continue; // `i` now holds the entry swapped in
            }
            match try_copy(&self.deleting[i].id.0) {
                Some(id) => {
                    for _ in 0..n {
                        self.emit("client_unsubscribed", &id, now, limits);
                    }
                }
                None => lost = lost.saturating_add(n),
            }
            i += 1;
        }
        if self.deleting.is_empty() && self.deleting.capacity() > 0 {
            self.deleting = AVec::new_in(self.alloc.clone());
        }
        // Only when an events channel would have received them.
        let ev = limits.events_channel_id.as_deref();
        if ev.is_some_and(|e| self.channels.get(&KeyRef(e)).is_some_and(|c| c.events)) {
            self.dropped_events = self.dropped_events.saturating_add(lost);
        }
    }

    /// Publishes an event into the events channel, if there is one. Failures are counted.
    fn emit(&mut self, ty: &str, channel: &[u8], now: i64, limits: &Limits) {
        let Some(eid) = limits.events_channel_id.as_deref() else {
            return;
        };
        if eid == channel {
            return;
        }
        if !self.channels.get(&KeyRef(eid)).is_some_and(|c| c.events) {
            return;
        }
        let mut text = Vec::with_capacity(34 + ty.len() + channel.len());
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

    /// Gives memory back after GC (best effort, never allocates more than it frees).
    fn shrink(&mut self) {
        self.trash.shrink(self.queued_total);
        self.xorder.shrink(0);
        if self.xkeys.capacity() >= 64 && self.xkeys.len() * 4 <= self.xkeys.capacity() {
            let mut m: XKeys<A> =
                HashMap::with_hasher_in(self.xkeys.hasher().clone(), self.alloc.clone());
            if m.try_reserve(self.xkeys.len() * 2).is_ok() {
                for (k, v) in self.xkeys.drain() {
                    m.insert(k, v);
                }
                self.xkeys = m;
            }
        }
        self.chan_trash
            .shrink(self.channels.len() + self.deleting.len());
        for ch in self.channels.values_mut() {
            ch.queue.shrink(0);
            if ch.subs.slots.is_empty() && ch.subs.slots.capacity() > 0 {
                ch.subs.slots = AVec::new_in(self.alloc.clone());
            }
        }
        if self.msgs.is_empty() {
            if self.msgs.capacity() > 0 {
                self.msgs = HashMap::with_hasher_in(SeqHash, self.alloc.clone());
            }
        } else if self.msgs.capacity() >= 64 && self.msgs.len() * 4 <= self.msgs.capacity() {
            let mut m: MsgMap<A> = HashMap::with_hasher_in(SeqHash, self.alloc.clone());
            if m.try_reserve(self.msgs.len() * 2).is_ok() {
                for (k, v) in self.msgs.drain() {
                    m.insert(k, v);
                }
                self.msgs = m;
            }
        }
        if self.channels.is_empty() {
            if self.channels.capacity() > 0 {
                let h = self.channels.hasher().clone();
                self.channels = HashMap::with_hasher_in(h, self.alloc.clone());
            }
        } else if self.channels.capacity() >= 64
            && self.channels.len() * 4 <= self.channels.capacity()
        {
            let mut m: ChannelMap<A> =
                HashMap::with_hasher_in(self.channels.hasher().clone(), self.alloc.clone());
            if m.try_reserve(self.channels.len() * 2).is_ok() {
                for (k, v) in self.channels.drain() {
                    m.insert(k, v);
                }
                self.channels = m;
            }
        }
        if self.deleting.is_empty() && self.deleting.capacity() > 0 {
            self.deleting = AVec::new_in(self.alloc.clone());
        }
    }
}

fn info<A: Allocator + Clone>(id: &[u8], c: &Channel<A>) -> ChannelInfo {
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

#[cfg(test)]
mod broker_tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            message_ttl: 60,
            channel_inactivity_time: 30,
            ..Default::default()
        }
    }

    #[test]
    fn broker_inserts_are_idempotent_by_offset_and_stay_out_of_the_log() {
        let l = limits();
        let mut s = Store::new_in(Global, 100, &l).unwrap();
        assert_eq!(s.broker_offset(), None);
        s.register_worker(0, 1, 100, &l).unwrap();
        // Offset 0 (a new stream's first message) into a channel a subscriber just created.
        s.get_or_create(b"a", 100, &l).unwrap();
        assert_eq!(
            s.insert_broker(b"a", 0, b"w", b"1", b"", 90, true, false, 100, &l)
                .unwrap(),
            (90, 1)
        );
        assert_eq!(
            s.insert_broker(b"a", 7, b"x", b"8", b"", 90, true, false, 100, &l)
                .unwrap(),
            (90, 8)
        );
        // A second worker seeing offset 7 gets the first one's time and tag; nothing doubles.
        assert_eq!(
            s.insert_broker(b"a", 7, b"x", b"8", b"", 95, true, false, 101, &l)
                .unwrap(),
            (90, 8)
        );
        assert_eq!(
            s.insert_broker(b"a", 9, b"y", b"e9", b"t", 91, true, false, 101, &l)
                .unwrap(),
            (91, 10)
        );
        let c = s.channel(b"a").unwrap();
        assert_eq!((c.published_messages, c.stored_messages), (10, 3));
        assert_eq!(s.counters().published_messages, 3);
        assert_eq!(s.broker_offset(), Some(9));
        // Not in the host log (each worker consumes the broker itself), and not "lost" either.
        let b = s.records_after(0, 100);
        assert!(b.records.is_empty());
        assert_eq!(b.lost, 0);
        // Resume by event id (the offset when the publisher set none).
        let cur = Cursor {
            backtrack: 0,
            since: None,
            tag: None,
            last_event_id: Some(b"8".to_vec()),
        };
        let old = s.old_messages(b"a", &cur);
        assert_eq!(old.len(), 1);
        assert_eq!(
            (old[0].id, old[0].text.clone(), old[0].event_type.clone()),
            (10, b"y".to_vec(), b"t".to_vec())
        );
        // Host publishes still go through the log.
        s.publish(b"a", b"z", None, None, true, 102, &l).unwrap();
        assert_eq!(s.records_after(0, 100).records.len(), 1);
        assert_eq!(
            s.insert_broker(
                b"x",
                1,
                b"",
                b"",
                b"",
                1,
                false,
                false,
                1,
                &Limits {
                    events_channel_id: Some(b"x".to_vec()),
                    ..l.clone()
                }
            ),
            Err(StoreError::EventsChannel)
        );
    }

    #[test]
    fn a_broker_message_consumed_for_the_host_goes_into_the_log_once() {
        let l = limits();
        let mut s = Store::new_in(Global, 100, &l).unwrap();
        s.register_worker(0, 1, 100, &l).unwrap();
        s.set_clock_ms(100_000);
        assert_eq!(
            s.insert_broker(b"h", 4, b"one", b"", b"ev", 90, true, true, 100, &l)
                .unwrap(),
            (90, 5)
        );
        // The same offset again (an old-generation worker still consuming during a reload,
        // or a redelivery after a reconnect): nothing new in the log.
        assert_eq!(
            s.insert_broker(b"h", 4, b"one", b"", b"ev", 95, true, true, 101, &l)
                .unwrap(),
            (90, 5)
        );
        // Not stored (push_stream_amqp_store_messages off): still in the log.
        s.insert_broker(b"h", 5, b"two", b"x", b"", 91, false, true, 101, &l)
            .unwrap();
        let b = s.records_after(0, 100);
        assert_eq!(b.lost, 0);
        let got: Vec<_> = b
            .records
            .iter()
            .map(|r| match r {
                Record::Message {
                    channel,
                    id,
                    tag,
                    event_id,
                    event_type,
                    text,
                    published_ms,
                    ..
                } => (
                    channel.clone(),
                    *id,
                    *tag,
                    event_id.clone(),
                    event_type.clone(),
                    text.clone(),
                    *published_ms,
                ),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    b"h".to_vec(),
                    5,
                    5,
                    b"".to_vec(),
                    b"ev".to_vec(),
                    b"one".to_vec(),
                    100_000
                ),
                (
                    b"h".to_vec(),
                    6,
                    6,
                    b"x".to_vec(),
                    b"".to_vec(),
                    b"two".to_vec(),
                    100_000
                ),
            ]
        );
        assert_eq!(s.channel(b"h").unwrap().stored_messages, 1);
        assert_eq!(s.broker_offset(), Some(5));
    }

    #[test]
    fn exchange_messages_get_one_host_number_per_occurrence_for_a_window() {
        let l = limits();
        let mut s = Store::new_in(Global, 100, &l).unwrap();
        // Worker A sees key 7 twice (two identical messages) and key 9; worker B then sees
        // the same three copies, in another order between keys.
        assert_eq!(s.exchange_offset(7, 1, 100, 30), (0, true));
        assert_eq!(s.exchange_offset(7, 2, 100, 30), (1, true));
        assert_eq!(s.exchange_offset(9, 1, 101, 30), (2, true));
        assert_eq!(s.exchange_offset(9, 1, 101, 30), (2, false));
        assert_eq!(s.exchange_offset(7, 1, 102, 30), (0, false));
        assert_eq!(s.exchange_offset(7, 2, 102, 30), (1, false));
        assert_eq!(s.exchange_keys(), 3);
        // The numbers work as offsets: the first worker stores, the others find it.
        assert_eq!(
            s.insert_broker(b"c", 2, b"m", b"3", b"", 101, true, false, 101, &l)
                .unwrap(),
            (101, 3)
        );
        assert_eq!(
            s.insert_broker(b"c", 2, b"m", b"3", b"", 105, true, false, 105, &l)
                .unwrap(),
            (101, 3)
        );
        assert_eq!(s.channel(b"c").unwrap().stored_messages, 1);
        // Forgotten after the window (GC): a late copy draws a new number, above every offset.
        s.gc(130, &l, &|_| true);
        assert_eq!(s.exchange_keys(), 1);
        s.gc(131, &l, &|_| true);
        assert_eq!(s.exchange_keys(), 0);
        assert_eq!(s.exchange_offset(7, 1, 140, 30), (3, true));
        s.insert_broker(b"c", 50, b"n", b"", b"", 140, true, false, 140, &l)
            .unwrap();
        assert_eq!(s.exchange_offset(1, 1, 140, 30), (51, true));
    }

    #[test]
    fn a_broker_delete_is_claimed_once_in_stream_order() {
        let l = limits();
        let mut s = Store::new_in(Global, 100, &l).unwrap();
        assert!(s.claim_broker_op(5));
        assert!(!s.claim_broker_op(5), "a second worker presenting offset 5");
        assert!(s.claim_broker_op(9));
        assert!(!s.claim_broker_op(7), "behind an op already applied");
        assert_eq!(
            s.broker_offset(),
            Some(9),
            "a worker starting later resumes after it"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::alloc::Layout;
    use core::cell::Cell;
    use core::ptr::NonNull;
    use std::rc::Rc;

    const T0: i64 = 1_000_000;

    /// A heap allocator with a byte budget: refuses anything that would go over it.
    /// Also fails exactly the n-th allocation from now when `fail_nth` is set.
    #[derive(Clone)]
    struct Budget(Rc<BudgetState>);

    struct BudgetState {
        used: Cell<usize>,
        limit: Cell<usize>,
        fail_in: Cell<Option<usize>>,
    }

    impl Budget {
        fn new(limit: usize) -> Self {
            Budget(Rc::new(BudgetState {
                used: Cell::new(0),
                limit: Cell::new(limit),
                fail_in: Cell::new(None),
            }))
        }
        fn fail_nth(&self, n: usize) {
            self.0.fail_in.set(Some(n))
        }
        fn failed_yet(&self) -> bool {
            self.0.fail_in.get().is_none()
        }
        fn used(&self) -> usize {
            self.0.used.get()
        }
        fn set_limit(&self, limit: usize) {
            self.0.limit.set(limit)
        }
    }

    // SAFETY: delegates to `Global`, only counting bytes.
    unsafe impl Allocator for Budget {
        fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
            let used = self.0.used.get();
            if used + layout.size() > self.0.limit.get() {
                return Err(AllocError);
            }
            match self.0.fail_in.get() {
                Some(0) => {
                    self.0.fail_in.set(None);
                    return Err(AllocError);
                }
                Some(n) => self.0.fail_in.set(Some(n - 1)),
                None => {}
            }
            let p = Global.allocate(layout)?;
            self.0.used.set(used + layout.size());
            Ok(p)
        }
        unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
            self.0.used.set(self.0.used.get() - layout.size());
            // SAFETY: `ptr` was allocated by `Global` with `layout` (see `allocate`).
            unsafe { Global.deallocate(ptr, layout) }
        }
    }

    fn lim() -> Limits {
        Limits {
            message_ttl: 100,
            channel_inactivity_time: 30,
            ..Limits::default()
        }
    }

    fn ev_lim() -> Limits {
        Limits {
            events_channel_id: Some(b"ev".to_vec()),
            ..lim()
        }
    }

    fn alive(_: u32) -> bool {
        true
    }

    fn texts(v: &[StoredMessage]) -> Vec<Vec<u8>> {
        v.iter().map(|m| m.text.clone()).collect()
    }

    fn all(s: &Store<impl Allocator + Clone>, id: &[u8]) -> Vec<StoredMessage> {
        s.old_messages(
            id,
            &Cursor {
                since: Some(0),
                ..Cursor::default()
            },
        )
    }

    fn events(s: &Store<impl Allocator + Clone>) -> Vec<(String, String)> {
        all(s, b"ev")
            .into_iter()
            .map(|m| {
                (
                    String::from_utf8(m.event_type).unwrap(),
                    String::from_utf8(m.text).unwrap(),
                )
            })
            .collect()
    }

    impl<A: Allocator + Clone> Store<A> {
        /// Checks every internal invariant; panics with a description on failure.
        fn check(&self) {
            let mut queued = 0;
            let mut stored = 0;
            let (mut n, mut w) = (0, 0);
            for (k, c) in self.channels.iter() {
                queued += c.queue.len();
                if !c.events {
                    stored += c.queue.len() as u64;
                }
                if c.wildcard {
                    w += 1;
                } else {
                    n += 1;
                }
                let mut prev: Option<(u64, i64)> = None;
                for e in c.queue.iter() {
                    let m = self.msgs.get(&e.seq).expect("queued message exists");
                    assert!(!m.deleted_notice);
                    assert_eq!(m.channel(), &k.0[..]);
                    if let Some((ps, pid)) = prev {
                        assert!(e.seq > ps && m.id > pid);
                    }
                    prev = Some((e.seq, m.id));
                    assert!(m.id <= c.last_id);
                }
            }
            assert_eq!(queued, self.queued_total, "queued_total");
            assert_eq!(stored, self.stored, "stored");
            assert_eq!((n, w), (self.n_channels, self.n_wildcard), "channel counts");
            assert!(
                self.trash.capacity() >= self.trash.len() + self.queued_total,
                "trash room"
            );
            assert!(
                self.chan_trash.capacity()
                    >= self.chan_trash.len() + self.channels.len() + self.deleting.len(),
                "channel trash room"
            );
            assert_eq!(
                self.msgs.len(),
                self.queued_total + self.trash.len(),
                "every record queued or trashed"
            );
            let mut in_trash = 0;
            for e in self.trash.iter() {
                let m = self.msgs.get(&e.seq).expect("trashed record exists");
                if !m.deleted_notice {
                    in_trash += 1;
                }
            }
            assert_eq!(in_trash, self.messages_in_trash, "messages_in_trash");
            for s in self.log_floor + 1..=self.last_seq {
                assert!(self.msgs.contains_key(&s), "log record {s} present");
            }
            assert!(self.log_floor <= self.last_seq);
            for c in self.channels.values() {
                c.subs.check();
            }
            for d in self.deleting.iter() {
                d.subs.check();
                assert!(d.subs.total > 0, "deleted channel waiting on no one");
            }
        }
    }

    impl<A: Allocator> Subs<A> {
        /// Per-slot counts: positive, one entry per slot, summing to the cached total.
        fn check(&self) {
            let mut sum = 0u64;
            for (i, e) in self.slots.iter().enumerate() {
                assert!(e.count > 0, "zero count for slot {}", e.slot);
                assert!(
                    self.slots[..i].iter().all(|o| o.slot != e.slot),
                    "slot {} twice",
                    e.slot
                );
                sum += u64::from(e.count);
            }
            assert_eq!(sum, self.total, "sum(per-slot) == subscribers");
        }
    }

    #[test]
    fn ids_tags_and_seqs() {
        let l = lim();
        let mut s = Store::new_in(Global, T0, &l).unwrap();
        let a1 = s.publish(b"a", b"1", None, None, true, T0, &l).unwrap();
        let b1 = s.publish(b"b", b"2", None, None, true, T0, &l).unwrap();
        let a2 = s.publish(b"a", b"3", None, None, false, T0, &l).unwrap();
        let a3 = s.publish(b"a", b"4", None, None, true, T0 + 1, &l).unwrap();
        assert_eq!(
            a1,
            Published {
                seq: 1,
                id: 1,
                time: T0,
                tag: 1
            }
        );
        assert_eq!(
            b1,
            Published {
                seq: 2,
                id: 1,
                time: T0,
                tag: 2
            }
        );
        assert_eq!(
            a2,
            Published {
                seq: 3,
                id: 2,
                time: T0,
                tag: 3
            }
        );
        assert_eq!(
            a3,
            Published {
                seq: 4,
                id: 3,
                time: T0 + 1,
                tag: 1
            }
        );
        // A clock going backwards keeps (time, tag) increasing.
        let a4 = s.publish(b"a", b"5", None, None, true, T0 - 5, &l).unwrap();
        assert_eq!((a4.time, a4.tag, a4.id), (T0 + 1, 2, 4));
        assert_eq!(s.last_seq(), 5);
        let a = s.channel(b"a").unwrap();
        assert_eq!(
            (
                a.published_messages,
                a.stored_messages,
                a.last_time,
                a.last_tag
            ),
            (4, 3, T0 + 1, 2)
        );
        let c = s.counters();
        assert_eq!(
            (c.published_messages, c.stored_messages, c.messages_in_trash),
            (5, 4, 1)
        );
        assert_eq!((c.channels, c.wildcard_channels, c.created), (2, 0, T0));
        s.check();
    }

    #[test]
    fn tags_count_events_messages_too() {
        let l = ev_lim();
        let mut s = Store::new_in(Global, T0, &l).unwrap();
        // channel_created for "a" takes tag 1, the message tag 2.
        let p = s.publish(b"a", b"x", None, None, true, T0, &l).unwrap();
        assert_eq!((p.seq, p.tag), (2, 2));
        let ev = all(&s, b"ev");
        assert_eq!(ev.len(), 1);
        assert_eq!((ev[0].id, ev[0].time, ev[0].tag), (1, T0, 1));
        s.check();
    }

    #[test]
    fn trimming_to_max_stored() {
        let l = Limits {
            max_messages_stored_per_channel: Some(3),
            ..lim()
        };
        let mut s = Store::new_in(Global, T0, &l).unwrap();
        for i in 0..5u8 {
            s.publish(b"a", &[b'0' + i], None, None, true, T0, &l)
                .unwrap();
        }
        assert_eq!(
            texts(&all(&s, b"a")),
            vec![b"2".to_vec(), b"3".to_vec(), b"4".to_vec()]
        );
        let c = s.counters();
        assert_eq!(
            (c.published_messages, c.stored_messages, c.messages_in_trash),
            (5, 3, 2)
        );
        s.check();
        // Trimmed ones are freed after the trash delay.
        assert_eq!(s.gc(T0 + 9, &l, &alive).freed_messages, 0);
        assert_eq!(s.gc(T0 + 10, &l, &alive).freed_messages, 2);
        assert_eq!(s.counters().messages_in_trash, 0);
        assert_eq!(s.channel(b"a").unwrap().stored_messages, 3);
        s.check();
    }

    #[test]
    fn ttl_expiry() {
        let l = lim();
        let mut s = Store::new_in(Global, T0, &l).unwrap();
        s.publish(b"a", b"1", None, None, true, T0, &l).unwrap();
        s.publish(b"a", b"2", None, None, true, T0 + 50, &l)
            .unwrap();
        let r = s.gc(T0 + 99, &l, &alive);
        assert_eq!(r.expired_messages, 0);
        let r = s.gc(T0 + 100, &l, &alive);
        assert_eq!((r.expired_messages, r.freed_messages), (1, 0));
        assert_eq!(texts(&all(&s, b"a")), vec![b"2".to_vec()]);
        let c = s.counters();
        assert_eq!(
            (c.stored_messages, c.messages_in_trash, c.published_messages),
            (1, 1, 2)
        );
        s.check();
        assert_eq!(s.gc(T0 + 110, &l, &alive).freed_messages, 1);
        assert_eq!(s.channel(b"a").unwrap().published_messages, 2);
        // The last message expires; the channel, idle since T0 + 50, goes in the same pass.
        let r = s.gc(T0 + 150, &l, &alive);
        assert_eq!((r.expired_messages, r.removed_channels), (1, 1));
        assert_eq!(s.counters().stored_messages, 0);
        s.check();
    }

    #[test]
    fn unstored_messages_go_through_the_trash() {
        let l = lim();
        let mut s = Store::new_in(Global, T0, &l).unwrap();
        s.publish(b"a", b"1", None, None, false, T0, &l).unwrap();
        assert_eq!(s.counters().messages_in_trash, 1);
        assert_eq!(s.counters().stored_messages, 0);
        assert_eq!(s.gc(T0 + 9, &l, &alive).freed_messages, 0);
        assert_eq!(s.gc(T0 + 10, &l, &alive).freed_messages, 1);
        assert_eq!(s.counters().messages_in_trash, 0);
        s.check();
    }

    #[test]
    fn inactivity_removal_timing() {
        let l = lim(); // inactivity 30 s
        let mut s = Store::new_in(Global, T0, &l).unwrap();
        s.get_or_create(b"a", T0, &l).unwrap();
        assert_eq!(s.gc(T0 + 29, &l, &alive).removed_channels, 0);
        assert_eq!(s.gc(T0 + 30, &l, &alive).removed_channels, 1);
        assert!(s.channel(b"a").is_none());
        assert_eq!(
            (s.counters().channels, s.counters().channels_in_trash),
            (0, 1)
        );
        s.gc(T0 + 39, &l, &alive);
        assert_eq!(s.counters().channels_in_trash, 1);
        s.gc(T0 + 40, &l, &alive);
        assert_eq!(s.counters().channels_in_trash, 0);

        // Publishing and subscribing refresh the deadline; unsubscribing does not.
        s.get_or_create(b"b", T0 + 100, &l).unwrap();
        s.publish(b"b", b"x", None, None, false, T0 + 110, &l)
            .unwrap(); // → 140
        s.add_subscriber(b"b", 0, T0 + 120, &l).unwrap(); // → 150
        assert_eq!(s.gc(T0 + 145, &l, &alive).removed_channels, 0); // has a subscriber
        s.remove_subscriber(b"b", 0, T0 + 146, &l);
        assert_eq!(s.gc(T0 + 149, &l, &alive).removed_channels, 0);
        assert_eq!(s.gc(T0 + 150, &l, &alive).removed_channels, 1);

        // Stored messages keep a channel alive until they expire.
        s.publish(b"c", b"x", None, None, true, T0 + 200, &l)
            .unwrap();
        assert_eq!(s.gc(T0 + 299, &l, &alive).removed_channels, 0);
        let r = s.gc(T0 + 300, &l, &alive);
        assert_eq!((r.expired_messages, r.removed_channels), (1, 1));
        s.check();
    }

    #[test]
    fn channel_limits_count_events_and_wildcards_separately() {
        let l = Limits {
            max_number_of_channels: Some(2),
            max_number_of_wildcard_channels: Some(1),
            wildcard_prefix: Some(b"w_".to_vec()),
            ..ev_lim()
        };
        let mut s = Store::new_in(Global, T0, &l).unwrap();
        assert_eq!(s.counters().channels, 1); // the events channel
        assert!(s.channel(b"ev").unwrap().events);
        s.get_or_create(b"a", T0, &l).unwrap();
        assert_eq!(
            s.get_or_create(b"b", T0, &l),
            Err(StoreError::ChannelsLimit)
        );
        assert_eq!(
            s.publish(b"b", b"x", None, None, true, T0, &l),
            Err(StoreError::ChannelsLimit)
        );
        assert!(s.get_or_create(b"a", T0, &l).is_ok()); // existing: fine
        let w = s.get_or_create(b"w_1", T0, &l).unwrap();
        assert!(w.wildcard);
        assert_eq!(
            s.get_or_create(b"w_2", T0, &l),
            Err(StoreError::ChannelsLimit)
        );
        let c = s.counters();
        assert_eq!((c.channels, c.wildcard_channels), (2, 1));
        // Deleting frees a slot at once.
        assert_eq!(s.delete(b"a", b"bye", T0, &l), Ok(true));
        s.get_or_create(b"b", T0, &l).unwrap();
        s.check();
    }

    #[test]
    fn delete_reuse_and_transitions() {
        let l = ev_lim();
        let mut s = Store::new_in(Global, T0, &l).unwrap();
        s.register_worker(0, 100, T0, &l).unwrap();
        for t in [b"1", b"2", b"3"] {
            s.publish(b"d", t, None, None, true, T0, &l).unwrap();
        }
        s.add_subscriber(b"d", 0, T0, &l).unwrap();
        s.add_subscriber(b"d", 0, T0, &l).unwrap();
        assert_eq!(s.delete(b"nope", b"x", T0, &l), Ok(false));
        assert_eq!(
            s.delete(b"ev", b"x", T0, &l),
            Err(StoreError::EventsChannel)
        );
        assert_eq!(s.delete(b"d", b"gone", T0, &l), Ok(true));
        assert!(s.channel(b"d").is_none());
        let c = s.counters();
        assert_eq!(
            (c.channels, c.stored_messages, c.messages_in_trash),
            (1, 0, 3)
        );
        assert_eq!((c.channels_in_delete, c.channels_in_trash), (1, 0));
        assert_eq!(c.published_messages, 3);
        // The notice is in the log.
        let b = s.records_after(0, 100);
        let Some(Record::ChannelDeleted { seq, channel, text }) = b.records.last() else {
            panic!("{b:?}")
        };
        assert_eq!(
            (*seq, channel.as_slice(), text.as_slice()),
            (s.last_seq(), &b"d"[..], &b"gone"[..])
        );
        s.check();

        // The id is free again; the new channel starts over.
        let n = s.get_or_create(b"d", T0 + 1, &l).unwrap();
        assert_eq!((n.published_messages, n.subscribers), (0, 0));
        s.add_subscriber(b"d", 0, T0 + 1, &l).unwrap();
        assert_eq!(s.counters().channels, 2);

        // The old subscribers leave: counted out of the deleted channel, not the new one.
        s.remove_subscriber(b"d", 0, T0 + 1, &l);
        assert_eq!(s.counters().channels_in_delete, 1);
        s.remove_subscriber(b"d", 0, T0 + 2, &l);
        let c = s.counters();
        assert_eq!((c.channels_in_delete, c.channels_in_trash), (0, 1));
        assert_eq!(s.channel(b"d").unwrap().subscribers, 1);
        let ev = events(&s);
        let tail: Vec<&str> = ev
            .iter()
            .rev()
            .take(3)
            .rev()
            .map(|(t, _)| t.as_str())
            .collect();
        assert_eq!(
            tail,
            [
                "client_unsubscribed",
                "client_unsubscribed",
                "channel_destroyed"
            ]
        );
        s.check();
        s.gc(T0 + 11, &l, &alive);
        assert_eq!(s.counters().channels_in_trash, 1);
        s.ack(0, 100, s.last_seq());
        let r = s.gc(T0 + 12, &l, &alive);
        assert_eq!(s.counters().channels_in_trash, 0);
        assert_eq!(r.freed_messages, 3);
        assert_eq!(s.counters().messages_in_trash, 0);
        s.check();

        // A channel without subscribers goes straight to the trash.
        s.publish(b"e", b"x", None, None, true, T0 + 20, &l)
            .unwrap();
        assert_eq!(s.delete(b"e", b"", T0 + 20, &l), Ok(true));
        let c = s.counters();
        assert_eq!((c.channels_in_delete, c.channels_in_trash), (0, 1));
        assert_eq!(events(&s).last().unwrap().0, "channel_destroyed");
        // Delete and recreate in a loop.
        for i in 0..20 {
            s.publish(b"loop", b"x", None, None, true, T0 + 21, &l)
                .unwrap();
            s.add_subscriber(b"loop", 0, T0 + 21, &l).unwrap();
            assert_eq!(s.delete(b"loop", b"", T0 + 21, &l), Ok(true), "{i}");
            s.remove_subscriber(b"loop", 0, T0 + 21, &l);
        }
        assert_eq!(s.counters().channels_in_delete, 0);
        s.check();
    }

    #[test]
    fn remove_subscriber_on_unknown_or_empty_channel_is_harmless() {
        let l = ev_lim();
        let mut s = Store::new_in(Global, T0, &l).unwrap();
        s.remove_subscriber(b"nope", 0, T0, &l);
        s.get_or_create(b"a", T0, &l).unwrap();
        s.remove_subscriber(b"a", 0, T0, &l);
        assert_eq!(s.channel(b"a").unwrap().subscribers, 0);
        assert_eq!(events(&s).len(), 1); // only channel_created
        s.check();
    }

    #[test]
    fn events_channel_texts() {
        let l = ev_lim();
        let mut s = Store::new_in(Global, T0, &l).unwrap();
        assert_eq!(
            s.publish(b"ev", b"x", None, None, true, T0, &l),
            Err(StoreError::EventsChannel)
        );
        s.publish(b"a\"b", b"x", Some(b"id1"), Some(b"t"), true, T0, &l)
            .unwrap();
        s.add_subscriber(b"a\"b", 0, T0, &l).unwrap();
        s.remove_subscriber(b"a\"b", 0, T0, &l);
        // Subscribing to the events channel itself emits nothing.
        s.add_subscriber(b"ev", 0, T0, &l).unwrap();
        s.remove_subscriber(b"ev", 0, T0, &l);
        s.gc(T0 + 200, &l, &alive); // the message expires, the channel is inactive
        let ev = events(&s);
        let want = [
            (
                "channel_created",
                r#"{"type": "channel_created", "channel": "a\"b"}"#,
            ),
            (
                "client_subscribed",
                r#"{"type": "client_subscribed", "channel": "a\"b"}"#,
            ),
            (
                "client_unsubscribed",
                r#"{"type": "client_unsubscribed", "channel": "a\"b"}"#,
            ),
        ];
        // Events are stored with the usual ttl: the first three expired at T0 + 100.
        assert_eq!(ev.len(), 1, "{ev:?}");
        assert_eq!(
            ev[0],
            (
                "channel_destroyed".into(),
                r#"{"type": "channel_destroyed", "channel": "a\"b"}"#.into()
            )
        );
        let l2 = Limits {
            message_ttl: 1000,
            ..ev_lim()
        };
        let mut s = Store::new_in(Global, T0, &l2).unwrap();
        s.publish(b"a\"b", b"x", Some(b"id1"), Some(b"t"), true, T0, &l2)
            .unwrap();
        s.add_subscriber(b"a\"b", 0, T0, &l2).unwrap();
        s.remove_subscriber(b"a\"b", 0, T0, &l2);
        let ev = events(&s);
        let got: Vec<(&str, &str)> = ev.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert_eq!(got, want);
        let raw = all(&s, b"ev");
        assert!(raw.iter().all(|m| m.event_id.is_empty()));
        // Events count in the channel's own numbers, not in the global ones.
        let e = s.channel(b"ev").unwrap();
        assert_eq!((e.published_messages, e.stored_messages), (3, 3));
        let c = s.counters();
        assert_eq!((c.published_messages, c.stored_messages), (1, 1));
        // The events channel is never removed for inactivity.
        s.gc(T0 + 100_000, &l2, &alive);
        assert!(s.channel(b"ev").is_some());
        assert_eq!(s.counters().stored_messages, 0);
        s.check();
    }

    #[test]
    fn events_respect_max_stored() {
        let l = Limits {
            max_messages_stored_per_channel: Some(2),
            ..ev_lim()
        };
        let mut s = Store::new_in(Global, T0, &l).unwrap();
        for id in [b"a", b"b", b"c"] {
            s.get_or_create(id, T0, &l).unwrap();
        }
        let e = s.channel(b"ev").unwrap();
        assert_eq!((e.published_messages, e.stored_messages), (3, 2));
        assert_eq!(s.counters().messages_in_trash, 1);
        s.check();
    }

    #[test]
    fn ensure_events_channel_after_enabling() {
        let mut s = Store::new_in(Global, T0, &lim()).unwrap();
        let l = ev_lim();
        s.ensure_events_channel(T0, &l).unwrap();
        assert!(s.channel(b"ev").unwrap().events);
        s.get_or_create(b"a", T0, &l).unwrap();
        assert_eq!(events(&s).len(), 1);
        s.check();
    }

    #[test]
    fn subscriber_limit() {
        let l = Limits {
            max_subscribers_per_channel: Some(2),
            ..lim()
        };
        let mut s = Store::new_in(Global, T0, &l).unwrap();
        s.get_or_create(b"a", T0, &l).unwrap();
        s.add_subscriber(b"a", 0, T0, &l).unwrap();
        s.add_subscriber(b"a", 0, T0, &l).unwrap();
        assert_eq!(
            s.add_subscriber(b"a", 0, T0, &l),
            Err(StoreError::SubscribersLimit)
        );
        assert_eq!(s.channel(b"a").unwrap().subscribers, 2);
        s.remove_subscriber(b"a", 0, T0, &l);
        s.add_subscriber(b"a", 0, T0, &l).unwrap();
        s.check();
    }

    #[test]
    fn listing_order_and_prefix() {
        let l = lim();
        let mut s = Store::new_in(Global, T0, &l).unwrap();
        for id in [&b"zz"[..], b"ab", b"aa", b"b", b"ac"] {
            s.get_or_create(id, T0, &l).unwrap();
        }
        s.delete(b"aa", b"", T0, &l).unwrap();
        let ids = |v: Vec<ChannelInfo>| v.into_iter().map(|c| c.id).collect::<Vec<_>>();
        assert_eq!(ids(s.channels(None)), [&b"zz"[..], b"ab", b"b", b"ac"]);
        assert_eq!(ids(s.channels(Some(b"a"))), [&b"ab"[..], b"ac"]);
        assert_eq!(ids(s.channels(Some(b""))).len(), 4);
        assert!(s.channels(Some(b"q")).is_empty());
        s.get_or_create(b"aa", T0, &l).unwrap();
        assert_eq!(ids(s.channels(Some(b"a"))), [&b"ab"[..], b"ac", b"aa"]);
    }

    #[test]
    fn workers_and_subscriber_totals() {
        let l = lim();
        let mut s = Store::new_in(Global, T0, &l).unwrap();
        s.publish(b"a", b"x", None, None, true, T0, &l).unwrap();
        assert_eq!(s.register_worker(3, 300, T0, &l).unwrap(), 1);
        assert_eq!(s.register_worker(1, 100, T0 + 1, &l).unwrap(), 1);
        s.set_worker_subscribers(3, 300, 5);
        s.set_worker_subscribers(1, 100, 2);
        s.set_worker_subscribers(1, 999, 50); // wrong pid: ignored
        assert_eq!(s.counters().subscribers, 7);
        let w = s.workers();
        assert_eq!(
            w.iter().map(|w| (w.slot, w.pid)).collect::<Vec<_>>(),
            [(1, 100), (3, 300)]
        );
        assert_eq!(
            w[0],
            WorkerSlot {
                slot: 1,
                pid: 100,
                started: T0 + 1,
                subscribers: 2,
                cursor: 1
            }
        );
        // A respawn replaces the slot.
        s.publish(b"a", b"y", None, None, true, T0, &l).unwrap();
        assert_eq!(s.register_worker(3, 301, T0 + 5, &l).unwrap(), 2);
        assert_eq!(s.counters().subscribers, 2);
        s.unregister_worker(1, 999, T0, &l); // wrong pid
        assert_eq!(s.workers().len(), 2);
        s.unregister_worker(1, 100, T0, &l);
        assert_eq!(s.workers().iter().map(|w| w.pid).collect::<Vec<_>>(), [301]);
    }

    #[test]
    fn log_delivery_two_workers() {
        let l = lim();
        let mut s = Store::new_in(Global, T0, &l).unwrap();
        assert_eq!(s.register_worker(0, 100, T0, &l).unwrap(), 0);
        assert_eq!(s.register_worker(1, 101, T0, &l).unwrap(), 0);
        for i in 0..5u8 {
            s.publish(b"a", &[b'0' + i], Some(b"e"), Some(b"t"), false, T0, &l)
                .unwrap();
        }
        let b = s.records_after(0, 10);
        assert_eq!((b.records.len(), b.cursor, b.lost), (5, 5, 0));
        assert_eq!(
            b.records[0],
            Record::Message {
                seq: 1,
                channel: b"a".to_vec(),
                id: 1,
                time: T0,
                tag: 1,
                event_id: b"e".to_vec(),
                event_type: b"t".to_vec(),
                text: b"0".to_vec(),
                published_ms: 0,
            }
        );
        s.ack(0, 100, b.cursor);
        let b2 = s.records_after(0, 2);
        assert_eq!((b2.records.len(), b2.cursor), (2, 2));
        s.ack(1, 101, b2.cursor);
        assert_eq!(
            s.records_after(5, 10),
            Batch {
                records: vec![],
                cursor: 5,
                lost: 0
            }
        );
        // Freed only once both acked (and after the trash delay).
        assert_eq!(s.gc(T0 + 5, &l, &alive).freed_messages, 0);
        assert_eq!(s.gc(T0 + 10, &l, &alive).freed_messages, 2);
        s.check();
        let b3 = s.records_after(2, 10);
        assert_eq!((b3.records.len(), b3.cursor, b3.lost), (3, 5, 0));
        s.ack(1, 101, 5);
        assert_eq!(s.gc(T0 + 11, &l, &alive).freed_messages, 3);
        // A worker that is far behind is told what it lost.
        let b4 = s.records_after(0, 10);
        assert_eq!((b4.records.len(), b4.cursor, b4.lost), (0, 5, 5));
        // Acks beyond the end or backwards are clamped.
        s.ack(0, 100, 1000);
        s.ack(0, 100, 1);
        assert_eq!(s.workers()[0].cursor, 5);
        s.check();
    }

    #[test]
    fn stored_messages_stay_in_log_until_acked_and_lost_counts() {
        let l = lim();
        let mut s = Store::new_in(Global, T0, &l).unwrap();
        s.register_worker(0, 100, T0, &l).unwrap();
        for _ in 0..4 {
            s.publish(b"a", b"x", None, None, true, T0, &l).unwrap();
        }
        // No other worker: a second one registering now starts at the end.
        assert_eq!(s.register_worker(1, 101, T0, &l).unwrap(), 4);
        s.publish(b"a", b"y", None, None, true, T0, &l).unwrap();
        assert_eq!(s.records_after(4, 10).records.len(), 1);
        // Worker 100 dies: its cursor no longer pins anything.
        s.ack(1, 101, 5);
        let r = s.gc(T0 + 1, &l, &|p| p != 100);
        assert_eq!(r.dead_workers, vec![100]);
        let b = s.records_after(0, 3);
        assert_eq!((b.records.len(), b.lost, b.cursor), (0, 5, 5));
        s.check();
    }

    #[test]
    fn records_after_in_batches() {
        let l = lim();
        let mut s = Store::new_in(Global, T0, &l).unwrap();
        s.register_worker(0, 1, T0, &l).unwrap();
        for _ in 0..10 {
            s.publish(b"a", b"x", None, None, true, T0, &l).unwrap();
        }
        let mut cur = 0;
        let mut got = 0;
        loop {
            let b = s.records_after(cur, 3);
            if b.records.is_empty() {
                break;
            }
            assert!(b.records.len() <= 3);
            got += b.records.len();
            cur = b.cursor;
            s.ack(0, 1, cur);
        }
        assert_eq!((got, cur), (10, 10));
        assert_eq!(
            s.records_after(0, 0),
            Batch {
                records: vec![],
                cursor: 0,
                lost: 0
            }
        );
    }

    #[test]
    fn old_messages_resume_rules() {
        let l = lim();
        let mut s = Store::new_in(Global, T0, &l).unwrap();
        s.publish(b"a", b"1", Some(b"e1"), None, true, T0, &l)
            .unwrap(); // tag 1
        s.publish(b"a", b"2", Some(b"e2"), None, true, T0, &l)
            .unwrap(); // tag 2
        s.publish(b"a", b"3", Some(b"e3"), None, true, T0 + 1, &l)
            .unwrap(); // tag 1
        s.publish(b"a", b"4", None, None, true, T0 + 1, &l).unwrap(); // tag 2
        let get = |c: Cursor| -> Vec<String> {
            s.old_messages(b"a", &c)
                .into_iter()
                .map(|m| String::from_utf8(m.text).unwrap())
                .collect()
        };
        assert!(get(Cursor::default()).is_empty());
        assert_eq!(
            get(Cursor {
                backtrack: 2,
                ..Cursor::default()
            }),
            ["3", "4"]
        );
        assert_eq!(
            get(Cursor {
                backtrack: 99,
                since: Some(T0 + 5),
                ..Cursor::default()
            }),
            ["1", "2", "3", "4"]
        );
        assert_eq!(
            get(Cursor {
                since: Some(0),
                ..Cursor::default()
            }),
            ["1", "2", "3", "4"]
        );
        assert_eq!(
            get(Cursor {
                since: Some(T0),
                tag: Some(1),
                ..Cursor::default()
            }),
            ["2", "3", "4"]
        );
        assert_eq!(
            get(Cursor {
                since: Some(T0),
                ..Cursor::default()
            }),
            ["3", "4"]
        );
        assert_eq!(
            get(Cursor {
                last_event_id: Some(b"e2".to_vec()),
                ..Cursor::default()
            }),
            ["3", "4"]
        );
        assert!(get(Cursor {
            last_event_id: Some(b"zz".to_vec()),
            ..Cursor::default()
        })
        .is_empty());
        let m = &s.old_messages(
            b"a",
            &Cursor {
                backtrack: 1,
                ..Cursor::default()
            },
        )[0];
        assert_eq!(
            (m.id, m.time, m.tag, m.event_id.as_slice()),
            (4, T0 + 1, 2, &b""[..])
        );
        assert!(s
            .old_messages(
                b"nope",
                &Cursor {
                    backtrack: 1,
                    ..Cursor::default()
                }
            )
            .is_empty());
    }

    /// Publishes 100-byte messages until the store refuses; returns how many it took.
    fn fill(s: &mut Store<Budget>, now: i64, l: &Limits) -> usize {
        let mut n = 0usize;
        loop {
            let mut text = format!("message {n:08} ").into_bytes();
            text.resize(100, b'.');
            match s.publish(b"fill", &text, None, None, true, now, l) {
                Ok(p) => assert_eq!(
                    p.id as usize,
                    s.channel(b"fill").unwrap().published_messages as usize
                ),
                Err(StoreError::OutOfMemory) => return n,
                Err(e) => panic!("{e:?}"),
            }
            n += 1;
            assert!(n < 1_000_000);
        }
    }

    fn check_fill(s: &Store<Budget>, first_id: usize, n: usize) {
        let got = s.old_messages(
            b"fill",
            &Cursor {
                backtrack: u32::MAX,
                ..Cursor::default()
            },
        );
        assert_eq!(got.len(), n);
        for (i, m) in got.iter().enumerate() {
            let mut text = format!("message {i:08} ").into_bytes();
            text.resize(100, b'.');
            assert_eq!(m.text, text);
            assert_eq!(m.id as usize, first_id + i);
        }
    }

    #[test]
    fn out_of_memory_fill_gc_refill() {
        let l = Limits {
            message_ttl: 60,
            channel_inactivity_time: 1_000_000,
            ..lim()
        };
        let b = Budget::new(256 * 1024);
        let mut s = Store::new_in(b.clone(), T0, &l).unwrap();
        s.register_worker(0, 100, T0, &l).unwrap();
        s.get_or_create(b"fill", T0, &l).unwrap();
        let base = b.used();
        let n1 = fill(&mut s, T0, &l);
        assert!(n1 > 500, "{n1}");
        s.check();
        check_fill(&s, 1, n1);
        // Other operations fail cleanly too (or succeed), never corrupting anything.
        let _ = s.get_or_create(
            b"another channel with a long id ......................",
            T0,
            &l,
        );
        let _ = s.delete(b"fill-none", b"", T0, &l);
        s.check();
        check_fill(&s, 1, n1);
        // GC runs with no memory left.
        let r = s.gc(T0 + 59, &l, &alive);
        assert_eq!(r.expired_messages, 0);
        let r = s.gc(T0 + 60, &l, &alive);
        assert_eq!((r.expired_messages, r.freed_messages), (n1 as u64, 0));
        assert_eq!(s.counters().messages_in_trash, n1 as u64);
        // Not acked yet by the worker: still pinned after the delay.
        assert_eq!(s.gc(T0 + 70, &l, &alive).freed_messages, 0);
        let batch = s.records_after(0, usize::MAX);
        assert_eq!(batch.records.len(), n1);
        s.ack(0, 100, batch.cursor);
        assert_eq!(s.gc(T0 + 71, &l, &alive).freed_messages, n1 as u64);
        s.check();
        assert!(b.used() <= base + 64, "used {} base {}", b.used(), base);
        // A second fill accepts the same number of messages.
        let n2 = fill(&mut s, T0 + 100, &l);
        assert_eq!(n1, n2);
        check_fill(&s, n1 + 1, n2);
        s.check();
    }

    #[test]
    fn dead_worker_does_not_pin_memory() {
        let l = Limits {
            message_ttl: 60,
            channel_inactivity_time: 1_000_000,
            ..lim()
        };
        let b = Budget::new(128 * 1024);
        let mut s = Store::new_in(b.clone(), T0, &l).unwrap();
        s.register_worker(0, 100, T0, &l).unwrap();
        s.register_worker(1, 101, T0, &l).unwrap();
        s.get_or_create(b"fill", T0, &l).unwrap();
        let base = b.used();
        let n = fill(&mut s, T0, &l);
        let last = s.last_seq();
        s.ack(0, 100, last);
        s.gc(T0 + 60, &l, &alive);
        assert_eq!(s.gc(T0 + 70, &l, &alive).freed_messages, 0); // worker 101 pins
        let r = s.gc(T0 + 71, &l, &|p| p != 101);
        assert_eq!(
            (r.dead_workers.as_slice(), r.freed_messages),
            (&[101][..], n as u64)
        );
        assert!(b.used() <= base + 64);
        s.check();
    }

    #[test]
    fn events_dropped_when_out_of_memory() {
        let l = Limits {
            message_ttl: 60,
            ..ev_lim()
        };
        let b = Budget::new(64 * 1024);
        let mut s = Store::new_in(b.clone(), T0, &l).unwrap();
        s.get_or_create(b"fill", T0, &l).unwrap();
        s.add_subscriber(b"fill", 0, T0, &l).unwrap();
        let before = s.channel(b"ev").unwrap().published_messages;
        fill(&mut s, T0, &l);
        // No room for an event: the unsubscribe still happens, the event is counted as dropped.
        let mut dropped = false;
        for _ in 0..50 {
            s.remove_subscriber(b"fill", 0, T0, &l);
            let _ = s.add_subscriber(b"fill", 0, T0, &l);
            if s.dropped_events() > 0 {
                dropped = true;
                break;
            }
        }
        assert!(dropped);
        assert!(s.channel(b"ev").unwrap().published_messages >= before);
        s.check();
    }

    /// Runs a scripted workload under many budgets: every operation either succeeds or fails
    /// cleanly, the invariants always hold, and once memory comes back everything works.
    #[test]
    fn out_of_memory_sweep() {
        let l = Limits {
            message_ttl: 20,
            max_messages_stored_per_channel: Some(4),
            channel_inactivity_time: 5,
            wildcard_prefix: Some(b"w".to_vec()),
            ..ev_lim()
        };
        for limit in (0..12_000).step_by(37) {
            let b = Budget::new(limit);
            let Ok(mut s) = Store::new_in(b.clone(), T0, &l) else {
                continue;
            };
            let _ = s.register_worker(0, 1, T0, &l);
            let (mut ok, mut failed) = (0, 0);
            for step in 0..60i64 {
                let now = T0 + step;
                let id = [b'a' + (step % 5) as u8];
                let before = s.channel(&id);
                let text = b"some text here";
                match s.publish(&id, text, Some(b"e"), None, step % 3 != 0, now, &l) {
                    Ok(p) => {
                        ok += 1;
                        let prev = before.map_or(0, |c| c.published_messages as i64);
                        assert_eq!(p.id, prev + 1);
                    }
                    Err(e) => {
                        assert!(matches!(
                            e,
                            StoreError::OutOfMemory | StoreError::ChannelsLimit
                        ));
                        failed += 1;
                        // Refused: the channel (if it existed) did not change.
                        if let Some(before) = before {
                            assert_eq!(s.channel(&id), Some(before));
                        }
                    }
                }
                s.check();
                if step % 4 == 0 {
                    let _ = s.add_subscriber(&id, 0, now, &l);
                }
                if step % 7 == 0 {
                    let _ = s.delete(&id, b"bye", now, &l);
                }
                if step % 5 == 0 {
                    s.remove_subscriber(&id, 0, now, &l);
                }
                if step % 9 == 0 {
                    let _ = s.get_or_create(b"wx", now, &l);
                }
                s.check();
                let bt = s.records_after(s.workers().first().map_or(0, |w| w.cursor), 7);
                s.ack(0, 1, bt.cursor);
                s.gc(now, &l, &alive);
                s.check();
            }
            if std::env::var_os("SWEEP_DEBUG").is_some() {
                eprintln!("{limit}: {ok} ok {failed} failed");
            }
            // Memory comes back: everything works, and it all drains.
            b.set_limit(usize::MAX);
            s.publish(b"final", b"x", None, None, true, T0 + 100, &l)
                .unwrap();
            s.add_subscriber(b"final", 0, T0 + 100, &l).unwrap();
            s.remove_subscriber(b"final", 0, T0 + 100, &l);
            for (i, t) in [200, 230, 260].into_iter().enumerate() {
                let c = s.last_seq();
                s.ack(0, 1, c);
                s.gc(T0 + t, &l, &alive);
                s.check();
                if i == 2 {
                    let c = s.counters();
                    assert_eq!(
                        (c.messages_in_trash, c.stored_messages, c.channels_in_trash),
                        (0, 0, 0),
                        "{limit}"
                    );
                }
            }
        }
    }

    /// Fails each single allocation of a workload in turn: whichever operation hits it fails
    /// cleanly (or absorbs it, like a dropped event), and the store stays consistent.
    #[test]
    fn single_allocation_failures() {
        let l = Limits {
            max_messages_stored_per_channel: Some(3),
            wildcard_prefix: Some(b"w".to_vec()),
            ..ev_lim()
        };
        let workload = |s: &mut Store<Budget>| {
            let _ = s.register_worker(0, 1, T0, &l);
            for step in 0..12i64 {
                let now = T0 + step * 3;
                let id: &[u8] = [&b"a"[..], b"b", b"w1", b"c"][(step % 4) as usize];
                let _ = s.publish(id, b"text", Some(b"e"), Some(b"t"), step % 5 != 0, now, &l);
                s.check();
                let _ = s.add_subscriber(id, 0, now, &l);
                s.check();
                if step % 3 == 2 {
                    let _ = s.delete(id, b"bye", now, &l);
                    s.check();
                }
                s.remove_subscriber(id, 0, now, &l);
                s.check();
                let batch = s.records_after(s.workers().first().map_or(0, |w| w.cursor), 5);
                s.ack(0, 1, batch.cursor);
                s.gc(now, &l, &alive);
                s.check();
            }
        };
        // Count the allocations of a clean run.
        let b = Budget::new(usize::MAX);
        let mut s = Store::new_in(b.clone(), T0, &l).unwrap();
        b.fail_nth(usize::MAX);
        workload(&mut s);
        let total = usize::MAX - b.0.fail_in.get().unwrap();
        assert!(total > 100, "{total}");
        for n in 0..total {
            let b = Budget::new(usize::MAX);
            let mut s = Store::new_in(b.clone(), T0, &l).unwrap();
            b.fail_nth(n);
            workload(&mut s);
            assert!(b.failed_yet(), "{n}");
            s.check();
            // And everything drains afterwards.
            let c = s.last_seq();
            s.ack(0, 1, c);
            s.gc(T0 + 1000, &l, &alive);
            let c = s.last_seq();
            s.ack(0, 1, c);
            s.gc(T0 + 2000, &l, &alive);
            s.gc(T0 + 3000, &l, &alive);
            let c = s.counters();
            assert_eq!(
                (c.messages_in_trash, c.stored_messages, c.channels),
                (0, 0, 1),
                "{n}"
            );
            s.check();
        }
    }

    fn ev(ty: &str, ch: &str) -> (String, String) {
        (
            ty.to_string(),
            format!(r#"{{"type": "{ty}", "channel": "{ch}"}}"#),
        )
    }

    fn pids(s: &Store<impl Allocator + Clone>) -> Vec<u32> {
        s.workers().iter().map(|w| w.pid).collect()
    }

    #[test]
    fn dead_worker_subscriptions_are_released() {
        let l = Limits {
            max_subscribers_per_channel: Some(3),
            ..ev_lim()
        };
        let mut s = Store::new_in(Global, T0, &l).unwrap();
        s.register_worker(0, 100, T0, &l).unwrap();
        s.register_worker(1, 101, T0, &l).unwrap();
        // "a": two subscribers on slot 0, one on slot 1: full.
        for slot in [0, 1, 0] {
            s.add_subscriber(b"a", slot, T0, &l).unwrap();
        }
        assert_eq!(s.channel_slots(b"a"), [(0, 2), (1, 1)]);
        assert_eq!(s.channel(b"a").unwrap().subscribers, 3);
        assert_eq!(
            s.add_subscriber(b"a", 0, T0, &l),
            Err(StoreError::SubscribersLimit)
        );
        // "d": deleted, waiting only on slot 1; "e": deleted, waiting on both slots.
        s.add_subscriber(b"d", 1, T0, &l).unwrap();
        s.add_subscriber(b"d", 1, T0, &l).unwrap();
        s.add_subscriber(b"e", 0, T0, &l).unwrap();
        s.add_subscriber(b"e", 1, T0, &l).unwrap();
        assert_eq!(s.delete(b"d", b"", T0, &l), Ok(true));
        assert_eq!(s.delete(b"e", b"", T0, &l), Ok(true));
        // "f": only on slot 1; idle deadline T0 + 30.
        s.add_subscriber(b"f", 1, T0, &l).unwrap();
        assert_eq!(s.counters().channels_in_delete, 2);
        s.check();

        // Worker 101 (slot 1) dies.
        let n = events(&s).len();
        let r = s.gc(T0 + 5, &l, &|p| p != 101);
        assert_eq!(
            (r.dead_workers.as_slice(), r.removed_channels),
            (&[101][..], 0)
        );
        assert_eq!(pids(&s), [100]);
        assert_eq!(s.channel(b"a").unwrap().subscribers, 2);
        assert_eq!(s.channel_slots(b"a"), [(0, 2)]);
        assert_eq!(s.channel(b"f").unwrap().subscribers, 0);
        assert!(s.channel_slots(b"f").is_empty());
        // "d" waited only on slot 1: trashed. "e" still waits on slot 0.
        let c = s.counters();
        assert_eq!((c.channels_in_delete, c.channels_in_trash), (1, 1));
        let tail = events(&s).split_off(n);
        let mut got = tail.clone();
        got.sort();
        let mut want = vec![
            ev("client_unsubscribed", "a"),
            ev("client_unsubscribed", "f"),
            ev("client_unsubscribed", "d"),
            ev("client_unsubscribed", "d"),
            ev("channel_destroyed", "d"),
            ev("client_unsubscribed", "e"),
        ];
        want.sort();
        assert_eq!(got, want);
        let pos = |e: (String, String)| tail.iter().rposition(|t| *t == e).unwrap();
        assert!(pos(ev("channel_destroyed", "d")) > pos(ev("client_unsubscribed", "d")));
        s.check();

        // The limit counts only the living.
        s.add_subscriber(b"a", 0, T0 + 5, &l).unwrap();
        assert_eq!(
            s.add_subscriber(b"a", 0, T0 + 5, &l),
            Err(StoreError::SubscribersLimit)
        );
        assert_eq!(s.channel_slots(b"a"), [(0, 3)]);
        // Unsubscribing from a slot that has no count there does nothing.
        let n = events(&s).len();
        s.remove_subscriber(b"a", 1, T0 + 5, &l);
        assert_eq!(s.channel(b"a").unwrap().subscribers, 3);
        assert_eq!(events(&s).len(), n);

        // "f" keeps its inactivity deadline (from its last subscribe).
        assert_eq!(s.gc(T0 + 29, &l, &alive).removed_channels, 0);
        assert_eq!(s.gc(T0 + 30, &l, &alive).removed_channels, 1);
        assert!(s.channel(b"f").is_none());
        assert!(s.channel(b"a").is_some());

        // Slot 0's subscriber of "e" leaves normally: "e" is done.
        s.remove_subscriber(b"e", 0, T0 + 31, &l);
        assert_eq!(s.counters().channels_in_delete, 0);
        assert_eq!(events(&s).last().unwrap(), &ev("channel_destroyed", "e"));
        s.check();
    }

    #[test]
    fn respawn_in_a_slot_releases_the_old_process_subscriptions() {
        let l = ev_lim();
        let mut s = Store::new_in(Global, T0, &l).unwrap();
        s.register_worker(0, 100, T0, &l).unwrap();
        s.register_worker(2, 200, T0, &l).unwrap();
        s.add_subscriber(b"a", 0, T0, &l).unwrap();
        s.add_subscriber(b"a", 2, T0, &l).unwrap();
        s.add_subscriber(b"a", 2, T0, &l).unwrap();
        s.add_subscriber(b"d", 2, T0, &l).unwrap();
        s.delete(b"d", b"", T0, &l).unwrap();
        // The same process registering again keeps its subscriptions.
        s.register_worker(2, 200, T0, &l).unwrap();
        assert_eq!(s.channel_slots(b"a"), [(0, 1), (2, 2)]);
        assert_eq!(s.counters().channels_in_delete, 1);
        s.check();

        // A new process in slot 2 (the old one crashed, gc has not noticed yet).
        let n = events(&s).len();
        let cursor = s.register_worker(2, 201, T0 + 1, &l).unwrap();
        assert_eq!(cursor, s.last_seq()); // it starts after the events just emitted
        assert_eq!(pids(&s), [100, 201]);
        assert_eq!(s.channel_slots(b"a"), [(0, 1)]);
        assert_eq!(s.channel(b"a").unwrap().subscribers, 1);
        let c = s.counters();
        assert_eq!((c.channels_in_delete, c.channels_in_trash), (0, 1));
        assert_eq!(
            events(&s).split_off(n),
            [
                ev("client_unsubscribed", "a"),
                ev("client_unsubscribed", "a"),
                ev("client_unsubscribed", "d"),
                ev("channel_destroyed", "d"),
            ]
        );
        s.check();

        // The new process subscribes; a stale pid unregistering the slot changes nothing.
        s.add_subscriber(b"a", 2, T0 + 1, &l).unwrap();
        s.unregister_worker(2, 200, T0 + 2, &l);
        assert_eq!(s.channel_slots(b"a"), [(0, 1), (2, 1)]);
        assert_eq!(pids(&s), [100, 201]);
        // A clean exit that left a count behind: dropped too, with its event.
        let n = events(&s).len();
        s.unregister_worker(2, 201, T0 + 2, &l);
        assert_eq!(pids(&s), [100]);
        assert_eq!(s.channel_slots(b"a"), [(0, 1)]);
        assert_eq!(events(&s).split_off(n), [ev("client_unsubscribed", "a")]);
        // A slot whose process never got registered (registration failed) is cleaned when
        // the next process registers it.
        s.add_subscriber(b"a", 3, T0 + 3, &l).unwrap();
        s.register_worker(3, 300, T0 + 3, &l).unwrap();
        assert_eq!(s.channel_slots(b"a"), [(0, 1)]);
        assert!(s.channel_slots(b"nope").is_empty());
        s.check();
    }

    #[test]
    fn unsubscribes_are_counted_per_slot() {
        let l = ev_lim();
        let mut s = Store::new_in(Global, T0, &l).unwrap();
        s.add_subscriber(b"d", 0, T0, &l).unwrap();
        s.delete(b"d", b"", T0, &l).unwrap();
        s.add_subscriber(b"d", 1, T0, &l).unwrap(); // recreated, subscribed on another worker
        let n = events(&s).len();
        // Slot 1 had no subscriber of the deleted channel: this one leaves the live channel.
        s.remove_subscriber(b"d", 1, T0, &l);
        assert_eq!(s.channel(b"d").unwrap().subscribers, 0);
        assert_eq!(s.counters().channels_in_delete, 1);
        // Slot 2 has no subscriber anywhere: nothing happens.
        s.remove_subscriber(b"d", 2, T0, &l);
        assert_eq!(events(&s).len(), n + 1);
        s.check();
        s.remove_subscriber(b"d", 0, T0, &l);
        assert_eq!(s.counters().channels_in_delete, 0);
        assert_eq!(events(&s).last().unwrap(), &ev("channel_destroyed", "d"));
        s.check();
    }

    #[test]
    fn add_subscriber_out_of_memory_changes_nothing() {
        let l = ev_lim();
        let b = Budget::new(usize::MAX);
        let mut s = Store::new_in(b.clone(), T0, &l).unwrap();
        // Fill the channel's slot entries to their capacity.
        let room = |s: &Store<Budget>| {
            let v = &s.channels.get(&KeyRef(b"a")).unwrap().subs.slots;
            v.capacity() - v.len()
        };
        s.add_subscriber(b"a", 0, T0, &l).unwrap();
        let mut full = 1;
        while room(&s) > 0 {
            s.add_subscriber(b"a", full, T0, &l).unwrap();
            full += 1;
        }
        type Snap = (
            Option<ChannelInfo>,
            Vec<(usize, u64)>,
            Counters,
            u64,
            Option<ChannelInfo>,
            u64,
        );
        let snap = |s: &Store<Budget>| -> Snap {
            (
                s.channel(b"a"),
                s.channel_slots(b"a"),
                s.counters(),
                s.last_seq(),
                s.channel(b"new"),
                s.dropped_events(),
            )
        };
        let before = snap(&s);
        let used = b.used();
        // A new slot on an existing channel needs its entry.
        b.fail_nth(0);
        assert_eq!(
            s.add_subscriber(b"a", full, T0 + 1, &l),
            Err(StoreError::OutOfMemory)
        );
        assert!(b.failed_yet());
        assert_eq!((snap(&s), b.used()), (before.clone(), used));
        s.check();
        for i in 1..full {
            s.remove_subscriber(b"a", i, T0 + 1, &l);
        }
        assert_eq!(s.channel_slots(b"a"), [(0, 1)]);
        // With no memory at all, a slot already counted still takes one more (its event is
        // dropped); new slots fit while the channel's entries have room, then fail cleanly.
        b.set_limit(b.used());
        s.add_subscriber(b"a", 0, T0 + 1, &l).unwrap();
        assert_eq!(s.channel_slots(b"a"), [(0, 2)]);
        assert_eq!(s.dropped_events(), before.5 + 1);
        let mut slot = 1;
        let err = loop {
            match s.add_subscriber(b"a", slot, T0 + 1, &l) {
                Ok(()) => slot += 1,
                Err(e) => break e,
            }
            assert!(slot < 1000);
        };
        assert_eq!(err, StoreError::OutOfMemory);
        let mut want = vec![(0, 2)];
        want.extend((1..slot).map(|i| (i, 1)));
        assert_eq!(s.channel_slots(b"a"), want);
        assert_eq!(s.channel(b"a").unwrap().subscribers, slot as u64 + 1);
        s.check();
        for i in 0..slot {
            s.remove_subscriber(b"a", i, T0 + 1, &l);
        }
        assert_eq!(s.channel_slots(b"a"), [(0, 1)]);
        b.set_limit(usize::MAX);
        s.check();
        // A channel that does not exist yet: failing any allocation before it is created
        // leaves nothing behind (not even a channel_created event).
        let before = snap(&s);
        let used = b.used();
        let mut failures = 0;
        for n in 0.. {
            b.fail_nth(n);
            match s.add_subscriber(b"new", 0, T0 + 2, &l) {
                Err(StoreError::OutOfMemory) => {
                    failures += 1;
                    assert_eq!((snap(&s), b.used()), (before.clone(), used), "{n}");
                    s.check();
                }
                Ok(()) => break,
                Err(e) => panic!("{e:?}"),
            }
        }
        b.0.fail_in.set(None);
        assert!(failures >= 2, "{failures}");
        assert_eq!(s.channel_slots(b"new"), [(0, 1)]);
        s.check();
    }

    /// Worker deaths, respawns and exits in a workload whose allocations fail one at a time:
    /// the store stays consistent and, once every worker is gone, everything drains.
    #[test]
    fn worker_churn_under_allocation_failures() {
        let l = Limits {
            max_messages_stored_per_channel: Some(3),
            ..ev_lim()
        };
        let workload = |s: &mut Store<Budget>| {
            let _ = s.register_worker(0, 1, T0, &l);
            let _ = s.register_worker(1, 10, T0, &l);
            for step in 0..12i64 {
                let now = T0 + step;
                let id: &[u8] = [&b"a"[..], b"b", b"c"][(step % 3) as usize];
                let slot = (step % 2) as usize;
                let _ = s.publish(id, b"text", None, None, step % 2 == 0, now, &l);
                let _ = s.add_subscriber(id, slot, now, &l);
                let _ = s.add_subscriber(id, 1 - slot, now, &l);
                s.check();
                if step % 4 == 1 {
                    let _ = s.delete(id, b"bye", now, &l);
                    s.check();
                }
                s.remove_subscriber(id, 0, now, &l);
                s.check();
                if step % 5 == 4 {
                    // Slot 1's worker dies; another one takes the slot.
                    s.gc(now, &l, &|p| p == 1);
                    s.check();
                    let _ = s.register_worker(1, 10 + step as u32, now, &l);
                    s.check();
                }
                let batch = s.records_after(s.workers().first().map_or(0, |w| w.cursor), 5);
                s.ack(0, 1, batch.cursor);
                s.gc(now, &l, &alive);
                s.check();
            }
            // Both exit cleanly, slot 1 leaving subscriptions behind.
            let pid1 = s
                .workers()
                .iter()
                .find(|w| w.slot == 1)
                .map_or(99, |w| w.pid);
            s.unregister_worker(1, pid1, T0 + 20, &l);
            s.check();
            s.remove_subscriber(b"a", 0, T0 + 20, &l);
            s.unregister_worker(0, 1, T0 + 20, &l);
            s.check();
        };
        let b = Budget::new(usize::MAX);
        let mut s = Store::new_in(b.clone(), T0, &l).unwrap();
        b.fail_nth(usize::MAX);
        workload(&mut s);
        let total = usize::MAX - b.0.fail_in.get().unwrap();
        assert!(total > 50, "{total}");
        for n in 0..total {
            let b = Budget::new(usize::MAX);
            let mut s = Store::new_in(b.clone(), T0, &l).unwrap();
            b.fail_nth(n);
            workload(&mut s);
            assert!(b.failed_yet(), "{n}");
            s.check();
            for t in [1000, 2000, 3000] {
                s.gc(T0 + t, &l, &alive);
            }
            let c = s.counters();
            assert_eq!(
                (
                    c.messages_in_trash,
                    c.stored_messages,
                    c.channels,
                    c.channels_in_delete,
                    c.channels_in_trash
                ),
                (0, 0, 1, 0, 0),
                "{n}"
            );
            s.check();
        }
    }
}
