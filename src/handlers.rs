//! Content handlers: the entry points nginx calls for requests to our locations. The HTTP
//! rules (status codes, explain strings, formats) come from `push_stream_core`; this file
//! wires them to requests and to the host-wide store.

use nginx_sys::{ngx_http_request_t, ngx_int_t, NGX_HTTP_INTERNAL_SERVER_ERROR};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf};
use push_stream_core::channel_path::{self as cp, ChannelError};
use push_stream_core::conf_values::{self, PublisherMode, SubscriberMode};
use push_stream_core::format::{
    self, ChannelInfo as FmtInfo, Format, GroupHead, Summary, WorkerInfo,
};
use push_stream_core::resume::{self, Cursor};
use push_stream_core::store::{ChannelInfo, StoreError};
use push_stream_core::template::{LocationTemplates, Message};

use crate::glue::conf::{LocConf, LocationRole, MainConf};
use crate::glue::guard::guard;
use crate::glue::http::Req;
use crate::glue::{log, worker, zone};
use crate::Module;

const GET: usize = nginx_sys::NGX_HTTP_GET as usize;
const POST: usize = nginx_sys::NGX_HTTP_POST as usize;
const PUT: usize = nginx_sys::NGX_HTTP_PUT as usize;
const DELETE: usize = nginx_sys::NGX_HTTP_DELETE as usize;
const OPTIONS: usize = nginx_sys::NGX_HTTP_OPTIONS as usize;
const ERR500: ngx_int_t = NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;

const ALLOW_HEADERS: &[u8] =
    b"If-Modified-Since,If-None-Match,Etag,Event-Id,Event-Type,Last-Event-Id";
const EXPLAIN: &str = "X-Nginx-PushStream-Explain";

/// The content handler of every location the module serves.
///
/// # Safety
/// Called by nginx with a live request.
pub unsafe extern "C" fn content_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    let req = Req::from_raw(r);
    guard(req.log(), "content handler", ERR500, || {
        let (Some(lcf), Some(mcf)) = (Module::location_conf(&*r), Module::main_conf(&*r)) else {
            return ERR500;
        };
        match lcf.role {
            Some(LocationRole::Publisher(mode)) => publisher(req, mcf, lcf, mode),
            Some(LocationRole::Statistics) => statistics(req, mcf, lcf),
            Some(LocationRole::Metrics) => metrics(req, mcf),
            Some(LocationRole::Subscriber(mode)) => subscriber(req, mcf, lcf, mode),
            #[cfg(feature = "test-hooks")]
            Some(LocationRole::TestHook(hook)) => test_hooks::handle(req, hook),
            _ => ERR500,
        }
    })
}

pub fn no_cache(req: Req) {
    req.add_header("Expires", b"Thu, 01 Jan 1970 00:00:01 GMT");
    req.add_header("Cache-Control", b"no-cache, no-store, must-revalidate");
}

fn cors(req: Req, lcf: &LocConf, methods: &[u8]) {
    let Some(cv) = lcf.allowed_origins else {
        return;
    };
    let origin = req
        .complex(cv)
        .map(|v| cp::unescape_value(&v))
        .unwrap_or_default();
    if origin.is_empty() {
        return;
    }
    req.add_header("Access-Control-Allow-Origin", &origin);
    req.add_header("Access-Control-Allow-Methods", methods);
    req.add_header("Access-Control-Allow-Headers", ALLOW_HEADERS);
}

/// A header-only error with the C module's explain header.
pub fn fail(req: Req, status: usize, explain: &str) -> ngx_int_t {
    let h: Vec<(&str, &[u8])> = if explain.is_empty() {
        vec![]
    } else {
        vec![(EXPLAIN, explain.as_bytes())]
    };
    req.respond(status, None, &h, b"")
}

fn fail_channel(req: Req, e: ChannelError) -> ngx_int_t {
    fail(req, e.status() as usize, e.explain())
}

pub fn store_error(e: StoreError) -> ChannelError {
    match e {
        StoreError::OutOfMemory => ChannelError::OutOfMemory,
        StoreError::ChannelsLimit => ChannelError::ChannelsLimit,
        StoreError::SubscribersLimit => ChannelError::SubscribersLimit,
        StoreError::EventsChannel => ChannelError::EventsChannelReadOnly,
    }
}

