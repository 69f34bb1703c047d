//! The host-wide channel registry and message store.
//!
//! The store lives inside an nginx shared-memory zone: every worker maps it at the same address
//! and the caller holds the zone's lock around every call. So every collection here allocates
//! through the allocator `A` (the zone's slab in nginx, a budgeted heap in tests), and no
//! allocation failure may abort: each operation reserves everything it needs first and returns
//! [`StoreError::OutOfMemory`] with the store unchanged when it cannot. What the store hands
//! out (records, old messages, listings) is copied to the process heap with fallible
//! reservations (`copy`): [`StoreError::HeapExhausted`] when the heap refuses.
//!
//! Layout (no allocation anywhere in the store is bigger than one 4 KiB page, so a zone is
//! never "full" while it has free pages, and no growth needs an old and a new copy at once):
//! * channels and messages are nodes in page-sized arenas (`pool`), addressed by `u32`
//!   handles: a channel node is 128 bytes (ids up to 8 bytes inline, longer ones in one small
//!   allocation; the subscriber counts of the first two worker slots inline, more slots in a
//!   chain of 64-byte subscriber nodes), a message node 80 bytes plus one allocation of its
//!   packed bytes (publish time, lengths, channel id, event id, event type, text);
//! * live channels are found through a chained hash table with linear hashing (`table`):
//!   its bucket directory is in 4 KiB segments and it grows one bucket split at a time; the
//!   exchange keys of a RabbitMQ exchange source are 56-byte nodes in a table of the same
//!   kind, on a FIFO by expiry;
//! * a channel's stored messages, the message trash (removed, expired and unstored
//!   messages), the deleted channels in delete (in `seq` order) and the channel trash are
//!   FIFO lists linked through the nodes themselves (`pool::Fifo`);
//! * every record (a message, or a channel-deleted notice, kept in its deleted channel's node)
//!   has a host-wide sequence number `seq`; the delivery log is every record with `seq` in
//!   `(log_floor, last_seq]`, found through the log index (`index`: seq -> message or channel
//!   node, in 4 KiB segments, freed below the floor). A message is freed only from the trash,
//!   a notice only with its deleted channel, and only once its seq is at or below
//!   `log_floor`, the lowest cursor acknowledged by every registered worker;
//! * arenas give back their trailing pages that hold no node in use after a collection (all
//!   their pages when empty); other free nodes are reused by the next inserts of their kind.
//!
//! A small delete reserve (a few pages, `Limits::delete_reserve_pages`) is held while
//! publishing: publishes and channel creations refuse when they cannot hold it, a delete
//! frees it when the zone is otherwise full, and collections take it back. So deleting
//! channels works on a zone that publishing has filled (`reserve`).
//!
//! What lets GC, unsubscribe and delete move things around without allocating:
//! * moving a message to the trash, a channel to the delete list or to the channel trash
//!   relinks its node (no list has a capacity to keep);
//! * a subscriber count is kept in place: an unsubscribe only decrements it (a subscriber
//!   node left unused is freed by a later collection or with its channel);
//! * a delete needs only a log index entry for its notice and, when its text is not empty,
//!   one allocation for the text (the channel node itself holds the notice, on the delete
//!   list, then waits in the channel trash until it is freed).
//!
//! Channel lifecycle, as the C module's statistics show it: live → (`DELETE`) in delete →
//! in trash → gone, or live → (inactive) in trash → gone:
//! * a deleted channel leaves the channel table at once (its id is free again) and is counted in
//!   `channels_in_delete` until its subscribers have been told and at least [`DELETE_HOLD`]
//!   has passed; [`Store::gc`] then moves it to the channel trash and emits
//!   `channel_destroyed`;
//! * a channel with no stored message and no subscriber whose inactivity deadline has passed
//!   goes to the channel trash at the next [`Store::gc`] that looks at its bucket
//!   (`channel_destroyed` too): a collection expires messages and removes inactive channels
//!   in [`GC_BUCKETS`] buckets of the table (all of a table that small), resuming where the
//!   last one stopped, and frees at most [`GC_FREES`] of each kind, so the cleanup never
//!   walks a big store in one critical section (listings are read a page at a time too,
//!   [`ChannelPages`]; a worker's exit still walks every channel once, `drop_slot`);
//! * a trashed channel (or record) is freed by the first [`Store::gc`] after its trash delay
//!   ([`TRASH_DELAY`], unless the limits say otherwise) has passed.
//!
//! Subscriber counts are kept per worker slot: every live channel (and every deleted channel
//! still in delete) holds `(slot, count)` pairs, and its `subscribers` is their sum. When a worker
//! goes away — found dead by [`Store::gc`], replaced in its slot by
//! [`Store::register_worker`] (a respawn after a crash), or leaving with
//! [`Store::unregister_worker`] — whatever its slot still counts is removed everywhere, as if
//! each of those subscribers had unsubscribed, so the counts never outlive the process that
//! holds the subscribers.
//!
//! Files: `Store` and its public types are here; its methods are grouped by concern in
//! `channels` (create, look up, list, delete), `messages` (publish, stored messages, the events
//! channel), `subscribers` (per-slot counts), `workers` (the worker registry), `log` (the
//! delivery log), `broker` (offsets and exchange numbers of broker messages) and `gc`; the
//! building blocks are `pool` (page-sized arenas, FIFO lists through their nodes), `table`
//! (the channel table, and the exchange keys' table), `index` (the log index), `record` (one
//! stored record) and `keys` (temporary copies of ids).

