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
}

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
    })
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
