//! Channel path handling (docs/reference.md section 2.2): URL-unescaping of evaluated complex values,
//! splitting a `push_stream_channels_path` value into channels with their `.bN` backtrack,
//! reserved / wildcard id checks, and the channel-related refusals of section 2.12.

use crate::escape::json_escape_into;

/// Exact port of nginx's `ngx_unescape_uri(&dst, &src, len, NGX_UNESCAPE_URI)`: the bytes the C
/// function writes to `dst`.
///
/// * `%XX` with two hex digits (either case) becomes the byte `0xXX`.
/// * A literal `?` is copied and **stops** the decoding: everything after it is dropped. A decoded
///   `%3F` / `%3f` does the same (the `?` is written, then decoding stops). (`%3F` is the only way
///   to get a decoded `?`, and its second digit is a letter, which is the branch nginx checks.)
/// * `%` followed by a non-hex byte: the `%` is dropped and that byte is copied as is (even when it
///   is a `?` or another `%`; decoding continues).
/// * `%` + hex digit + non-hex byte: all three bytes are dropped.
/// * A truncated sequence at the end (`%` or `%X`) is dropped.
///
/// Use [`unescape_value`] for what the push-stream module does with a complex value; it adds
/// one more quirk on top of this function.
pub fn unescape_uri(input: &[u8]) -> Vec<u8> {
    unescape_uri_consumed(input).0
}

/// [`unescape_uri`] plus the number of input bytes consumed (the C `src` advance).
fn unescape_uri_consumed(input: &[u8]) -> (Vec<u8>, usize) {
    enum State {
        Usual,
        Quoted,
        QuotedSecond(u8),
    }
    let mut out = Vec::with_capacity(input.len());
    let mut state = State::Usual;
    for (i, &ch) in input.iter().enumerate() {
        match state {
            State::Usual => {
                if ch == b'?' {
                    out.push(ch);
                    return (out, i + 1);
                }
                if ch == b'%' {
                    state = State::Quoted;
                } else {
                    out.push(ch);
                }
            }
            State::Quoted => match hex_value(ch) {
                Some(v) => state = State::QuotedSecond(v),
                None => {
                    // invalid quoted character: '%' dropped, the byte itself kept
                    state = State::Usual;
                    out.push(ch);
                }
            },
            State::QuotedSecond(first) => {
                state = State::Usual;
                if let Some(v) = hex_value(ch) {
                    let decoded = (first << 4) | v;
                    out.push(decoded);
                    if decoded == b'?' && !ch.is_ascii_digit() {
                        return (out, i + 1);
                    }
                }
                // invalid second character: the whole sequence is dropped
            }
        }
    }
    (out, input.len())
}

fn hex_value(ch: u8) -> Option<u8> {
    match ch {
        b'0'..=b'9' => Some(ch - b'0'),
        _ => {
            let c = ch | 0x20;
            if (b'a'..=b'f').contains(&c) {
                Some(c - b'a' + 10)
            } else {
                None
            }
        }
    }
}

/// What the C module's `ngx_http_push_stream_unescape_uri` does to every evaluated complex value
/// (channel path, `$arg_…`, user agent, origins, time, tag, event id, JSONP callback).
///
/// It runs [`unescape_uri`] in place and only shortens the value when the output is shorter
/// than the input consumed (`dst < src`). **[quirk, copied]** So when nothing was decoded before a
/// `?`, the `?` does not truncate: `a?b` stays `a?b`, while `a%20b?c` becomes `a b?`.
pub fn unescape_value(input: &[u8]) -> Vec<u8> {
    let (out, consumed) = unescape_uri_consumed(input);
    if out.len() < consumed {
        out
    } else {
        // dst == src: the bytes were rewritten in place unchanged and the length is kept.
        input.to_vec()
    }
}

/// One channel named in a channel path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRef {
    /// The channel id (bytes before the separator match; may be empty).
    pub id: Vec<u8>,
    /// The `.bN` backtrack count (0 when absent), saturated at `u32::MAX`.
    pub backtrack: u32,
}

