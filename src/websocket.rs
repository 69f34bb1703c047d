//! WebSocket subscribers: the handshake, the C module's post-handshake refusals, and the
//! reading of client frames (RFC 6455, decoded by `push_stream_core::websocket`).

use nginx_sys::{ngx_http_request_t, ngx_int_t, NGX_AGAIN};
use push_stream_core::channel_path::ChannelError;
use push_stream_core::websocket::{self as ws, Decoder, Event, Limits};

use crate::glue::conf::{LocConf, MainConf};
use crate::glue::guard::guard;
use crate::glue::http::Req;
use crate::glue::{log, worker, zone};
use crate::handlers::{self, Subscribe};

/// Per-connection WebSocket state kept with the subscriber.
pub struct WsState {
    pub decoder: Decoder,
    pub mcf: &'static MainConf,
    pub lcf: &'static LocConf,
}

const GET: usize = nginx_sys::NGX_HTTP_GET as usize;

pub fn handshake(req: Req, mcf: &'static MainConf, lcf: &'static LocConf) -> ngx_int_t {
    req.no_keepalive();
    if req.method() != GET {
        return req.respond(405, None, &[("Allow", b"GET")], b"");
    }
    handlers::no_cache(req);
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
    let accept = ws::accept_key(h("Sec-WebSocket-Key").unwrap_or_default());
    // The module writes the 101 itself, with only these headers (no Server, no Date).
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nExpires: Thu, 01 Jan 1970 00:00:01 GMT\r\nCache-Control: no-cache, no-store, must-revalidate\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    req.set_status(101);
    req.set_header_sent();
    if req.send_bytes(head.as_bytes(), true, false) == nginx_sys::NGX_ERROR as ngx_int_t {
        return nginx_sys::NGX_ERROR as ngx_int_t;
    }
    let Some(tpl) = lcf.templates.as_ref() else {
        return nginx_sys::NGX_ERROR as ngx_int_t;
    };
    // After the 101, refusals are close frames with the HTTP status and explain as JSON.
    let p = match handlers::prepare(req, mcf, lcf, Subscribe::Always) {
        Ok(p) => p,
        Err(e) => {
            let (status, explain) = match e {
                ChannelError::OutOfMemory => (500, "Shared memory exhausted."),
                e => (e.status(), e.explain()),
            };
            return req.send_bytes(&ws::refusal_frame(status, explain), true, true);
        }
    };
    let mut first = Vec::new();
    if !tpl.header.is_empty() {
        first.extend_from_slice(&ws::text_frame(&tpl.header));
    }
    for m in handlers::render_old(tpl, &p) {
        first.extend_from_slice(&ws::text_frame(&m));
    }
    // Client frames and messages may be as large as the location's client_max_body_size.
    let max = req.client_max_body_size().max(125);
    let state = WsState {
        decoder: Decoder::new(Limits {
            max_frame_payload: max,
            max_message: max,
        }),
        mcf,
        lcf,
    };
    let mut sub = worker::Sub::new(
        req,
        p.channels.iter().map(|c| c.id.clone()).collect(),
        Some(tpl),
        tpl.footer.clone(),
        p.since_seq,
        worker::Mode::WebSocket(Box::new(state)),
    );
    sub.since_offset = p.since_offset;
    sub.ping = lcf
        .ping_message_interval
        .map(|ms| (ws::PING_FRAME.to_vec(), ms));
    sub.ttl = lcf.subscriber_connection_ttl;
    let rc = worker::hold(sub);
    if !first.is_empty() && req.send_bytes(&first, true, false) == nginx_sys::NGX_ERROR as ngx_int_t
    {
        return nginx_sys::NGX_ERROR as ngx_int_t;
    }
    // Frames the client sent right after the handshake are read on the next loop turn.
    req.post_read_event();
    rc
}

/// Reads and handles every frame available on the socket (the C module read one per event).
///
/// # Safety
/// Called by nginx with a live request held as a WebSocket subscriber.
pub unsafe extern "C" fn ws_read_handler(r: *mut ngx_http_request_t) {
    let req = Req::from_raw(r);
    guard(req.log(), "websocket read", (), || read_frames(req))
}

fn read_frames(req: Req) {
    let key = req.0 as usize;
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = req.recv(&mut buf);
        if n == NGX_AGAIN as isize {
            if !req.arm_read() {
                req.finalize(nginx_sys::NGX_ERROR as ngx_int_t);
            }
            return;
        }
        if n <= 0 {
            // The client went away.
            req.finalize(nginx_sys::NGX_HTTP_CLIENT_CLOSED_REQUEST as ngx_int_t);
            return;
        }
        let events = worker::with(|w| w.ws_feed(key, &buf[..n as usize])).flatten();
        let Some(events) = events else { return };
        for e in events {
            if !handle(req, key, e) {
                return;
            }
        }
    }
}

/// Handles one client event; false when the connection is ending.
fn handle(req: Req, key: usize, e: Event) -> bool {
    match e {
        Event::Text(text) => {
            publish(req, key, &text);
            true
        }
        Event::Ping(payload) => {
            worker::send_bytes(key, req, &ws::frame(ws::OP_PONG, &payload));
            true
        }
        Event::Pong(_) => true,
        Event::Binary(_) => {
            close(
                key,
                req,
                &ws::close_frame(1003, b"binary messages are not accepted"),
            );
            false
        }
        Event::Close { .. } => {
            close(key, req, ws::CLOSE_FRAME);
            false
        }
        Event::Error(reason) => {
            log::info(
                req.log(),
                &format!(
                    "push_stream: closing a WebSocket client: {}",
                    reason.description()
                ),
            );
            close(key, req, &reason.close_frame());
            false
        }
    }
}

fn close(key: usize, req: Req, frame: &[u8]) {
    worker::with(|w| w.mark_finishing(key));
    req.finish(frame);
}

/// `push_stream_websocket_allow_publish`: a text message goes to every channel of the
/// connection except the events channel.
fn publish(req: Req, key: usize, text: &[u8]) {
    let Some((channels, mcf, lcf)) = worker::with(|w| w.ws_context(key)).flatten() else {
        return;
    };
    if !lcf.websocket_allow_publish() {
        return;
    }
    let events = mcf.limits.events_channel_id.as_deref();
    let now = worker::now();
    let store = lcf.store_messages();
    let now_ms = worker::now_ms();
    let outcome = zone::with_store(mcf.shm_zone, |s| {
        s.set_clock_ms(now_ms);
        for c in channels.iter().filter(|c| Some(c.as_slice()) != events) {
            s.publish(c, text, None, None, store, now, &mcf.limits)?;
        }
        Ok::<_, push_stream_core::store::StoreError>(
            s.workers().iter().map(|w| w.pid).collect::<Vec<u32>>(),
        )
    });
    match outcome {
        Some(Ok(pids)) => {
            worker::schedule_delivery();
            worker::wake_others(&pids);
        }
        Some(Err(e)) => log::error(
            req.log(),
            &format!("push_stream: a WebSocket client's message was not published: {e:?}"),
        ),
        None => {}
    }
}
