//! The HTTP roles, one file each: `publisher`, `statistics`, `metrics`, and the subscriber
//! transports (`subscribe` for what they share, `stream` for streaming and EventSource,
//! `poll` for polling and long-polling, `websocket`), plus `test_hooks`. The HTTP rules
//! (status codes, explain strings, formats) come from `push_stream_core`; this folder wires
//! them to requests.

mod metrics;
mod poll;
mod publisher;
mod statistics;
mod stream;
mod subscribe;
#[cfg(feature = "test-hooks")]
mod test_hooks;
mod websocket;

use push_stream_core::channel_path::{self as cp, ChannelError};
use push_stream_core::conf_values::{PublisherMode, SubscriberMode};
use push_stream_core::format::{self, ChannelInfo as FmtInfo, GroupHead};
use push_stream_core::store::{ChannelInfo, StoreError};

use crate::conf::{LocConf, LocationRole, MainConf};
use crate::ngx::event;
use crate::ngx::held::HeldRef;
use crate::ngx::request::Request;
use crate::ngx::Status;
use crate::Module;

pub use websocket::on_read as websocket_read;

pub(crate) const GET: usize = nginx_sys::NGX_HTTP_GET as usize;
pub(crate) const POST: usize = nginx_sys::NGX_HTTP_POST as usize;
pub(crate) const PUT: usize = nginx_sys::NGX_HTTP_PUT as usize;
pub(crate) const DELETE: usize = nginx_sys::NGX_HTTP_DELETE as usize;
pub(crate) const OPTIONS: usize = nginx_sys::NGX_HTTP_OPTIONS as usize;
const ERR500: Status = Status::INTERNAL_SERVER_ERROR;

const ALLOW_HEADERS: &[u8] =
    b"If-Modified-Since,If-None-Match,Etag,Event-Id,Event-Type,Last-Event-Id";
const EXPLAIN: &str = "X-Nginx-PushStream-Explain";

/// The content handler of every location the module serves.
pub fn content(req: Request<'_>) -> Status {
    let (Some(lcf), Some(mcf)) = (req.loc_conf::<Module>(), req.main_conf::<Module>()) else {
        return ERR500;
    };
    // Only a publisher's POST/PUT (and an admin's DELETE) read the body; every other request
    // has it discarded, or nginx would parse it as the next pipelined request (smuggling).
    let m = req.method();
    let reads_body = match lcf.role {
        Some(LocationRole::Publisher(mode)) => {
            m == POST || m == PUT || (m == DELETE && mode == PublisherMode::Admin)
        }
        _ => false,
    };
    if !reads_body {
        if let Err(rc) = req.discard_body() {
            return rc;
        }
    }
    match lcf.role {
        Some(LocationRole::Publisher(mode)) => publisher::handle(req, mcf, lcf, mode),
        Some(LocationRole::Statistics) => statistics::handle(&req, mcf, lcf),
        Some(LocationRole::Metrics) => metrics::handle(&req, mcf),
        Some(LocationRole::Subscriber(SubscriberMode::WebSocket)) => {
            websocket::handshake(req, mcf, lcf)
        }
        Some(LocationRole::Subscriber(mode)) => stream::handle(req, mcf, lcf, mode),
        #[cfg(feature = "test-hooks")]
        Some(LocationRole::TestHook(hook)) => test_hooks::handle(req, hook),
        _ => ERR500,
    }
}

/// A publisher's request body was read.
pub fn body_read(req: Request<'_>) {
    publisher::body_read(req)
}

/// A held request's timer fired: a subscriber's, or a publish waiting for the broker.
pub fn held_timer(h: HeldRef, which: crate::ngx::Timer) {
    if which == crate::ngx::Timer::Partial {
        websocket::partial_timed_out(h)
    } else if crate::delivery::is_subscriber(h) {
        crate::delivery::on_timer(h, which)
    } else {
        crate::rabbitmq::timed_out(h)
    }
}

pub fn no_cache(req: &Request<'_>) {
    req.add_header("Expires", b"Thu, 01 Jan 1970 00:00:01 GMT");
    req.add_header("Cache-Control", b"no-cache, no-store, must-revalidate");
}

/// `push_stream_allowed_origins`: the CORS headers. A value holding CR, LF or NUL (after
/// unescaping, e.g. `$http_origin` with `%0d%0a`) is refused by the nginx layer: no CORS
/// headers then.
fn cors(req: &Request<'_>, lcf: &LocConf, methods: &[u8]) {
    let Some(cv) = lcf.allowed_origins else {
        return;
    };
    let origin = req
        .complex(cv)
        .map(|v| cp::unescape_value(&v))
        .unwrap_or_default();
    if origin.is_empty() || !req.add_header("Access-Control-Allow-Origin", &origin) {
        return;
    }
    req.add_header("Access-Control-Allow-Methods", methods);
    req.add_header("Access-Control-Allow-Headers", ALLOW_HEADERS);
}