/// Splits an (already unescaped) channel path into channels, as section 2.2 describes.
///
/// Repeatedly finds the leftmost match of `((\.b([0-9]+))?(/|$))` in the rest of the value: the
/// id is the text before the match, the backtrack is the `N` of `.bN` (0 when absent), and
/// parsing continues after the match until the rest is empty.
///
/// * `ch1/ch2.b5/ch3` → `ch1`, `ch2` (backtrack 5), `ch3`.
/// * `room.b18.beautiful.b3` → one channel `room.b18.beautiful`, backtrack 3.
/// * `a.b/c` → `a.b`, `c`; a trailing `/` adds nothing; `a//b` → `a`, `""`, `b`.
/// * A leading `/` yields an empty id first (kept here; callers decide what to do with it).
/// * An empty path gives no channel.
///
/// `$` is taken as the true end of the value. (PCRE's `$` also matches before a final `\n`; the
/// C loop then makes no progress on a value ending in `%0A`. That is not copied.)
pub fn parse_channels(path: &[u8]) -> Vec<ChannelRef> {
    let mut out = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        let (id_end, match_end, backtrack) = find_separator(rest);
        out.push(ChannelRef {
            id: rest[..id_end].to_vec(),
            backtrack,
        });
        rest = &rest[match_end..];
    }
    out
}

/// Leftmost match of `((\.b([0-9]+))?(/|$))` in `s`: (match start, match end, backtrack).
fn find_separator(s: &[u8]) -> (usize, usize, u32) {
    for i in 0..=s.len() {
        // Greedy optional group first: `.b` + digits, then `/` or end.
        if s[i..].starts_with(b".b") {
            let digits_start = i + 2;
            let digits_end = digits_start
                + s[digits_start..]
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .count();
            if digits_end > digits_start {
                let backtrack = parse_u32_saturating(&s[digits_start..digits_end]);
                if digits_end == s.len() {
                    return (i, digits_end, backtrack);
                }
                if s[digits_end] == b'/' {
                    return (i, digits_end + 1, backtrack);
                }
            }
        }
        // Group absent: `/` or end at this position.
        if i == s.len() {
            return (i, i, 0);
        }
        if s[i] == b'/' {
            return (i, i + 1, 0);
        }
    }
    unreachable!("`$` always matches at the end")
}

/// Merges repeated channels of one request: each distinct id is kept once, at the position of
/// its first occurrence, and its backtrack is the largest `.bN` among its occurrences (so
/// `a.b2/b/a.b5` gives `a` with backtrack 5, then `b`). Ids are compared byte for byte.
///
/// O(n) expected time (a hash map of the ids seen), so long paths cost nothing quadratic.
pub fn dedupe(channels: Vec<ChannelRef>) -> Vec<ChannelRef> {
    use std::collections::hash_map::{Entry, HashMap};

    if channels.len() < 2 {
        return channels;
    }
    // For each position: `Some(backtrack)` when it is the first occurrence of its id (the
    // largest backtrack of that id), `None` for a repeat.
    let mut keep: Vec<Option<u32>> = Vec::with_capacity(channels.len());
    let mut first: HashMap<&[u8], usize> = HashMap::with_capacity(channels.len());
    for (i, c) in channels.iter().enumerate() {
        match first.entry(&c.id[..]) {
            Entry::Occupied(e) => {
                let bt = keep[*e.get()].get_or_insert(0);
                *bt = (*bt).max(c.backtrack);
                keep.push(None);
            }
            Entry::Vacant(e) => {
                e.insert(i);
                keep.push(Some(c.backtrack));
            }
        }
    }
    drop(first);
    channels
        .into_iter()
        .zip(keep)
        .filter_map(|(c, bt)| bt.map(|backtrack| ChannelRef { backtrack, ..c }))
        .collect()
}

