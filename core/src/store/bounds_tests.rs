//! The work one critical section does is bounded, whatever the store's size:
//! * channel listings read a page of the table per lock hold (`ChannelPages`): while the table
//!   changes between pages (channels created, so buckets split; channels deleted), every
//!   channel that lived through the whole listing is listed exactly once, in creation order;
//! * one collection frees at most `GC_FREES` trashed messages, the next ones the rest.

use super::*;

const T: i64 = 1_000_000;

fn lim() -> Limits {
    Limits {
        message_ttl: 100,
        channel_inactivity_time: 3600,
        ..Limits::default()
    }
}

#[test]
fn a_listing_read_in_pages_while_the_table_grows_lists_each_survivor_once_in_order() {
    let l = lim();
    let mut s = Store::new_in(Global, T, &l).unwrap();
    for i in 0..20_000 {
        s.get_or_create(format!("c{i}").as_bytes(), T, &l).unwrap();
    }
    let mut pages = ChannelPages::default();
    pages.read(&s, None).unwrap();
    assert!(
        !pages.done(),
        "a table of 20 000 channels takes more than one page"
    );
    let mut reads = 1;
    let mut added = 0;
    while !pages.done() {
        // Between two holds of the lock: more channels (the table splits buckets) and deletes.
        for _ in 0..3_000 {
            s.get_or_create(format!("n{added}").as_bytes(), T, &l)
                .unwrap();
            added += 1;
        }
        s.delete(format!("c{}", reads * 7).as_bytes(), b"", T, &l)
            .unwrap();
        pages.read(&s, None).unwrap();
        reads += 1;
    }
    assert!(reads > 2);
    let listed = pages.finish().unwrap();
    let ids: Vec<&[u8]> = listed.iter().map(|i| i.id.as_slice()).collect();
    let mut seen = std::collections::HashSet::new();
    assert!(
        ids.iter().all(|id| seen.insert(*id)),
        "a channel listed twice"
    );
    // Every channel that was never deleted is listed (a deleted one may be, when its bucket
    // was read before the delete).
    let deleted = |i: usize| i.is_multiple_of(7) && i / 7 >= 1 && i / 7 < reads;
    for i in (0..20_000).filter(|&i| !deleted(i)) {
        assert!(seen.contains(format!("c{i}").as_bytes()), "c{i} missing");
    }
    // Creation order: the original channels come first, in order.
    let first: Vec<&[u8]> = ids.iter().copied().filter(|i| i[0] == b'c').collect();
    let mut sorted = first.clone();
    sorted.sort_by_key(|i| {
        std::str::from_utf8(&i[1..])
            .unwrap()
            .parse::<u32>()
            .unwrap()
    });
    assert_eq!(first, sorted);
    // One call lists the same as pages over an unchanged table.
    let all = s.channels(None).unwrap();
    let mut pages = ChannelPages::default();
    while !pages.done() {
        pages.read(&s, None).unwrap();
    }
    assert_eq!(pages.finish().unwrap(), all);
    assert_eq!(all.len() as u64, s.counters().channels);
}

#[test]
fn one_collection_frees_at_most_gc_frees_messages_and_the_next_one_the_rest() {
    let l = Limits {
        trash_delay: Some(1),
        ..lim()
    };
    let mut s = Store::new_in(Global, T, &l).unwrap();
    s.register_worker(1, 101, T, &l).unwrap();
    let n = GC_FREES + 1000;
    for _ in 0..n {
        // Unstored: straight to the trash.
        s.publish(b"a", b"m", None, None, false, T, &l).unwrap();
    }
    // The worker read everything: nothing pins the log.
    s.ack(1, 101, s.last_seq());
    let alive = |_: u32| true;
    let first = s.gc(T + 5, &l, &alive);
    assert_eq!(first.freed_messages, GC_FREES as u64);
    assert_eq!(s.counters().messages_in_trash, 1000);
    let second = s.gc(T + 6, &l, &alive);
    assert_eq!(second.freed_messages, 1000);
    assert_eq!(s.counters().messages_in_trash, 0);
}
