//! How RabbitMQ messages map to push-stream messages, and the bridge's reconnect policy.
//! Pure logic; the lapin/tokio side lives in the module (`src/amqp.rs`).

use crate::channel_path;

/// A broker message as push-stream sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapped {
    /// Target channels: the `channel` header (one or more ids, `/`-separated like
    /// `push_stream_channels_path`), or, without it, the routing key. Empty ids are dropped;
    /// `.bN` suffixes are stripped as on a publisher.
    pub channels: Vec<Vec<u8>>,
    pub event_id: Vec<u8>,
    pub event_type: Vec<u8>,
    /// `push-stream-op: delete`: the channels are deleted (an HTTP DELETE on any nginx of the
    /// deployment); the body is the channel-deleted message text (empty: the configured one).
    pub delete: bool,
}

/// The header that marks a control message (`delete`) rather than a message to deliver.
pub const OP_HEADER: &str = "push-stream-op";
/// The header naming the target channel(s), a `/`-separated channel path.
pub const CHANNEL_HEADER: &str = "channel";
/// The header carrying the message's event id.
pub const EVENT_ID_HEADER: &str = "event-id";
/// The header carrying the message's event type.
pub const EVENT_TYPE_HEADER: &str = "event-type";
/// The value of [`OP_HEADER`] that deletes the channels.
pub const OP_DELETE: &[u8] = b"delete";
/// The header in which RabbitMQ gives a stream message's offset.
pub const STREAM_OFFSET_HEADER: &str = "x-stream-offset";

/// Why a broker message cannot be delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapError {
    /// Neither a `channel` header nor a routing key names a channel.
    NoChannel,
    /// A channel id is `ALL` or contains `*`.
    ReservedChannel(Vec<u8>),
}

impl std::fmt::Display for MapError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MapError::NoChannel => write!(f, "no channel header and no routing key"),
            MapError::ReservedChannel(id) => {
                write!(f, "reserved channel id {:?}", String::from_utf8_lossy(id))
            }
        }
    }
}

impl std::error::Error for MapError {}

/// Maps a delivery: `header(name)` looks a message header up (names as published:
/// `channel`, `event-id`, `event-type`).
pub fn map(
    routing_key: &[u8],
    header: impl Fn(&str) -> Option<Vec<u8>>,
) -> Result<Mapped, MapError> {
    let path = header(CHANNEL_HEADER)
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| routing_key.to_vec());
    let channels: Vec<Vec<u8>> = channel_path::parse_channels(&path)
        .into_iter()
        .map(|c| c.id)
        .filter(|id| !id.is_empty())
        .collect();
    if channels.is_empty() {
        return Err(MapError::NoChannel);
    }
    if let Some(bad) = channels.iter().find(|c| channel_path::is_reserved_id(c)) {
        return Err(MapError::ReservedChannel(bad.clone()));
    }
    Ok(Mapped {
        channels,
        event_id: header(EVENT_ID_HEADER).unwrap_or_default(),
        event_type: header(EVENT_TYPE_HEADER).unwrap_or_default(),
        delete: header(OP_HEADER).is_some_and(|v| v.eq_ignore_ascii_case(OP_DELETE)),
    })
}

/// An AMQP field-table value as push-stream reads message headers: the variants it understands,
/// named like lapin's `AMQPValue` variants (convert with a plain `match`, borrowing), and
/// `Other` for every other type (booleans, floats, decimals, tables, arrays, void...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderValue<'a> {
    LongString(&'a [u8]),
    ShortString(&'a str),
    ByteArray(&'a [u8]),
    LongLongInt(i64),
    LongInt(i32),
    LongUInt(u32),
    Other,
}

/// The bytes of a header value, for [`map`]'s `header` lookup: strings and byte arrays as they
/// are, signed 32- and 64-bit integers in decimal (a publisher may send an event id as a
/// number); `None` for any other type (the header then counts as absent). Same as the former
/// `header_bytes` of `src/amqp.rs` (an unsigned 32-bit integer is `None` there too).
pub fn header_bytes(v: HeaderValue<'_>) -> Option<Vec<u8>> {
    match v {
        HeaderValue::LongString(s) | HeaderValue::ByteArray(s) => Some(s.to_vec()),
        HeaderValue::ShortString(s) => Some(s.as_bytes().to_vec()),
        HeaderValue::LongLongInt(n) => Some(n.to_string().into_bytes()),
        HeaderValue::LongInt(n) => Some(n.to_string().into_bytes()),
        HeaderValue::LongUInt(_) | HeaderValue::Other => None,
    }
}

/// A stream message's offset from its [`STREAM_OFFSET_HEADER`] value: a non-negative integer
/// of any of the integer types RabbitMQ uses; `None` for a negative number or another type
/// (the message is then acknowledged and skipped). Same as the former `offset_of` of
/// `src/amqp.rs`, given the header's value.
pub fn stream_offset(v: HeaderValue<'_>) -> Option<u64> {
    match v {
        HeaderValue::LongLongInt(n) => u64::try_from(n).ok(),
        HeaderValue::LongInt(n) => u64::try_from(n).ok(),
        HeaderValue::LongUInt(n) => Some(u64::from(n)),
        _ => None,
    }
}

/// A consumed message's time (unix seconds) from the AMQP `timestamp` property, if the
/// publisher set one (nginx does); the caller uses its own clock otherwise. Converted like
/// `src/amqp.rs` did (`t as i64`: a timestamp above `i64::MAX` wraps, as it always has).
pub fn message_time(timestamp: Option<u64>) -> Option<i64> {
    timestamp.map(|t| t as i64)
}

/// The AMQP `message-id` a worker gives what it publishes: its publish epoch (random per
/// worker start), its nginx process slot and the publish's token (increasing per worker).
/// The host's consumer that stores the message recognises it (`parse_own_message_id`) and
/// records, per slot, the highest token stored: the publisher answers once its message is
/// in this host's store (read-your-writes). Unique per worker start, so also the key by which
/// an exchange's copies of one message are recognised.
pub fn own_message_id(epoch: u64, slot: usize, token: u64) -> String {
    format!("ps1-{epoch:016x}-{slot}-{token}")
}

/// The (epoch, slot, token) of a message id made by [`own_message_id`]; None for any other.
pub fn parse_own_message_id(id: &[u8]) -> Option<(u64, usize, u64)> {
    let s = std::str::from_utf8(id).ok()?;
    let mut parts = s.strip_prefix("ps1-")?.splitn(3, '-');
    let epoch = parts.next()?;
    if epoch.len() != 16 {
        return None;
    }
    let epoch = u64::from_str_radix(epoch, 16).ok()?;
    let slot = parts.next()?;
    let token = parts.next()?;
    let digits = |v: &str| !v.is_empty() && v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit());
    if !digits(slot) || !digits(token) {
        return None;
    }
    Some((epoch, slot.parse().ok()?, token.parse().ok()?))
}

/// Without an `event-id` header, a broker message's event id is its id (offset + 1), so a
/// browser's `Last-Event-ID` resumes exactly after the last message it saw. A copy of
/// `default_event_id` in `src/broker.rs`; `offset + 1` wraps (to `0`) for `u64::MAX`, as that
/// code did in a release build (it panicked in a debug build).
pub fn default_event_id(given: &[u8], offset: u64) -> Vec<u8> {
    let mut digits = [0u8; 20];
    event_id_in(given, offset, &mut digits).to_vec()
}

/// [`default_event_id`] without allocating: `given`, or the id's decimal digits written
/// into `digits` (for code that runs under the zone lock).
pub fn event_id_in<'a>(given: &'a [u8], offset: u64, digits: &'a mut [u8; 20]) -> &'a [u8] {
    if !given.is_empty() {
        return given;
    }
    let mut n = offset.wrapping_add(1);
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &digits[i..];
        }
    }
}