use std::collections::hash_map::RandomState;

pub use allocator_api2::alloc::{AllocError, Allocator, Global};
use allocator_api2::vec::Vec as AVec;

use self::broker::XNode;
use self::channels::ChanNode;
pub use self::channels::ChannelPages;
use self::index::LogIndex;
use self::pool::{Fifo, Pool};
use self::record::MsgNode;
pub use self::recovery::{Carry, Found};
use self::subscribers::SubsNode;
use self::table::Table;
use self::workers::WorkerEntry;

mod broker;
mod channels;
mod copy;
mod gc;
mod index;
mod keys;
mod log;
mod messages;
mod pool;
mod record;
pub mod recovery;
mod reserve;
mod subscribers;
mod table;
mod workers;

/// How long removed messages and channels stay in the trash (seconds), as in the C module:
/// they are freed by the first collection after this has passed.
pub const TRASH_DELAY: i64 = 10;

/// How long a deleted channel is at least counted in `channels_in_delete` before it may go to
/// the trash (seconds; it also waits until its subscribers have been told). The C module
/// moves deleted channels at its next cleanup pass, every 4 s; with collections every second
/// this keeps a deleted channel "in delete" for 1 to 3 s.
pub const DELETE_HOLD: i64 = 2;

pub use self::gc::{GC_BUCKETS, GC_FREES};
pub use self::reserve::{MAX_RESERVE_PAGES, RESERVE_PAGE};

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
    /// The trash delay in seconds; None: [`TRASH_DELAY`] (only tests set it).
    pub trash_delay: Option<i64>,
    /// Pages (4 KiB) held back from publishing for deletes on a full zone (at most
    /// [`MAX_RESERVE_PAGES`]); 0: none.
    pub delete_reserve_pages: usize,
}

impl Limits {
    /// How long removed messages and channels stay in the trash (seconds).
    pub fn trash_delay(&self) -> i64 {
        self.trash_delay.unwrap_or(TRASH_DELAY)
    }
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
    /// The worker's own heap could not take a copy out of the store (see `copy`).
    HeapExhausted,
    ChannelsLimit,
    SubscribersLimit,
    EventsChannel,
}

impl std::fmt::Display for StoreError {
    /// Operator-facing text, for the error log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StoreError::OutOfMemory => "shared memory is full",
            StoreError::HeapExhausted => "this worker's memory is exhausted",
            StoreError::ChannelsLimit => "channel limit reached",
            StoreError::SubscribersLimit => "subscriber limit per channel reached",
            StoreError::EventsChannel => "the events channel is read-only",
        })
    }
}

