//! Messages and channel deletes consumed from the broker: into the host-wide store
//! (idempotently, by stream offset, or for an exchange by the host number its dedupe key
//! drew: the first worker to see a message stores it) and to this worker's subscribers.

use push_stream_core::amqp::Occurrences;
use push_stream_core::template::Message;

use super::client::{BrokerMessage, Position};
use super::with;
use crate::conf::MainConf;
use crate::delivery;
use crate::ngx::event;
use crate::ngx::zone::ZoneStore;
use crate::ngx_log;

/// How long (seconds) the workers of a host recognise copies of one exchange message.
const EXCHANGE_WINDOW: i64 = 30;

/// Where a consumed message sits for this host: a stream offset, or an exchange message's
/// dedupe key and which copy of that key this worker has seen (1 = first).
#[derive(Clone, Copy)]
enum Place {
    Offset(u64),
    Key(u128, u32),
}

/// The broker messages of one inbox drain, in order: into the store (first worker of the
/// host wins), then to this worker's subscribers that have not seen them. Consecutive
/// messages go into the store under one lock (consuming for the host, one wake-up of the
/// other workers for all of them); a delete (applied once per host) or a refill is applied
/// on its own, in its place.
pub fn consumed_all(ms: Vec<BrokerMessage>) {
    let Some(mcf) = with(|s| s.main) else {
        return;
    };
    let mut run: Vec<(BrokerMessage, Place)> = Vec::new();
    for m in ms {
        if m.refill {
            flush(mcf, std::mem::take(&mut run));
            refilled(mcf, &m);
            continue;
        }
        let now = event::now();
        let Some(place) = place_of(&m, now) else {
            continue;
        };
        if m.delete {
            flush(mcf, std::mem::take(&mut run));
            consumed_delete(mcf, &m, place, now);
            continue;
        }
        run.push((m, place));
    }
    flush(mcf, run);
}

/// Where a consumed message sits for this host; None for a stream offset this worker has
/// handled already (a redelivery after a reconnect).
fn place_of(m: &BrokerMessage, now: i64) -> Option<Place> {
    match m.position {
        Position::Offset(o) => {
            let last = with(|s| s.last_offset).flatten();
            if last.is_some_and(|l| o <= l) {
                return None;
            }
            with(|s| s.last_offset = Some(o));
            Some(Place::Offset(o))
        }
        Position::Key(k) => {
            let n = with(|s| {
                s.seen
                    .get_or_insert_with(Occurrences::default)
                    .see(k, now, EXCHANGE_WINDOW)
            })
            .unwrap_or(1);
            Some(Place::Key(k, n))
        }
    }
}

/// What storing one channel of a message gave: its (time, tag) in the store, or why the zone
/// refused it.
type Stored = Result<(i64, u64), push_stream_core::store::StoreError>;

/// Stores `run` (consecutive messages) under one lock, then answers and delivers each. Under
/// the lock nothing is allocated: the room for the results is taken before, and the event ids
/// are written into a stack buffer (see `store::copy` for why).
fn flush(mcf: &'static MainConf, run: Vec<(BrokerMessage, Place)>) {
    if run.is_empty() {
        return;
    }
    let Some(host) = with(|s| s.host) else { return };
    let Some(zone) = mcf.zone() else { return };
    let store = mcf.amqp.store_messages();
    let now = event::now();
    let now_ms = event::now_ms();
    let mut offsets: Vec<u64> = Vec::with_capacity(run.len());
    let mut stored: Vec<Stored> =
        Vec::with_capacity(run.iter().map(|(m, _)| m.channels.len()).sum());
    // Consuming for the host, what is stored enters the delivery log: `commit` makes every
    // worker (this one on its next turn) deliver it from there. Otherwise nothing enters
    // the log and the store is only read by later subscribers.
    let change = |s: &mut ZoneStore| {
        s.set_clock_ms(now_ms);
        for (m, place) in &run {
            let time = m.time.unwrap_or(now);
            let offset = match *place {
                Place::Offset(o) => o,
                Place::Key(k, n) => s.exchange_offset(k, n, now, EXCHANGE_WINDOW).0,
            };
            let mut digits = [0u8; 20];
            let event_id = push_stream_core::amqp::event_id_in(&m.event_id, offset, &mut digits);
            offsets.push(offset);
            for ch in &m.channels {
                stored.push(s.insert_broker(
                    ch,
                    offset,
                    &m.text,
                    event_id,
                    &m.event_type,
                    time,
                    store,
                    host,
                    now,
                    &mcf.limits,
                ));
            }
        }
    };
    let done = if host {
        delivery::commit(zone, change)
    } else {
        zone.with_store(change)
    };
    if done.is_none() {
        return;
    }
    let mut results = stored.into_iter();
    for ((m, _), offset) in run.iter().zip(offsets) {
        note_consumed(mcf, m.message_id.as_deref());
        let event_id = push_stream_core::amqp::default_event_id(&m.event_id, offset);
        let time = m.time.unwrap_or(now);
        for (ch, r) in m.channels.iter().zip(results.by_ref()) {
            let (t, tag, in_log) = match r {
                Ok((t, tag)) => (t, tag, true),
                Err(e) => {
                    // Not stored (zone full, channel limit): still delivered live here. When
                    // this worker consumes for the host, the others cannot get it: say so.
                    ngx_log!(
                        error,
                        crate::ngx::log::Log::cycle(),
                        "push_stream: amqp: message {} for channel \"{}\" not stored{}: {e}",
                        offset + 1,
                        String::from_utf8_lossy(ch),
                        if host {
                            " (delivered on this worker only: the others get consumed messages through the zone)"
                        } else {
                            ""
                        }
                    );
                    (time, offset + 1, false)
                }
            };
            // What is not in the log (every worker consumes; or, consuming for the host, what
            // the zone refused) goes to this worker's subscribers now.
            if !host || !in_log {
                let msg = Message {
                    text: &m.text,
                    id: offset as i64 + 1,
                    channel: ch,
                    event_id: &event_id,
                    event_type: &m.event_type,
                    time: t,
                    tag,
                };
                delivery::deliver_message(msg, delivery::Since::Offset(offset + 1));
            }
        }
    }
}