fn parse_u32_saturating(digits: &[u8]) -> u32 {
    let mut v: u32 = 0;
    for &d in digits {
        v = v.saturating_mul(10).saturating_add(u32::from(d - b'0'));
    }
    v
}

/// `ALL` or any id containing `*`: reserved for the statistics location; publisher and subscriber
/// refuse them with [`ChannelError::NotAuthorized`].
pub fn is_reserved_id(id: &[u8]) -> bool {
    id == b"ALL" || id.contains(&b'*')
}

/// Whether `id` is a wildcard channel: it starts with the configured, non-empty
/// `push_stream_wildcard_channel_prefix`.
pub fn is_wildcard(id: &[u8], prefix: Option<&[u8]>) -> bool {
    match prefix {
        Some(p) if !p.is_empty() => id.starts_with(p),
        _ => false,
    }
}

/// For the statistics location: the prefix of an id containing `*` (the text before the first
/// `*`; `*` alone gives the empty prefix, meaning every channel). `None` when there is no `*`.
pub fn stats_prefix(id: &[u8]) -> Option<&[u8]> {
    id.iter().position(|&b| b == b'*').map(|p| &id[..p])
}

/// The refusals of section 2.12 that concern channels, with their status and the exact
/// `X-Nginx-PushStream-Explain` text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelError {
    /// No channel in the path (publisher, subscriber, WebSocket): 400.
    NoChannel,
    /// Channel id longer than `push_stream_max_channel_id_length`: 400.
    TooLong,
    /// `ALL` or an id with `*` on publisher/subscriber: 403.
    NotAuthorized,
    /// `push_stream_authorized_channels_only` and the channel is missing or has no message: 403.
    CannotCreate,
    /// Too many wildcard channels in one subscribe request, or only wildcard ones: 403.
    TooManyWildcard,
    /// `push_stream_max_subscribers_per_channel` reached: 403.
    SubscribersLimit,
    /// `push_stream_max_number_of_channels` / `..._wildcard_channels` reached: 403.
    ChannelsLimit,
    /// Publish or delete on the events channel: 403.
    EventsChannelReadOnly,
    /// Subscribing to the events channel without `allow_connections_to_events_channel`: 403.
    EventsChannelForbidden,
    /// GET/DELETE on a missing channel, stats for a missing id: 404, no explain.
    NotFound,
    /// More channels in one request than `push_stream_max_channels_per_request`: 400. (Not in
    /// the C module.)
    TooManyChannels,
    /// Shared memory exhausted while creating the channel: 500. The subscriber path sends an
    /// empty explain header; [`explain`](Self::explain) is `""`.
    OutOfMemory,
    /// The worker's own memory could not hold what the request needs copied out of the store
    /// (its old messages): 500. (Not in the C module.)
    HeapExhausted,
}

impl ChannelError {
    /// HTTP status code.
    pub fn status(self) -> u16 {
        match self {
            ChannelError::NoChannel | ChannelError::TooLong | ChannelError::TooManyChannels => 400,
            ChannelError::NotAuthorized
            | ChannelError::CannotCreate
            | ChannelError::TooManyWildcard
            | ChannelError::SubscribersLimit
            | ChannelError::ChannelsLimit
            | ChannelError::EventsChannelReadOnly
            | ChannelError::EventsChannelForbidden => 403,
            ChannelError::NotFound => 404,
            ChannelError::OutOfMemory | ChannelError::HeapExhausted => 500,
        }
    }

