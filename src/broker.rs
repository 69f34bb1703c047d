//! The event-loop side of the RabbitMQ bridge: messages consumed from the broker go into the
//! host-wide store (idempotently, by stream offset, or for an exchange by the host number its
//! dedupe key drew: the first worker to see a message stores it) and to this worker's
//! subscribers; channel deletes consumed from the broker are applied once per host; HTTP
//! publishes and deletes wait for the broker's confirm; the bridge's state is logged and
//! counted.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use nginx_sys::{ngx_int_t, NGX_HTTP_INTERNAL_SERVER_ERROR};
use push_stream_core::template::Message;
use tokio::sync::mpsc;

use crate::amqp::{BrokerMessage, Position, PublishError, PublishReq, Settings, Source, Status};
use crate::glue::conf::MainConf;
use crate::glue::guard::guard;
use crate::glue::http::Req;
use crate::glue::{log, worker, zone};
use push_stream_core::amqp::Occurrences;

/// A publisher request waiting for the broker's confirm.
struct Pending {
    req: Req,
    main: &'static MainConf,
    channels: Vec<Vec<u8>>,
    info: bool,
    delete: bool,
}

/// How long (seconds) the workers of a host recognise copies of one exchange message.
const EXCHANGE_WINDOW: i64 = 30;

/// Where a consumed message sits for this host: a stream offset, or an exchange message's
/// dedupe key and which copy of that key this worker has seen (1 = first).
#[derive(Clone, Copy)]
enum Place {
    Offset(u64),
    Key(u128, u32),
}

struct State {
    outbox: mpsc::Sender<PublishReq>,
    status: Arc<Status>,
    connected: bool,
    next_token: u64,
    pending: HashMap<u64, Pending>,
    /// The last stream offset this worker delivered (redeliveries after a reconnect are skipped).
    last_offset: Option<u64>,
    /// Exchange source: how often this worker saw each dedupe key lately.
    seen: Option<Occurrences>,
    main: &'static MainConf,
    /// One worker consumes for the host: consumed messages go through the zone's log.
    host: bool,
    /// This worker consumes the source (always, unless another worker does it for the host).
    consumer: bool,
}

thread_local! {
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
}

fn with<R>(f: impl FnOnce(&mut State) -> R) -> Option<R> {
    STATE.with(|s| s.borrow_mut().as_mut().map(f))
}

/// Starts this worker's bridge (from init_process) when the configuration has an AMQP source.
pub fn start(mcf: &'static MainConf, mut settings: Settings) -> Result<(), String> {
    let exchange = matches!(settings.source, Source::Exchange(_));
    // `push_stream_amqp_consumer host`: nginx's worker number 0 (the same number again when
    // the master respawns it) consumes the stream for the host, resuming after the highest
    // offset in the zone; the other workers deliver what it stores from the zone's log.
    let host = mcf.amqp_consumer_host() && !exchange;
    settings.consume = !host || worker::number() == 0;
    // A worker that does not consume has no offset to resume from (its statistics say 0).
    let start = if exchange || !settings.consume {
        None
    } else {
        zone::with_store(mcf.shm_zone, |s| s.broker_offset())
            .flatten()
            .map(|o| o + 1)
    };
    let consumer = settings.consume;
    let (tx, rx) = mpsc::channel(crate::amqp::OUTBOX_CAPACITY);
    let status = Arc::new(Status::default());
    worker::start_bridge(crate::amqp::run(settings, start, rx, status.clone()))?;
    STATE.with(|s| {
        *s.borrow_mut() = Some(State {
            outbox: tx,
            status,
            connected: false,
            next_token: 1,
            pending: HashMap::new(),
            last_offset: start.map(|o| o.saturating_sub(1)),
            seen: exchange.then(Occurrences::default),
            main: mcf,
            host,
            consumer,
        })
    });
    Ok(())
}

pub fn enabled() -> bool {
    with(|_| ()).is_some()
}

/// The bridge's counters for the statistics: (name, value).
pub fn stats() -> Vec<(String, u64)> {
    with(|s| {
        let st = &s.status;
        vec![
            ("amqp_connected".into(), s.connected as u64),
            ("amqp_consumer".into(), s.consumer as u64),
            (
                "amqp_messages_consumed_up_to_offset".into(),
                st.last_offset.load(Ordering::Relaxed).max(0) as u64,
            ),
            (
                "amqp_reconnects".into(),
                st.reconnects.load(Ordering::Relaxed),
            ),
            (
                "amqp_messages_in".into(),
                st.messages_in.load(Ordering::Relaxed),
            ),
            (
                "amqp_messages_out".into(),
                st.messages_out.load(Ordering::Relaxed),
            ),
            (
                "amqp_confirms_pending".into(),
                st.confirms_pending.load(Ordering::Relaxed),
            ),
            (
                "amqp_messages_lost_to_retention".into(),
                st.retention_gaps.load(Ordering::Relaxed),
            ),
            ("amqp_inbox_depth".into(), worker::inbox_depth() as u64),
            (
                "amqp_exchange_keys".into(),
                s.seen.as_ref().map_or(0, |o| o.len() as u64),
            ),
        ]
    })
    .unwrap_or_default()
}