/// Where a stream delivery stands relative to the offset this worker expects next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetCheck {
    /// Below the expected offset: handled already (a stream delivers from the start of the
    /// chunk holding the requested offset). Acknowledge it and skip it.
    AlreadyHandled,
    /// The expected offset, or nothing expected yet: deliver it.
    InOrder,
    /// Above the expected offset: offsets `first..=last` left the stream (retention) before
    /// this worker could read them and cannot be delivered any more. Deliver this one.
    Gap { first: u64, last: u64 },
}

impl OffsetCheck {
    /// How many offsets were lost (`last - first + 1` for a [`Gap`](OffsetCheck::Gap), else 0).
    pub fn lost(self) -> u64 {
        match self {
            OffsetCheck::Gap { first, last } => last - first + 1,
            _ => 0,
        }
    }
}

/// Classifies a delivered stream `offset` against the `expected` next one, as the bridge's
/// consumer loop in `src/amqp.rs` does (skip below; count and log a retention gap above).
pub fn check_offset(offset: u64, expected: Option<u64>) -> OffsetCheck {
    match expected {
        Some(e) if offset < e => OffsetCheck::AlreadyHandled,
        Some(e) if offset > e => OffsetCheck::Gap {
            first: e,
            last: offset - 1,
        },
        _ => OffsetCheck::InOrder,
    }
}

/// The headers nginx publishes a message (or, with `delete`, a channel delete) with, in the
/// order `src/amqp.rs` inserts them: `channel` (the channel path), `event-id` and `event-type`
/// when given, and `push-stream-op: delete` for a delete. [`map`] reads them back.
pub fn publish_headers(
    channel_path: &[u8],
    event_id: Option<&[u8]>,
    event_type: Option<&[u8]>,
    delete: bool,
) -> Vec<(&'static str, Vec<u8>)> {
    let mut h = vec![(CHANNEL_HEADER, channel_path.to_vec())];
    if let Some(v) = event_id {
        h.push((EVENT_ID_HEADER, v.to_vec()));
    }
    if let Some(v) = event_type {
        h.push((EVENT_TYPE_HEADER, v.to_vec()));
    }
    if delete {
        h.push((OP_HEADER, OP_DELETE.to_vec()));
    }
    h
}

/// The key under which the workers of one host recognise the same message consumed from an
/// exchange (each worker has its own queue, so each sees its own copy): the AMQP `message-id`
/// when the publisher set one (nginx always does), else a 128-bit digest of everything that
/// identifies it (routing key, channel and event headers, timestamp, body).
pub fn dedupe_key(
    message_id: Option<&[u8]>,
    routing_key: &[u8],
    m: &Mapped,
    timestamp: Option<u64>,
    body: &[u8],
) -> u128 {
    let mut h = Digest::default();
    match message_id.filter(|id| !id.is_empty()) {
        Some(id) => {
            h.part(b"message-id");
            h.part(id);
        }
        None => {
            h.part(routing_key);
            for c in &m.channels {
                h.part(c);
            }
            h.part(&m.event_id);
            h.part(&m.event_type);
            h.part(&[m.delete as u8]);
            h.part(&timestamp.map_or([0xff; 8], u64::to_le_bytes));
            h.part(body);
        }
    }
    h.finish()
}

/// Two independent FNV-1a 64 lanes over length-prefixed parts: a stable 128-bit digest (the
/// same in every worker and every build; not cryptographic, and it need not be: a collision
/// only merges two messages' store entries, and 2^-64 per pair is far below anything else).
struct Digest(u64, u64);

impl Default for Digest {
    fn default() -> Self {
        Digest(0xcbf2_9ce4_8422_2325, 0x6c62_272e_07bb_0142)
    }
}

impl Digest {
    fn byte(&mut self, b: u8) {
        self.0 = (self.0 ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        self.1 = (self.1 ^ (b as u64).rotate_left(5) ^ 0xa5).wrapping_mul(0x0000_0100_0000_01b3);
    }
    fn part(&mut self, bytes: &[u8]) {
        for b in (bytes.len() as u64).to_le_bytes() {
            self.byte(b);
        }
        for &b in bytes {
            self.byte(b);
        }
    }
    fn finish(&self) -> u128 {
        ((self.0 as u128) << 64) | self.1 as u128
    }
}

/// How many times one worker has seen each dedupe key within `window` seconds: the n-th copy
/// of a key is the n-th message with that key (identical messages without a `message-id`
/// published twice are two messages, not one seen twice). Bounded: keys older than the
/// window are forgotten, oldest first.
#[derive(Debug, Default)]
pub struct Occurrences {
    /// key -> (sightings, time of the newest one)
    counts: std::collections::HashMap<u128, (u32, i64)>,
    order: std::collections::VecDeque<(i64, u128)>,
}

impl Occurrences {
    /// Records one more sighting of `key` at `now` (seconds) and returns its number (1 = first).
    pub fn see(&mut self, key: u128, now: i64, window: i64) -> u32 {
        let horizon = now.saturating_sub(window);
        while let Some(&(at, k)) = self.order.front() {
            if at > horizon {
                break;
            }
            self.order.pop_front();
            // Forget the key once its newest sighting has left the window.
            if self
                .counts
                .get(&k)
                .is_some_and(|&(_, last)| last <= horizon)
            {
                self.counts.remove(&k);
            }
        }
        self.order.push_back((now, key));
        let e = self.counts.entry(key).or_insert((0, now));
        e.0 = e.0.saturating_add(1);
        e.1 = now;
        e.0
    }

