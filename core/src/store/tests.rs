use super::*;
use crate::resume::Cursor;
use core::alloc::Layout;
use core::cell::Cell;
use core::ptr::NonNull;
use std::rc::Rc;

const T0: i64 = 1_000_000;

/// A heap allocator with a byte budget: refuses anything that would go over it.
/// Also fails exactly the n-th allocation from now when `fail_nth` is set.
#[derive(Clone)]
pub(super) struct Budget(Rc<BudgetState>);

struct BudgetState {
    used: Cell<usize>,
    limit: Cell<usize>,
    fail_in: Cell<Option<usize>>,
}

impl Budget {
    pub(super) fn new(limit: usize) -> Self {
        Budget(Rc::new(BudgetState {
            used: Cell::new(0),
            limit: Cell::new(limit),
            fail_in: Cell::new(None),
        }))
    }
    pub(super) fn fail_nth(&self, n: usize) {
        self.0.fail_in.set(Some(n))
    }
    pub(super) fn failed_yet(&self) -> bool {
        self.0.fail_in.get().is_none()
    }
    pub(super) fn used(&self) -> usize {
        self.0.used.get()
    }
    pub(super) fn set_limit(&self, limit: usize) {
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
    .unwrap()
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
    pub(super) fn check(&self) {
        use super::channels::{DELETING, LIVE, TRASHED};
        use super::index::CHANNEL;
        use super::pool::NIL;
        use super::record::{BROKER, MSG};
        let mut queued = 0;
        let mut stored = 0;
        let (mut n, mut w) = (0, 0);
        let mut live = Vec::new();
        self.each_channel(|h, c| live.push((h, c.id().to_vec())));
        for (h, id) in &live {
            let c = self.chans.get(*h);
            assert_eq!(c.state, LIVE, "live channel state");
            assert_eq!(self.find(id), Some(*h), "channel found by id");
            queued += c.queue.len as usize;
            if !c.events {
                stored += u64::from(c.queue.len);
            }
            if c.wildcard {
                w += 1;
            } else {
                n += 1;
            }
            let mut prev: Option<(u64, i64)> = None;
            let mut len = 0;
            for m in c.queue.iter(&self.msgs) {
                let m = self.msgs.get(m);
                assert!(m.kind == MSG || m.kind == BROKER, "queued message kind");
                assert_eq!(m.channel(), &id[..]);
                if let Some((ps, pid)) = prev {
                    assert!(m.seq > ps && m.id > pid);
                }
                prev = Some((m.seq, m.id));
                assert!(m.id <= c.last_id);
                len += 1;
            }
            assert_eq!(len, c.queue.len, "queue length");
            assert_eq!(
                (c.queue.head == NIL, c.queue.tail == NIL),
                (len == 0, len == 0)
            );
            self.check_subs(*h);
        }
        assert_eq!(self.table.len(), live.len(), "table length");
        assert_eq!(queued, self.queued_total, "queued_total");
        assert_eq!(stored, self.stored, "stored");
        assert_eq!((n, w), (self.n_channels, self.n_wildcard), "channel counts");
        let mut trashed = 0;
        for m in self.trash.iter(&self.msgs) {
            let m = self.msgs.get(m);
            assert!(m.kind == MSG || m.kind == BROKER, "trashed message kind");
            trashed += 1;
        }
        assert_eq!(trashed, self.trash.len, "trash length");
        assert_eq!(
            u64::from(self.trash.len),
            self.messages_in_trash,
            "messages_in_trash"
        );
        let mut last = 0;
        let mut dels = 0;
        for d in self.deleting.iter(&self.chans) {
            let c = self.chans.get(d);
            assert_eq!(c.state, DELETING);
            assert!(c.order > last, "deleted channels in seq order");
            last = c.order;
            if c.order > self.log_floor {
                assert_eq!(self.index.get(c.order), d | CHANNEL, "notice in the log");
            }
            self.check_subs(d);
            dels += 1;
        }
        assert_eq!(dels, self.deleting.len);
        let mut gone = 0;
        for t in self.chan_trash.iter(&self.chans) {
            assert_eq!(self.chans.get(t).state, TRASHED);
            assert_eq!(self.chans.get(t).more, NIL);
            gone += 1;
        }
        assert_eq!(gone, self.chan_trash.len);
        assert_eq!(
            self.chans.len(),
            live.len() + (dels + gone) as usize,
            "every channel node live, in delete or in the trash"
        );
        assert_eq!(
            self.msgs.len(),
            self.queued_total + self.trash.len as usize,
            "every message queued or trashed"
        );
        for s in self.log_floor + 1..=self.last_seq {
            let h = self.index.get(s);
            let ok = if h & CHANNEL != 0 {
                self.chans.get(h & !CHANNEL).order == s
            } else {
                h != NIL && self.msgs.get(h).seq == s
            };
            assert!(ok, "log record {s} present");
        }
        assert!(self.log_floor <= self.last_seq);
        assert_eq!(
            self.xtable.len(),
            self.xnodes.len(),
            "every exchange key in the table"
        );
        assert_eq!(
            self.xorder.len as usize,
            self.xnodes.len(),
            "and on the expiry FIFO"
        );
    }

    /// Per-slot counts: one used entry per slot, summing to the cached total; every
    /// subscriber node belongs to one channel.
    fn check_subs(&self, h: u32) {
        let v = self.subs_list(h);
        for (i, e) in v.iter().enumerate() {
            assert!(v[..i].iter().all(|o| o.0 != e.0), "slot {} twice", e.0);
        }
        let sum: u64 = v.iter().map(|e| e.1).sum();
        assert_eq!(
            sum,
            self.info(h).subscribers,
            "sum(per-slot) == subscribers"
        );
    }

    /// Unused (slot, count) entries of channel `id` (a new slot takes one without allocating).
    fn subs_room(&self, id: &[u8]) -> usize {
        let h = self.find(id).unwrap();
        let c = self.chans.get(h);
        let mut room = c.s.iter().filter(|p| p.count == 0).count();
        let mut n = c.more;
        while n != super::pool::NIL {
            let node = self.subs.get(n);
            room += node.pairs.iter().filter(|p| p.count == 0).count();
            n = node.next;
        }
        room
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
    // Trimmed ones are freed once the trash delay has passed.
    assert_eq!(s.gc(T0 + 10, &l, &alive).freed_messages, 0);
    assert_eq!(s.gc(T0 + 11, &l, &alive).freed_messages, 2);
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
    assert_eq!(s.gc(T0 + 110, &l, &alive).freed_messages, 0);
    assert_eq!(s.gc(T0 + 111, &l, &alive).freed_messages, 1);
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
    assert_eq!(s.gc(T0 + 10, &l, &alive).freed_messages, 0);
    assert_eq!(s.gc(T0 + 11, &l, &alive).freed_messages, 1);
    assert_eq!(s.counters().messages_in_trash, 0);
    s.check();
}

#[test]
fn inactivity_removal_timing() {
    let l = lim(); // inactivity 30 s
    let mut s = Store::new_in(Global, T0, &l).unwrap();
    s.get_or_create(b"a", T0, &l).unwrap();
    // Live until the deadline has passed (the C module: `expires < now`).
    assert_eq!(s.gc(T0 + 30, &l, &alive).removed_channels, 0);
    assert_eq!(s.gc(T0 + 31, &l, &alive).removed_channels, 1);
    assert!(s.channel(b"a").is_none());
    assert_eq!(
        (s.counters().channels, s.counters().channels_in_trash),
        (0, 1)
    );
    // In the trash until the trash delay has passed (the C module: `now > expires`).
    s.gc(T0 + 41, &l, &alive);
    assert_eq!(s.counters().channels_in_trash, 1);
    s.gc(T0 + 42, &l, &alive);
    assert_eq!(s.counters().channels_in_trash, 0);

    // Publishing and subscribing refresh the deadline; unsubscribing does not.
    s.get_or_create(b"b", T0 + 100, &l).unwrap();
    s.publish(b"b", b"x", None, None, false, T0 + 110, &l)
        .unwrap(); // → 140
    s.add_subscriber(b"b", 0, T0 + 120, &l).unwrap(); // → 150
    assert_eq!(s.gc(T0 + 145, &l, &alive).removed_channels, 0); // has a subscriber
    s.remove_subscriber(b"b", 0, T0 + 146, &l);
    assert_eq!(s.gc(T0 + 150, &l, &alive).removed_channels, 0);
    assert_eq!(s.gc(T0 + 151, &l, &alive).removed_channels, 1);

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

    // The old subscribers leave: counted out of the deleted channel, not the new one. The
    // deleted channel stays in delete until a collection after its hold.
    s.remove_subscriber(b"d", 0, T0 + 1, &l);
    assert_eq!(s.counters().channels_in_delete, 1);
    s.remove_subscriber(b"d", 0, T0 + 2, &l);
    let c = s.counters();
    assert_eq!((c.channels_in_delete, c.channels_in_trash), (1, 0));
    assert_eq!(s.channel(b"d").unwrap().subscribers, 1);
    let tail = |s: &Store<Global>, n: usize| -> Vec<String> {
        let ev = events(s);
        ev[ev.len() - n..].iter().map(|(t, _)| t.clone()).collect()
    };
    assert_eq!(
        tail(&s, 2),
        ["client_unsubscribed", "client_unsubscribed"],
        "no channel_destroyed before the channel leaves the delete state"
    );
    s.check();
    // The hold passed, but worker 100 has not read the notice yet: still in delete.
    assert_eq!(s.gc(T0 + DELETE_HOLD, &l, &alive).trashed_deleted, 0);
    assert_eq!(s.counters().channels_in_delete, 1);
    // Once it has, the collection moves it, in an event of its own.
    let log = s.records_after(0, 100).records;
    assert!(log
        .iter()
        .any(|r| matches!(r, Record::ChannelDeleted { channel, .. } if channel == b"d")));
    s.ack(0, 100, s.last_seq());
    let r = s.gc(T0 + DELETE_HOLD, &l, &alive);
    assert_eq!((r.trashed_deleted, r.removed_channels), (1, 0));
    let c = s.counters();
    assert_eq!((c.channels_in_delete, c.channels_in_trash), (0, 1));
    assert_eq!(events(&s).last().unwrap(), &ev("channel_destroyed", "d"));
    s.check();
    // Its messages were trashed at the delete (T0), the channel at T0 + DELETE_HOLD.
    s.ack(0, 100, s.last_seq());
    assert_eq!(s.gc(T0 + 10, &l, &alive).freed_messages, 0);
    assert_eq!(s.gc(T0 + 11, &l, &alive).freed_messages, 3);
    assert_eq!(s.counters().messages_in_trash, 0);
    s.gc(T0 + DELETE_HOLD + 10, &l, &alive);
    assert_eq!(s.counters().channels_in_trash, 1);
    s.gc(T0 + DELETE_HOLD + 11, &l, &alive);
    assert_eq!(s.counters().channels_in_trash, 0);
    s.check();

    // A channel without subscribers is in delete too, then in the trash, then gone.
    let t = T0 + 20;
    s.publish(b"e", b"x", None, None, true, t, &l).unwrap();
    assert_eq!(s.delete(b"e", b"", t, &l), Ok(true));
    let c = s.counters();
    assert_eq!((c.channels_in_delete, c.channels_in_trash), (1, 0));
    assert_ne!(events(&s).last().unwrap().0, "channel_destroyed");
    s.ack(0, 100, s.last_seq());
    assert_eq!(s.gc(t + DELETE_HOLD - 1, &l, &alive).trashed_deleted, 0);
    assert_eq!(s.counters().channels_in_delete, 1);
    assert_eq!(s.gc(t + DELETE_HOLD, &l, &alive).trashed_deleted, 1);
    let c = s.counters();
    assert_eq!((c.channels_in_delete, c.channels_in_trash), (0, 1));
    assert_eq!(events(&s).last().unwrap(), &ev("channel_destroyed", "e"));
    s.gc(t + DELETE_HOLD + 10, &l, &alive);
    assert_eq!(s.counters().channels_in_trash, 1);
    s.gc(t + DELETE_HOLD + 11, &l, &alive);
    assert_eq!(s.counters().channels_in_trash, 0);
    s.check();

    // Delete and recreate in a loop: every deleted channel is counted, then collected.
    let t = T0 + 40;
    for i in 0..20 {
        s.publish(b"loop", b"x", None, None, true, t, &l).unwrap();
        s.add_subscriber(b"loop", 0, t, &l).unwrap();
        assert_eq!(s.delete(b"loop", b"", t, &l), Ok(true), "{i}");
        s.remove_subscriber(b"loop", 0, t, &l);
    }
    assert_eq!(s.counters().channels_in_delete, 20);
    s.check();
    s.ack(0, 100, s.last_seq());
    assert_eq!(s.gc(t + DELETE_HOLD, &l, &alive).trashed_deleted, 20);
    let c = s.counters();
    assert_eq!((c.channels_in_delete, c.channels_in_trash), (0, 20));
    s.check();
}

/// The lifecycle as the statistics show it: live → in delete → in trash → gone, and live →
/// (inactive) → in trash → gone, with the C module's timing: a deleted channel waits for its
/// subscribers and the hold, a trashed one for the trash delay (strictly), an idle one for its
/// inactivity deadline (strictly).
#[test]
fn lifecycle_state_machine() {
    let l = Limits {
        channel_inactivity_time: 5,
        ..ev_lim()
    };
    let mut s = Store::new_in(Global, T0, &l).unwrap();
    let state = |s: &Store<Global>| {
        let c = s.counters();
        (c.channels - 1, c.channels_in_delete, c.channels_in_trash) // minus the events channel
    };
    // An unstored publish creates the channel: it is live, with its published count.
    s.publish(b"idle", b"x", None, None, false, T0, &l).unwrap();
    assert_eq!(s.channel(b"idle").unwrap().published_messages, 1);
    assert_eq!(state(&s), (1, 0, 0));
    // Idle: live through its deadline, trashed after it, freed after the trash delay.
    assert_eq!(s.gc(T0 + 5, &l, &alive).removed_channels, 0);
    assert_eq!(s.gc(T0 + 6, &l, &alive).removed_channels, 1);
    assert_eq!(state(&s), (0, 0, 1));
    assert!(s.channel(b"idle").is_none());
    s.gc(T0 + 16, &l, &alive);
    assert_eq!(state(&s), (0, 0, 1));
    s.gc(T0 + 17, &l, &alive);
    assert_eq!(state(&s), (0, 0, 0));

    // Deleted with a subscriber: in delete until it was told and the hold passed.
    let t = T0 + 100;
    s.add_subscriber(b"del", 3, t, &l).unwrap();
    assert_eq!(s.delete(b"del", b"bye", t, &l), Ok(true));
    assert_eq!(state(&s), (0, 1, 0));
    let r = s.gc(t + DELETE_HOLD + 5, &l, &alive);
    assert_eq!(r.trashed_deleted, 0, "a subscriber is still being told");
    assert_eq!(state(&s), (0, 1, 0));
    let n = events(&s).len();
    s.remove_subscriber(b"del", 3, t + DELETE_HOLD + 5, &l);
    assert_eq!(events(&s)[n..], [ev("client_unsubscribed", "del")]);
    assert_eq!(state(&s), (0, 1, 0));
    let r = s.gc(t + DELETE_HOLD + 6, &l, &alive);
    assert_eq!(r.trashed_deleted, 1);
    assert_eq!(events(&s)[n + 1..], [ev("channel_destroyed", "del")]);
    assert_eq!(state(&s), (0, 0, 1));
    s.gc(t + DELETE_HOLD + 16, &l, &alive);
    assert_eq!(state(&s), (0, 0, 1));
    s.gc(t + DELETE_HOLD + 17, &l, &alive);
    assert_eq!(state(&s), (0, 0, 0));

    // A two-channel delete counts two; the same id deleted twice (recreated between) too.
    let t = T0 + 200;
    s.publish(b"a", b"x", None, None, true, t, &l).unwrap();
    s.publish(b"b", b"x", None, None, true, t, &l).unwrap();
    assert_eq!(s.delete(b"a", b"", t, &l), Ok(true));
    assert_eq!(s.delete(b"b", b"", t, &l), Ok(true));
    s.publish(b"a", b"y", None, None, true, t, &l).unwrap();
    assert_eq!(s.delete(b"a", b"", t, &l), Ok(true));
    assert_eq!(state(&s), (0, 3, 0));
    assert_eq!(s.counters().stored_messages, 0);
    s.gc(t + DELETE_HOLD, &l, &alive);
    assert_eq!(state(&s), (0, 0, 3));
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
    assert_eq!(
        ids(s.channels(None).unwrap()),
        [&b"zz"[..], b"ab", b"b", b"ac"]
    );
    assert_eq!(ids(s.channels(Some(b"a")).unwrap()), [&b"ab"[..], b"ac"]);
    assert_eq!(ids(s.channels(Some(b"")).unwrap()).len(), 4);
    assert!(s.channels(Some(b"q")).unwrap().is_empty());
    s.get_or_create(b"aa", T0, &l).unwrap();
    assert_eq!(
        ids(s.channels(Some(b"a")).unwrap()),
        [&b"ab"[..], b"ac", b"aa"]
    );
}

#[test]
fn workers_and_subscriber_totals() {
    let l = lim();
    let mut s = Store::new_in(Global, T0, &l).unwrap();
    s.publish(b"a", b"x", None, None, true, T0, &l).unwrap();
    assert_eq!(s.register_worker(3, 300, T0, &l).unwrap(), 1);
    assert_eq!(s.register_worker(1, 100, T0 + 1, &l).unwrap(), 1);
    for _ in 0..5 {
        s.count_worker_subscriber(3, 300);
    }
    for _ in 0..3 {
        s.count_worker_subscriber(1, 100);
    }
    s.uncount_worker_subscriber(1, 100);
    s.count_worker_subscriber(1, 999); // wrong pid: ignored
    s.uncount_worker_subscriber(3, 999); // wrong pid: ignored
    assert_eq!(s.counters().subscribers, 7);
    // A registration repeated by the same pid keeps its count.
    assert_eq!(s.register_worker(1, 100, T0 + 1, &l).unwrap(), 1);
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
            lost: 0,
            no_heap: 0,
        }
    );
    // Freed only once both acked (and after the trash delay).
    assert_eq!(s.gc(T0 + 5, &l, &alive).freed_messages, 0);
    assert_eq!(s.gc(T0 + 11, &l, &alive).freed_messages, 2);
    s.check();
    let b3 = s.records_after(2, 10);
    assert_eq!((b3.records.len(), b3.cursor, b3.lost), (3, 5, 0));
    s.ack(1, 101, 5);
    assert_eq!(s.gc(T0 + 12, &l, &alive).freed_messages, 3);
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
            lost: 0,
            no_heap: 0,
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
            .unwrap()
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
    let m = &s
        .old_messages(
            b"a",
            &Cursor {
                backtrack: 1,
                ..Cursor::default()
            },
        )
        .unwrap()[0];
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
        .unwrap()
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
    let got = s
        .old_messages(
            b"fill",
            &Cursor {
                backtrack: u32::MAX,
                ..Cursor::default()
            },
        )
        .unwrap();
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
    assert!(total > 50, "{total}");
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