    /// The exact `X-Nginx-PushStream-Explain` value; `""` when there is none
    /// ([`NotFound`](Self::NotFound), [`OutOfMemory`](Self::OutOfMemory)).
    pub fn explain(self) -> &'static str {
        match self {
            ChannelError::NoChannel => "No channel id provided.",
            ChannelError::TooLong => "Channel id is too large.",
            ChannelError::NotAuthorized => "Channel id not authorized for this method.",
            ChannelError::CannotCreate => "Subscriber could not create channels.",
            ChannelError::TooManyWildcard => "Subscribed too much wildcard channels.",
            ChannelError::SubscribersLimit => "Subscribers limit per channel has been exceeded.",
            ChannelError::ChannelsLimit => "Number of channels were exceeded.",
            ChannelError::EventsChannelReadOnly => {
                "Only internal routines can change events channel."
            }
            ChannelError::EventsChannelForbidden => {
                "Subscription to events channel is not allowed."
            }
            ChannelError::TooManyChannels => "Too many channels in one request.",
            ChannelError::HeapExhausted => "Worker memory exhausted.",
            ChannelError::NotFound | ChannelError::OutOfMemory => "",
        }
    }

    /// Payload of the WebSocket close frame sent when validation fails after the handshake
    /// (section 2.7): close code 1008 (`\x03\xF0`) then
    /// `{"http_status": 403, "explain":"Subscriber could not create channels."}`.
    pub fn websocket_close_payload(self) -> Vec<u8> {
        let mut out = vec![0x03, 0xF0];
        out.extend_from_slice(
            format!("{{\"http_status\": {}, \"explain\":\"", self.status()).as_bytes(),
        );
        json_escape_into(&mut out, self.explain().as_bytes());
        out.extend_from_slice(b"\"}");
        out
    }
}

impl std::fmt::Display for ChannelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let explain = self.explain();
        if explain.is_empty() {
            write!(f, "HTTP {}", self.status())
        } else {
            write!(f, "HTTP {}: {}", self.status(), explain)
        }
    }
}

