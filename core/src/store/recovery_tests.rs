//! Detect and recover with the budgeted allocator (the zone's slab in nginx): a rebuilt store
//! lives in a re-initialised allocator of the same size as the damaged one, so everything it
//! is given back must fit there, or be refused cleanly with the store still consistent.

use super::tests::Budget;
use super::*;

const ZONE: usize = 48 * 1024;
const T: i64 = 1_000_000;

/// A worker's own registry: its slot, pid and (channel, subscribers) pairs.
type Registry = (usize, u32, Vec<(Vec<u8>, u64)>);

fn lim() -> Limits {
    Limits {
        message_ttl: 100,
        channel_inactivity_time: 30,
        ..Limits::default()
    }
}

/// `channels == listed` and the sum of per-channel subscribers equals the workers' counts.
fn consistent<A: Allocator + Clone>(s: &Store<A>) {
    let c = s.counters();
    let listed = s.channels(None).unwrap();
    assert_eq!(c.channels + c.wildcard_channels, listed.len() as u64);
    let per_channel: u64 = listed.iter().map(|i| i.subscribers).sum();
    let per_slot: u64 = listed
        .iter()
        .flat_map(|i| s.channel_slots(&i.id))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(per_channel, per_slot);
}

/// A store in a budget of `ZONE` bytes that publishing filled, with two workers holding
/// subscribers; returns it with the per-worker registries (channel, count) the nginx layer
/// keeps, which is what a rebuild gives back.
fn full_store(b: &Budget) -> (Store<Budget>, Vec<Registry>) {
    let (s, regs, _) = full_store_counted(b);
    (s, regs)
}

/// [`full_store`], with how many publishes (each to a new channel) filled it.
fn full_store_counted(b: &Budget) -> (Store<Budget>, Vec<Registry>, usize) {
    let l = lim();
    let mut s = Store::new_in(b.clone(), T, &l).unwrap();
    let workers = [(1usize, 101u32), (2, 102)];
    for (slot, pid) in workers {
        s.register_worker(slot, pid, T, &l).unwrap();
    }
    let mut regs = Vec::new();
    for (k, (slot, pid)) in workers.into_iter().enumerate() {
        let mut reg = Vec::new();
        for c in 0..20 {
            let id = format!("sub{k}-{c}").into_bytes();
            let n = (c % 3 + 1) as u64;
            for _ in 0..n {
                s.add_subscriber(&id, slot, T, &l).unwrap();
            }
            reg.push((id, n));
        }
        regs.push((slot, pid, reg));
    }
    let mut i = 0;
    while s
        .publish(format!("p{i}").as_bytes(), b"x", None, None, true, T, &l)
        .is_ok()
    {
        i += 1;
    }
    assert!(i > 10, "the budget holds only {i} publishes");
    consistent(&s);
    (s, regs, i)
}

/// What the nginx layer does on a rebuild: a new store in a re-initialised allocator,
/// continuing from the carry, then each worker rejoins and gives its counts back. Returns
/// how many subscribers were refused (a worker that cannot rejoin gives none back; the nginx
/// layer retries it on its tick).
fn rebuild(old: &Store<Budget>, b: &Budget, regs: &[Registry]) -> (Store<Budget>, u64) {
    let (s, refused, _) = rebuild_counted(old, b, regs);
    (s, refused)
}

/// [`rebuild`], with how many workers could not rejoin.
fn rebuild_counted(
    old: &Store<Budget>,
    b: &Budget,
    regs: &[Registry],
) -> (Store<Budget>, u64, usize) {
    let l = lim();
    let carry = old.carry();
    let mut s = Store::new_in(b.clone(), T + 5, &l).unwrap();
    s.carry_over(&carry);
    let (mut refused, mut out) = (0, 0);
    for (slot, pid, reg) in regs {
        let requests = reg.iter().map(|(_, n)| n).sum();
        if s.rejoin_worker(*slot, *pid, Some(carry.last_seq), requests, T + 5, &l)
            .is_err()
        {
            refused += requests;
            out += 1;
            continue;
        }
        for (id, n) in reg {
            if s.restore_subscribers(id, *slot, *n, T + 5, &l).is_err() {
                refused += n;
            }
        }
    }
    (s, refused, out)
}