/// The channels a request names, URL-unescaped and parsed. Empty ids (from a leading `/`, as
/// the stock JavaScript client sends) are dropped: a deliberate deviation, see docs.
fn requested_channels(req: Req, lcf: &LocConf) -> Vec<cp::ChannelRef> {
    let Some(cv) = lcf.channels_path else {
        return vec![];
    };
    let raw = req.complex(cv).unwrap_or_default();
    cp::parse_channels(&cp::unescape_value(&raw))
        .into_iter()
        .filter(|c| !c.id.is_empty())
        .collect()
}

fn too_long(mcf: &MainConf, id: &[u8]) -> bool {
    mcf.max_channel_id_length
        .is_some_and(|max| id.len() as u64 > max)
}

fn hostname() -> String {
    crate::glue::thread::hostname()
}

fn fmt_info(c: &ChannelInfo) -> FmtInfo {
    FmtInfo {
        id: c.id.clone(),
        published_messages: c.published_messages,
        stored_messages: c.stored_messages,
        subscribers: c.subscribers,
    }
}

/// Channel info (one channel) or a group listing, in the format the request's Accept asks for.
pub fn reply_infos(
    req: Req,
    mcf: &MainConf,
    infos: &[ChannelInfo],
    force_group: bool,
) -> ngx_int_t {
    let (fmt, ct) = format::negotiate(req.header_in("Accept"));
    let body = if infos.len() == 1 && !force_group {
        format::render_channel(fmt, &fmt_info(&infos[0]))
    } else {
        let c = zone::with_store(mcf.shm_zone, |s| s.counters()).unwrap_or_default();
        let now = worker::now();
        let head = GroupHead {
            hostname: hostname(),
            time: format::stats_time(now),
            channels: c.channels,
            wildcard_channels: c.wildcard_channels,
            uptime: (now - zone::created(mcf.shm_zone).unwrap_or(now)).max(0) as u64,
        };
        let items: Vec<FmtInfo> = infos.iter().map(fmt_info).collect();
        format::render_group(fmt, &head, &items)
    };
    req.respond(200, Some(ct.as_bytes()), &[], &body)
}

// ---- publisher --------------------------------------------------------------------------

fn publisher(
    req: Req,
    mcf: &'static MainConf,
    lcf: &'static LocConf,
    mode: PublisherMode,
) -> ngx_int_t {
    let admin = mode == PublisherMode::Admin;
    let (methods, allow): (&[u8], &[u8]) = if admin {
        (b"GET, POST, PUT, DELETE", b"GET, POST, PUT, DELETE")
    } else {
        (b"GET, POST, PUT", b"GET, POST, PUT")
    };
    no_cache(req);
    cors(req, lcf, methods);
    let method = req.method();
    if method == OPTIONS {
        return req.respond(200, None, &[], b"");
    }
    if !(method == GET || method == POST || method == PUT || (admin && method == DELETE)) {
        return req.respond(405, None, &[("Allow", allow)], b"");
    }
    let channels = requested_channels(req, lcf);
    if channels.is_empty() {
        return fail_channel(req, ChannelError::NoChannel);
    }
    for c in &channels {
        if cp::is_reserved_id(&c.id) {
            return fail_channel(req, ChannelError::NotAuthorized);
        }
        if too_long(mcf, &c.id) {
            return fail_channel(req, ChannelError::TooLong);
        }
        if method != GET && mcf.limits.events_channel_id.as_deref() == Some(c.id.as_slice()) {
            return fail_channel(req, ChannelError::EventsChannelReadOnly);
        }
    }
    if method == GET {
        let infos: Vec<ChannelInfo> = zone::with_store(mcf.shm_zone, |s| {
            channels.iter().filter_map(|c| s.channel(&c.id)).collect()
        })
        .unwrap_or_default();
        if infos.is_empty() {
            return req.respond(404, None, &[], b"");
        }
        return reply_infos(req, mcf, &infos, false);
    }
    req.read_body(body_read)
}

