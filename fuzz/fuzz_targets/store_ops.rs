//! The channel registry and message store (`store::Store`), driven by a sequence of operations
//! under a byte-budgeted allocator that can also fail the n-th allocation.
//!
//! The input drives `arbitrary`: limits, a budget, then operations (create, publish, delete,
//! subscribe, unsubscribe, gc, workers, acks, reads, clock steps, allocation failures).
//! A small model (queues, per-slot subscribers, deleting channels, inactivity deadlines,
//! workers and what re-registering, unregistering or losing a worker drops) runs
//! alongside; the store decides only *whether* memory ran out, the model predicts everything
//! else.
//!
//! Checked after every operation:
//! * results: limit errors exactly when the model says a limit is hit, `EventsChannel` exactly
//!   for the events channel, `OutOfMemory` only on paths that allocate; a failed operation
//!   changes nothing (publish may leave the channel it created, with no message);
//! * `Published`: per-channel ids count up by one, time is the clock, `(time, tag)` strictly
//!   increases, seq is `last_seq()`; `last_seq()` never decreases;
//! * counters (channels, wildcard channels, published, stored, channels in delete, subscribers)
//!   and every channel's info equal the model's; `channels()` lists the model's channels in
//!   creation order; `old_messages` returns the model's queue as cut by `old_messages_start`;
//! * gc: removed channels and dead workers are the model's; `records_after` batches are
//!   well-formed; worker cursors follow `register_worker`/`ack`;
//! * at the end, dropping the store gives every byte back to the budget (no leak).
#![no_main]

use std::collections::{BTreeMap, VecDeque};

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use push_stream_core::channel_path::is_wildcard;
use push_stream_core::resume::{old_messages_start, Cursor, MessageMeta};
use push_stream_core::store::{Limits, Store, StoreError, DELETE_HOLD};
use push_stream_fuzz::Budget;

const IDS: [&[u8]; 7] = [b"a", b"b", b"c", b"w1", b"w2", b"ev", b""];
const EV: &[u8] = b"ev";

#[derive(Arbitrary, Debug)]
struct Config {
    ttl: u8,
    max_stored: Option<u8>,
    max_channels: Option<u8>,
    max_wildcard: Option<u8>,
    max_subs: Option<u8>,
    inactivity: u8,
    wildcard: bool,
    events: bool,
    budget_kib: u8,
}

#[derive(Arbitrary, Debug)]
enum Op {
    GetOrCreate(u8),
    Publish { ch: u8, text: Vec<u8>, eid: Option<u8>, etype: Option<u8>, store: bool },
    Delete { ch: u8, text: Vec<u8> },
    AddSub { ch: u8, slot: u8 },
    RemoveSub { ch: u8, slot: u8 },
    Gc { dead: u8 },
    Advance(u8),
    Register { slot: u8, pid: u8 },
    Unregister { slot: u8, pid: u8 },
    CountSub { slot: u8, pid: u8 },
    UncountSub { slot: u8, pid: u8 },
    Ack { slot: u8, pid: u8, cursor: u16 },
    Records { cursor: u16, max: u8 },
    Old { ch: u8, backtrack: u8, since: Option<u8>, tag: Option<u8>, eid: Option<u8> },
    FailNth(u8),
    Budget(u8),
}

#[derive(Clone, Debug)]
struct MMsg {
    text: Vec<u8>,
    expires: i64,
    time: i64,
    tag: u64,
    eid: Option<Vec<u8>>,
}

#[derive(Debug)]
struct MChan {
    id: Vec<u8>,
    queue: VecDeque<MMsg>,
    /// Subscribers per worker slot (no zero entries).
    subs: BTreeMap<usize, u64>,
    inactive_at: i64,
    wildcard: bool,
    events: bool,
    published: u64,
}

#[derive(Debug, Default)]
struct Model {
    /// In creation order.
    chans: Vec<MChan>,
    /// Deleted channels still in delete (subscribers per slot, collectable from, the seq of
    /// their notice), in delete order.
    deleting: Vec<(Vec<u8>, BTreeMap<usize, u64>, i64, u64)>,
    /// What every live worker has read (the store's `log_floor`).
    log_floor: u64,
    /// (slot, pid, subscribers, cursor, started), sorted by slot.
    workers: Vec<(usize, u32, u64, u64, i64)>,
    published: u64,
}

