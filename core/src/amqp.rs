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
    let path = header("channel")
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
        event_id: header("event-id").unwrap_or_default(),
        event_type: header("event-type").unwrap_or_default(),
        delete: header(OP_HEADER).is_some_and(|v| v.eq_ignore_ascii_case(b"delete")),
    })
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
}