#[test]
fn a_store_filled_by_publishing_is_rebuilt_in_an_allocator_of_the_same_size() {
    let b = Budget::new(ZONE);
    let (old, regs, filled) = full_store_counted(&b);
    let published = old.counters().published_messages;
    // The slab is re-initialised: a new budget of the same size.
    let fresh = Budget::new(ZONE);
    let (mut s, refused) = rebuild(&old, &fresh, &regs);
    assert_eq!(refused, 0);
    consistent(&s);
    let c = s.counters();
    // Every subscribed channel is back with its counts; the published-only ones are lost.
    assert_eq!(c.channels, 40);
    assert_eq!(
        c.subscribers,
        regs.iter().flat_map(|r| &r.2).map(|(_, n)| n).sum()
    );
    assert_eq!(c.stored_messages, 0);
    assert_eq!(c.published_messages, published);
    for (slot, _, reg) in &regs {
        for (id, n) in reg {
            assert_eq!(s.channel_slots(id), vec![(*slot, *n)]);
        }
    }
    // The rebuilt store works: publishing continues the sequence, and fills the same budget
    // again to the same point (the same channels with subscribers, publishes to new ones).
    let before = s.last_seq();
    let p = s
        .publish(b"sub0-0", b"again", None, None, true, T + 6, &lim())
        .unwrap();
    assert_eq!(p.seq, before + 1);
    assert!(p.seq > old.last_seq());
    let mut again = 1;
    while s
        .publish(
            format!("q{again}").as_bytes(),
            b"x",
            None,
            None,
            true,
            T + 6,
            &lim(),
        )
        .is_ok()
    {
        again += 1;
    }
    assert!(
        again * 10 >= filled * 9,
        "the rebuilt store took {again} publishes, the first {filled}"
    );
    consistent(&s);
    drop(old);
    assert_eq!(
        b.used(),
        0,
        "dropping a full store gives back everything it allocated"
    );
}

#[test]
fn a_rebuild_too_small_for_every_subscriber_refuses_some_and_stays_consistent() {
    let b = Budget::new(ZONE);
    let (old, regs) = full_store(&b);
    let total: u64 = regs.iter().flat_map(|r| &r.2).map(|(_, n)| n).sum();
    // A budget that holds the empty store and a few channels only.
    let small = Budget::new(0);
    small.set_limit(usize::MAX);
    let probe = Store::new_in(small.clone(), T, &lim()).unwrap();
    let empty = small.used();
    drop(probe);
    // The smallest budget above the empty store that takes some but not all of them (the
    // store grows in pages: try in steps of 256 bytes).
    let (s, refused, _) = (0..256)
        .map(|k| rebuild_counted(&old, &Budget::new(empty + k * 256), &regs))
        .find(|(_, refused, out)| *out == 0 && *refused > 0 && *refused < total)
        .expect("no budget between the empty store and 64 KiB more takes only some channels");
    consistent(&s);
    assert_eq!(
        s.counters().subscribers,
        total,
        "requests are counted per worker"
    );
    let counted: u64 = s
        .channels(None)
        .unwrap()
        .iter()
        .map(|i| i.subscribers)
        .sum();
    assert_eq!(counted, total - refused);
}

#[test]
fn a_failed_allocation_at_each_step_of_a_rejoin_leaves_a_usable_store() {
    let b = Budget::new(ZONE);
    let (old, regs) = full_store(&b);
    // Fail the n-th allocation of the rebuild for every n until one succeeds untouched.
    let mut n = 0;
    loop {
        let fresh = Budget::new(ZONE);
        let l = lim();
        let mut s = Store::new_in(fresh.clone(), T + 5, &l).unwrap();
        s.carry_over(&old.carry());
        fresh.fail_nth(n);
        let mut failed = false;
        for (slot, pid, reg) in &regs {
            failed |= s.rejoin_worker(*slot, *pid, None, 0, T + 5, &l).is_err();
            for (id, k) in reg {
                failed |= s.restore_subscribers(id, *slot, *k, T + 5, &l).is_err();
            }
        }
        // Whether the n-th allocation came inside the rejoin (else: all of it succeeded).
        let fired = fresh.failed_yet();
        fresh.fail_nth(usize::MAX);
        assert!(fired || !failed);
        consistent(&s);
        // Whatever failed, the store goes on: a publish and a subscribe work.
        s.publish(b"after", b"m", None, None, true, T + 6, &l)
            .unwrap();
        s.add_subscriber(b"after", 1, T + 6, &l).unwrap();
        consistent(&s);
        if !fired {
            break;
        }
        n += 1;
        assert!(n < 10_000);
    }
    assert!(n > 0);
}

#[test]
fn one_read_of_the_log_copies_about_a_mebibyte_under_the_lock() {
    let l = lim();
    let mut s = Store::new_in(Global, T, &l).unwrap();
    let big = vec![b'x'; 400 * 1024];
    for _ in 0..5 {
        s.publish(b"a", &big, None, None, false, T, &l).unwrap();
    }
    s.publish(b"a", &vec![b'y'; 3 << 20], None, None, false, T, &l)
        .unwrap();
    // Two 400 KiB records fit in 1 MiB, a third does not; the 3 MiB record comes alone; the
    // cursor always ends after the last record returned.
    let mut cursor = 0;
    let mut sizes = Vec::new();
    loop {
        let b = s.records_after(cursor, 256);
        if b.records.is_empty() {
            break;
        }
        assert_eq!(b.lost, 0);
        sizes.push(b.records.len());
        cursor = b.cursor;
    }
    assert_eq!(sizes, [2, 2, 1, 1]);
    assert_eq!(cursor, s.last_seq());
}