/// A message read again from the stream for a rebuilt store: stored (outside the delivery
/// log, not counted again), or for a delete, the channel's stored messages dropped quietly.
fn refilled(mcf: &MainConf, m: &BrokerMessage) {
    let (Some(zone), Position::Offset(offset)) = (mcf.zone(), m.position) else {
        return;
    };
    let now = event::now();
    let time = m.time.unwrap_or(now);
    let event_id = push_stream_core::amqp::default_event_id(&m.event_id, offset);
    zone.with_store(|s| {
        for ch in &m.channels {
            let _ = if m.delete {
                s.refill_delete(ch, now)
            } else {
                s.refill_broker(
                    ch,
                    offset,
                    &m.text,
                    &event_id,
                    &m.event_type,
                    time,
                    now,
                    &mcf.limits,
                )
                .map(|_| ())
            };
        }
    });
}

/// A message (or delete) this host now has: when one of this host's workers published it
/// (its own message-id), raise that worker's consumed-back mark so it answers its publisher
/// (read-your-writes). Done by the publisher's own consumer, or by the worker consuming for
/// the host, which then wakes the publisher.
fn note_consumed(mcf: &MainConf, message_id: Option<&[u8]>) {
    let Some((epoch, slot, token)) =
        message_id.and_then(push_stream_core::amqp::parse_own_message_id)
    else {
        return;
    };
    let Some(zone) = mcf.zone() else { return };
    let mine = delivery::slot() == slot;
    let for_host = with(|s| s.host && s.consumer).unwrap_or(false);
    if !(mine || for_host) || zone.publish_epoch(slot) != epoch {
        return;
    }
    zone.raise_stored_up_to(slot, epoch, token);
    if !mine {
        delivery::wake_slot(zone, slot);
    }
}

/// A channel delete consumed from the broker: the first worker of the host to present it
/// deletes the channels in the shared zone (as an HTTP DELETE there would); the host log then
/// closes every local worker's subscribers with the channel-deleted message.
fn consumed_delete(mcf: &'static MainConf, m: &BrokerMessage, place: Place, now: i64) {
    let text = if m.text.is_empty() {
        mcf.deleted_text().to_vec()
    } else {
        m.text.clone()
    };
    let Some(zone) = mcf.zone() else { return };
    // Room for the failures is taken before locking (nothing is allocated under the lock).
    let mut failed = Vec::with_capacity(m.channels.len());
    let outcome = delivery::commit(zone, |s| {
        let claimed = match place {
            Place::Offset(o) => s.claim_broker_op(o),
            Place::Key(k, n) => s.exchange_offset(k, n, now, EXCHANGE_WINDOW).1,
        };
        let mut deleted = 0;
        if claimed {
            for ch in &m.channels {
                match s.delete(ch, &text, now, &mcf.limits) {
                    Ok(true) => deleted += 1,
                    Ok(false) => {}
                    Err(e) => failed.push((ch, e)),
                }
            }
        }
        (claimed, deleted)
    });
    let Some((claimed, deleted)) = outcome else {
        return;
    };
    note_consumed(mcf, m.message_id.as_deref());
    for (ch, e) in failed {
        ngx_log!(
            error,
            crate::ngx::log::Log::cycle(),
            "push_stream: amqp: delete of channel \"{}\" failed: {e}",
            String::from_utf8_lossy(ch)
        );
    }
    if claimed {
        ngx_log!(
            notice,
            crate::ngx::log::Log::cycle(),
            "push_stream: amqp: channel delete from the broker: {deleted} of {} channel(s) deleted on this host",
            m.channels.len()
        );
    }
}