pub fn state(connected: bool, detail: &str) {
    with(|s| s.connected = connected);
    if connected {
        log::notice(
            std::ptr::null_mut(),
            &format!("push_stream: amqp: connected, {detail}"),
        );
    } else {
        log::warn(
            std::ptr::null_mut(),
            &format!("push_stream: amqp: broker unavailable ({detail}); reconnecting"),
        );
    }
}

/// A message consumed from the broker: into the store (first worker of the host wins), then
/// to this worker's subscribers that have not seen it. A delete is applied once per host.
pub fn consumed(m: BrokerMessage) {
    let Some((mcf, last, host)) = with(|s| (s.main, s.last_offset, s.host)) else {
        return;
    };
    let now = worker::now();
    let place = match m.position {
        Position::Offset(o) => {
            if last.is_some_and(|l| o <= l) {
                return;
            }
            with(|s| s.last_offset = Some(o));
            Place::Offset(o)
        }
        Position::Key(k) => {
            let n = with(|s| {
                s.seen
                    .get_or_insert_with(Occurrences::default)
                    .see(k, now, EXCHANGE_WINDOW)
            })
            .unwrap_or(1);
            Place::Key(k, n)
        }
    };
    if m.delete {
        return consumed_delete(mcf, &m, place, now);
    }
    let time = m.time.unwrap_or(now);
    let store = mcf.amqp_store_messages();
    let now_ms = worker::now_ms();
    let placed = zone::with_store(mcf.shm_zone, |s| {
        s.set_clock_ms(now_ms);
        let offset = match place {
            Place::Offset(o) => o,
            Place::Key(k, n) => s.exchange_offset(k, n, now, EXCHANGE_WINDOW).0,
        };
        let event_id = default_event_id(&m.event_id, offset);
        let mut out = Vec::with_capacity(m.channels.len());
        for ch in &m.channels {
            match s.insert_broker(
                ch,
                offset,
                &m.text,
                &event_id,
                &m.event_type,
                time,
                store,
                host,
                now,
                &mcf.limits,
            ) {
                Ok((t, tag)) => out.push((ch.clone(), t, tag, true)),
                Err(e) => {
                    // Not stored (zone full, channel limit): still delivered live here. When
                    // this worker consumes for the host, the others cannot get it: say so.
                    log::error(
                        std::ptr::null_mut(),
                        &format!(
                            "push_stream: amqp: message {} for channel \"{}\" not stored{}: {e:?}",
                            offset + 1,
                            String::from_utf8_lossy(ch),
                            if host {
                                " (delivered on this worker only: the others get consumed messages through the zone)"
                            } else {
                                ""
                            }
                        ),
                    );
                    out.push((ch.clone(), time, offset + 1, false));
                }
            }
        }
        let pids: Vec<u32> = if host {
            s.workers().iter().map(|w| w.pid).collect()
        } else {
            Vec::new()
        };
        (offset, event_id, out, pids)
    });
    let Some((offset, event_id, inserted, pids)) = placed else {
        return;
    };
    if host {
        // In the log now, as an HTTP publish would be: every worker (this one on its next
        // turn) delivers it from there.
        worker::schedule_delivery();
        worker::wake_others(&pids);
    }
    // What is not in the log (every worker consumes; or, consuming for the host, what the
    // zone refused) goes to this worker's subscribers now.
    for (ch, t, tag, _) in inserted.iter().filter(|(.., in_log)| !host || !in_log) {
        let msg = Message {
            text: &m.text,
            id: offset as i64 + 1,
            channel: ch,
            event_id: &event_id,
            event_type: &m.event_type,
            time: *t,
            tag: *tag,
        };
        worker::deliver_message(msg, worker::Since::Offset(offset + 1));
    }
}

