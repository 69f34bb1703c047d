//! The worker's subscribers: held requests with their channels, templates and timers, the
//! writes to them (with the slow-reader bound), and their ends (footer, long-poll answer,
//! shutdown). A subscriber is only ever ended through `HeldRef::close`/`finish`, which defer
//! the end until the running handler returned.

use std::rc::Rc;

use push_stream_core::template::{Kind as TplKind, LocationTemplates, Message};
use push_stream_core::websocket::Decoder;

use super::gather::{flush_gathered, gather};
use super::{with, WORKER};
use crate::conf::{LocConf, MainConf};
use crate::ngx::event;
use crate::ngx::held::{HeldRef, Sent};
use crate::ngx::{Status, Timer};
use crate::ngx_log;

/// Per-connection WebSocket state kept with the subscriber.
pub struct WsState {
    pub decoder: Decoder,
    pub mcf: &'static MainConf,
    pub lcf: &'static LocConf,
    /// The bytes of the unfinished message being received counted in the worker's budget for unfinished messages.
    pub partial_counted: usize,
    /// The location's `client_body_timeout` (ms): how long an unfinished message may wait
    /// for its next bytes (kept here: a detached subscriber has no request to ask).
    pub body_timeout: u64,
}

/// The bytes of unfinished WebSocket messages one worker holds, over all its clients: past
/// it, the client whose message grew it is closed (1009).
pub const WS_PARTIAL_BUDGET: usize = 64 * 1024 * 1024;