/// The publisher's POST/PUT/DELETE, once nginx has read the whole body.
unsafe extern "C" fn body_read(r: *mut ngx_http_request_t) {
    let req = Req::from_raw(r);
    let rc = guard(req.log(), "publisher", Some(ERR500), || {
        let (Some(lcf), Some(mcf)) = (Module::location_conf(&*r), Module::main_conf(&*r)) else {
            return Some(ERR500);
        };
        let body = match req.body() {
            Ok(b) => b,
            Err(e) => {
                log::error(req.log(), &format!("push_stream: {e}"));
                return Some(ERR500);
            }
        };
        let channels = requested_channels(req, lcf);
        let through_broker = mcf.amqp_publish() && crate::broker::enabled();
        if req.method() == DELETE && through_broker {
            // Through RabbitMQ, so every nginx of the deployment deletes the channels. A
            // channel this host does not know answers 404 as without a broker.
            let known = zone::with_store(mcf.shm_zone, |s| {
                channels.iter().any(|c| s.channel(&c.id).is_some())
            })
            .unwrap_or(false);
            if !known {
                return Some(req.respond(404, None, &[], b""));
            }
            let ids = channels.into_iter().map(|c| c.id).collect();
            crate::broker::publish(req, mcf, ids, body, false, true)
        } else if req.method() == DELETE {
            Some(delete(req, mcf, &channels, &body))
        } else if through_broker {
            // Through RabbitMQ: answered when the broker confirms (or 503/504).
            if body.is_empty() {
                return Some(fail(req, 400, "Empty post requests are not allowed."));
            }
            let ids = channels.into_iter().map(|c| c.id).collect();
            crate::broker::publish(req, mcf, ids, body, lcf.channel_info_on_publish(), false)
        } else {
            Some(publish(req, mcf, lcf, &channels, &body))
        }
    });
    if let Some(rc) = rc {
        req.finalize_in_handler(rc);
    }
}

fn publish(
    req: Req,
    mcf: &MainConf,
    lcf: &LocConf,
    channels: &[cp::ChannelRef],
    body: &[u8],
) -> ngx_int_t {
    if body.is_empty() {
        return fail(req, 400, "Empty post requests are not allowed.");
    }
    let event_id = req.header_in("Event-Id").map(|v| v.to_vec());
    let event_type = req.header_in("Event-Type").map(|v| v.to_vec());
    let store = lcf.store_messages();
    let now = worker::now();
    let limits = &mcf.limits;
    let now_ms = worker::now_ms();
    let outcome = zone::with_store(mcf.shm_zone, |s| {
        s.set_clock_ms(now_ms);
        let mut infos = Vec::with_capacity(channels.len());
        for c in channels {
            s.publish(
                &c.id,
                body,
                event_id.as_deref(),
                event_type.as_deref(),
                store,
                now,
                limits,
            )?;
            infos.extend(s.channel(&c.id));
        }
        let pids: Vec<u32> = s.workers().iter().map(|w| w.pid).collect();
        Ok::<_, StoreError>((infos, pids))
    });
    let Some(outcome) = outcome else {
        return ERR500;
    };
    // Whatever was published (also before a failure) is delivered.
    // Delivery to this worker's subscribers runs after the answer (next loop turn): a
    // publisher is never held back by the fan-out.
    worker::schedule_delivery();
    match outcome {
        Ok((infos, pids)) => {
            worker::wake_others(&pids);
            if lcf.channel_info_on_publish() {
                reply_infos(req, mcf, &infos, false)
            } else {
                req.respond(200, None, &[], b"")
            }
        }
        Err(e) => {
            let pids: Vec<u32> = zone::with_store(mcf.shm_zone, |s| {
                s.workers().iter().map(|w| w.pid).collect()
            })
            .unwrap_or_default();
            worker::wake_others(&pids);
            if e == StoreError::OutOfMemory {
                return zone_full(req, mcf, "message refused");
            }
            fail_channel(req, store_error(e))
        }
    }
}

fn delete(req: Req, mcf: &MainConf, channels: &[cp::ChannelRef], body: &[u8]) -> ngx_int_t {
    let text = if body.is_empty() {
        mcf.deleted_text().to_vec()
    } else {
        body.to_vec()
    };
    let now = worker::now();
    let outcome = zone::with_store(mcf.shm_zone, |s| {
        let mut deleted = 0;
        for c in channels {
            if s.delete(&c.id, &text, now, &mcf.limits)? {
                deleted += 1;
            }
        }
        let pids: Vec<u32> = s.workers().iter().map(|w| w.pid).collect();
        Ok::<_, StoreError>((deleted, pids))
    });
    match outcome {
        Some(Ok((deleted, pids))) => {
            worker::schedule_delivery();
            worker::wake_others(&pids);
            if deleted == 0 {
                req.respond(404, None, &[], b"")
            } else {
                fail(req, 200, "Channel deleted.")
            }
        }
        Some(Err(e)) => fail_channel(req, store_error(e)),
        None => ERR500,
    }
}