impl Model {
    fn get(&self, id: &[u8]) -> Option<&MChan> {
        self.chans.iter().find(|c| c.id == id)
    }
    fn get_mut(&mut self, id: &[u8]) -> Option<&mut MChan> {
        self.chans.iter_mut().find(|c| c.id == id)
    }
    fn counts(&self) -> (u64, u64) {
        let w = self.chans.iter().filter(|c| c.wildcard).count() as u64;
        (self.chans.len() as u64 - w, w)
    }
    /// Would creating `id` hit a channel limit?
    fn limit_hit(&self, id: &[u8], lim: &Limits) -> bool {
        let (n, w) = self.counts();
        if is_wildcard(id, lim.wildcard_prefix.as_deref()) {
            lim.max_number_of_wildcard_channels.is_some_and(|m| w >= m)
        } else {
            lim.max_number_of_channels.is_some_and(|m| n >= m)
        }
    }
    /// What the store's `drop_slot` does: the slot's subscribers leave every channel.
    fn drop_slot(&mut self, slot: usize) {
        for c in self.chans.iter_mut() {
            c.subs.remove(&slot);
        }
        for d in self.deleting.iter_mut() {
            d.1.remove(&slot);
        }
    }
    fn create(&mut self, id: &[u8], now: i64, lim: &Limits) {
        self.chans.push(MChan {
            id: id.to_vec(),
            queue: VecDeque::new(),
            subs: BTreeMap::new(),
            inactive_at: now + lim.channel_inactivity_time,
            wildcard: is_wildcard(id, lim.wildcard_prefix.as_deref()),
            events: lim.events_channel_id.as_deref() == Some(id),
            published: 0,
        });
    }
}

struct Run {
    store: Store<Budget>,
    budget: Budget,
    model: Model,
    lim: Limits,
    now: i64,
    last_seq: u64,
    last_time_tag: (i64, u64),
}

impl Run {
    /// Compares everything observable with the model.
    fn check(&self) {
        let c = self.store.counters();
        let (n, w) = self.model.counts();
        assert_eq!((c.channels, c.wildcard_channels), (n, w), "channel counts");
        let stored: u64 = self
            .model
            .chans
            .iter()
            .filter(|c| !c.events)
            .map(|c| c.queue.len() as u64)
            .sum();
        assert_eq!(c.stored_messages, stored, "stored messages");
        assert_eq!(c.published_messages, self.model.published, "published messages");
        assert_eq!(c.channels_in_delete, self.model.deleting.len() as u64, "channels in delete");
        let subs: u64 = self.model.workers.iter().map(|w| w.2).sum();
        assert_eq!(c.subscribers, subs, "subscribers");
        let list = self.store.channels(None).unwrap();
        let ids: Vec<&[u8]> = list.iter().map(|i| &i.id[..]).collect();
        let mids: Vec<&[u8]> = self.model.chans.iter().map(|c| &c.id[..]).collect();
        assert_eq!(ids, mids, "channels() differs from the model");
        for (info, m) in list.iter().zip(&self.model.chans) {
            if !m.events {
                // the events channel's own messages (emitted events) are not modelled
                assert_eq!(info.stored_messages, m.queue.len() as u64, "stored in {:?}", m.id);
            }
            let total: u64 = m.subs.values().sum();
            assert_eq!(info.subscribers, total, "subscribers of {:?}", m.id);
            let slots: Vec<(usize, u64)> = m.subs.iter().map(|(&k, &v)| (k, v)).collect();
            assert_eq!(self.store.channel_slots(&m.id), slots, "channel_slots of {:?}", m.id);
            assert_eq!(info.wildcard, m.wildcard);
            assert_eq!(info.events, m.events);
            if !m.events {
                assert_eq!(info.published_messages, m.published, "published in {:?}", m.id);
            }
            assert_eq!(self.store.channel(&m.id).as_ref(), Some(info));
            if let Some(max) = self.lim.max_messages_stored_per_channel {
                assert!(info.stored_messages <= max);
            }
            if let Some(max) = self.lim.max_subscribers_per_channel {
                assert!(info.subscribers <= max);
            }
        }
        for id in IDS {
            if self.model.get(id).is_none() {
                assert!(self.store.channel(id).is_none());
            }
        }
        let ws = self.store.workers();
        let got: Vec<_> =
            ws.iter().map(|w| (w.slot, w.pid, w.subscribers, w.cursor, w.started)).collect();
        assert_eq!(got, self.model.workers, "workers");
        assert!(self.store.last_seq() >= self.last_seq, "last_seq went back");
    }