    // Worker 101 (slot 1) dies (worker 100 has read everything).
    s.ack(0, 100, s.last_seq());
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
    // "d" waited only on slot 1: trashed (its hold passed) in the same collection, after the
    // unsubscribes. "e" still waits on slot 0.
    let c = s.counters();
    assert_eq!((c.channels_in_delete, c.channels_in_trash), (1, 1));
    assert_eq!(r.trashed_deleted, 1);
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
    assert_eq!(s.gc(T0 + 30, &l, &alive).removed_channels, 0);
    assert_eq!(s.gc(T0 + 31, &l, &alive).removed_channels, 1);
    assert!(s.channel(b"f").is_none());
    assert!(s.channel(b"a").is_some());

    // Slot 0's subscriber of "e" leaves normally: "e" goes at the next collection.
    s.remove_subscriber(b"e", 0, T0 + 31, &l);
    assert_eq!(s.counters().channels_in_delete, 1);
    assert_eq!(events(&s).last().unwrap(), &ev("client_unsubscribed", "e"));
    assert_eq!(s.gc(T0 + 31, &l, &alive).trashed_deleted, 1);
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
    assert_eq!((c.channels_in_delete, c.channels_in_trash), (1, 0));
    assert_eq!(
        events(&s).split_off(n),
        [
            ev("client_unsubscribed", "a"),
            ev("client_unsubscribed", "a"),
            ev("client_unsubscribed", "d"),
        ]
    );
    s.check();
    // The next collection after the hold (once worker 100 has read the notice) trashes "d".
    s.ack(0, 100, s.last_seq());
    assert_eq!(s.gc(T0 + DELETE_HOLD, &l, &alive).trashed_deleted, 1);
    let c = s.counters();
    assert_eq!((c.channels_in_delete, c.channels_in_trash), (0, 1));
    assert_eq!(events(&s).last().unwrap(), &ev("channel_destroyed", "d"));
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
    assert_eq!(s.counters().channels_in_delete, 1);
    assert_eq!(events(&s).last().unwrap(), &ev("client_unsubscribed", "d"));
    // No subscriber of the deleted channel left anywhere: slot 0 now leaves nothing.
    s.remove_subscriber(b"d", 0, T0, &l);
    assert_eq!(events(&s).len(), n + 2);
    s.gc(T0 + DELETE_HOLD, &l, &alive);
    assert_eq!(s.counters().channels_in_delete, 0);
    assert_eq!(events(&s).last().unwrap(), &ev("channel_destroyed", "d"));
    s.check();
}