// ---- statistics -------------------------------------------------------------------------

fn statistics(req: Req, mcf: &MainConf, lcf: &LocConf) -> ngx_int_t {
    no_cache(req);
    if req.method() != GET {
        return req.respond(405, None, &[("Allow", b"GET")], b"");
    }
    req.add_header(
        "X-Nginx-PushStream-Tag",
        env!("CARGO_PKG_VERSION").as_bytes(),
    );
    req.add_header("X-Nginx-PushStream-Commit", crate::COMMIT.as_bytes());
    let channels = requested_channels(req, lcf);
    if channels.is_empty() {
        return summary(req, mcf);
    }
    let mut infos = Vec::new();
    for c in &channels {
        if too_long(mcf, &c.id) {
            return fail_channel(req, ChannelError::TooLong);
        }
        if let Some(prefix) = cp::stats_prefix(&c.id) {
            let all =
                zone::with_store(mcf.shm_zone, |s| s.channels(Some(prefix))).unwrap_or_default();
            return reply_infos(req, mcf, &all, true);
        }
        if c.id == b"ALL" {
            let all = zone::with_store(mcf.shm_zone, |s| s.channels(None)).unwrap_or_default();
            return reply_infos(req, mcf, &all, true);
        }
        if let Some(i) = zone::with_store(mcf.shm_zone, |s| s.channel(&c.id)).flatten() {
            infos.push(i);
        }
    }
    if infos.is_empty() {
        return req.respond(404, None, &[], b"");
    }
    reply_infos(req, mcf, &infos, channels.len() > 1)
}

fn summary(req: Req, mcf: &MainConf) -> ngx_int_t {
    let (fmt, ct): (Format, &str) = format::negotiate(req.header_in("Accept"));
    let Some((c, workers)) = zone::with_store(mcf.shm_zone, |s| (s.counters(), s.workers())) else {
        return ERR500;
    };
    let now = worker::now();
    let (used, size) = zone::memory(mcf.shm_zone);
    let stats = worker::with(|w| w.stats).unwrap_or_default();
    let s = Summary {
        hostname: hostname(),
        time: format::stats_time(now),
        counters: c,
        uptime: (now - c.created).max(0) as u64,
        extra: [
            ("shared_memory_used".to_string(), used),
            ("shared_memory_limit".to_string(), size),
            (
                "slow_subscribers_closed_by_this_worker".to_string(),
                stats.slow_closed,
            ),
        ]
        .into_iter()
        .chain(crate::broker::stats())
        .collect(),
        by_worker: workers
            .iter()
            .map(|w| WorkerInfo {
                pid: w.pid,
                subscribers: w.subscribers,
                uptime: (now - w.started).max(0) as u64,
            })
            .collect(),
    };
    req.respond(
        200,
        Some(ct.as_bytes()),
        &[],
        &format::render_summary(fmt, &s),
    )
}

// ---- metrics ----------------------------------------------------------------------------