    fn expect_unchanged_on_oom(&self, r: Result<(), StoreError>, what: &str) {
        if let Err(e) = r {
            assert_eq!(e, StoreError::OutOfMemory, "{what}: unexpected error");
        }
    }

    fn create_path(&mut self, id: &[u8]) -> Result<bool, StoreError> {
        // Shared prediction for operations that create a missing channel. Ok(true) = exists.
        if self.model.get(id).is_some() {
            return Ok(true);
        }
        if self.model.limit_hit(id, &self.lim) && self.lim.events_channel_id.as_deref() != Some(id)
        {
            return Err(StoreError::ChannelsLimit);
        }
        Ok(false)
    }

    fn op(&mut self, op: &Op) {
        let lim = self.lim.clone();
        let now = self.now;
        match op {
            Op::GetOrCreate(ch) => {
                let id = IDS[*ch as usize % IDS.len()];
                let pred = self.create_path(id);
                let r = self.store.get_or_create(id, now, &lim);
                match (pred, r) {
                    (Ok(true), Ok(info)) => assert_eq!(info.id, id),
                    (Ok(true), Err(e)) => panic!("get_or_create of an existing channel: {e:?}"),
                    (Ok(false), Ok(info)) => {
                        self.model.create(id, now, &lim);
                        assert_eq!(info.published_messages, 0);
                    }
                    (Ok(false), Err(e)) => assert_eq!(e, StoreError::OutOfMemory),
                    (Err(p), r) => assert_eq!(r.map(|_| ()), Err(p), "get_or_create limit"),
                }
            }
            Op::Publish { ch, text, eid, etype, store } => {
                let id = IDS[*ch as usize % IDS.len()];
                let eid = eid.map(|e| vec![b'e', b'0' + e % 3]);
                let etype = etype.map(|e| vec![b't', b'0' + e % 2]);
                let r = self.store.publish(
                    id,
                    text,
                    eid.as_deref(),
                    etype.as_deref(),
                    *store,
                    now,
                    &lim,
                );
                if lim.events_channel_id.as_deref() == Some(id) {
                    assert_eq!(r, Err(StoreError::EventsChannel));
                    return;
                }
                let pred = self.create_path(id);
                if let Err(p) = pred {
                    assert_eq!(r, Err(p), "publish limit");
                    return;
                }
                match r {
                    Err(e) => {
                        assert_eq!(e, StoreError::OutOfMemory, "publish");
                        if pred == Ok(false) && self.store.channel(id).is_some() {
                            // created, then the message did not fit
                            self.model.create(id, now, &lim);
                        }
                    }
                    Ok(p) => {
                        if pred == Ok(false) {
                            self.model.create(id, now, &lim);
                        }
                        assert_eq!(p.seq, self.store.last_seq());
                        assert_eq!(p.time, now);
                        assert!(p.tag >= 1);
                        assert!((p.time, p.tag) > self.last_time_tag, "time/tag not increasing");
                        self.last_time_tag = (p.time, p.tag);
                        self.model.published += 1;
                        let c = self.model.get_mut(id).unwrap();
                        c.published += 1;
                        assert_eq!(p.id as u64, c.published, "message id");
                        c.inactive_at = now + lim.channel_inactivity_time;
                        if *store {
                            c.queue.push_back(MMsg {
                                text: text.clone(),
                                expires: now + lim.message_ttl,
                                time: p.time,
                                tag: p.tag,
                                eid: eid.clone(),
                            });
                            let max = lim.max_messages_stored_per_channel.unwrap_or(u64::MAX);
                            while c.queue.len() as u64 > max {
                                c.queue.pop_front();
                            }
                        }
                    }
                }
            }
            Op::Delete { ch, text } => {
                let id = IDS[*ch as usize % IDS.len()];
                let r = self.store.delete(id, text, now, &lim);
                match self.model.get(id) {
                    None => assert_eq!(r, Ok(false)),
                    Some(c) if c.events => assert_eq!(r, Err(StoreError::EventsChannel)),
                    Some(_) => match r {
                        Ok(true) => {
                            let i = self.model.chans.iter().position(|c| c.id == id).unwrap();
                            let c = self.model.chans.remove(i);
                            let seq = self.store.last_seq();
                            self.model.deleting.push((c.id, c.subs, now + DELETE_HOLD, seq));
                        }
                        other => self.expect_unchanged_on_oom(other.map(|_| ()), "delete"),
                    },
                }
            }
            Op::AddSub { ch, slot } => {
                let id = IDS[*ch as usize % IDS.len()];
                let slot = usize::from(*slot % 4);
                let pred = self.create_path(id);
                let r = self.store.add_subscriber(id, slot, now, &lim);
                match pred {
                    // The slot entry is reserved before the channel limit is looked at.
                    Err(p) => assert!(r == Err(p) || r == Err(StoreError::OutOfMemory), "{r:?}"),
                    Ok(exists) => {
                        if r == Err(StoreError::OutOfMemory) {
                            // only a new channel or a new slot entry allocates
                            assert!(
                                !exists || !self.model.get(id).unwrap().subs.contains_key(&slot),
                                "add_subscriber ran out of memory without allocating"
                            );
                            return;
                        }
                        if !exists {
                            self.model.create(id, now, &lim);
                        }
                        let c = self.model.get_mut(id).unwrap();
                        let total: u64 = c.subs.values().sum();
                        if lim.max_subscribers_per_channel.is_some_and(|m| total >= m) {
                            assert_eq!(r, Err(StoreError::SubscribersLimit));
                        } else {
                            assert_eq!(r, Ok(()));
                            *c.subs.entry(slot).or_insert(0) += 1;
                            c.inactive_at = now + lim.channel_inactivity_time;
                        }
                    }
                }
            }
            Op::RemoveSub { ch, slot } => {
                let id = IDS[*ch as usize % IDS.len()];
                let slot = usize::from(*slot % 4);
                self.store.remove_subscriber(id, slot, now, &lim);
                let d = &mut self.model.deleting;
                if let Some(i) = d.iter().position(|(did, s, ..)| did == id && s.contains_key(&slot))
                {
                    // it stays in delete until a collection after its hold
                    let n = d[i].1.get_mut(&slot).unwrap();
                    *n -= 1;
                    if *n == 0 {
                        d[i].1.remove(&slot);
                    }
                } else if let Some(c) = self.model.get_mut(id) {
                    if let Some(n) = c.subs.get_mut(&slot) {
                        *n -= 1;
                        if *n == 0 {
                            c.subs.remove(&slot);
                        }
                    }
                }
            }
            Op::Gc { dead } => {
                let alive = |pid: u32| dead & (1 << (pid % 8)) == 0;
                let report = self.store.gc(now, &lim, &alive);
                let last = self.store.last_seq();
                let m = &mut self.model;
                // dead: its pid is gone, or a worker that started later registered the same
                // pid in another slot (a reused pid)
                let all = m.workers.clone();
                let is_dead = |w: &(usize, u32, u64, u64, i64)| {
                    !alive(w.1) || all.iter().any(|o| o.1 == w.1 && o.0 != w.0 && o.4 > w.4)
                };
                let dead: Vec<(usize, u32)> =
                    m.workers.iter().filter(|w| is_dead(w)).map(|w| (w.0, w.1)).collect();
                m.workers.retain(|w| !is_dead(w));
                for &(slot, _) in &dead {
                    m.drop_slot(slot);
                }
                let dead_pids: Vec<u32> = dead.iter().map(|d| d.1).collect();
                assert_eq!(report.dead_workers, dead_pids, "gc dead workers");
                // a deleted channel goes once its notice was read by every live worker
                let floor = m.workers.iter().map(|w| w.3).min().unwrap_or(last);
                m.log_floor = m.log_floor.max(floor.min(last));
                let read = m.log_floor;
                let in_delete = m.deleting.len();
                m.deleting.retain(|(_, subs, ready_at, seq)| {
                    !subs.is_empty() || *ready_at > now || *seq > read
                });
                assert_eq!(
                    report.trashed_deleted,
                    (in_delete - m.deleting.len()) as u64,
                    "gc trashed deleted"
                );
                let mut expired = 0;
                for c in m.chans.iter_mut() {
                    while c.queue.front().is_some_and(|q| q.expires <= now) {
                        c.queue.pop_front();
                        if !c.events {
                            expired += 1;
                        }
                    }
                }
                if lim.events_channel_id.is_none() {
                    assert_eq!(report.expired_messages, expired, "gc expired");
                } else {
                    assert!(report.expired_messages >= expired, "gc expired");
                }
                let before = m.chans.len();
                m.chans.retain(|c| {
                    c.events || !c.queue.is_empty() || !c.subs.is_empty() || c.inactive_at >= now
                });
                assert_eq!(report.removed_channels, (before - m.chans.len()) as u64, "gc removed");
            }
            Op::Advance(dt) => self.now += i64::from(dt % 32),
            Op::Register { slot, pid } => {
                let (slot, pid) = (*slot as usize % 4, u32::from(*pid % 6));
                let r = self.store.register_worker(slot, pid, now, &lim);
                let last = self.store.last_seq();
                let ws = &mut self.model.workers;
                let pos = ws.iter().position(|w| w.0 >= slot);
                let existing = pos.filter(|&i| ws[i].0 == slot);
                if existing.is_none() && r == Err(StoreError::OutOfMemory) {
                    return;
                }
                // the cursor is taken after the slot's old subscriptions were dropped
                assert_eq!(r, Ok(last), "register_worker");
                // a registration repeated by the same pid keeps its subscriber count
                let same_pid = existing.filter(|&i| ws[i].1 == pid);
                let kept = same_pid.map_or(0, |i| ws[i].2);
                if same_pid.is_none() {
                    self.model.drop_slot(slot);
                }
                let ws = &mut self.model.workers;
                match existing {
                    Some(i) => ws[i] = (slot, pid, kept, last, now),
                    None => ws.insert(pos.unwrap_or(ws.len()), (slot, pid, kept, last, now)),
                }
            }
            Op::Unregister { slot, pid } => {
                let (slot, pid) = (*slot as usize % 4, u32::from(*pid % 6));
                self.store.unregister_worker(slot, pid, now, &lim);
                let ws = &mut self.model.workers;
                match ws.iter().position(|w| w.0 == slot) {
                    Some(i) if ws[i].1 == pid => {
                        ws.remove(i);
                        self.model.drop_slot(slot);
                    }
                    Some(_) => {}
                    None => self.model.drop_slot(slot),
                }
            }
            Op::CountSub { slot, pid } => {
                let (slot, pid) = (*slot as usize % 4, u32::from(*pid % 6));
                self.store.count_worker_subscriber(slot, pid);
                if let Some(w) = self.model.workers.iter_mut().find(|w| w.0 == slot && w.1 == pid) {
                    w.2 = w.2.saturating_add(1);
                }
            }
            Op::UncountSub { slot, pid } => {
                let (slot, pid) = (*slot as usize % 4, u32::from(*pid % 6));
                self.store.uncount_worker_subscriber(slot, pid);
                if let Some(w) = self.model.workers.iter_mut().find(|w| w.0 == slot && w.1 == pid) {
                    w.2 = w.2.saturating_sub(1);
                }
            }
            Op::Ack { slot, pid, cursor } => {
                let (slot, pid) = (*slot as usize % 4, u32::from(*pid % 6));
                let last = self.store.last_seq();
                self.store.ack(slot, pid, u64::from(*cursor));
                if let Some(w) = self.model.workers.iter_mut().find(|w| w.0 == slot && w.1 == pid) {
                    w.3 = w.3.max(u64::from(*cursor).min(last));
                }
            }
            Op::Records { cursor, max } => {
                let cursor = u64::from(*cursor);
                let last = self.store.last_seq();
                let b = self.store.records_after(cursor, usize::from(*max));
                assert!(b.records.len() <= usize::from(*max));
                if cursor >= last {
                    assert!(b.records.is_empty() && b.lost == 0 && b.cursor == cursor);
                } else {
                    assert!(b.cursor >= cursor && b.cursor <= last);
                    if *max > 0 {
                        assert!(b.cursor > cursor, "no progress with room in the batch");
                    }
                    assert_eq!(b.lost + b.records.len() as u64, b.cursor - cursor, "batch accounting");
                    let mut prev = cursor;
                    for r in &b.records {
                        let seq = match r {
                            push_stream_core::store::Record::Message { seq, .. } => *seq,
                            push_stream_core::store::Record::ChannelDeleted { seq, .. } => *seq,
                        };
                        assert!(seq > prev && seq <= b.cursor, "record order");
                        prev = seq;
                    }
                }
            }
            Op::Old { ch, backtrack, since, tag, eid } => {
                let id = IDS[*ch as usize % IDS.len()];
                let cur = Cursor {
                    backtrack: u32::from(*backtrack % 6),
                    since: since.map(|s| now - i64::from(s % 40)),
                    tag: tag.map(|t| u64::from(t % 4)),
                    last_event_id: eid.map(|e| vec![b'e', b'0' + e % 3]),
                };
                let got = self.store.old_messages(id, &cur).unwrap();
                let want: Vec<&MMsg> = match self.model.get(id) {
                    None => Vec::new(),
                    Some(c) => {
                        let metas: Vec<MessageMeta> = c
                            .queue
                            .iter()
                            .map(|q| MessageMeta { time: q.time, tag: q.tag, event_id: q.eid.clone() })
                            .collect();
                        match old_messages_start(&metas, &cur) {
                            None => Vec::new(),
                            Some(s) => c.queue.iter().skip(s).collect(),
                        }
                    }
                };
                if self.model.get(id).is_some_and(|c| c.events) {
                    return; // events channel contents are not modelled
                }
                let gt: Vec<&[u8]> = got.iter().map(|m| &m.text[..]).collect();
                let wt: Vec<&[u8]> = want.iter().map(|m| &m.text[..]).collect();
                assert_eq!(gt, wt, "old_messages({id:?}, {cur:?})");
            }
            Op::FailNth(n) => self.budget.fail_nth(usize::from(*n % 8)),
            Op::Budget(k) => self.budget.set_limit(1024 * (1 + usize::from(*k % 64))),
        }
    }
}