/// Without an `event-id` header, a broker message's event id is its id (offset + 1), so a
/// browser's `Last-Event-ID` resumes exactly after the last message it saw.
fn default_event_id(given: &[u8], offset: u64) -> Vec<u8> {
    if given.is_empty() {
        (offset + 1).to_string().into_bytes()
    } else {
        given.to_vec()
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
    let outcome = zone::with_store(mcf.shm_zone, |s| {
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
                    Err(e) => log::error(
                        std::ptr::null_mut(),
                        &format!(
                            "push_stream: amqp: delete of channel \"{}\" failed: {e:?}",
                            String::from_utf8_lossy(ch)
                        ),
                    ),
                }
            }
        }
        let pids: Vec<u32> = s.workers().iter().map(|w| w.pid).collect();
        (claimed, deleted, pids)
    });
    if let Some((true, deleted, pids)) = outcome {
        log::notice(
            std::ptr::null_mut(),
            &format!(
                "push_stream: amqp: channel delete from the broker: {deleted} of {} channel(s) deleted on this host",
                m.channels.len()
            ),
        );
        worker::schedule_delivery();
        worker::wake_others(&pids);
    }
}

/// Hands an HTTP publish (or, with `delete`, a channel DELETE whose body is the
/// channel-deleted text) to the bridge. Returns None when it was queued (the request is
/// answered by `confirmed`), or the answer to give now.
pub fn publish(
    req: Req,
    mcf: &'static MainConf,
    channels: Vec<Vec<u8>>,
    body: Vec<u8>,
    info: bool,
    delete: bool,
) -> Option<ngx_int_t> {
    let event_id = req.header_in("Event-Id").map(|v| v.to_vec());
    let event_type = req.header_in("Event-Type").map(|v| v.to_vec());
    let path = channels.join(&b'/');
    if mcf.amqp_exchange.is_some() && push_stream_core::amqp::routing_key(&path).is_none() {
        return Some(crate::handlers::fail(
            req,
            400,
            "Channel path is too long for a RabbitMQ routing key (255 bytes).",
        ));
    }
    let queued = with(|s| {
        if !s.connected {
            return Err("RabbitMQ is unavailable.");
        }
        let token = s.next_token;
        s.next_token += 1;
        let r = PublishReq {
            token,
            channel_path: path,
            body,
            event_id,
            event_type,
            delete,
        };
        match s.outbox.try_send(r) {
            Ok(()) => {
                s.pending.insert(
                    token,
                    Pending {
                        req,
                        main: mcf,
                        channels,
                        info,
                        delete,
                    },
                );
                Ok(token)
            }
            Err(_) => Err("RabbitMQ publish queue is full."),
        }
    });
    match queued {
        Some(Ok(token)) => {
            if !req.on_cleanup(pending_cleanup, token as *mut core::ffi::c_void) {
                with(|s| s.pending.remove(&token));
                return Some(NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t);
            }
            None
        }
        Some(Err(explain)) => {
            log::warn(
                req.log(),
                &format!("push_stream: amqp: publish refused: {explain}"),
            );
            Some(crate::handlers::fail(req, 503, explain))
        }
        None => Some(NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t),
    }
}

/// The client of a waiting publish went away: forget it (the confirm is then ignored).
unsafe extern "C" fn pending_cleanup(data: *mut core::ffi::c_void) {
    guard(std::ptr::null_mut(), "publish cleanup", (), || {
        with(|s| s.pending.remove(&(data as u64)));
    })
}

/// The broker's answer to a publish: 200 (with channel info), 503 or 504.
pub fn confirmed(token: u64, result: Result<(), PublishError>) {
    let Some(p) = with(|s| s.pending.remove(&token)).flatten() else {
        return;
    };
    let req = p.req;
    let rc = match result {
        Ok(()) if p.delete => crate::handlers::fail(req, 200, "Channel deleted."),
        Ok(()) => {
            if p.info {
                let infos: Vec<_> = zone::with_store(p.main.shm_zone, |s| {
                    p.channels.iter().filter_map(|c| s.channel(c)).collect()
                })
                .unwrap_or_default();
                if infos.is_empty() {
                    req.respond(200, None, &[], b"")
                } else {
                    crate::handlers::reply_infos(req, p.main, &infos, false)
                }
            } else {
                req.respond(200, None, &[], b"")
            }
        }
        Err(PublishError::Timeout) => {
            crate::handlers::fail(req, 504, "RabbitMQ did not confirm the message in time.")
        }
        Err(PublishError::Nacked) => {
            crate::handlers::fail(req, 503, "RabbitMQ refused the message.")
        }
        Err(PublishError::Unroutable) => crate::handlers::fail(
            req,
            503,
            "RabbitMQ could not route the message: no queue is bound for its routing key.",
        ),
        Err(PublishError::Unavailable(e)) => {
            log::warn(
                req.log(),
                &format!("push_stream: amqp: publish failed: {e}"),
            );
            crate::handlers::fail(req, 503, "RabbitMQ is unavailable.")
        }
    };
    req.finalize(rc);
}