/// `push_stream_metrics`: Prometheus text exposition of the host and of every worker.
fn metrics(req: Req, mcf: &MainConf) -> ngx_int_t {
    use push_stream_core::metrics::{self, Amqp, Host, Worker};
    use std::sync::atomic::Ordering::Relaxed;
    no_cache(req);
    if req.method() != GET {
        return req.respond(405, None, &[("Allow", b"GET")], b"");
    }
    worker::publish_slot_stats();
    let Some(c) = zone::with_store(mcf.shm_zone, |s| s.counters()) else {
        return ERR500;
    };
    let (used, size) = zone::memory(mcf.shm_zone);
    let now = worker::now();
    let host = Host {
        counters: c,
        shared_memory_used: used,
        shared_memory_limit: size,
        uptime: (now - c.created).max(0) as u64,
    };
    let amqp = mcf.amqp_settings().is_some();
    let workers: Vec<Worker> = zone::all_slot_stats(mcf.shm_zone)
        .iter()
        .filter(|s| {
            let pid = s.pid.load(Relaxed);
            pid != 0 && worker::pid_alive(pid as u32)
        })
        .map(|s| Worker {
            pid: s.pid.load(Relaxed),
            subscribers: [0, 1, 2, 3].map(|i| s.subscribers[i].load(Relaxed)),
            delivered: s.delivered.load(Relaxed),
            bytes: s.bytes.load(Relaxed),
            slow_closed: s.slow_closed.load(Relaxed),
            lost: s.lost.load(Relaxed),
            latency_buckets: std::array::from_fn(|i| s.latency[i].load(Relaxed)),
            latency_sum_ms: s.latency_sum_ms.load(Relaxed),
            amqp: amqp.then(|| Amqp {
                connected: s.amqp_connected.load(Relaxed) != 0,
                messages_in: s.amqp_in.load(Relaxed),
                messages_out: s.amqp_out.load(Relaxed),
                reconnects: s.amqp_reconnects.load(Relaxed),
                inbox_depth: s.inbox_depth.load(Relaxed),
            }),
        })
        .collect();
    let body = metrics::render(&host, &workers);
    req.respond(
        200,
        Some(b"text/plain; version=0.0.4; charset=utf-8"),
        &[],
        body.as_bytes(),
    )
}

// ---- subscribers ------------------------------------------------------------------------

/// When a subscribe request registers as a subscriber of its channels.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Subscribe {
    Always,
    Never,
    /// Long-polling: only when there is nothing old to answer with at once.
    IfNothingOld,
}

/// What a validated subscribe request found in the store.
pub struct Prepared {
    pub channels: Vec<cp::ChannelRef>,
    /// Old messages per channel, in path order.
    pub old: Vec<(Vec<u8>, Vec<push_stream_core::store::StoredMessage>)>,
    /// Channel info of the channels that had old messages (for Last-Modified / Etag).
    pub newest: Option<(i64, u64)>,
    pub since_seq: u64,
    /// The store's last broker offset when the old messages were taken.
    pub since_offset: u64,
    pub subscribed: bool,
}