/// A subscriber request whose body is still arriving cannot be held open (nginx owns its
/// read events until the body is discarded): `400`.
fn refuse_if_body_pending(req: &Request<'_>) -> Option<Status> {
    req.discarding_body()
        .then(|| fail(req, 400, "A subscriber request cannot have a body."))
}

/// A header-only error with the C module's explain header.
pub fn fail(req: &Request<'_>, status: usize, explain: &str) -> Status {
    let h: Vec<(&str, &[u8])> = if explain.is_empty() {
        vec![]
    } else {
        vec![(EXPLAIN, explain.as_bytes())]
    };
    req.respond(status, None, &h, b"")
}

fn fail_channel(req: &Request<'_>, e: ChannelError) -> Status {
    fail(req, e.status() as usize, e.explain())
}

pub fn store_error(e: StoreError) -> ChannelError {
    match e {
        StoreError::OutOfMemory => ChannelError::OutOfMemory,
        StoreError::HeapExhausted => ChannelError::HeapExhausted,
        StoreError::ChannelsLimit => ChannelError::ChannelsLimit,
        StoreError::SubscribersLimit => ChannelError::SubscribersLimit,
        StoreError::EventsChannel => ChannelError::EventsChannelReadOnly,
    }
}

/// The channels a request names, URL-unescaped, parsed and de-duplicated (a channel named
/// twice counts once, with the larger backtrack). Empty ids (from a leading `/`, as the stock
/// JavaScript client sends) are dropped: a deliberate deviation, see docs. More distinct
/// channels than `push_stream_max_channels_per_request` allows: `TooManyChannels`.
fn requested_channels(
    req: &Request<'_>,
    lcf: &LocConf,
) -> Result<Vec<cp::ChannelRef>, ChannelError> {
    let Some(cv) = lcf.channels_path else {
        return Ok(vec![]);
    };
    let raw = req.complex(cv).unwrap_or_default();
    let channels = cp::dedupe(
        cp::parse_channels(&cp::unescape_value(&raw))
            .into_iter()
            .filter(|c| !c.id.is_empty())
            .collect(),
    );
    let subscriber = matches!(lcf.role, Some(LocationRole::Subscriber(_)));
    if subscriber && channels.len() > lcf.max_channels_per_request() {
        return Err(ChannelError::TooManyChannels);
    }
    Ok(channels)
}

fn too_long(mcf: &MainConf, id: &[u8]) -> bool {
    mcf.max_channel_id_length
        .is_some_and(|max| id.len() as u64 > max)
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
    req: &Request<'_>,
    mcf: &MainConf,
    infos: &[ChannelInfo],
    force_group: bool,
) -> Status {
    let (fmt, ct) = format::negotiate(req.header_in("Accept"));
    let body = if infos.len() == 1 && !force_group {
        format::render_channel(fmt, &fmt_info(&infos[0]))
    } else {
        let zone = mcf.zone();
        let c = zone
            .and_then(|z| z.with_store(|s| s.counters()))
            .unwrap_or_default();
        let now = event::now();
        let head = GroupHead {
            hostname: crate::ngx::thread::hostname(),
            time: format::stats_time(now),
            channels: c.channels,
            wildcard_channels: c.wildcard_channels,
            uptime: (now - zone.and_then(|z| z.created()).unwrap_or(now)).max(0) as u64,
        };
        let items: Vec<FmtInfo> = infos.iter().map(fmt_info).collect();
        format::render_group(fmt, &head, &items)
    };
    req.respond(200, Some(ct.as_bytes()), &[], &body)
}

/// A subscriber refused by `subscribe::prepare`: a full zone or an exhausted worker heap
/// answer `500` with a line in the error log; the others their status and explain.
fn refuse_subscriber(req: &Request<'_>, mcf: &MainConf, e: ChannelError) -> Status {
    match e {
        ChannelError::OutOfMemory => zone_full(req, mcf, "subscriber refused"),
        ChannelError::HeapExhausted => {
            heap_exhausted(req, "subscriber refused");
            fail_channel(req, e)
        }
        e => fail_channel(req, e),
    }
}

/// Logs that this worker's heap could not take a copy out of the store.
fn heap_exhausted(req: &Request<'_>, what: &str) {
    crate::ngx_log!(
        error,
        req.log(),
        "push_stream: this worker's memory is exhausted (a copy out of the shared store failed): {what}"
    );
}

/// The zone is full: `500` with the explain, and a line in the error log.
fn zone_full(req: &Request<'_>, mcf: &MainConf, what: &str) -> Status {
    let (used, size) = mcf.zone().map(|z| z.memory()).unwrap_or((0, 0));
    crate::ngx_log!(
        error,
        req.log(),
        "push_stream: shared memory zone \"{}\" is full ({used} of {size} bytes used): {what}",
        String::from_utf8_lossy(&mcf.shm_name)
    );
    fail(req, 500, "Shared memory exhausted.")
}
