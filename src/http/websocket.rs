//! WebSocket subscribers (HTTP/1.1 only): the handshake, the C module's post-handshake
//! refusals, and the reading of client frames (RFC 6455, decoded by
//! `push_stream_core::websocket`), with the bounds a hostile client meets: a read budget per
//! event, a size cap (`client_max_body_size`) and a time limit between reads
//! (`client_body_timeout`) for an unfinished message, and a per-worker budget for all
//! unfinished messages.

use push_stream_core::channel_path::ChannelError;
use push_stream_core::websocket::{self as ws, Decoder, Event, Limits};

use super::subscribe::{held_sub, prepare, release, render_old, Subscribe};
use super::{fail, no_cache, GET};
use crate::conf::{LocConf, MainConf};
use crate::delivery::{self, Mode, WsState};
use crate::ngx::held::{HeldRef, Recv, Sent};
use crate::ngx::request::Request;
use crate::ngx::{Status, Timer};
use crate::ngx_log;
use crate::publish::{self, Route};

/// Bytes read from one client per read event; the rest waits for the next turn of the
/// event loop (other clients and publishers are served in between).
const READ_BUDGET: usize = 64 * 1024;

pub fn handshake(req: Request<'_>, mcf: &'static MainConf, lcf: &'static LocConf) -> Status {
    req.no_keepalive();
    if req.method() != GET {
        return req.respond(405, None, &[("Allow", b"GET")], b"");
    }
    no_cache(&req);
    if req.multiplexed() {
        // A 101 and raw frames cannot go on a multiplexed (HTTP/2, HTTP/3) connection.
        ngx_log!(
            info,
            req.log(),
            "push_stream: WebSocket refused on HTTP/2 or HTTP/3 (it needs HTTP/1.1)"
        );
        return fail(&req, 400, "WebSocket is only supported on HTTP/1.1.");
    }
    let h = |n: &str| req.header_in(n);
    if let Err(e) = ws::check_handshake(
        h("Upgrade"),
        h("Connection"),
        h("Sec-WebSocket-Key"),
        h("Sec-WebSocket-Version"),
    ) {
        let mut headers: Vec<(&str, &[u8])> =
            vec![("X-Nginx-PushStream-Explain", e.explain().as_bytes())];
        if let Some((k, v)) = e.extra_header() {
            headers.push((k, v.as_bytes()));
        }
        return req.respond(e.status() as usize, None, &headers, b"");
    }
    if let Some(rc) = super::refuse_if_body_pending(&req) {
        return rc;
    }
    if let Err(why) = delivery::accepting() {
        return fail(&req, 503, why.explain());
    }
    let Some(tpl) = lcf.templates.as_deref() else {
        return Status::ERROR;
    };
    let accept = ws::accept_key(h("Sec-WebSocket-Key").unwrap_or_default());
    // The channels are checked, created and subscribed to before the 101 is written, so
    // statistics asked after any byte of the response see the channels and the subscriber,
    // and a message published once the client has seen the 101 cannot be missed.
    let prepared = prepare(&req, mcf, lcf, Subscribe::Always);
    // The module writes the 101 itself, with only these headers (no Server, no Date).
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nExpires: Thu, 01 Jan 1970 00:00:01 GMT\r\nCache-Control: no-cache, no-store, must-revalidate\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    req.set_status(101);
    req.set_header_sent();
    if req.send_bytes(head.as_bytes(), true, false).is_error() {
        if let Ok(p) = &prepared {
            release(mcf, p);
        }
        return Status::ERROR;
    }
    // After the 101, refusals are close frames with the HTTP status and explain as JSON.
    let p = match prepared {
        Ok(p) => p,
        Err(e) => {
            let (status, explain) = match e {
                ChannelError::OutOfMemory => (500, "Shared memory exhausted."),
                ChannelError::HeapExhausted => {
                    super::heap_exhausted(&req, "WebSocket subscriber refused");
                    (e.status(), e.explain())
                }
                e => (e.status(), e.explain()),
            };
            return req.send_bytes(&ws::refusal_frame(status, explain), true, true);
        }
    };
    let mut first = Vec::new();
    if !tpl.header.is_empty() {
        first.extend_from_slice(&ws::text_frame(&tpl.header));
    }
    for m in render_old(tpl, &p) {
        first.extend_from_slice(&ws::text_frame(&m));
    }
    // Client messages may be as large as the location's client_max_body_size (0: no limit,
    // as nginx defines it; the per-worker budget still bounds what waits unfinished).
    let limits = match req.client_max_body_size() {
        0 => Limits::UNLIMITED,
        max => Limits {
            max_frame_payload: max,
            max_message: max,
        },
    };
    // Frames the client sent in the same packet as the handshake.
    let preread = req.take_preread();
    let state = WsState {
        decoder: Decoder::new(limits),
        mcf,
        lcf,
        partial_counted: 0,
        body_timeout: req.client_body_timeout(),
    };
    let mut sub = match held_sub(req, mcf, lcf, &p, tpl, Mode::WebSocket(Box::new(state))) {
        Ok(sub) => sub,
        Err(rc) => return rc,
    };
    let held = sub.req;
    sub.ping = lcf
        .ping_message_interval
        .map(|ms| (ws::PING_FRAME.to_vec(), ms));
    sub.ttl = lcf.subscriber_connection_ttl;
    delivery::hold(sub);
    if held.send_first(&[&first]) == Sent::Failed {
        held.close(Status::ERROR);
        return Status::DONE;
    }
    if !preread.is_empty() {
        feed(held, &preread);
    }
    if delivery::shutting_down() {
        delivery::end(held);
        return Status::DONE;
    }
    // Frames the client sent right after the handshake are read on the next loop turn.
    held.read_again_next_turn();
    if lcf.detached_subscribers() {
        held.detach();
    }
    Status::DONE
}

