//! The event-loop side of the RabbitMQ bridge: messages consumed from the stream go into the
//! host-wide store (idempotently, by offset: the first worker to see an offset stores it) and
//! to this worker's subscribers; HTTP publishes wait for the broker's confirm; the bridge's
//! state is logged and counted.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use nginx_sys::{ngx_int_t, NGX_HTTP_INTERNAL_SERVER_ERROR};
use push_stream_core::template::Message;
use tokio::sync::mpsc;

use crate::amqp::{BrokerMessage, PublishError, PublishReq, Settings, Status};
use crate::glue::conf::MainConf;
use crate::glue::guard::guard;
use crate::glue::http::Req;
use crate::glue::{log, worker, zone};

/// A publisher request waiting for the broker's confirm.
struct Pending {
    req: Req,
    main: &'static MainConf,
    channels: Vec<Vec<u8>>,
    info: bool,
}

struct State {
    outbox: mpsc::Sender<PublishReq>,
    status: Arc<Status>,
    connected: bool,
    next_token: u64,
    pending: HashMap<u64, Pending>,
    /// The last stream offset this worker delivered (redeliveries after a reconnect are skipped).
    last_offset: Option<u64>,
    main: &'static MainConf,
}

thread_local! {
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
}

fn with<R>(f: impl FnOnce(&mut State) -> R) -> Option<R> {
    STATE.with(|s| s.borrow_mut().as_mut().map(f))
}

/// Starts this worker's bridge (from init_process) when the configuration has an AMQP source.
pub fn start(mcf: &'static MainConf, settings: Settings) -> Result<(), String> {
    let start = zone::with_store(mcf.shm_zone, |s| s.broker_offset())
        .flatten()
        .map(|o| o + 1);
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
            main: mcf,
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

/// A message consumed from the stream: into the store (first worker wins), then to this
/// worker's subscribers that have not seen its offset.
pub fn consumed(m: BrokerMessage) {
    let Some((mcf, last)) = with(|s| (s.main, s.last_offset)) else {
        return;
    };
    if last.is_some_and(|l| m.offset <= l) {
        return;
    }
    with(|s| s.last_offset = Some(m.offset));
    let now = worker::now();
    let time = m.time.unwrap_or(now);
    let store = mcf.amqp_store_messages();
    let inserted: Vec<(Vec<u8>, i64, u64)> = zone::with_store(mcf.shm_zone, |s| {
        let mut out = Vec::with_capacity(m.channels.len());
        for ch in &m.channels {
            match s.insert_broker(
                ch,
                m.offset,
                &m.text,
                &m.event_id,
                &m.event_type,
                time,
                store,
                now,
                &mcf.limits,
            ) {
                Ok((t, tag)) => out.push((ch.clone(), t, tag)),
                Err(e) => {
                    // Not stored (zone full, channel limit): still delivered live here.
                    log::error(
                        std::ptr::null_mut(),
                        &format!(
                            "push_stream: amqp: offset {} for channel \"{}\" not stored: {e:?}",
                            m.offset,
                            String::from_utf8_lossy(ch)
                        ),
                    );
                    out.push((ch.clone(), time, m.offset + 1));
                }
            }
        }
        out
    })
    .unwrap_or_default();
    for (ch, t, tag) in &inserted {
        let msg = Message {
            text: &m.text,
            id: m.offset as i64 + 1,
            channel: ch,
            event_id: &m.event_id,
            event_type: &m.event_type,
            time: *t,
            tag: *tag,
        };
        worker::deliver_message(msg, worker::Since::Offset(m.offset + 1));
    }
}

/// Hands an HTTP publish to the bridge. Returns None when it was queued (the request is
/// answered by `confirmed`), or the answer to give now.
pub fn publish(
    req: Req,
    mcf: &'static MainConf,
    channels: Vec<Vec<u8>>,
    body: Vec<u8>,
    info: bool,
) -> Option<ngx_int_t> {
    let event_id = req.header_in("Event-Id").map(|v| v.to_vec());
    let event_type = req.header_in("Event-Type").map(|v| v.to_vec());
    let queued = with(|s| {
        if !s.connected {
            return Err("RabbitMQ is unavailable.");
        }
        let token = s.next_token;
        s.next_token += 1;
        let path = channels.join(&b'/');
        let r = PublishReq {
            token,
            channel_path: path,
            body,
            event_id,
            event_type,
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