impl std::error::Error for ChannelError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(id: &str, backtrack: u32) -> ChannelRef {
        ChannelRef {
            id: id.as_bytes().to_vec(),
            backtrack,
        }
    }

    #[test]
    fn unescape_decodes_hex_in_both_cases() {
        assert_eq!(unescape_uri(b"a%20b%2fc%2Fd"), b"a b/c/d".to_vec());
        assert_eq!(unescape_uri(b"%41%6a%6A"), b"Ajj".to_vec());
        assert_eq!(unescape_uri(b"%00%ff"), vec![0u8, 0xff]);
        assert_eq!(unescape_uri(b"plain"), b"plain".to_vec());
        assert_eq!(unescape_uri(b""), Vec::<u8>::new());
    }

    #[test]
    fn unescape_stops_at_question_mark() {
        assert_eq!(unescape_uri(b"ab?c%20d"), b"ab?".to_vec());
        assert_eq!(unescape_uri(b"ab%3Fcd"), b"ab?".to_vec());
        assert_eq!(unescape_uri(b"ab%3fcd"), b"ab?".to_vec());
    }

    #[test]
    fn unescape_invalid_sequences() {
        // '%' + non-hex: '%' dropped, byte kept
        assert_eq!(unescape_uri(b"a%zb"), b"azb".to_vec());
        assert_eq!(unescape_uri(b"a%%41"), b"a%41".to_vec());
        // the kept byte is not special even if it is '?'
        assert_eq!(unescape_uri(b"a%?b"), b"a?b".to_vec());
        // '%' + hex + non-hex: all dropped
        assert_eq!(unescape_uri(b"a%4gb"), b"ab".to_vec());
        // truncated at end
        assert_eq!(unescape_uri(b"ab%"), b"ab".to_vec());
        assert_eq!(unescape_uri(b"ab%4"), b"ab".to_vec());
    }

    #[test]
    fn unescape_value_keeps_length_when_nothing_shrank() {
        assert_eq!(unescape_value(b"a?b"), b"a?b".to_vec());
        assert_eq!(unescape_value(b"a%20b?c"), b"a b?".to_vec());
        assert_eq!(unescape_value(b"ch%2Fch2"), b"ch/ch2".to_vec());
        assert_eq!(unescape_value(b"plain"), b"plain".to_vec());
        assert_eq!(unescape_value(b"ab%"), b"ab".to_vec());
        assert_eq!(unescape_value(b""), Vec::<u8>::new());
    }

    #[test]
    fn parse_single_and_multiple() {
        assert_eq!(parse_channels(b"ch1"), vec![ch("ch1", 0)]);
        assert_eq!(
            parse_channels(b"ch1/ch2.b5/ch3"),
            vec![ch("ch1", 0), ch("ch2", 5), ch("ch3", 0)]
        );
        assert_eq!(parse_channels(b"ch.b3"), vec![ch("ch", 3)]);
        assert_eq!(parse_channels(b""), vec![]);
    }

    #[test]
    fn parse_backtrack_only_at_separator() {
        assert_eq!(
            parse_channels(b"room.b18.beautiful.b3"),
            vec![ch("room.b18.beautiful", 3)]
        );
        assert_eq!(parse_channels(b"a.b/c"), vec![ch("a.b", 0), ch("c", 0)]);
        assert_eq!(parse_channels(b"a.bx"), vec![ch("a.bx", 0)]);
        assert_eq!(parse_channels(b"a.b12x"), vec![ch("a.b12x", 0)]);
        assert_eq!(parse_channels(b"a.B2"), vec![ch("a.B2", 0)]);
        assert_eq!(parse_channels(b".b2"), vec![ch("", 2)]);
        assert_eq!(parse_channels(b"a.b0"), vec![ch("a", 0)]);
    }

    #[test]
    fn parse_slashes() {
        assert_eq!(parse_channels(b"ch1/"), vec![ch("ch1", 0)]);
        assert_eq!(parse_channels(b"ch1.b2/"), vec![ch("ch1", 2)]);
        assert_eq!(
            parse_channels(b"/chA/chB"),
            vec![ch("", 0), ch("chA", 0), ch("chB", 0)]
        );
        assert_eq!(
            parse_channels(b"//a"),
            vec![ch("", 0), ch("", 0), ch("a", 0)]
        );
        assert_eq!(
            parse_channels(b"a//b"),
            vec![ch("a", 0), ch("", 0), ch("b", 0)]
        );
        assert_eq!(parse_channels(b"/"), vec![ch("", 0)]);
    }

    #[test]
    fn parse_backtrack_saturates() {
        assert_eq!(
            parse_channels(b"a.b99999999999999999999"),
            vec![ch("a", u32::MAX)]
        );
        assert_eq!(parse_channels(b"a.b4294967295"), vec![ch("a", u32::MAX)]);
        assert_eq!(parse_channels(b"a.b4294967294"), vec![ch("a", 4294967294)]);
    }

    #[test]
    fn parse_keeps_newline_bytes() {
        assert_eq!(parse_channels(b"a\n"), vec![ch("a\n", 0)]);
    }

    #[test]
    fn reserved_and_wildcard() {
        assert!(is_reserved_id(b"ALL"));
        assert!(is_reserved_id(b"*"));
        assert!(is_reserved_id(b"ab*c"));
        assert!(!is_reserved_id(b"all"));
        assert!(!is_reserved_id(b"ALLx"));
        assert!(!is_reserved_id(b""));

        assert!(is_wildcard(b"bd_x", Some(b"bd_")));
        assert!(is_wildcard(b"bd_", Some(b"bd_")));
        assert!(!is_wildcard(b"xbd_", Some(b"bd_")));
        assert!(!is_wildcard(b"bd_x", Some(b"")));
        assert!(!is_wildcard(b"bd_x", None));

        assert_eq!(stats_prefix(b"ab*"), Some(&b"ab"[..]));
        assert_eq!(stats_prefix(b"*"), Some(&b""[..]));
        assert_eq!(stats_prefix(b"a*b*"), Some(&b"a"[..]));
        assert_eq!(stats_prefix(b"ab"), None);
    }

    #[test]
    fn errors_status_and_explain() {
        let cases = [
            (ChannelError::NoChannel, 400, "No channel id provided."),
            (ChannelError::TooLong, 400, "Channel id is too large."),
            (
                ChannelError::NotAuthorized,
                403,
                "Channel id not authorized for this method.",
            ),
            (
                ChannelError::CannotCreate,
                403,
                "Subscriber could not create channels.",
            ),
            (
                ChannelError::TooManyWildcard,
                403,
                "Subscribed too much wildcard channels.",
            ),
            (
                ChannelError::SubscribersLimit,
                403,
                "Subscribers limit per channel has been exceeded.",
            ),
            (
                ChannelError::ChannelsLimit,
                403,
                "Number of channels were exceeded.",
            ),
            (
                ChannelError::EventsChannelReadOnly,
                403,
                "Only internal routines can change events channel.",
            ),
            (
                ChannelError::EventsChannelForbidden,
                403,
                "Subscription to events channel is not allowed.",
            ),
            (
                ChannelError::TooManyChannels,
                400,
                "Too many channels in one request.",
            ),
            (ChannelError::NotFound, 404, ""),
            (ChannelError::OutOfMemory, 500, ""),
            (ChannelError::HeapExhausted, 500, "Worker memory exhausted."),
        ];
        for (e, status, explain) in cases {
            assert_eq!(e.status(), status, "{e:?}");
            assert_eq!(e.explain(), explain, "{e:?}");
        }
        assert_eq!(
            ChannelError::TooLong.to_string(),
            "HTTP 400: Channel id is too large."
        );
        assert_eq!(ChannelError::NotFound.to_string(), "HTTP 404");
    }

    #[test]
    fn dedupe_keeps_first_positions_and_the_largest_backtrack() {
        assert_eq!(dedupe(vec![]), vec![]);
        assert_eq!(dedupe(vec![ch("a", 3)]), vec![ch("a", 3)]);
        assert_eq!(
            dedupe(vec![
                ch("a", 2),
                ch("b", 0),
                ch("a", 5),
                ch("c", 1),
                ch("b", 0)
            ]),
            vec![ch("a", 5), ch("b", 0), ch("c", 1)]
        );
        // A smaller later backtrack does not lower the first one.
        assert_eq!(
            dedupe(vec![ch("a", 9), ch("a", 1), ch("a", 0)]),
            vec![ch("a", 9)]
        );
        // Byte-exact ids; the empty id is an id like any other.
        assert_eq!(
            dedupe(vec![
                ch("A", 0),
                ch("a", 1),
                ch("", 2),
                ch("", 4),
                ch("A", 7)
            ]),
            vec![ch("A", 7), ch("a", 1), ch("", 4)]
        );
        // Nothing repeated: unchanged.
        let distinct = parse_channels(b"x/y.b2/z.b4294967295");
        assert_eq!(dedupe(distinct.clone()), distinct);
        // From a path.
        assert_eq!(
            dedupe(parse_channels(b"room.b2/news/room.b10/room")),
            vec![ch("room", 10), ch("news", 0)]
        );
    }

    #[test]
    fn dedupe_of_long_lists_is_not_quadratic() {
        // 4 000 distinct ids, then every one again with a larger backtrack.
        let n = 4_000u32;
        let ids: Vec<ChannelRef> = (0..n).map(|i| ch(&format!("c{i}"), i)).collect();
        let mut input = ids.clone();
        input.extend((0..n).rev().map(|i| ch(&format!("c{i}"), i + 1)));
        let out = dedupe(input);
        assert_eq!(out.len(), n as usize);
        for (i, c) in out.iter().enumerate() {
            assert_eq!(c.id, format!("c{i}").into_bytes());
            assert_eq!(c.backtrack, i as u32 + 1);
        }
        // 4 000 copies of one id.
        let same = vec![ch("same", 1); 4_000];
        assert_eq!(dedupe(same), vec![ch("same", 1)]);
    }

    #[test]
    fn websocket_close_payload_bytes() {
        let mut expected = vec![0x03u8, 0xF0];
        expected.extend_from_slice(
            b"{\"http_status\": 403, \"explain\":\"Subscriber could not create channels.\"}",
        );
        assert_eq!(
            ChannelError::CannotCreate.websocket_close_payload(),
            expected
        );
    }
}