    pub fn len(&self) -> usize {
        self.counts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
}

/// `push_stream_amqp_exchange name type [binding_key...]`: consume an exchange through one
/// queue per worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExchangeSource {
    pub name: String,
    pub kind: ExchangeKind,
    /// Binding keys of each worker's queue (a fanout exchange has one, empty).
    pub keys: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExchangeKind {
    Direct,
    Fanout,
    Topic,
}

impl ExchangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Topic => "topic",
        }
    }
}

/// AMQP short strings (exchange names, routing and binding keys) hold at most 255 bytes.
pub const MAX_SHORT: usize = 255;

impl ExchangeSource {
    /// Parses the directive's arguments (without its name): `name type [key...]`. A topic
    /// exchange without keys is bound with `#` (everything); a direct one needs keys; a
    /// fanout one takes none.
    pub fn parse(words: &[String]) -> Result<ExchangeSource, String> {
        let (name, kind, keys) = match words {
            [name, kind, keys @ ..] => (name, kind, keys),
            _ => return Err("expected an exchange name and type".into()),
        };
        if name.is_empty() || name.len() > MAX_SHORT {
            return Err(format!(
                "the exchange name must be 1 to {MAX_SHORT} bytes (the default exchange cannot be bound)"
            ));
        }
        let kind =
            match kind.as_str() {
                "direct" => ExchangeKind::Direct,
                "fanout" => ExchangeKind::Fanout,
                "topic" => ExchangeKind::Topic,
                "headers" => return Err(
                    "headers exchanges are not supported: use a topic, direct or fanout exchange"
                        .into(),
                ),
                other => {
                    return Err(format!(
                        "unknown exchange type \"{other}\" (direct, fanout or topic)"
                    ))
                }
            };
        if let Some(k) = keys.iter().find(|k| k.len() > MAX_SHORT) {
            return Err(format!(
                "binding key \"{}...\" is longer than {MAX_SHORT} bytes",
                k.chars().take(16).collect::<String>()
            ));
        }
        let keys = match (kind, keys.is_empty()) {
            (ExchangeKind::Fanout, false) => {
                return Err("a fanout exchange takes no binding keys".into())
            }
            (ExchangeKind::Fanout, true) => vec![String::new()],
            (ExchangeKind::Topic, true) => vec!["#".to_string()],
            (ExchangeKind::Direct, true) => {
                return Err("a direct exchange needs at least one binding key".into())
            }
            (_, false) => keys.to_vec(),
        };
        Ok(ExchangeSource {
            name: name.clone(),
            kind,
            keys,
        })
    }
}

/// The routing key nginx publishes an HTTP publish with to an exchange: the channel path
/// (`a/b`), so bindings select channels. None when it does not fit an AMQP short string.
pub fn routing_key(channel_path: &[u8]) -> Option<&[u8]> {
    (channel_path.len() <= MAX_SHORT).then_some(channel_path)
}

/// Capped exponential backoff with jitter for reconnects: attempt 0 waits about `base_ms`,
/// each failure doubles it up to `cap_ms`; the wait is drawn in [d/2, d] from `random`.
pub fn backoff_ms(attempt: u32, base_ms: u64, cap_ms: u64, random: u64) -> u64 {
    let d = base_ms
        .saturating_mul(1u64 << attempt.min(30))
        .min(cap_ms)
        .max(1);
    d / 2 + random % (d - d / 2 + 1)
}

/// Checks an `amqp://` / `amqps://` URL the way it is used, without connecting: scheme, host,
/// optional port and vhost. Returns a message for `nginx -t` on failure.
pub fn check_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("amqp://")
        .or_else(|| url.strip_prefix("amqps://"))
        .ok_or_else(|| format!("\"{}\" is not an amqp:// or amqps:// URL", redact(url)))?;
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let hostport = authority
        .rsplit_once('@')
        .map(|(_, h)| h)
        .unwrap_or(authority);
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => (h, Some(p)),
        _ => (hostport, None),
    };
    if host.is_empty() {
        return Err(format!("\"{}\" has no host", redact(url)));
    }
    if let Some(p) = port {
        if p.parse::<u16>().map(|p| p == 0).unwrap_or(true) {
            return Err(format!("\"{}\" has an invalid port \"{p}\"", redact(url)));
        }
    }
    Ok(())
}

/// The URL with its password replaced, for logs and error messages.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let (scheme, rest) = url.split_at(scheme_end + 3);
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}{user}:***@{host}{tail}")
        }
        None => url.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration: the `push_stream_amqp_*` directives
// ---------------------------------------------------------------------------------------------

/// `push_stream_amqp_prefetch` when not set.
pub const DEFAULT_PREFETCH: u16 = 1000;
/// `push_stream_amqp_confirm_timeout` when not set, in milliseconds.
pub const DEFAULT_CONFIRM_TIMEOUT_MS: u64 = 5000;

/// Where the bridge consumes messages from (and publishes HTTP publishes to).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A RabbitMQ stream, consumed from an offset.
    Stream {
        name: String,
        /// `x-max-age` of a stream the module declares (e.g. `7D`, `1h`).
        max_age: Option<String>,
        /// `x-max-length-bytes` of a stream the module declares.
        max_bytes: Option<u64>,
    },
    /// An exchange, through one exclusive queue per worker bound with the keys.
    Exchange(ExchangeSource),
}

/// What the configuration asks of the bridge (the fields of `src/amqp.rs`'s `Settings`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub url: String,
    pub source: Source,
    pub prefetch: u16,
    /// How long a publish waits for the broker's confirm.
    pub confirm_timeout: std::time::Duration,
    /// This worker consumes the source. [`Directives::settings`] sets it to true; the worker
    /// clears it when another worker consumes for the host.
    pub consume: bool,
}

