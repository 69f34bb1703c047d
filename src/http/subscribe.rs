//! What the subscriber transports share: validating a subscribe request and, in one
//! critical section, creating its channels, subscribing it, and taking its old messages and
//! its place in the delivery log; the resume values; padding.

use push_stream_core::channel_path::{self as cp, ChannelError};
use push_stream_core::resume::{self, Cursor};
use push_stream_core::store::ChannelInfo;
use push_stream_core::template::{LocationTemplates, Message};

use super::{requested_channels, store_error, too_long};
use crate::conf::{LocConf, MainConf};
use crate::delivery::{self, Mode, Sub};
use crate::ngx::conf::Complex;
use crate::ngx::event;
use crate::ngx::request::Request;
use crate::ngx::Status;
use crate::Module;

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
/// the C module's order (section 2.6 step 5 of docs/reference.md); the first failure wins.
pub fn prepare(
    req: &Request<'_>,
    mcf: &MainConf,
    lcf: &LocConf,
    subscribe: Subscribe,
) -> Result<Prepared, ChannelError> {
    let channels = requested_channels(req, lcf)?;
    if channels.is_empty() {
        return Err(ChannelError::NoChannel);
    }
    let zone = mcf.zone().ok_or(ChannelError::OutOfMemory)?;
    let limits = &mcf.limits;
    let events = limits.events_channel_id.as_deref();
    let prefix = limits.wildcard_prefix.as_deref();
    let infos: Vec<Option<ChannelInfo>> = zone
        .with_store(|s| channels.iter().map(|c| s.channel(&c.id)).collect())
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
    let (slot, pid) = delivery::slot_pid();
    let mut cursor = Cursor {
        backtrack: 0,
        since,
        tag,
        last_event_id,
    };
    let now = event::now();
    // Create, subscribe (all or nothing), take the old messages and the log position in one
    // critical section, so that nothing is sent twice or missed. A subscribed request is also
    // counted in this worker's total here: the channels and the subscriber are in the store
    // before the first byte is written to the client (statistics asked after any byte of the
    // response see both).
    // Room for the old messages' lists is taken before locking (nothing inside the lock may
    // abort on a failed allocation; the copies themselves are fallible).
    let mut old = Vec::with_capacity(channels.len());
    let outcome = zone.with_store(|s| {
        for c in &channels {
            s.get_or_create(&c.id, now, limits)?;
        }
        for c in &channels {
            cursor.backtrack = c.backtrack;
            old.push(s.old_messages(&c.id, &cursor)?);
        }
        let any_old = old.iter().any(|m| !m.is_empty());
        let subscribe = match subscribe {
            Subscribe::Always => true,
            Subscribe::Never => false,
            Subscribe::IfNothingOld => !any_old,
        };
        // Where this request starts reading the log: after everything so far, except that
        // a subscriber of the events channel sees the events of its own subscriptions that
        // come after that one in its path, as in the C module (which subscribes in path
        // order); only events-channel records are added after that point here.
        let mut since_seq = None;
        if subscribe {
            for (i, c) in channels.iter().enumerate() {
                if let Err(e) = s.add_subscriber(&c.id, slot, now, limits) {
                    // All or nothing: the channels subscribed so far are left again.
                    for done in &channels[..i] {
                        s.remove_subscriber(&done.id, slot, now, limits);
                    }
                    return Err(e);
                }
                if since_seq.is_none() && events == Some(c.id.as_slice()) {
                    since_seq = Some(s.last_seq());
                }
            }
            s.count_worker_subscriber(slot, pid);
        }
        let newest = channels
            .iter()
            .zip(&old)
            .filter(|(_, m)| !m.is_empty())
            .filter_map(|(c, _)| s.last_time_tag(&c.id))
            .max();
        Ok((
            newest,
            since_seq.unwrap_or_else(|| s.last_seq()),
            s.broker_offset().map_or(0, |o| o + 1),
            subscribe,
        ))
    });
    match outcome {
        Some(Ok((newest, since_seq, since_offset, subscribed))) => Ok(Prepared {
            old: channels.iter().map(|c| c.id.clone()).zip(old).collect(),
            channels,
            newest,
            since_seq,
            since_offset,
            subscribed,
        }),
        Some(Err(e)) => Err(store_error(e)),
        None => Err(ChannelError::OutOfMemory),
    }
}

/// A resume value: from its directive (`push_stream_last_…`, URL-unescaped) when configured,
/// else from its request header.
fn resume_value(req: &Request<'_>, directive: Option<Complex>, header: &str) -> Option<Vec<u8>> {
    match directive {
        Some(cv) => req.complex(cv).map(|v| cp::unescape_value(&v)),
        None => req.header_in(header).map(|v| v.to_vec()),
    }
}

/// The request's resume time (HTTP date) and tag (`W/` optional).
pub fn resume_time_tag(req: &Request<'_>, lcf: &LocConf) -> (Option<i64>, Option<u64>) {
    let since = resume_value(req, lcf.last_received_message_time, "If-Modified-Since")
        .and_then(|v| resume::parse_http_date(&v));
    let tag = resume_value(req, lcf.last_received_message_tag, "If-None-Match")
        .and_then(|v| resume::parse_tag(&v));
    (since, tag)
}

/// Releases the subscriptions (and the worker's count) `prepare` took, when the request
/// cannot go on.
pub fn release(mcf: &MainConf, p: &Prepared) {
    if let (true, Some(zone)) = (p.subscribed, mcf.zone()) {
        let now = event::now();
        let (slot, pid) = delivery::slot_pid();
        zone.with_store(|s| {
            p.channels
                .iter()
                .for_each(|c| s.remove_subscriber(&c.id, slot, now, &mcf.limits));
            s.uncount_worker_subscriber(slot, pid);
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
pub fn padding_for(req: &Request<'_>, lcf: &LocConf) -> Option<(usize, usize)> {
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

/// Holds a prepared subscriber request and makes its subscriber state (the caller sets what
/// its transport adds, then registers it with `delivery::hold`). On failure the request's
/// subscriptions are released and the handler returns the status.
pub fn held_sub(
    req: Request<'_>,
    mcf: &MainConf,
    lcf: &LocConf,
    p: &Prepared,
    tpl: &'static LocationTemplates,
    mode: Mode,
) -> Result<Sub, Status> {
    let read = matches!(mode, Mode::WebSocket(_));
    let h = req.hold::<Module>(read).inspect_err(|_| release(mcf, p))?;
    let mut sub = Sub::new(
        h,
        p.channels.iter().map(|c| c.id.clone()).collect(),
        Some(tpl),
        tpl.footer.clone(),
        p.since_seq,
        mode,
    );
    sub.since_offset = p.since_offset;
    sub.counted = p.subscribed;
    sub.max_pending = lcf.max_pending_bytes();
    Ok(sub)
}