/// Validation, channel creation, subscription and old messages of a subscriber request, in
/// the C module's order (section 2.6 step 5 of the reference); the first failure wins.
pub fn prepare(
    req: Req,
    mcf: &MainConf,
    lcf: &LocConf,
    subscribe: Subscribe,
) -> Result<Prepared, ChannelError> {
    let channels = requested_channels(req, lcf);
    if channels.is_empty() {
        return Err(ChannelError::NoChannel);
    }
    let limits = &mcf.limits;
    let events = limits.events_channel_id.as_deref();
    let prefix = limits.wildcard_prefix.as_deref();
    let infos: Vec<Option<ChannelInfo>> = zone::with_store(mcf.shm_zone, |s| {
        channels.iter().map(|c| s.channel(&c.id)).collect()
    })
    .ok_or(ChannelError::OutOfMemory)?;
    for (c, info) in channels.iter().zip(&infos) {
        if cp::is_reserved_id(&c.id) {
            return Err(ChannelError::NotAuthorized);
        }
        if too_long(mcf, &c.id) {
            return Err(ChannelError::TooLong);
        }
        let wildcard = cp::is_wildcard(&c.id, prefix);
        if lcf.authorized_channels_only()
            && !wildcard
            && info.as_ref().is_none_or(|i| i.stored_messages == 0)
        {
            return Err(ChannelError::CannotCreate);
        }
        if let (Some(max), Some(i)) = (limits.max_subscribers_per_channel, info) {
            if i.subscribers >= max {
                return Err(ChannelError::SubscribersLimit);
            }
        }
        if events == Some(c.id.as_slice()) && !lcf.allow_connections_to_events_channel() {
            return Err(ChannelError::EventsChannelForbidden);
        }
    }
    let qtd = lcf
        .wildcard_channel_max_qtd
        .or(mcf.max_number_of_wildcard_channels);
    if let (Some(qtd), Some(_)) = (qtd, prefix) {
        let n = channels
            .iter()
            .filter(|c| cp::is_wildcard(&c.id, prefix))
            .count() as u64;
        if n > 0 && (n > qtd || n == channels.len() as u64) {
            return Err(ChannelError::TooManyWildcard);
        }
    }
    let (since, tag) = resume_time_tag(req, lcf);
    let last_event_id =
        resume_value(req, lcf.last_event_id, "Last-Event-Id").filter(|v| !v.is_empty());
    let slot = worker::slot();
    let base = Cursor {
        backtrack: 0,
        since,
        tag,
        last_event_id,
    };
    let now = worker::now();
    // Create, subscribe (all or nothing), take the old messages and the log position in one
    // critical section, so that nothing is sent twice or missed.
    let outcome = zone::with_store(mcf.shm_zone, |s| {
        for c in &channels {
            s.get_or_create(&c.id, now, limits)?;
        }
        let old: Vec<_> = channels
            .iter()
            .map(|c| {
                (
                    c.id.clone(),
                    s.old_messages(
                        &c.id,
                        &Cursor {
                            backtrack: c.backtrack,
                            ..base.clone()
                        },
                    ),
                )
            })
            .collect();
        let any_old = old.iter().any(|(_, m)| !m.is_empty());
        let subscribe = match subscribe {
            Subscribe::Always => true,
            Subscribe::Never => false,
            Subscribe::IfNothingOld => !any_old,
        };
        if subscribe {
            let mut done: Vec<&[u8]> = Vec::new();
            for c in &channels {
                if let Err(e) = s.add_subscriber(&c.id, slot, now, limits) {
                    done.iter()
                        .for_each(|id| s.remove_subscriber(id, slot, now, limits));
                    return Err(e);
                }
                done.push(&c.id);
            }
        }
        let newest = old
            .iter()
            .filter(|(_, m)| !m.is_empty())
            .filter_map(|(id, _)| s.channel(id).map(|i| (i.last_time, i.last_tag)))
            .max();
        Ok((
            old,
            newest,
            s.last_seq(),
            s.broker_offset().map_or(0, |o| o + 1),
            subscribe,
        ))
    });
    match outcome {
        Some(Ok((old, newest, since_seq, since_offset, subscribed))) => Ok(Prepared {
            channels,
            old,
            newest,
            since_seq,
            since_offset,
            subscribed,
        }),
        Some(Err(e)) => Err(store_error(e)),
        None => Err(ChannelError::OutOfMemory),
    }
}

/// The zone is full: `500` with the explain, and a line in the error log.
fn zone_full(req: Req, mcf: &MainConf, what: &str) -> ngx_int_t {
    let (used, size) = zone::memory(mcf.shm_zone);
    log::error(
        req.log(),
        &format!(
            "push_stream: shared memory zone \"{}\" is full ({used} of {size} bytes used): {what}",
            String::from_utf8_lossy(&mcf.shm_name)
        ),
    );
    fail(req, 500, "Shared memory exhausted.")
}

/// A resume value: from its directive (`push_stream_last_…`, URL-unescaped) when configured,
/// else from its request header.
fn resume_value(
    req: Req,
    directive: Option<crate::glue::conf::Complex>,
    header: &str,
) -> Option<Vec<u8>> {
    match directive {
        Some(cv) => req.complex(cv).map(|v| cp::unescape_value(&v)),
        None => req.header_in(header).map(|v| v.to_vec()),
    }
}

/// The request's resume time (HTTP date) and tag (`W/` optional).
fn resume_time_tag(req: Req, lcf: &LocConf) -> (Option<i64>, Option<u64>) {
    let since = resume_value(req, lcf.last_received_message_time, "If-Modified-Since")
        .and_then(|v| resume::parse_http_date(&v));
    let tag = resume_value(req, lcf.last_received_message_tag, "If-None-Match")
        .and_then(|v| resume::parse_tag(&v));
    (since, tag)
}

/// Releases the subscriptions `prepare` took, when the request cannot go on.
pub fn release(mcf: &MainConf, p: &Prepared) {
    if p.subscribed {
        let now = worker::now();
        let slot = worker::slot();
        zone::with_store(mcf.shm_zone, |s| {
            p.channels
                .iter()
                .for_each(|c| s.remove_subscriber(&c.id, slot, now, &mcf.limits))
        });
    }
}