#[test]
fn add_subscriber_out_of_memory_changes_nothing() {
    const NEW: &[u8] = b"a new channel with a long id";
    let l = ev_lim();
    let b = Budget::new(usize::MAX);
    let mut s = Store::new_in(b.clone(), T0, &l).unwrap();
    // Fill the channel's slot entries to their capacity.
    let room = |s: &Store<Budget>| s.subs_room(b"a");
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
            s.channel(NEW),
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
    // A channel that does not exist yet (an id too long to be kept in its node, so that
    // creating it allocates): failing any allocation before it is created leaves nothing
    // behind (not even a channel_created event).
    let before = snap(&s);
    let used = b.used();
    let mut failures = 0;
    for n in 0.. {
        b.fail_nth(n);
        match s.add_subscriber(NEW, 0, T0 + 2, &l) {
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
    assert!(failures >= 1, "{failures}");
    assert_eq!(s.channel_slots(NEW), [(0, 1)]);
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

#[test]
fn store_errors_display_operator_text() {
    assert_eq!(StoreError::OutOfMemory.to_string(), "shared memory is full");
    assert_eq!(
        StoreError::ChannelsLimit.to_string(),
        "channel limit reached"
    );
    assert_eq!(
        StoreError::SubscribersLimit.to_string(),
        "subscriber limit per channel reached"
    );
    assert_eq!(
        StoreError::EventsChannel.to_string(),
        "the events channel is read-only"
    );
    let e: Box<dyn std::error::Error> = Box::new(StoreError::OutOfMemory);
    assert_eq!(e.to_string(), "shared memory is full");
}

/// A deleted channel's notice is a log record while the channel is in delete; the channel
/// leaves only once every registered worker has read it.
#[test]
fn deleted_notice_is_in_the_log_until_every_worker_read_it() {
    let l = lim();
    let mut s = Store::new_in(Global, T0, &l).unwrap();
    s.register_worker(0, 100, T0, &l).unwrap();
    s.register_worker(1, 101, T0, &l).unwrap();
    s.publish(b"a", b"m", None, None, true, T0, &l).unwrap();
    assert_eq!(s.delete(b"a", b"gone", T0, &l), Ok(true));
    let b = s.records_after(0, 10);
    assert_eq!(b.lost, 0);
    assert_eq!(
        b.records[1],
        Record::ChannelDeleted {
            seq: 2,
            channel: b"a".to_vec(),
            text: b"gone".to_vec()
        }
    );
    s.ack(0, 100, 2);
    assert_eq!(s.gc(T0 + DELETE_HOLD + 5, &l, &alive).trashed_deleted, 0);
    assert_eq!(s.counters().channels_in_delete, 1);
    assert_eq!(
        s.records_after(1, 10).records.len(),
        1,
        "worker 101 still reads it"
    );
    s.ack(1, 101, 2);
    assert_eq!(s.gc(T0 + DELETE_HOLD + 5, &l, &alive).trashed_deleted, 1);
    // Gone with its channel: a worker that had not read it is told it lost it.
    let b = s.records_after(1, 10);
    assert_eq!((b.records.len(), b.lost, b.cursor), (0, 1, 2));
    s.check();
}

/// The delete reserve: publishing fills the zone short of it; a delete then takes it; until a
/// collection got it back, publishing and creating channels refuse; after the cleanup the
/// same number fits again.
#[test]
fn deletes_fit_in_a_full_zone_through_the_reserve() {
    const PAGES: usize = 2;
    let l = Limits {
        delete_reserve_pages: PAGES,
        ..lim()
    };
    let budget = Budget::new(64 * 1024);
    let mut s = Store::new_in(budget.clone(), T0, &l).unwrap();
    assert_eq!(s.reserve_pages(), PAGES);
    let fill = |s: &mut Store<Budget>| {
        let mut n = 0;
        while s
            .publish(format!("c{n}").as_bytes(), b"x", None, None, true, T0, &l)
            .is_ok()
        {
            n += 1;
        }
        n
    };
    let first = fill(&mut s);
    assert!(first > 20, "{first}");
    assert!(budget.used() + RESERVE_PAGE > 64 * 1024 - PAGES * RESERVE_PAGE);
    // Every channel can be deleted on the full zone: the first delete frees the reserve.
    let created = s.counters().channels;
    for i in 0..created {
        assert_eq!(
            s.delete(format!("c{i}").as_bytes(), b"gone", T0, &l),
            Ok(true),
            "{i}"
        );
    }
    assert_eq!(s.reserve_pages(), 0);
    assert_eq!(s.counters().channels_in_delete, created);
    // Publishing (and creating channels) leaves what is left of the reserve alone.
    assert_eq!(
        s.publish(b"new", b"x", None, None, true, T0, &l),
        Err(StoreError::OutOfMemory)
    );
    assert_eq!(
        s.get_or_create(b"new", T0, &l),
        Err(StoreError::OutOfMemory)
    );
    assert!(s.channel(b"new").is_none());
    s.check();
    // The cleanup frees everything and takes the reserve back; the same number fits.
    s.gc(T0 + DELETE_HOLD, &l, &alive);
    s.gc(T0 + 200, &l, &alive);
    assert_eq!(s.reserve_pages(), PAGES);
    let c = s.counters();
    assert_eq!(
        (
            c.channels,
            c.channels_in_delete,
            c.channels_in_trash,
            c.messages_in_trash
        ),
        (0, 0, 0, 0)
    );
    assert_eq!(fill(&mut s), first);
    s.check();
}
