use super::*;
use crate::resume::Cursor;

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
    let old = s.old_messages(b"a", &cur).unwrap();
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