/// The `push_stream_amqp_*` directives of an `http{}` block as set (`None`: not set), with
/// the same fields and types as `src/glue/conf.rs`'s `MainConf::amqp_*`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Directives {
    /// `push_stream_amqp_url` (already checked with [`check_url`]).
    pub url: Option<String>,
    /// `push_stream_amqp_stream`.
    pub stream: Option<String>,
    /// `push_stream_amqp_stream_max_age`.
    pub stream_max_age: Option<String>,
    /// `push_stream_amqp_stream_max_bytes`.
    pub stream_max_bytes: Option<u64>,
    /// `push_stream_amqp_prefetch`.
    pub prefetch: Option<u64>,
    /// `push_stream_amqp_publish`.
    pub publish: Option<bool>,
    /// `push_stream_amqp_store_messages`.
    pub store_messages: Option<bool>,
    /// `push_stream_amqp_confirm_timeout`, in milliseconds.
    pub confirm_timeout_ms: Option<u64>,
    /// `push_stream_amqp_exchange`.
    pub exchange: Option<ExchangeSource>,
    /// `push_stream_amqp_consumer`: true for `host`.
    pub consumer_host: Option<bool>,
}

impl Directives {
    /// Checks the directives together (at the end of the `http{}` block). The messages are
    /// those of the former `MainConf::check_amqp` of `src/glue/conf.rs`, word for word.
    pub fn check(&self) -> Result<(), String> {
        const PREFIX: &str = "push stream module:";
        let source = self.stream.is_some() || self.exchange.is_some();
        if self.stream.is_some() && self.exchange.is_some() {
            return Err(format!("{PREFIX} push_stream_amqp_stream and push_stream_amqp_exchange cannot be used together: choose one source."));
        }
        if self.exchange.is_some()
            && (self.stream_max_age.is_some() || self.stream_max_bytes.is_some())
        {
            return Err(format!("{PREFIX} push_stream_amqp_stream_max_age and push_stream_amqp_stream_max_bytes need push_stream_amqp_stream (they are a stream's retention)."));
        }
        if self.exchange.is_some() && self.consumer_host == Some(true) {
            return Err(format!("{PREFIX} push_stream_amqp_consumer host needs push_stream_amqp_stream: with push_stream_amqp_exchange every worker consumes its own queue."));
        }
        match (&self.url, source) {
            (None, false) => {
                let set = self.stream_max_age.is_some()
                    || self.stream_max_bytes.is_some()
                    || self.prefetch.is_some()
                    || self.publish.is_some()
                    || self.store_messages.is_some()
                    || self.confirm_timeout_ms.is_some()
                    || self.consumer_host.is_some();
                if set {
                    return Err(format!("{PREFIX} push_stream_amqp_* directives need push_stream_amqp_url and a source (push_stream_amqp_stream or push_stream_amqp_exchange)."));
                }
                Ok(())
            }
            (Some(_), false) => Err(format!("{PREFIX} push_stream_amqp_url needs a source: push_stream_amqp_stream or push_stream_amqp_exchange.")),
            (None, true) => Err(format!(
                "{PREFIX} push_stream_amqp_{} needs push_stream_amqp_url.",
                if self.stream.is_some() { "stream" } else { "exchange" }
            )),
            (Some(_), true) => Ok(()),
        }
    }

    /// The bridge's settings when a URL and exactly one source are configured (`None`
    /// otherwise), with the defaults applied: prefetch [`DEFAULT_PREFETCH`] (capped at
    /// 65535), confirm timeout [`DEFAULT_CONFIRM_TIMEOUT_MS`], `consume` true. Same as the
    /// former `MainConf::amqp_settings`.
    pub fn settings(&self) -> Option<Settings> {
        let source = match (&self.stream, &self.exchange) {
            (Some(name), None) => Source::Stream {
                name: name.clone(),
                max_age: self.stream_max_age.clone(),
                max_bytes: self.stream_max_bytes,
            },
            (None, Some(x)) => Source::Exchange(x.clone()),
            _ => return None,
        };
        Some(Settings {
            url: self.url.clone()?,
            source,
            prefetch: self
                .prefetch
                .unwrap_or(u64::from(DEFAULT_PREFETCH))
                .min(u64::from(u16::MAX)) as u16,
            confirm_timeout: std::time::Duration::from_millis(
                self.confirm_timeout_ms
                    .unwrap_or(DEFAULT_CONFIRM_TIMEOUT_MS),
            ),
            consume: true,
        })
    }

    /// HTTP publishers publish through RabbitMQ: a source is set and
    /// `push_stream_amqp_publish` is not off.
    pub fn publish(&self) -> bool {
        (self.stream.is_some() || self.exchange.is_some()) && self.publish.unwrap_or(true)
    }

    /// Consumed messages are stored (`push_stream_amqp_store_messages`, default on).
    pub fn store_messages(&self) -> bool {
        self.store_messages.unwrap_or(true)
    }

    /// One worker consumes the stream for the host (`push_stream_amqp_consumer host`).
    pub fn consumer_host(&self) -> bool {
        self.consumer_host.unwrap_or(false)
    }
}

/// `push_stream_amqp_stream NAME`: a queue name of 1 to 255 bytes.
pub fn parse_stream_name(directive: &str, value: &str) -> Result<String, String> {
    if value.is_empty() || value.len() > MAX_SHORT {
        return Err(format!(
            "push stream module: {directive} must be a queue name of 1 to 255 bytes."
        ));
    }
    Ok(value.to_string())
}

/// `push_stream_amqp_stream_max_age AGE`: RabbitMQ's `x-max-age`, digits then one of
/// `Y M D h m s` (e.g. `7D`); at least one digit.
pub fn parse_stream_max_age(directive: &str, value: &str) -> Result<String, String> {
    let ok = value.len() >= 2
        && value.as_bytes()[..value.len() - 1]
            .iter()
            .all(u8::is_ascii_digit)
        && matches!(
            value.as_bytes()[value.len() - 1],
            b'Y' | b'M' | b'D' | b'h' | b'm' | b's'
        );
    if !ok {
        return Err(format!("push stream module: invalid value for {directive}: \"{value}\" (RabbitMQ's x-max-age: a number and one of Y M D h m s, e.g. 7D)"));
    }
    Ok(value.to_string())
}

