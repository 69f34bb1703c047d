//! `push_stream_publisher`: channel info (GET), publish (POST/PUT) and delete (DELETE, admin
//! mode), through the one publish path (`crate::publish`).

use push_stream_core::channel_path::{self as cp, ChannelError};
use push_stream_core::conf_values::PublisherMode;
use push_stream_core::store::{ChannelInfo, StoreError};

use super::{
    cors, fail, fail_channel, no_cache, reply_infos, requested_channels, store_error, too_long,
    zone_full, DELETE, ERR500, GET, OPTIONS, POST, PUT,
};
use crate::conf::{LocConf, MainConf};
use crate::ngx::request::Request;
use crate::ngx::Status;
use crate::publish::{self, Route};
use crate::rabbitmq::{self, Outcome, Publisher};
use crate::{ngx_log, Module};

pub fn handle(
    req: Request<'_>,
    mcf: &'static MainConf,
    lcf: &'static LocConf,
    mode: PublisherMode,
) -> Status {
    let admin = mode == PublisherMode::Admin;
    let (methods, allow): (&[u8], &[u8]) = if admin {
        (b"GET, POST, PUT, DELETE", b"GET, POST, PUT, DELETE")
    } else {
        (b"GET, POST, PUT", b"GET, POST, PUT")
    };
    no_cache(&req);
    cors(&req, lcf, methods);
    let method = req.method();
    if method == OPTIONS {
        return req.respond(200, None, &[], b"");
    }
    if !(method == GET || method == POST || method == PUT || (admin && method == DELETE)) {
        return req.respond(405, None, &[("Allow", allow)], b"");
    }
    let channels = match requested_channels(&req, lcf) {
        Ok(c) => c,
        Err(e) => return fail_channel(&req, e),
    };
    if channels.is_empty() {
        return fail_channel(&req, ChannelError::NoChannel);
    }
    for c in &channels {
        if cp::is_reserved_id(&c.id) {
            return fail_channel(&req, ChannelError::NotAuthorized);
        }
        if too_long(mcf, &c.id) {
            return fail_channel(&req, ChannelError::TooLong);
        }
        if method != GET && mcf.limits.events_channel_id.as_deref() == Some(c.id.as_slice()) {
            return fail_channel(&req, ChannelError::EventsChannelReadOnly);
        }
    }
    if method == GET {
        let infos: Vec<ChannelInfo> = mcf
            .zone()
            .and_then(|z| {
                z.with_store(|s| channels.iter().filter_map(|c| s.channel(&c.id)).collect())
            })
            .unwrap_or_default();
        if infos.is_empty() {
            return req.respond(404, None, &[], b"");
        }
        return reply_infos(&req, mcf, &infos, false);
    }
    req.read_body::<Module>()
}

/// The publisher's POST/PUT/DELETE, once nginx has read the whole body. Owns the request:
/// answers and finalizes it, or holds it until the broker answers.
pub fn body_read(req: Request<'_>) {
    let (Some(lcf), Some(mcf)) = (req.loc_conf::<Module>(), req.main_conf::<Module>()) else {
        return req.finalize(ERR500);
    };
    let body = match req.body() {
        Ok(b) => b,
        Err(e) => {
            ngx_log!(error, req.log(), "push_stream: {e}");
            return req.finalize(ERR500);
        }
    };
    let channels = match requested_channels(&req, lcf) {
        Ok(c) => c,
        Err(e) => {
            let rc = fail_channel(&req, e);
            return req.finalize(rc);
        }
    };
    let delete = req.method() == DELETE;
    let ids: Vec<Vec<u8>> = channels.into_iter().map(|c| c.id).collect();
    let rc = match publish::route(mcf) {
        Route::Broker => {
            if delete && !publish::known_any(mcf, &ids) {
                // A channel this host does not know answers 404 as without a broker.
                req.respond(404, None, &[], b"")
            } else if !delete && body.is_empty() {
                fail(&req, 400, "Empty post requests are not allowed.")
            } else {
                let msg = rabbitmq::Message {
                    event_id: req.header_in("Event-Id").map(|v| v.to_vec()),
                    event_type: req.header_in("Event-Type").map(|v| v.to_vec()),
                    channels: ids,
                    body,
                    delete,
                };
                let answer: rabbitmq::Answer = if lcf.channel_info_on_publish() {
                    answer_with_info
                } else {
                    answer_plain
                };
                // Held until the broker answers (or its timer fires): 200, 503 or 504.
                return publish::through_broker(req, Publisher::Http { answer }, mcf, msg);
            }
        }
        Route::Store if delete => delete_now(&req, mcf, &ids, &body),
        Route::Store => publish_now(&req, mcf, lcf, &ids, body),
    };
    req.finalize(rc);
}

fn answer_plain(
    req: &Request<'_>,
    mcf: &'static MainConf,
    channels: &[Vec<u8>],
    outcome: Outcome,
) -> Status {
    answer(req, mcf, channels, outcome, false)
}

fn answer_with_info(
    req: &Request<'_>,
    mcf: &'static MainConf,
    channels: &[Vec<u8>],
    outcome: Outcome,
) -> Status {
    answer(req, mcf, channels, outcome, true)
}

/// The answer to a publish that went through the broker.
fn answer(
    req: &Request<'_>,
    mcf: &'static MainConf,
    channels: &[Vec<u8>],
    outcome: Outcome,
    info: bool,
) -> Status {
    match outcome {
        Outcome::Failed(status, explain) => fail(req, status as usize, explain),
        Outcome::Deleted => fail(req, 200, "Channel deleted."),
        Outcome::Published => {
            let infos: Vec<ChannelInfo> = if info {
                publish::infos(mcf, channels)
            } else {
                Vec::new()
            };
            if infos.is_empty() {
                req.respond(200, None, &[], b"")
            } else {
                reply_infos(req, mcf, &infos, false)
            }
        }
    }
}

fn publish_now(
    req: &Request<'_>,
    mcf: &MainConf,
    lcf: &LocConf,
    channels: &[Vec<u8>],
    body: Vec<u8>,
) -> Status {
    if body.is_empty() {
        return fail(req, 400, "Empty post requests are not allowed.");
    }
    let msg = publish::Message {
        text: body,
        event_id: req.header_in("Event-Id").map(|v| v.to_vec()),
        event_type: req.header_in("Event-Type").map(|v| v.to_vec()),
        store: lcf.store_messages(),
    };
    match publish::into_store(mcf, channels, &msg) {
        Some(Ok(infos)) => {
            if lcf.channel_info_on_publish() {
                reply_infos(req, mcf, &infos, false)
            } else {
                req.respond(200, None, &[], b"")
            }
        }
        Some(Err(StoreError::OutOfMemory)) => zone_full(req, mcf, "message refused"),
        Some(Err(e)) => fail_channel(req, store_error(e)),
        None => ERR500,
    }
}

fn delete_now(req: &Request<'_>, mcf: &MainConf, channels: &[Vec<u8>], body: &[u8]) -> Status {
    let text = if body.is_empty() {
        mcf.deleted_text()
    } else {
        body
    };
    match publish::delete_in_store(mcf, channels, text) {
        Some(Ok(0)) => req.respond(404, None, &[], b""),
        Some(Ok(_)) => fail(req, 200, "Channel deleted."),
        Some(Err(e)) => fail_channel(req, store_error(e)),
        None => ERR500,
    }
}
