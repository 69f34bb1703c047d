//! The fan-out: what the host-wide store's delivery log holds beyond this worker's cursor
//! (and what the broker delivers directly) goes to this worker's subscribers of each
//! channel, rendered once per template.

use push_stream_core::store::Record;
use push_stream_core::template::{LocationTemplates, Message};

use super::gather::{flush_gathered, gathered, leftover_empty, next_turn, write_leftover};
use super::subscribers::{end, kind_of, longpoll_complete, send_message, Kind};
use super::with;
use crate::ngx::event;
use crate::ngx::held::HeldRef;
use crate::ngx_log;
use std::rc::Rc;

/// Runs `process_log` on the next turn of the event loop (after the current request has been
/// answered), through the wake-up socket's read handler.
pub fn schedule_delivery() {
    with(|w| {
        if let Some(c) = &w.wake {
            c.post();
        }
    });
}

/// Delivers what the host-wide log holds beyond this worker's cursor.
pub fn process_log() {
    super::rejoin_if_rebuilt();
    // Writes left from an earlier batch go first; new records wait in the log meanwhile.
    if !write_leftover() {
        next_turn();
        return;
    }
    loop {
        let Some((Some(zone), Some(cursor), slot, pid)) =
            with(|w| (w.zone, w.cursor, w.slot, w.pid))
        else {
            return;
        };
        let Some(batch) = zone.with_store(|s| s.records_after(cursor, 256)) else {
            return;
        };
        if batch.lost > 0 {
            with(|w| w.stats.lost += batch.lost);
        }
        if batch.lost > batch.no_heap {
            ngx_log!(
                error,
                crate::ngx::log::Log::cycle(),
                "push_stream: worker {pid} missed {} message(s) that left the store before it could deliver them",
                batch.lost - batch.no_heap
            );
        }
        if batch.no_heap > 0 {
            ngx_log!(
                error,
                crate::ngx::log::Log::cycle(),
                "push_stream: worker {pid} skipped {} message(s) of the store: its memory is exhausted and could not take their copy",
                batch.no_heap
            );
        }
        // Nothing read and the cursor did not move: caught up. (Records skipped or lost move
        // the cursor: read on.)
        let done = batch.records.is_empty() && batch.cursor == cursor;
        gathered(|| {
            for rec in &batch.records {
                deliver(rec);
            }
        });
        with(|w| w.cursor = Some(batch.cursor));
        zone.with_store(|s| s.ack(slot, pid, batch.cursor));
        // A batch wider than one turn continues on the next turn (the gathering posted it);
        // the records after it wait in the log until it is written, as above.
        if done || !leftover_empty() {
            return;
        }
    }
}

/// A subscriber a message goes to.
struct Target {
    req: HeldRef,
    tpl: Option<&'static LocationTemplates>,
    kind: Kind,
}

/// Which of a channel's subscribers a message is for: those that have not seen it yet.
#[derive(Clone, Copy)]
pub enum Since {
    /// A record of the host-wide log.
    Seq(u64),
    /// A message consumed from the broker's stream.
    Offset(u64),
}

fn targets(channel: &[u8], seq: u64) -> Vec<Target> {
    targets_since(channel, Since::Seq(seq))
}

fn targets_since(channel: &[u8], since: Since) -> Vec<Target> {
    with(|w| {
        w.by_channel
            .get(channel)
            .map(|keys| {
                keys.iter()
                    .filter_map(|k| {
                        w.subs
                            .get(k)
                            .filter(|s| match since {
                                Since::Seq(seq) => s.since_seq < seq,
                                Since::Offset(o) => s.since_offset < o,
                            })
                            .filter(|s| s.req.alive())
                            .map(|s| Target {
                                req: s.req,
                                tpl: s.tpl,
                                kind: kind_of(&s.mode),
                            })
                    })
                    .collect()
            })
            .unwrap_or_default()
    })
    .unwrap_or_default()
}

/// A message rendered once per template (and framed once for WebSocket locations).
struct Rendered<'m> {
    msg: Message<'m>,
    cache: Vec<(*const LocationTemplates, Rc<[u8]>)>,
}

impl<'m> Rendered<'m> {
    fn new(msg: Message<'m>) -> Self {
        Rendered {
            msg,
            cache: Vec::new(),
        }
    }

    fn get(&mut self, tpl: &LocationTemplates) -> Rc<[u8]> {
        let p = tpl as *const LocationTemplates;
        let i = match self.cache.iter().position(|(t, _)| *t == p) {
            Some(i) => i,
            None => {
                let mut bytes = tpl.render_message(&self.msg);
                if tpl.kind == push_stream_core::template::Kind::WebSocket {
                    bytes = push_stream_core::websocket::text_frame(&bytes);
                }
                self.cache.push((p, bytes.into()));
                self.cache.len() - 1
            }
        };
        self.cache[i].1.clone()
    }
}

fn deliver(rec: &Record) {
    match rec {
        Record::Message {
            seq,
            channel,
            id,
            time,
            tag,
            event_id,
            event_type,
            text,
            published_ms,
        } => {
            let m = Message {
                text,
                id: *id,
                channel,
                event_id,
                event_type,
                time: *time,
                tag: *tag,
            };
            if deliver_message(m, Since::Seq(*seq)) > 0 && *published_ms > 0 {
                let ms = (event::now_ms() - *published_ms).max(0);
                with(|w| {
                    w.stats.latency[push_stream_core::metrics::latency_bucket(ms)] += 1;
                    w.stats.latency_sum_ms += ms as u64;
                });
            }
        }
        Record::ChannelDeleted { seq, channel, text } => {
            // What was gathered before the notice is written before it.
            flush_gathered();
            let m = Message::channel_deleted(channel, text);
            let mut r = Rendered::new(m);
            for t in targets(channel, *seq) {
                // The subscriber leaves that channel; the store counts it out of the deleted one.
                let key = t.req.key();
                let left = with(|w| {
                    if let Some(keys) = w.by_channel.get_mut(channel.as_slice()) {
                        keys.remove(&key);
                    }
                    w.subs.get_mut(&key).map(|s| {
                        s.channels.retain(|c| c != channel);
                        s.channels.is_empty()
                    })
                })
                .flatten();
                if let Some((Some(zone), limits, slot)) = with(|w| (w.zone, w.limits, w.slot)) {
                    zone.with_store(|s| s.remove_subscriber(channel, slot, event::now(), limits));
                }
                let Some(tpl) = t.tpl else { continue };
                if t.kind == Kind::LongPoll {
                    let bytes = tpl.render_message(&m);
                    longpoll_complete(t.req, tpl, 200, event::now(), 0, Some(bytes));
                    continue;
                }
                send_message(t.req, r.get(tpl));
                if left == Some(true) {
                    end(t.req);
                }
            }
        }
    }
}

/// Delivers one message to this worker's subscribers of its channel that have not seen it,
/// rendered once per template.
pub fn deliver_message(m: Message, since: Since) -> usize {
    let mut r = Rendered::new(m);
    let targets = targets_since(m.channel, since);
    let n = targets.len();
    for t in targets {
        let Some(tpl) = t.tpl else { continue };
        if t.kind == Kind::LongPoll {
            let bytes = tpl.render_message(&m);
            longpoll_complete(t.req, tpl, 200, m.time, m.tag, Some(bytes));
        } else {
            send_message(t.req, r.get(tpl));
        }
    }
    n
}