/// `push_stream_amqp_stream_max_bytes SIZE`: a size (`conf_values::parse_size`), not zero.
pub fn parse_stream_max_bytes(directive: &str, value: &str) -> Result<u64, String> {
    let v = crate::conf_values::parse_size(value)
        .map_err(|e| format!("push stream module: invalid value for {directive}: {e}"))?;
    if v == 0 {
        return Err(crate::conf_values::zero_error(directive));
    }
    Ok(v)
}

/// `push_stream_amqp_prefetch N`: 1 to 65535.
pub fn parse_prefetch(directive: &str, value: &str) -> Result<u16, String> {
    let v = crate::conf_values::parse_positive_number(directive, value)?;
    u16::try_from(v)
        .map_err(|_| format!("push stream module: {directive} cannot be more than 65535."))
}

/// `push_stream_amqp_confirm_timeout TIME`: a time in milliseconds
/// (`conf_values::parse_time_ms`), not zero.
pub fn parse_confirm_timeout_ms(directive: &str, value: &str) -> Result<u64, String> {
    let v = crate::conf_values::parse_time_ms(value)
        .map_err(|e| format!("push stream module: invalid value for {directive}: {e}"))?;
    if v == 0 {
        return Err(crate::conf_values::zero_error(directive));
    }
    Ok(v)
}

/// `push_stream_amqp_consumer worker|host` (exact, lowercase): true for `host`.
pub fn parse_consumer(directive: &str, value: &str) -> Result<bool, String> {
    match value {
        "worker" => Ok(false),
        "host" => Ok(true),
        _ => Err(format!(
            "push stream module: invalid value for {directive}: \"{value}\" (worker: every worker consumes the stream; host: one worker consumes it for the host)"
        )),
    }
}

/// `push_stream_amqp_url URL`, once the URL is known (the directive may name a file holding
/// it; reading it is the caller's job): [`check_url`] with the directive's message.
pub fn parse_url(directive: &str, url: &str) -> Result<String, String> {
    check_url(url).map_err(|e| format!("push stream module: invalid {directive}: {e}"))?;
    Ok(url.to_string())
}

/// `push_stream_amqp_exchange NAME TYPE [KEY...]` (the arguments without the directive
/// name): [`ExchangeSource::parse`] with the directive's message.
pub fn parse_exchange(directive: &str, words: &[String]) -> Result<ExchangeSource, String> {
    ExchangeSource::parse(words)
        .map_err(|e| format!("push stream module: invalid {directive}: {e}"))
}

#[cfg(test)]
mod own_id_tests {
    use super::*;

    #[test]
    fn own_message_ids_round_trip() {
        for (e, s, t) in [(0, 0, 0), (1, 7, 42), (u64::MAX, 1023, u64::MAX)] {
            let id = own_message_id(e, s, t);
            assert_eq!(parse_own_message_id(id.as_bytes()), Some((e, s, t)), "{id}");
        }
    }