impl std::error::Error for StoreError {}

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
    /// Of `lost`, the records skipped because this worker's heap could not take their copy
    /// (see `Store::records_after`).
    pub no_heap: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    pub expired_messages: u64,
    /// Live channels removed for inactivity.
    pub removed_channels: u64,
    /// Deleted channels that went from "in delete" to the trash.
    pub trashed_deleted: u64,
    pub freed_messages: u64,
    pub dead_workers: Vec<u32>,
}

const OOM: StoreError = StoreError::OutOfMemory;

// ---------------------------------------------------------------------------------------------
// The store
// ---------------------------------------------------------------------------------------------

pub struct Store<A: Allocator + Clone> {
    alloc: A,
    created: i64,
    /// Hashes channel ids (keys drawn once, when the store is made).
    hasher: RandomState,
    /// Live channels.
    table: Table<A>,
    chans: Pool<ChanNode<A>, A>,
    subs: Pool<SubsNode, A>,
    msgs: Pool<MsgNode<A>, A>,
    index: LogIndex<A>,
    next_order: u64,
    /// Live non-wildcard channels (events channel included) and live wildcard channels.
    n_channels: u64,
    n_wildcard: u64,
    /// Deleted channels in delete, in delete (= seq) order.
    deleting: Fifo,
    /// The delete reserve: pages held back from publishing (see `reserve`).
    reserve: [AVec<u8, A>; MAX_RESERVE_PAGES],
    /// Trashed channels, FIFO (freed when their `inactive_at` has passed).
    chan_trash: Fifo,
    /// Trashed messages, FIFO (freed when their `when` has passed and every worker read them).
    trash: Fifo,
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
    /// Exchange source: (dedupe key, occurrence) -> host sequence number, for a window: a
    /// table of key nodes, and the FIFO of the same nodes by expiry.
    xtable: Table<A>,
    xnodes: Pool<XNode, A>,
    xorder: Fifo,
    next_xoff: u64,
    /// Milliseconds clock the caller sets before publishing (delivery latency).
    clock_ms: i64,
    /// The next bucket of the channel table a collection looks at.
    gc_cursor: usize,
}

impl<A: Allocator + Clone> Store<A> {
    pub fn new_in(alloc: A, now: i64, limits: &Limits) -> Result<Self, StoreError> {
        let mut s = Store {
            hasher: RandomState::new(),
            table: Table::new_in(alloc.clone()),
            chans: Pool::new_in(alloc.clone()),
            subs: Pool::new_in(alloc.clone()),
            msgs: Pool::new_in(alloc.clone()),
            index: LogIndex::new_in(alloc.clone(), 1),
            next_order: 0,
            n_channels: 0,
            n_wildcard: 0,
            deleting: Fifo::EMPTY,
            reserve: core::array::from_fn(|_| AVec::new_in(alloc.clone())),
            chan_trash: Fifo::EMPTY,
            trash: Fifo::EMPTY,
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
            xtable: Table::new_in(alloc.clone()),
            xnodes: Pool::new_in(alloc.clone()),
            xorder: Fifo::EMPTY,
            next_xoff: 0,
            clock_ms: 0,
            gc_cursor: 0,
            created: now,
            alloc,
        };
        s.ensure_events_channel(now, limits)?;
        // Best effort: a publish takes it when it is missing (or refuses).
        let _ = s.hold_reserve(limits);
        Ok(s)
    }

    /// Events that could not be stored for lack of memory (dropped silently).
    pub fn dropped_events(&self) -> u64 {
        self.dropped_events
    }

    pub fn counters(&self) -> Counters {
        Counters {
            channels: self.n_channels,
            wildcard_channels: self.n_wildcard,
            published_messages: self.published,
            stored_messages: self.stored,
            messages_in_trash: self.messages_in_trash,
            channels_in_delete: u64::from(self.deleting.len),
            channels_in_trash: u64::from(self.chan_trash.len),
            subscribers: self.workers.iter().map(|w| w.subscribers).sum(),
            created: self.created,
        }
    }
}

#[cfg(test)]
mod broker_tests;

#[cfg(test)]
mod capacity_tests;

#[cfg(test)]
mod bounds_tests;

#[cfg(test)]
mod recovery_tests;

#[cfg(test)]
mod tests;