fn run(u: &mut Unstructured) -> arbitrary::Result<()> {
    let cfg = Config::arbitrary(u)?;
    let lim = Limits {
        message_ttl: 1 + i64::from(cfg.ttl % 50),
        max_messages_stored_per_channel: cfg.max_stored.map(|m| 1 + u64::from(m % 5)),
        max_number_of_channels: cfg.max_channels.map(|m| 1 + u64::from(m % 5)),
        max_number_of_wildcard_channels: cfg.max_wildcard.map(|m| 1 + u64::from(m % 3)),
        max_subscribers_per_channel: cfg.max_subs.map(|m| 1 + u64::from(m % 3)),
        channel_inactivity_time: i64::from(cfg.inactivity % 40),
        wildcard_prefix: cfg.wildcard.then(|| b"w".to_vec()),
        events_channel_id: cfg.events.then(|| EV.to_vec()),
        // not modelled (frees are not predicted); varied for coverage
        trash_delay: (cfg.ttl % 3 == 0).then_some(i64::from(cfg.inactivity % 12)),
        delete_reserve_pages: usize::from(cfg.max_subs.unwrap_or(0) % 3),
    };
    let budget = Budget::new(1024 * (1 + usize::from(cfg.budget_kib % 64)));
    let now = 1_000_000;
    let store = match Store::new_in(budget.clone(), now, &lim) {
        Ok(s) => s,
        Err(e) => {
            assert_eq!(e, StoreError::OutOfMemory);
            assert_eq!(budget.used(), 0, "failed new_in leaked");
            return Ok(());
        }
    };
    let mut model = Model::default();
    if cfg.events {
        model.create(EV, now, &lim);
    }
    let mut r = Run {
        store,
        budget: budget.clone(),
        model,
        lim,
        now,
        last_seq: 0,
        last_time_tag: (i64::MIN, 0),
    };
    r.check();
    let mut n = 0;
    while !u.is_empty() && n < 200 {
        let op = Op::arbitrary(u)?;
        r.op(&op);
        // A `FailNth` applies to the one operation that follows it.
        if !matches!(op, Op::FailNth(_)) {
            r.budget.clear_fail();
        }
        r.check();
        r.last_seq = r.store.last_seq();
        n += 1;
    }
    drop(r.store);
    assert_eq!(budget.used(), 0, "store leaked {} bytes", budget.used());
    assert_eq!(budget.live_blocks(), 0, "store leaked blocks");
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