thread_local! {
    static WS_PARTIAL_TOTAL: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// What feeding client bytes to a WebSocket subscriber's decoder gave.
pub struct Fed {
    pub events: Vec<push_stream_core::websocket::Event>,
    /// The worker's budget for unfinished messages is exceeded by this client.
    pub over_budget: bool,
    /// A message is unfinished after these bytes (its timer is to be armed again: it runs
    /// between reads, as nginx's `client_body_timeout` does for a request body).
    pub in_message: bool,
}

/// Feeds bytes a WebSocket client sent to its decoder. None: not a WebSocket subscriber.
pub fn ws_feed(h: HeldRef, data: &[u8]) -> Option<Fed> {
    with(|w| {
        let Some(Mode::WebSocket(st)) = w
            .subs
            .get_mut(&h.key())
            .filter(|s| s.req == h)
            .map(|s| &mut s.mode)
        else {
            return None;
        };
        let events = st.decoder.feed(data);
        let partial = st.decoder.partial_len();
        let total = WS_PARTIAL_TOTAL.with(|t| {
            let v = t.get() - st.partial_counted.min(t.get()) + partial;
            t.set(v);
            v
        });
        st.partial_counted = partial;
        Some(Fed {
            events,
            over_budget: total > WS_PARTIAL_BUDGET && partial > 0,
            in_message: st.decoder.in_message(),
        })
    })
    .flatten()
}

/// A WebSocket subscriber is ending: what it had unfinished leaves the worker's budget at
/// once (not only at its request's cleanup), and its decoder buffers go.
pub fn ws_release(h: HeldRef) {
    with(|w| {
        if let Some(Mode::WebSocket(st)) = w
            .subs
            .get_mut(&h.key())
            .filter(|s| s.req == h)
            .map(|s| &mut s.mode)
        {
            WS_PARTIAL_TOTAL.with(|t| t.set(t.get().saturating_sub(st.partial_counted)));
            st.partial_counted = 0;
            st.decoder = Decoder::new(st.decoder.limits());
        }
    });
}

/// A WebSocket subscriber has an unfinished message.
pub fn ws_in_message(h: HeldRef) -> bool {
    with(|w| match w.subs.get(&h.key()).map(|s| &s.mode) {
        Some(Mode::WebSocket(st)) => st.decoder.in_message(),
        _ => false,
    })
    .unwrap_or(false)
}

/// The `client_body_timeout` of a WebSocket subscriber's location (ms).
pub fn ws_body_timeout(h: HeldRef) -> Option<u64> {
    with(|w| match w.subs.get(&h.key()).map(|s| &s.mode) {
        Some(Mode::WebSocket(st)) => Some(st.body_timeout),
        _ => None,
    })
    .flatten()
}

/// The channels and configuration of a WebSocket subscriber.
pub fn ws_context(h: HeldRef) -> Option<(Vec<Vec<u8>>, &'static MainConf, &'static LocConf)> {
    with(|w| match w.subs.get(&h.key()) {
        Some(s) => match &s.mode {
            Mode::WebSocket(st) => Some((s.channels.clone(), st.mcf, st.lcf)),
            _ => None,
        },
        None => None,
    })
    .flatten()
}

/// Whether a held request is one of this worker's subscribers.
pub fn is_subscriber(h: HeldRef) -> bool {
    with(|w| w.subs.get(&h.key()).is_some_and(|s| s.req == h)).unwrap_or(false)
}

/// How a held subscriber gets its messages.
pub enum Mode {
    /// Streaming and EventSource: each message written as it comes (the templates' kind
    /// decides the framing).
    Stream,
    /// A waiting long-poll: the first message completes the response.
    LongPoll { jsonp: Option<Vec<u8>> },
    /// WebSocket: messages as text frames; client frames read by `http::websocket`.
    WebSocket(Box<WsState>),
}

/// A request held open by the module (a subscriber).
pub struct Sub {
    pub req: HeldRef,
    pub channels: Vec<Vec<u8>>,
    /// The location's templates (they live as long as the configuration cycle); None for the
    /// test hold hook.
    pub tpl: Option<&'static LocationTemplates>,
    pub footer: Vec<u8>,
    /// Records up to this sequence were already covered by the subscriber's old messages.
    pub since_seq: u64,
    /// Broker messages up to this stream offset were covered by the old messages.
    pub since_offset: u64,
    pub mode: Mode,
    /// Keep-alive: what a ping writes, and how often (ms); re-armed after every message.
    pub ping: Option<(Vec<u8>, u64)>,
    /// `push_stream_subscriber_connection_ttl` / long-poll timeout (ms).
    pub ttl: Option<u64>,
    /// Padding after each message: (minimum, cap, EventSource style).
    pub padding: Option<(usize, usize, bool)>,
    /// What a long-poll timeout or a shutdown answers (timeout_with_body).
    pub timeout_body: bool,
    /// `push_stream_max_pending_bytes`: the backlog a subscriber may leave unread beyond the
    /// message it is receiving.
    pub max_pending: usize,
    /// Counted in the worker's subscriber total in the store (when it subscribed): uncounted
    /// when it ends.
    pub counted: bool,
}

impl Sub {
    pub fn new(
        req: HeldRef,
        channels: Vec<Vec<u8>>,
        tpl: Option<&'static LocationTemplates>,
        footer: Vec<u8>,
        since_seq: u64,
        mode: Mode,
    ) -> Sub {
        Sub {
            req,
            channels,
            tpl,
            footer,
            since_seq,
            since_offset: 0,
            mode,
            ping: None,
            ttl: None,
            padding: None,
            timeout_body: false,
            max_pending: crate::conf::defaults::MAX_PENDING_BYTES as usize,
            counted: false,
        }
    }

    /// The metrics' subscriber kind: 0 streaming, 1 EventSource, 2 long-polling, 3 WebSocket.
    pub(super) fn metrics_kind(&self) -> usize {
        match (&self.mode, self.tpl.map(|t| t.kind)) {
            (Mode::LongPoll { .. }, _) => 2,
            (Mode::WebSocket(_), _) => 3,
            (_, Some(TplKind::EventSource)) => 1,
            _ => 0,
        }
    }
}

/// Registers a held request as a subscriber of its channels and arms its timers. (Its
/// worker's subscriber count in the store was raised when it subscribed, before anything was
/// written to it.)
pub fn hold(sub: Sub) {
    let h = sub.req;
    if let Some((_, ms)) = &sub.ping {
        h.set_timer(Timer::Ping, *ms);
    }
    if let Some(ms) = sub.ttl {
        h.set_timer(Timer::Ttl, ms);
    }
    let key = h.key();
    let registered = with(|w| {
        for c in &sub.channels {
            w.by_channel.entry(c.clone()).or_default().insert(key);
        }
        w.subs.insert(key, sub);
    });
    if registered.is_none() {
        // No delivery state: the subscriber would never get a message.
        h.close(Status::http(503));
    }
}

/// The held request `key` ended (its cleanup): forget it here and in the store. False when
/// it was not a subscriber.
pub fn forget(key: usize, serial: u64) -> bool {
    let gone = with(|w| {
        if w.subs.get(&key).is_none_or(|s| s.req.serial() != serial) {
            return None;
        }
        let sub = w.subs.remove(&key)?;
        if let Mode::WebSocket(st) = &sub.mode {
            WS_PARTIAL_TOTAL.with(|t| t.set(t.get().saturating_sub(st.partial_counted)));
        }
        for c in &sub.channels {
            if let Some(keys) = w.by_channel.get_mut(c) {
                keys.remove(&key);
                if keys.is_empty() {
                    w.by_channel.remove(c);
                }
            }
        }
        Some((sub, w.zone, w.limits, w.slot, w.pid))
    })
    .flatten();
    let Some((sub, zone, limits, slot, pid)) = gone else {
        return false;
    };
    if let (Some(zone), true) = (zone, sub.counted || !sub.channels.is_empty()) {
        let t = event::now();
        zone.with_store(|s| {
            for c in &sub.channels {
                s.remove_subscriber(c, slot, t, limits);
            }
            if sub.counted {
                s.uncount_worker_subscriber(slot, pid);
            }
        });
    }
    true
}

/// Counts a subscriber that is about to get its last bytes (a long-poll's answer, a footer)
/// out, here and in the store, before they are written: a client that has its whole answer
/// and asks the statistics does not find itself counted, as with the C module, which runs its
/// cleanup right after that last write. The request's cleanup finds nothing left to forget.
fn detach(h: HeldRef) {
    forget(h.key(), h.serial());
}

/// Writes shared payloads to a held request (no copy per request); closes it when the write
/// fails, or when it has stopped reading: more than its `push_stream_max_pending_bytes` wait
/// for it besides the largest message it is receiving (so one message larger than the bound
/// is never a reason to close a reader, only a backlog it does not drain).
pub fn send(h: HeldRef, parts: &[Rc<[u8]>]) {
    send_n(h, parts, &[parts.len()])
}

/// `send` of gathered messages (`ends`: where each ends in `parts`), each its own chunk.
pub(super) fn send_n(h: HeldRef, parts: &[Rc<[u8]>], ends: &[usize]) {
    let messages = ends.len() as u64;
    let bytes: usize = parts.iter().map(|p| p.len()).sum();
    match h.send_messages(parts, ends) {
        Sent::Gone => {}
        Sent::Failed | Sent::TimedOut => h.close(Status::ERROR),
        Sent::Ok { pending, largest } => {
            let limit = with(|w| {
                w.stats.delivered += messages;
                w.stats.bytes += bytes as u64;
                w.subs.get(&h.key()).map(|s| s.max_pending)
            })
            .flatten()
            .unwrap_or(crate::conf::defaults::MAX_PENDING_BYTES as usize);
            if pending > limit.saturating_add(largest) {
                with(|w| w.stats.slow_closed += 1);
                ngx_log!(
                    warn,
                    h.log(),
                    "push_stream: closing a subscriber that stopped reading ({pending} bytes unsent, of which {largest} the largest message; push_stream_max_pending_bytes {limit})"
                );
                h.close(Status::ERROR);
            }
        }
    }
}

/// Copies `bytes` once and sends them (pings, pongs, first answers).
pub fn send_bytes(h: HeldRef, bytes: &[u8]) {
    send(h, &[Rc::from(bytes)]);
}

/// A message for a streaming, EventSource or WebSocket subscriber: the shared bytes, its
/// padding, and the ping timer pushed back.
pub(super) fn send_message(h: HeldRef, bytes: Rc<[u8]>) {
    let pad = with(|w| w.subs.get(&h.key()).and_then(|s| s.padding)).flatten();
    let (one, two);
    let parts: &[Rc<[u8]>] = match pad {
        Some((min, cap, es)) if min > bytes.len() => {
            let n = push_stream_core::conf_values::padding_len((min - bytes.len()) as i64, cap);
            let padding: Rc<[u8]> = push_stream_core::conf_values::padding_bytes(n, es).into();
            two = [bytes, padding];
            &two
        }
        _ => {
            one = [bytes];
            &one
        }
    };
    if !gather(h, parts) {
        send(h, parts);
        rearm_ping(h);
    }
}

pub(super) fn rearm_ping(h: HeldRef) {
    let ms = with(|w| {
        w.subs
            .get(&h.key())
            .and_then(|s| s.ping.as_ref().map(|p| p.1))
    })
    .flatten();
    if let Some(ms) = ms {
        h.set_timer(Timer::Ping, ms);
    }
}

/// A timer of a held request fired.
pub fn on_timer(h: HeldRef, which: Timer) {
    match which {
        Timer::Ttl => end(h),
        Timer::Partial => {}
        Timer::Ping => {
            let ping = with(|w| {
                w.subs
                    .get(&h.key())
                    .and_then(|s| s.ping.as_ref().map(|p| p.0.clone()))
            })
            .flatten();
            if let Some(bytes) = ping {
                send_bytes(h, &bytes);
                rearm_ping(h);
            }
        }
    }
}

/// The write handler of held requests: flush what was pending.
pub fn on_write(h: HeldRef) {
    match h.flush() {
        Sent::Failed => h.close(Status::ERROR),
        Sent::TimedOut => h.close(Status::REQUEST_TIME_OUT),
        Sent::Ok { .. } | Sent::Gone => {}
    }
}

/// Completes a waiting long-poll: status, `Last-Modified`/`Etag`, then header template, the
/// message (JSONP-wrapped when asked) and the footer; or a bodiless 304.
pub(super) fn longpoll_complete(
    h: HeldRef,
    tpl: &LocationTemplates,
    status: usize,
    time: i64,
    tag: u64,
    msg: Option<Vec<u8>>,
) {
    let jsonp = with(|w| {
        w.subs.get(&h.key()).and_then(|s| match &s.mode {
            Mode::LongPoll { jsonp } => jsonp.clone(),
            _ => None,
        })
    })
    .flatten();
    detach(h);
    let rc = h.with(|req| {
        reply_batch(
            req,
            tpl,
            status,
            time,
            tag,
            jsonp.as_deref(),
            msg.into_iter().collect(),
        )
    });
    if let Some(rc) = rc {
        h.close(rc);
    }
}

/// The polling / long-polling answer. `messages` empty with status 304: header only.
pub fn reply_batch(
    req: &crate::ngx::request::Request<'_>,
    tpl: &LocationTemplates,
    status: usize,
    time: i64,
    tag: u64,
    jsonp: Option<&[u8]>,
    messages: Vec<Vec<u8>>,
) -> Status {
    req.set_status(status);
    if time > 0 || status != 304 {
        req.set_last_modified(time);
    }
    req.add_header("Etag", push_stream_core::resume::etag(tag).as_bytes());
    let ct = jsonp.map(|_| push_stream_core::template::JSONP_CONTENT_TYPE);
    if !req.set_content_type(ct) {
        return Status::INTERNAL_SERVER_ERROR;
    }
    if status == 304 {
        req.set_content_length(Some(0));
        req.set_header_only();
        return req.send_header();
    }
    let mut body = tpl.header.clone();
    match jsonp {
        Some(cb) => body.extend_from_slice(&push_stream_core::template::jsonp_wrap(cb, &messages)),
        None => messages.iter().for_each(|m| body.extend_from_slice(m)),
    }
    body.extend_from_slice(&tpl.footer);
    req.set_content_length(None);
    let rc = req.send_header();
    if rc.failed() {
        return rc;
    }
    req.send_bytes(&body, true, true)
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Stream,
    LongPoll,
    WebSocket,
}

pub(super) fn kind_of(m: &Mode) -> Kind {
    match m {
        Mode::Stream => Kind::Stream,
        Mode::LongPoll { .. } => Kind::LongPoll,
        Mode::WebSocket(_) => Kind::WebSocket,
    }
}

/// Ends a subscriber as a ttl, reload or stop does: footer (WebSocket: footer frame and close
/// frame); a waiting long-poll gets the timeout answer.
pub fn end(h: HeldRef) {
    if !h.alive() {
        return;
    }
    // Whatever was gathered for it is written before its footer.
    flush_gathered();
    let Some((kind, tpl, footer, timeout_body)) = with(|w| {
        w.subs
            .get(&h.key())
            .map(|s| (kind_of(&s.mode), s.tpl, s.footer.clone(), s.timeout_body))
    })
    .flatten() else {
        // Held but not a subscriber (a publish waiting for the broker): nothing to add.
        return;
    };
    match (kind, tpl) {
        (Kind::LongPoll, Some(tpl)) => {
            let t = event::now();
            if timeout_body {
                let m = Message::timeout();
                longpoll_complete(h, tpl, 200, t, 0, Some(tpl.render_message(&m)));
            } else {
                longpoll_complete(h, tpl, 304, t, 0, None);
            }
        }
        (Kind::WebSocket, _) => {
            ws_release(h);
            let mut tail = Vec::new();
            if !footer.is_empty() {
                tail = push_stream_core::websocket::text_frame(&footer);
            }
            tail.extend_from_slice(push_stream_core::websocket::CLOSE_FRAME);
            detach(h);
            h.finish(&tail);
        }
        _ => {
            detach(h);
            h.finish(&footer)
        }
    }
}

/// Graceful shutdown began: each subscriber gets its footer and ends.
pub fn shutdown() {
    let subs: Vec<HeldRef> = WORKER
        .with(|w| {
            w.borrow_mut().as_mut().map(|w| {
                w.shutting_down = true;
                w.subs.values().map(|s| s.req).collect()
            })
        })
        .unwrap_or_default();
    if !subs.is_empty() {
        ngx_log!(
            info,
            crate::ngx::log::Log::cycle(),
            "push_stream: shutting down, ending {} subscriber(s)",
            subs.len()
        );
    }
    for h in subs {
        end(h);
    }
}