/// The read handler of a WebSocket subscriber: reads and handles the frames available, up
/// to the read budget (the rest on the next turn).
pub fn on_read(h: HeldRef) {
    let mut buf = [0u8; 16 * 1024];
    let mut taken = 0;
    loop {
        if taken >= READ_BUDGET {
            h.read_again_next_turn();
            return;
        }
        match h.recv(&mut buf) {
            Recv::Again | Recv::Gone => return,
            Recv::Closed => {
                // The client went away.
                h.close(Status::CLIENT_CLOSED_REQUEST);
                return;
            }
            Recv::Data(n) => {
                taken += n;
                if !feed(h, &buf[..n]) {
                    return;
                }
            }
        }
    }
}

/// Feeds client bytes to the decoder and handles the events; false when the connection is
/// ending.
fn feed(h: HeldRef, data: &[u8]) -> bool {
    let fed = delivery::ws_feed(h, data);
    let Some(fed) = fed else {
        return false;
    };
    for e in fed.events {
        if !handle(h, e) {
            return false;
        }
    }
    if fed.over_budget {
        ngx_log!(
            warn,
            h.log(),
            "push_stream: closing a WebSocket client: the worker's budget for unfinished messages ({} bytes) is used up",
            delivery::WS_PARTIAL_BUDGET
        );
        close(
            h,
            &ws::close_frame(1009, b"unfinished messages over the server's budget"),
        );
        return false;
    }
    if let Some(ms) = fed
        .in_message
        .then(|| delivery::ws_body_timeout(h))
        .flatten()
    {
        // An unfinished message may wait client_body_timeout for its next bytes (counted
        // between reads, as nginx counts it for a request body).
        h.set_timer(Timer::Partial, ms);
    }
    true
}

/// No byte of an unfinished message came for `client_body_timeout`.
pub fn partial_timed_out(h: HeldRef) {
    if delivery::ws_in_message(h) {
        ngx_log!(
            info,
            h.log(),
            "push_stream: closing a WebSocket client: an unfinished message got no data for client_body_timeout"
        );
        close(h, &ws::close_frame(1008, b"message not completed in time"));
    }
}

/// Handles one client event; false when the connection is ending.
fn handle(h: HeldRef, e: Event) -> bool {
    match e {
        Event::Text(text) => publish_text(h, text),
        Event::Ping(payload) => {
            delivery::send_bytes(h, &ws::frame(ws::OP_PONG, &payload));
            h.alive()
        }
        Event::Pong(_) => true,
        Event::Binary(_) => {
            close(
                h,
                &ws::close_frame(1003, b"binary messages are not accepted"),
            );
            false
        }
        Event::Close { .. } => {
            close(h, ws::CLOSE_FRAME);
            false
        }
        Event::Error(reason) => {
            ngx_log!(
                info,
                h.log(),
                "push_stream: closing a WebSocket client: {}",
                reason.description()
            );
            close(h, &reason.close_frame());
            false
        }
    }
}

fn close(h: HeldRef, frame: &[u8]) {
    delivery::ws_release(h);
    h.finish(frame);
}

/// `push_stream_websocket_allow_publish`: a text message goes to every channel of the
/// connection except the events channel, through the one publish path (RabbitMQ when
/// configured). False when the connection is ending.
fn publish_text(h: HeldRef, text: Vec<u8>) -> bool {
    if text.is_empty() {
        // As an HTTP publish with an empty body, nothing is published.
        return true;
    }
    let Some((channels, mcf, lcf)) = delivery::ws_context(h) else {
        return false;
    };
    if !lcf.websocket_allow_publish() {
        return true;
    }
    let events = mcf.limits.events_channel_id.as_deref();
    let channels: Vec<Vec<u8>> = channels
        .into_iter()
        .filter(|c| Some(c.as_slice()) != events)
        .collect();
    if channels.is_empty() {
        return true;
    }
    match publish::route(mcf) {
        Route::Broker => {
            let msg = crate::rabbitmq::Message {
                channels,
                body: text,
                event_id: None,
                event_type: None,
                delete: false,
            };
            if let Err((_, explain)) = publish::through_broker_held(h, mcf, msg) {
                ngx_log!(
                    error,
                    h.log(),
                    "push_stream: a WebSocket client's message was not published: {explain}"
                );
                close(h, &ws::close_frame(1011, explain.as_bytes()));
                return false;
            }
            true
        }
        Route::Store => {
            let msg = publish::Message {
                text,
                event_id: None,
                event_type: None,
                store: lcf.store_messages(),
            };
            if let Some(Err(e)) = publish::into_store(mcf, &channels, &msg) {
                ngx_log!(
                    error,
                    h.log(),
                    "push_stream: a WebSocket client's message was not published: {e}"
                );
            }
            true
        }
    }
}
