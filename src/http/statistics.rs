//! `push_stream_channels_statistics`: the host summary, one channel's info, several
//! channels, `ALL` or a prefix listing (`prefix*`), in the format Accept asks for.

use push_stream_core::channel_path::{self as cp, ChannelError};
use push_stream_core::format::{self, Format, Summary, WorkerInfo};
use push_stream_core::store::{ChannelInfo, ChannelPages, StoreError};

use super::{fail_channel, no_cache, reply_infos, requested_channels, too_long, ERR500, GET};
use crate::conf::{LocConf, MainConf};
use crate::ngx::event;
use crate::ngx::request::Request;
use crate::ngx::Status;

pub fn handle(req: &Request<'_>, mcf: &MainConf, lcf: &LocConf) -> Status {
    no_cache(req);
    if req.method() != GET {
        return req.respond(405, None, &[("Allow", b"GET")], b"");
    }
    req.add_header(
        "X-Nginx-PushStream-Tag",
        env!("CARGO_PKG_VERSION").as_bytes(),
    );
    req.add_header("X-Nginx-PushStream-Commit", crate::COMMIT.as_bytes());
    let channels = match requested_channels(req, lcf) {
        Ok(c) => c,
        Err(e) => return fail_channel(req, e),
    };
    if channels.is_empty() {
        return summary(req, mcf);
    }
    let Some(zone) = mcf.zone() else {
        return ERR500;
    };
    let mut infos = Vec::new();
    for c in &channels {
        if too_long(mcf, &c.id) {
            return fail_channel(req, ChannelError::TooLong);
        }
        if let Some(prefix) = cp::stats_prefix(&c.id) {
            return match listing(zone, Some(prefix)) {
                Some(Ok(all)) => reply_infos(req, mcf, &all, true),
                Some(Err(_)) => listing_failed(req),
                // No usable zone: nothing to list.
                None => reply_infos(req, mcf, &[], true),
            };
        }
        if c.id == b"ALL" {
            return match listing(zone, None) {
                Some(Ok(all)) => reply_infos(req, mcf, &all, true),
                Some(Err(_)) => listing_failed(req),
                // No usable zone: nothing to list.
                None => reply_infos(req, mcf, &[], true),
            };
        }
        if let Some(i) = zone.with_store(|s| s.channel(&c.id)).flatten() {
            infos.push(i);
        }
    }
    if infos.is_empty() {
        return req.respond(404, None, &[], b"");
    }
    reply_infos(req, mcf, &infos, channels.len() > 1)
}

fn summary(req: &Request<'_>, mcf: &MainConf) -> Status {
    let (fmt, ct): (Format, &str) = format::negotiate(req.header_in("Accept"));
    let Some(zone) = mcf.zone() else {
        return ERR500;
    };
    let Some((c, workers)) = zone.with_store(|s| (s.counters(), s.workers())) else {
        return ERR500;
    };
    let now = event::now();
    let (used, size) = zone.memory();
    let stats = crate::delivery::with(|w| w.stats).unwrap_or_default();
    let mut extra = vec![
        ("shared_memory_used".to_string(), used),
        ("shared_memory_limit".to_string(), size),
        (
            "slow_subscribers_closed_by_this_worker".to_string(),
            stats.slow_closed,
        ),
    ];
    if let Some(amqp) = crate::rabbitmq::stats() {
        extra.extend(amqp.fields().iter().map(|(k, v)| (k.to_string(), *v)));
    }
    let s = Summary {
        hostname: crate::ngx::thread::hostname(),
        time: format::stats_time(now),
        counters: c,
        uptime: (now - c.created).max(0) as u64,
        extra,
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

/// The channels whose id starts with `prefix` (all: None), read a page of the channel table
/// per hold of the zone's lock (`ChannelPages`), so a big store is never walked in one hold.
fn listing(
    zone: crate::ngx::zone::Zone,
    prefix: Option<&[u8]>,
) -> Option<Result<Vec<ChannelInfo>, StoreError>> {
    let mut pages = ChannelPages::default();
    while !pages.done() {
        match zone.with_store(|s| pages.read(s, prefix))? {
            Ok(()) => {}
            Err(e) => return Some(Err(e)),
        }
    }
    Some(pages.finish())
}

/// A listing that the worker's heap could not hold (it is copied under the zone lock, where
/// a failed allocation must not abort): `500` with an explain, and a line in the error log.
fn listing_failed(req: &Request<'_>) -> Status {
    crate::ngx_log!(
        error,
        req.log(),
        "push_stream: channels statistics: the listing does not fit in this worker's memory"
    );
    super::fail(req, 500, "Not enough memory for the channel listing.")
}