/// Old messages rendered for a location, in path order.
pub fn render_old(tpl: &LocationTemplates, p: &Prepared) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (channel, msgs) in &p.old {
        for m in msgs {
            let msg = Message {
                text: &m.text,
                id: m.id,
                channel,
                event_id: &m.event_id,
                event_type: &m.event_type,
                time: m.time,
                tag: m.tag,
            };
            out.push(tpl.render_message(&msg));
        }
    }
    out
}

/// The padding rule that matches this request's user agent: (header min, message min).
fn padding_for(req: Req, lcf: &LocConf) -> Option<(usize, usize)> {
    let rules = lcf.padding.as_ref()?;
    let ua = match lcf.user_agent {
        Some(cv) => req
            .complex(cv)
            .map(|v| cp::unescape_value(&v))
            .unwrap_or_default(),
        None => req
            .header_in("User-Agent")
            .map(|v| v.to_vec())
            .unwrap_or_default(),
    };
    rules
        .iter()
        .find(|r| req.regex_matches(r.regex, &ua))
        .map(|r| (r.header_min, r.message_min))
}

fn subscriber(
    req: Req,
    mcf: &'static MainConf,
    lcf: &'static LocConf,
    mode: SubscriberMode,
) -> ngx_int_t {
    if mode == SubscriberMode::WebSocket {
        return crate::websocket::handshake(req, mcf, lcf);
    }
    cors(req, lcf, b"GET");
    if req.method() == OPTIONS {
        return req.respond(200, None, &[], b"");
    }
    no_cache(req);
    if req.method() != GET {
        return req.respond(405, None, &[("Allow", b"GET")], b"");
    }
    let Some(tpl) = lcf.templates.as_ref() else {
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
        return poll(req, mcf, lcf, long_polling);
    }
    let p = match prepare(req, mcf, lcf, Subscribe::Always) {
        Ok(p) => p,
        Err(ChannelError::OutOfMemory) => return zone_full(req, mcf, "subscriber refused"),
        Err(e) => return fail_channel(req, e),
    };
    let eventsource = tpl.kind == push_stream_core::template::Kind::EventSource;
    req.set_status(200);
    let ct: Option<&[u8]> = if eventsource {
        Some(b"text/event-stream; charset=utf-8")
    } else {
        None
    };
    let sent = req.set_content_type(ct) && {
        req.set_content_length(None);
        let rc = req.send_header();
        !(rc == nginx_sys::NGX_ERROR as ngx_int_t || rc > nginx_sys::NGX_OK as ngx_int_t)
    };
    if !sent {
        release(mcf, &p);
        return nginx_sys::NGX_ERROR as ngx_int_t;
    }
    let padding = padding_for(req, lcf);
    let pad = |out: &mut Vec<u8>, min: usize, len: usize| {
        if min > len {
            let n = conf_values::padding_len((min - len) as i64, mcf.max_padding);
            out.extend_from_slice(&conf_values::padding_bytes(n, eventsource));
        }
    };
    let mut first = tpl.header.clone();
    if let Some((h, _)) = padding {
        if !tpl.header.is_empty() {
            pad(&mut first, h, tpl.header.len());
        }
    }
    for m in render_old(tpl, &p) {
        first.extend_from_slice(&m);
        if let Some((_, min)) = padding {
            pad(&mut first, min, m.len());
        }
    }
    let mut sub = worker::Sub::new(
        req,
        p.channels.iter().map(|c| c.id.clone()).collect(),
        Some(tpl),
        tpl.footer.clone(),
        p.since_seq,
        worker::Mode::Stream,
    );
    sub.since_offset = p.since_offset;
    sub.ping = lcf
        .ping_message_interval
        .map(|ms| (tpl.ping(mcf.ping_text()), ms));
    sub.ttl = lcf.subscriber_connection_ttl;
    sub.padding = padding.map(|(_, m)| (m, mcf.max_padding, eventsource));
    // From here on the request is held; its cleanup releases the subscriptions on every path.
    let rc_hold = worker::hold(sub);
    let rc = req.send_bytes(&first, true, false);
    if rc == nginx_sys::NGX_ERROR as ngx_int_t {
        // nginx terminates the request; the cleanup unsubscribes.
        return rc;
    }
    rc_hold
}

