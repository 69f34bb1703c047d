//! Streaming and EventSource subscribers (`push_stream_subscriber` / `eventsource`), and
//! the switch to polling or long-polling (the location's mode, or the
//! `X-Nginx-PushStream-Mode` header).

use push_stream_core::conf_values::{self, SubscriberMode};
use push_stream_core::template::Kind;

use super::subscribe::{held_sub, padding_for, prepare, release, render_old, Subscribe};
use super::{cors, fail, no_cache, poll, refuse_subscriber, ERR500, GET, OPTIONS};
use crate::conf::{LocConf, MainConf};
use crate::delivery::{self, Mode};
use crate::ngx::request::Request;
use crate::ngx::Status;

pub fn handle(
    req: Request<'_>,
    mcf: &'static MainConf,
    lcf: &'static LocConf,
    mode: SubscriberMode,
) -> Status {
    cors(&req, lcf, b"GET");
    if req.method() == OPTIONS {
        return req.respond(200, None, &[], b"");
    }
    no_cache(&req);
    if req.method() != GET {
        return req.respond(405, None, &[("Allow", b"GET")], b"");
    }
    let Some(tpl) = lcf.templates.as_deref() else {
        return ERR500;
    };
    // X-Nginx-PushStream-Mode turns a streaming or EventSource location into polling or
    // long-polling (long-polling wins, as in the C module).
    let header_mode = req
        .header_in("X-Nginx-PushStream-Mode")
        .map(|v| v.to_ascii_lowercase());
    let long_polling = mode == SubscriberMode::LongPolling
        || header_mode.as_deref() == Some(b"long-polling".as_slice());
    let polling = !long_polling
        && (mode == SubscriberMode::Polling
            || header_mode.as_deref() == Some(b"polling".as_slice()));
    if polling || long_polling {
        return poll::handle(req, mcf, lcf, long_polling);
    }
    if let Some(rc) = super::refuse_if_body_pending(&req) {
        return rc;
    }
    if let Err(why) = delivery::accepting() {
        return fail(&req, 503, why.explain());
    }
    let p = match prepare(&req, mcf, lcf, Subscribe::Always) {
        Ok(p) => p,
        Err(e) => return refuse_subscriber(&req, mcf, e),
    };
    let eventsource = tpl.kind == Kind::EventSource;
    req.set_status(200);
    let ct: Option<&[u8]> = if eventsource {
        Some(b"text/event-stream; charset=utf-8")
    } else {
        None
    };
    let sent = req.set_content_type(ct) && {
        req.set_content_length(None);
        !req.send_header().failed()
    };
    if !sent {
        release(mcf, &p);
        return Status::ERROR;
    }
    let padding = padding_for(&req, lcf);
    let pad = |out: &mut Vec<u8>, min: usize, len: usize| {
        if min > len {
            let n = conf_values::padding_len((min - len) as i64, mcf.max_padding);
            out.extend_from_slice(&conf_values::padding_bytes(n, eventsource));
        }
    };
    // The header template, then each old message, each padding after what it pads: every
    // piece is a chunk of its own, as the C module sends them (clients that read chunk by
    // chunk see the header template alone first).
    let mut first: Vec<Vec<u8>> = vec![tpl.header.clone()];
    if let Some((h, _)) = padding {
        if !tpl.header.is_empty() {
            let mut p = Vec::new();
            pad(&mut p, h, tpl.header.len());
            first.push(p);
        }
    }
    for m in render_old(tpl, &p) {
        let len = m.len();
        first.push(m);
        if let Some((_, min)) = padding {
            let mut p = Vec::new();
            pad(&mut p, min, len);
            first.push(p);
        }
    }
    // From here on the request is held; its cleanup releases the subscriptions on every
    // path (the subscriptions are registered with the subscriber before anything is written).
    let mut sub = match held_sub(req, mcf, lcf, &p, tpl, Mode::Stream) {
        Ok(sub) => sub,
        Err(rc) => return rc,
    };
    let h = sub.req;
    sub.ping = lcf
        .ping_message_interval
        .map(|ms| (tpl.ping(mcf.ping_text()), ms));
    sub.ttl = lcf.subscriber_connection_ttl;
    sub.padding = padding.map(|(_, m)| (m, mcf.max_padding, eventsource));
    delivery::hold(sub);
    let pieces: Vec<&[u8]> = first.iter().map(|p| p.as_slice()).collect();
    if h.send_first(&pieces) == crate::ngx::held::Sent::Failed {
        h.close(Status::ERROR);
    } else if delivery::shutting_down() {
        delivery::end(h);
    } else if lcf.detached_subscribers() {
        h.detach();
    }
    Status::DONE
}
