//! Polling and long-polling subscribers: old messages at once (200 with `Last-Modified` and
//! `Etag`), else 304 (polling) or a held request the first message completes (long-polling);
//! JSONP with `?callback=`.

use push_stream_core::channel_path as cp;
use push_stream_core::template::{valid_jsonp_callback, JSONP_CONTENT_TYPE};

use super::subscribe::{held_sub, prepare, render_old, resume_time_tag, Subscribe};
use super::{fail, refuse_subscriber, ERR500};
use crate::conf::{LocConf, MainConf};
use crate::delivery::{self, Mode};
use crate::ngx::request::Request;
use crate::ngx::Status;

pub fn handle(
    req: Request<'_>,
    mcf: &'static MainConf,
    lcf: &'static LocConf,
    long_polling: bool,
) -> Status {
    let Some(tpl) = lcf.templates.as_deref() else {
        return ERR500;
    };
    let jsonp = push_stream_core::query::arg(req.args(), b"callback")
        .map(|v| cp::unescape_value(&v))
        .filter(|v| !v.is_empty());
    if jsonp.as_deref().is_some_and(|cb| !valid_jsonp_callback(cb)) {
        // Reflected into a script: only a JavaScript identifier path (a.b.c) is accepted.
        return fail(&req, 400, "Invalid JSONP callback name.");
    }
    if long_polling {
        if let Some(rc) = super::refuse_if_body_pending(&req) {
            return rc;
        }
        if let Err(why) = delivery::accepting() {
            return fail(&req, 503, why.explain());
        }
    }
    let subscribe = if long_polling {
        Subscribe::IfNothingOld
    } else {
        Subscribe::Never
    };
    let p = match prepare(&req, mcf, lcf, subscribe) {
        Ok(p) => p,
        Err(e) => return refuse_subscriber(&req, mcf, e),
    };
    let old = render_old(tpl, &p);
    if !old.is_empty() {
        let (time, tag) = p.newest.unwrap_or((0, 0));
        return delivery::reply_batch(&req, tpl, 200, time, tag, jsonp.as_deref(), old);
    }
    if !long_polling {
        // Nothing new: 304, echoing the request's own time and tag.
        let (since, tag) = resume_time_tag(&req, lcf);
        let since = since.unwrap_or(0);
        req.set_status(304);
        if since > 0 {
            req.set_last_modified(since);
        }
        if let Some(tag) = tag {
            req.add_header("Etag", push_stream_core::resume::etag(tag).as_bytes());
        }
        let ct = jsonp.as_ref().map(|_| JSONP_CONTENT_TYPE);
        if !req.set_content_type(ct) {
            return ERR500;
        }
        req.set_content_length(Some(0));
        req.set_header_only();
        return req.send_header();
    }
    let mut sub = match held_sub(req, mcf, lcf, &p, tpl, Mode::LongPoll { jsonp }) {
        Ok(sub) => sub,
        Err(rc) => return rc,
    };
    sub.ttl = lcf.longpolling_ttl();
    sub.timeout_body = mcf.timeout_with_body();
    let h = sub.req;
    delivery::hold(sub);
    if delivery::shutting_down() {
        delivery::end(h);
    }
    Status::DONE
}