    #[test]
    fn other_message_ids_are_not_ours() {
        for id in [
            &b""[..],
            b"ps1-",
            b"ps1-0000000000000001-2",
            b"ps1-01-2-3",
            b"ps1-000000000000000g-2-3",
            b"ps1-0000000000000001--3",
            b"ps1-0000000000000001-2-",
            b"ps1-0000000000000001-2-3x",
            b"ps1-0000000000000001-+2-3",
            b"ps1-0000000000000001-2-99999999999999999999999",
            b"ngx-push-stream-1-abc-2",
            b"\xff\xfe",
        ] {
            assert_eq!(
                parse_own_message_id(id),
                None,
                "{:?}",
                String::from_utf8_lossy(id)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers<'a>(h: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<Vec<u8>> + 'a {
        move |n| {
            h.iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.as_bytes().to_vec())
        }
    }

    #[test]
    fn the_channel_header_wins_over_the_routing_key() {
        let m = map(
            b"rk",
            headers(&[
                ("channel", "a/b.b3//c"),
                ("event-id", "7"),
                ("event-type", "t"),
            ]),
        )
        .unwrap();
        assert_eq!(
            m.channels,
            vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
        );
        assert_eq!((m.event_id, m.event_type), (b"7".to_vec(), b"t".to_vec()));
        let m = map(b"news", headers(&[])).unwrap();
        assert_eq!(m.channels, vec![b"news".to_vec()]);
        assert_eq!(m.event_id, b"".to_vec());
    }

    #[test]
    fn messages_without_a_usable_channel_are_refused() {
        assert_eq!(map(b"", headers(&[])), Err(MapError::NoChannel));
        assert_eq!(map(b"/", headers(&[])), Err(MapError::NoChannel));
        assert_eq!(
            map(b"x", headers(&[("channel", "a/ALL")])),
            Err(MapError::ReservedChannel(b"ALL".to_vec()))
        );
        assert_eq!(
            map(b"x*", headers(&[])),
            Err(MapError::ReservedChannel(b"x*".to_vec()))
        );
    }

    fn words(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    #[test]
    fn exchange_sources_parse_with_defaults_and_clear_errors() {
        let x = ExchangeSource::parse(&words("realtime topic")).unwrap();
        assert_eq!(
            (x.kind, x.keys.clone()),
            (ExchangeKind::Topic, vec!["#".to_string()])
        );
        let x = ExchangeSource::parse(&words("rt topic news.* sport.#")).unwrap();
        assert_eq!(x.keys, vec!["news.*".to_string(), "sport.#".to_string()]);
        let x = ExchangeSource::parse(&words("amq.fanout fanout")).unwrap();
        assert_eq!(
            (x.kind.as_str(), x.keys.clone()),
            ("fanout", vec![String::new()])
        );
        let x = ExchangeSource::parse(&words("d direct a b")).unwrap();
        assert_eq!((x.name.as_str(), x.keys.len()), ("d", 2));
        let err = |s: &str| ExchangeSource::parse(&words(s)).unwrap_err();
        assert!(err("d direct").contains("needs at least one binding key"));
        assert!(err("f fanout k").contains("takes no binding keys"));
        assert!(err("h headers").contains("not supported"));
        assert!(err("x match").contains("unknown exchange type \"match\""));
        assert!(ExchangeSource::parse(&["".into(), "topic".into()])
            .unwrap_err()
            .contains("1 to 255 bytes"));
        assert!(
            ExchangeSource::parse(&["x".into(), "topic".into(), "k".repeat(256)])
                .unwrap_err()
                .contains("longer than 255")
        );
        assert!(ExchangeSource::parse(&["x".into()]).is_err());
        assert_eq!(routing_key(b"a/b"), Some(&b"a/b"[..]));
        assert_eq!(routing_key(&[b'a'; 256]), None);
    }

    #[test]
    fn the_op_header_marks_a_delete() {
        let m = map(b"x", headers(&[("push-stream-op", "DELETE")])).unwrap();
        assert!(m.delete);
        assert!(
            !map(b"x", headers(&[("push-stream-op", "other")]))
                .unwrap()
                .delete
        );
        assert!(!map(b"x", headers(&[])).unwrap().delete);
    }

    #[test]
    fn dedupe_keys_use_the_message_id_else_every_identifying_field() {
        let m = map(b"rk", headers(&[("channel", "a")])).unwrap();
        let k = |id: Option<&[u8]>, rk: &[u8], m: &Mapped, ts, body: &[u8]| {
            dedupe_key(id, rk, m, ts, body)
        };
        // The message id alone decides when present.
        assert_eq!(
            k(Some(b"m1"), b"rk", &m, Some(1), b"x"),
            k(Some(b"m1"), b"zz", &m, None, b"y")
        );
        assert_ne!(
            k(Some(b"m1"), b"rk", &m, None, b"x"),
            k(Some(b"m2"), b"rk", &m, None, b"x")
        );
        // An empty message id is no id.
        assert_eq!(
            k(Some(b""), b"rk", &m, None, b"x"),
            k(None, b"rk", &m, None, b"x")
        );
        // Without one, every field counts.
        let base = k(None, b"rk", &m, Some(5), b"body");
        assert_eq!(base, k(None, b"rk", &m, Some(5), b"body"));
        assert_ne!(base, k(None, b"rk2", &m, Some(5), b"body"));
        assert_ne!(base, k(None, b"rk", &m, Some(6), b"body"));
        assert_ne!(base, k(None, b"rk", &m, None, b"body"));
        assert_ne!(base, k(None, b"rk", &m, Some(5), b"bodz"));
        let m2 = map(b"rk", headers(&[("channel", "a"), ("event-type", "t")])).unwrap();
        assert_ne!(base, k(None, b"rk", &m2, Some(5), b"body"));
        let m3 = map(
            b"rk",
            headers(&[("channel", "a"), ("push-stream-op", "delete")]),
        )
        .unwrap();
        assert_ne!(base, k(None, b"rk", &m3, Some(5), b"body"));
        // Length prefixes: moving bytes between parts changes the key.
        assert_ne!(k(None, b"xa", &m, None, b""), k(None, b"x", &m, None, b"a"));
    }

    #[test]
    fn occurrences_count_copies_within_the_window_and_forget_old_keys() {
        let mut o = Occurrences::default();
        assert_eq!(o.see(1, 100, 30), 1);
        assert_eq!(o.see(2, 101, 30), 1);
        assert_eq!(o.see(1, 102, 30), 2);
        assert_eq!(o.len(), 2);
        // Key 2's only sighting leaves the window; key 1's newest one is still inside.
        assert_eq!(o.see(3, 131, 30), 1);
        assert_eq!(o.len(), 2);
        assert_eq!(o.see(1, 131, 30), 3);
        // Everything old is forgotten: a key seen again long after counts from 1.
        assert_eq!(o.see(2, 500, 30), 1);
        assert_eq!(o.see(1, 500, 30), 1);
        assert_eq!(o.len(), 2);
        // Bounded by what one window holds.
        for t in 0..10_000 {
            o.see(t as u128 + 10, 1000 + t / 100, 30);
        }
        assert!(o.len() <= 3100, "{}", o.len());
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        assert!((50..=100).contains(&backoff_ms(0, 100, 30_000, 12345)));
        assert!((400..=800).contains(&backoff_ms(3, 100, 30_000, 999)));
        for r in [0, 1, 17, u64::MAX] {
            let d = backoff_ms(40, 100, 30_000, r);
            assert!((15_000..=30_000).contains(&d), "{d}");
        }
        assert_ne!(backoff_ms(5, 100, 30_000, 1), backoff_ms(5, 100, 30_000, 2));
    }

    #[test]
    fn urls_are_checked_without_connecting_and_redacted() {
        assert!(check_url("amqp://guest:guest@127.0.0.1:5672/%2f").is_ok());
        assert!(check_url("amqps://h/vhost?heartbeat=10").is_ok());
        assert!(check_url("amqp://[::1]:5672/").is_ok());
        assert!(check_url("http://x").unwrap_err().contains("not an amqp"));
        assert!(check_url("amqp://u:p@:5672/")
            .unwrap_err()
            .contains("no host"));
        assert!(check_url("amqp://h:0/")
            .unwrap_err()
            .contains("invalid port"));
        assert!(check_url("amqp://h:99999/")
            .unwrap_err()
            .contains("invalid port"));
        assert_eq!(
            redact("amqp://guest:secret@h:5672/%2f"),
            "amqp://guest:***@h:5672/%2f"
        );
        assert_eq!(redact("amqp://h/"), "amqp://h/");
        assert!(!check_url("ftp://u:secret@h")
            .unwrap_err()
            .contains("secret"));
    }

    #[test]
    fn header_values_to_bytes() {
        use HeaderValue::*;
        assert_eq!(header_bytes(LongString(b"a/b")), Some(b"a/b".to_vec()));
        assert_eq!(header_bytes(ShortString("ev")), Some(b"ev".to_vec()));
        assert_eq!(
            header_bytes(ByteArray(b"\xff\x00")),
            Some(b"\xff\x00".to_vec())
        );
        assert_eq!(header_bytes(LongLongInt(-42)), Some(b"-42".to_vec()));
        assert_eq!(
            header_bytes(LongLongInt(i64::MAX)),
            Some(b"9223372036854775807".to_vec())
        );
        assert_eq!(header_bytes(LongInt(7)), Some(b"7".to_vec()));
        assert_eq!(header_bytes(LongUInt(7)), None);
        assert_eq!(header_bytes(Other), None);
        assert_eq!(header_bytes(LongString(b"")), Some(Vec::new()));
        // As map reads them.
        let h = [
            (CHANNEL_HEADER, LongString(b"a/b")),
            (EVENT_ID_HEADER, LongLongInt(12)),
            (EVENT_TYPE_HEADER, Other),
        ];
        let m = map(b"rk", |n| {
            h.iter()
                .find(|(k, _)| *k == n)
                .and_then(|&(_, v)| header_bytes(v))
        })
        .unwrap();
        assert_eq!(m.channels, vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!((m.event_id, m.event_type), (b"12".to_vec(), Vec::new()));
    }

    #[test]
    fn stream_offsets() {
        use HeaderValue::*;
        assert_eq!(stream_offset(LongLongInt(0)), Some(0));
        assert_eq!(stream_offset(LongLongInt(i64::MAX)), Some(i64::MAX as u64));
        assert_eq!(stream_offset(LongLongInt(-1)), None);
        assert_eq!(stream_offset(LongInt(5)), Some(5));
        assert_eq!(stream_offset(LongInt(-5)), None);
        assert_eq!(stream_offset(LongUInt(u32::MAX)), Some(u64::from(u32::MAX)));
        assert_eq!(stream_offset(LongString(b"5")), None);
        assert_eq!(stream_offset(ShortString("5")), None);
        assert_eq!(stream_offset(ByteArray(b"5")), None);
        assert_eq!(stream_offset(Other), None);
        assert_eq!(STREAM_OFFSET_HEADER, "x-stream-offset");
    }

    #[test]
    fn message_times() {
        assert_eq!(message_time(None), None);
        assert_eq!(message_time(Some(0)), Some(0));
        assert_eq!(message_time(Some(1_700_000_000)), Some(1_700_000_000));
        assert_eq!(message_time(Some(u64::MAX)), Some(-1));
    }

    #[test]
    fn default_event_ids() {
        assert_eq!(default_event_id(b"", 0), b"1".to_vec());
        assert_eq!(default_event_id(b"", 41), b"42".to_vec());
        assert_eq!(
            default_event_id(b"", u64::MAX - 1),
            b"18446744073709551615".to_vec()
        );
        assert_eq!(default_event_id(b"", u64::MAX), b"0".to_vec());
        assert_eq!(default_event_id(b"ev-7", 41), b"ev-7".to_vec());
        assert_eq!(default_event_id(b" ", 0), b" ".to_vec());
    }

    #[test]
    fn offsets_against_the_expected_one() {
        assert_eq!(check_offset(5, None), OffsetCheck::InOrder);
        assert_eq!(check_offset(0, Some(0)), OffsetCheck::InOrder);
        assert_eq!(check_offset(5, Some(5)), OffsetCheck::InOrder);
        assert_eq!(check_offset(4, Some(5)), OffsetCheck::AlreadyHandled);
        assert_eq!(check_offset(0, Some(u64::MAX)), OffsetCheck::AlreadyHandled);
        let gap = check_offset(9, Some(5));
        assert_eq!(gap, OffsetCheck::Gap { first: 5, last: 8 });
        assert_eq!(gap.lost(), 4);
        assert_eq!(check_offset(6, Some(5)).lost(), 1);
        assert_eq!(check_offset(u64::MAX, Some(0)).lost(), u64::MAX);
        assert_eq!(OffsetCheck::InOrder.lost(), 0);
        assert_eq!(OffsetCheck::AlreadyHandled.lost(), 0);
    }

    #[test]
    fn publish_headers_map_back() {
        assert_eq!(
            publish_headers(b"a/b", None, None, false),
            vec![("channel", b"a/b".to_vec())]
        );
        let h = publish_headers(b"a/b", Some(b"e1"), Some(b"t1"), true);
        assert_eq!(
            h,
            vec![
                ("channel", b"a/b".to_vec()),
                ("event-id", b"e1".to_vec()),
                ("event-type", b"t1".to_vec()),
                ("push-stream-op", b"delete".to_vec()),
            ]
        );
        let m = map(b"ignored", |n| {
            h.iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone())
        })
        .unwrap();
        assert_eq!(m.channels, vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(
            (m.event_id, m.event_type, m.delete),
            (b"e1".to_vec(), b"t1".to_vec(), true)
        );
        // Empty values are still sent (an empty event id header is kept as given).
        assert_eq!(
            publish_headers(b"c", Some(b""), None, false),
            vec![("channel", b"c".to_vec()), ("event-id", Vec::new())]
        );
    }

    fn stream_conf() -> Directives {
        Directives {
            url: Some("amqp://h/".into()),
            stream: Some("s".into()),
            ..Directives::default()
        }
    }

    fn exchange_conf() -> Directives {
        Directives {
            url: Some("amqp://h/".into()),
            exchange: Some(ExchangeSource::parse(&words("x topic")).unwrap()),
            ..Directives::default()
        }
    }

    #[test]
    fn directives_checked_together() {
        let err = |d: Directives| d.check().unwrap_err();
        assert_eq!(Directives::default().check(), Ok(()));
        assert_eq!(stream_conf().check(), Ok(()));
        assert_eq!(exchange_conf().check(), Ok(()));
        let both = Directives {
            exchange: exchange_conf().exchange,
            ..stream_conf()
        };
        assert_eq!(err(both), "push stream module: push_stream_amqp_stream and push_stream_amqp_exchange cannot be used together: choose one source.");
        let retention = Directives {
            stream_max_bytes: Some(1),
            ..exchange_conf()
        };
        assert_eq!(err(retention), "push stream module: push_stream_amqp_stream_max_age and push_stream_amqp_stream_max_bytes need push_stream_amqp_stream (they are a stream's retention).");
        let host = Directives {
            consumer_host: Some(true),
            ..exchange_conf()
        };
        assert_eq!(err(host), "push stream module: push_stream_amqp_consumer host needs push_stream_amqp_stream: with push_stream_amqp_exchange every worker consumes its own queue.");
        // consumer worker with an exchange is fine.
        let worker = Directives {
            consumer_host: Some(false),
            ..exchange_conf()
        };
        assert_eq!(worker.check(), Ok(()));
        let stray = Directives {
            prefetch: Some(10),
            ..Directives::default()
        };
        assert_eq!(err(stray), "push stream module: push_stream_amqp_* directives need push_stream_amqp_url and a source (push_stream_amqp_stream or push_stream_amqp_exchange).");
        let no_source = Directives {
            url: Some("amqp://h/".into()),
            ..Directives::default()
        };
        assert_eq!(err(no_source), "push stream module: push_stream_amqp_url needs a source: push_stream_amqp_stream or push_stream_amqp_exchange.");
        let no_url = Directives {
            url: None,
            ..stream_conf()
        };
        assert_eq!(
            err(no_url),
            "push stream module: push_stream_amqp_stream needs push_stream_amqp_url."
        );
        let no_url = Directives {
            url: None,
            ..exchange_conf()
        };
        assert_eq!(
            err(no_url),
            "push stream module: push_stream_amqp_exchange needs push_stream_amqp_url."
        );
    }

    #[test]
    fn settings_with_defaults() {
        assert_eq!(Directives::default().settings(), None);
        assert_eq!(
            Directives {
                url: None,
                ..stream_conf()
            }
            .settings(),
            None
        );
        let both = Directives {
            exchange: exchange_conf().exchange,
            ..stream_conf()
        };
        assert_eq!(both.settings(), None);
        let s = stream_conf().settings().unwrap();
        assert_eq!(
            s,
            Settings {
                url: "amqp://h/".into(),
                source: Source::Stream {
                    name: "s".into(),
                    max_age: None,
                    max_bytes: None
                },
                prefetch: 1000,
                confirm_timeout: std::time::Duration::from_millis(5000),
                consume: true,
            }
        );
        let d = Directives {
            stream_max_age: Some("7D".into()),
            stream_max_bytes: Some(1 << 30),
            prefetch: Some(100_000),
            confirm_timeout_ms: Some(250),
            ..stream_conf()
        };
        let s = d.settings().unwrap();
        assert_eq!(
            s.source,
            Source::Stream {
                name: "s".into(),
                max_age: Some("7D".into()),
                max_bytes: Some(1 << 30)
            }
        );
        assert_eq!(s.prefetch, u16::MAX);
        assert_eq!(s.confirm_timeout, std::time::Duration::from_millis(250));
        let x = exchange_conf().settings().unwrap();
        assert_eq!(
            x.source,
            Source::Exchange(exchange_conf().exchange.unwrap())
        );
    }

    #[test]
    fn directive_flags() {
        assert!(!Directives::default().publish());
        assert!(stream_conf().publish());
        assert!(exchange_conf().publish());
        assert!(!Directives {
            publish: Some(false),
            ..stream_conf()
        }
        .publish());
        assert!(!Directives {
            publish: Some(true),
            ..Directives::default()
        }
        .publish());
        assert!(Directives::default().store_messages());
        assert!(!Directives {
            store_messages: Some(false),
            ..Directives::default()
        }
        .store_messages());
        assert!(!Directives::default().consumer_host());
        assert!(Directives {
            consumer_host: Some(true),
            ..Directives::default()
        }
        .consumer_host());
    }

    #[test]
    fn directive_values() {
        let d = "push_stream_amqp_x";
        assert_eq!(parse_stream_name(d, "s"), Ok("s".to_string()));
        assert_eq!(parse_stream_name(d, &"q".repeat(255)), Ok("q".repeat(255)));
        let e = "push stream module: push_stream_amqp_x must be a queue name of 1 to 255 bytes.";
        assert_eq!(parse_stream_name(d, "").unwrap_err(), e);
        assert_eq!(parse_stream_name(d, &"q".repeat(256)).unwrap_err(), e);

        for ok in ["7D", "1Y", "12M", "30h", "5m", "10s", "0s"] {
            assert_eq!(parse_stream_max_age(d, ok), Ok(ok.to_string()));
        }
        for bad in ["", "D", "7", "7d", "7 D", "-7D", "7DD", "7é", "é"] {
            assert_eq!(
                parse_stream_max_age(d, bad).unwrap_err(),
                format!("push stream module: invalid value for push_stream_amqp_x: \"{bad}\" (RabbitMQ's x-max-age: a number and one of Y M D h m s, e.g. 7D)")
            );
        }

        assert_eq!(parse_stream_max_bytes(d, "1g"), Ok(1 << 30));
        assert_eq!(
            parse_stream_max_bytes(d, "0").unwrap_err(),
            "push stream module: push_stream_amqp_x cannot be zero."
        );
        assert_eq!(
            parse_stream_max_bytes(d, "1t").unwrap_err(),
            "push stream module: invalid value for push_stream_amqp_x: invalid size value \"1t\""
        );

        assert_eq!(parse_prefetch(d, "1"), Ok(1));
        assert_eq!(parse_prefetch(d, "65535"), Ok(65535));
        assert_eq!(
            parse_prefetch(d, "65536").unwrap_err(),
            "push stream module: push_stream_amqp_x cannot be more than 65535."
        );
        assert_eq!(
            parse_prefetch(d, "0").unwrap_err(),
            "push stream module: push_stream_amqp_x cannot be zero."
        );
        assert_eq!(
            parse_prefetch(d, "x").unwrap_err(),
            "push stream module: invalid value for push_stream_amqp_x: invalid number \"x\""
        );

        assert_eq!(parse_confirm_timeout_ms(d, "5s"), Ok(5000));
        assert_eq!(parse_confirm_timeout_ms(d, "250ms"), Ok(250));
        assert_eq!(
            parse_confirm_timeout_ms(d, "0").unwrap_err(),
            "push stream module: push_stream_amqp_x cannot be zero."
        );
        assert_eq!(
            parse_confirm_timeout_ms(d, "soon").unwrap_err(),
            "push stream module: invalid value for push_stream_amqp_x: invalid time value \"soon\""
        );

        assert_eq!(parse_consumer(d, "worker"), Ok(false));
        assert_eq!(parse_consumer(d, "host"), Ok(true));
        assert_eq!(
            parse_consumer(d, "Host").unwrap_err(),
            "push stream module: invalid value for push_stream_amqp_x: \"Host\" (worker: every worker consumes the stream; host: one worker consumes it for the host)"
        );

        assert_eq!(parse_url(d, "amqp://h/"), Ok("amqp://h/".to_string()));
        assert_eq!(
            parse_url(d, "http://u:pw@h").unwrap_err(),
            "push stream module: invalid push_stream_amqp_x: \"http://u:***@h\" is not an amqp:// or amqps:// URL"
        );

        assert_eq!(
            parse_exchange(d, &words("x fanout")).map(|x| x.kind),
            Ok(ExchangeKind::Fanout)
        );
        assert_eq!(
            parse_exchange(d, &words("x direct")).unwrap_err(),
            "push stream module: invalid push_stream_amqp_x: a direct exchange needs at least one binding key"
        );
    }
}