/// Polling and long-polling.
fn poll(req: Req, mcf: &'static MainConf, lcf: &'static LocConf, long_polling: bool) -> ngx_int_t {
    let Some(tpl) = lcf.templates.as_ref() else {
        return ERR500;
    };
    let jsonp = query_arg(req.args(), b"callback")
        .map(|v| cp::unescape_value(&v))
        .filter(|v| !v.is_empty());
    let p = match prepare(
        req,
        mcf,
        lcf,
        if long_polling {
            Subscribe::IfNothingOld
        } else {
            Subscribe::Never
        },
    ) {
        Ok(p) => p,
        Err(ChannelError::OutOfMemory) => return zone_full(req, mcf, "subscriber refused"),
        Err(e) => return fail_channel(req, e),
    };
    let old = render_old(tpl, &p);
    if !old.is_empty() {
        let (time, tag) = p.newest.unwrap_or((0, 0));
        return worker::reply_batch(req, tpl, 200, time, tag, jsonp.as_deref(), old);
    }
    if !long_polling {
        // Nothing new: 304, echoing the request's own time and tag.
        let (since, tag) = resume_time_tag(req, lcf);
        let since = since.unwrap_or(0);
        req.set_status(304);
        if since > 0 {
            req.set_last_modified(since);
        }
        if let Some(tag) = tag {
            req.add_header("Etag", format!("W/{tag}").as_bytes());
        }
        let ct: Option<&[u8]> = if jsonp.is_some() {
            Some(b"application/javascript")
        } else {
            None
        };
        if !req.set_content_type(ct) {
            return ERR500;
        }
        req.set_content_length(Some(0));
        req.set_header_only();
        return req.send_header();
    }
    let mut sub = worker::Sub::new(
        req,
        p.channels.iter().map(|c| c.id.clone()).collect(),
        Some(tpl),
        tpl.footer.clone(),
        p.since_seq,
        worker::Mode::LongPoll { jsonp },
    );
    sub.since_offset = p.since_offset;
    sub.ttl = lcf.longpolling_ttl();
    sub.timeout_body = mcf.timeout_with_body();
    worker::hold(sub)
}

/// The value of `name` in a query string (raw, still escaped).
fn query_arg(args: &[u8], name: &[u8]) -> Option<Vec<u8>> {
    args.split(|b| *b == b'&').find_map(|kv| {
        let mut it = kv.splitn(2, |b| *b == b'=');
        let k = it.next()?;
        (k == name).then(|| it.next().unwrap_or(b"").to_vec())
    })
}

#[cfg(feature = "test-hooks")]
mod test_hooks {
    use super::*;
    use crate::glue::conf::TestHook;

    pub fn handle(req: Req, hook: TestHook) -> ngx_int_t {
        let pid = std::process::id();
        match hook {
            TestHook::Ok => req.respond(
                200,
                Some(b"text/plain"),
                &[],
                format!("ok {pid}\n").as_bytes(),
            ),
            TestHook::Panic => panic!("test hook panic (pid {pid})"),
            TestHook::Inbox => {
                let (bridge, dropped, held) = (
                    worker::bridge_running(),
                    worker::inbox_dropped(),
                    worker::sub_count(),
                );
                let (ticks, last) = worker::with(|w| (w.ticks, w.last_tick)).unwrap_or((0, 0));
                let body = format!(
                    "{{\"pid\": {pid}, \"bridge\": {bridge}, \"ticks\": {ticks}, \"last_tick\": {last}, \"dropped\": {dropped}, \"held\": {held}}}\n"
                );
                req.respond(200, Some(b"application/json"), &[], body.as_bytes())
            }
            TestHook::Hold => {
                req.set_status(200);
                if !req.set_content_type(Some(b"text/plain")) {
                    return ERR500;
                }
                req.set_content_length(None);
                let rc = req.send_header();
                if rc == nginx_sys::NGX_ERROR as ngx_int_t || rc > nginx_sys::NGX_OK as ngx_int_t {
                    return rc;
                }
                let rc = req.send_bytes(format!("held {pid}\n").as_bytes(), true, false);
                if rc == nginx_sys::NGX_ERROR as ngx_int_t {
                    return rc;
                }
                worker::hold(worker::Sub::new(
                    req,
                    vec![],
                    None,
                    b"bye\n".to_vec(),
                    0,
                    worker::Mode::Stream,
                ))
            }
        }
    }
}
