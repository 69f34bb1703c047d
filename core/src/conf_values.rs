//! Parsers for directive values (docs/reference.md section 1) and the padding helpers of section 2.11.
//!
//! Every parser returns `Err(String)` with a message suitable for the configuration error log.
//! Where the C module has an exact message (modes, padding, `cannot be zero.`), it is reproduced
//! verbatim, because the spec suite greps for it.

/// nginx's `NGX_MAX_INT_T_VALUE` on 64-bit platforms: the largest value `ngx_atoi` accepts.
const MAX_INT_T: u64 = i64::MAX as u64;
/// nginx's `NGX_MAX_INT32_VALUE`: the largest value `ngx_parse_time` returns.
const MAX_INT32: u64 = i32::MAX as u64;

/// `ngx_atoi`: non-empty, ASCII digits only, at most `NGX_MAX_INT_T_VALUE`.
fn atoi(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        if v > MAX_INT_T {
            return None;
        }
    }
    Some(v)
}

/// Parses a size like nginx's `ngx_parse_size`: plain bytes, or a number with a `k`/`K` (KiB),
/// `m`/`M` (MiB) or `g`/`G` (GiB) suffix. No spaces, no sign, no fraction.
///
/// Deviation: stock nginx's `ngx_parse_size` only knows `k` and `m` (`g` exists only in
/// `ngx_parse_offset`); `g`/`G` is accepted here as a harmless extension. As in nginx, the
/// result must fit in a signed 64-bit integer.
pub fn parse_size(value: &str) -> Result<u64, String> {
    let bytes = value.as_bytes();
    let err = || format!("invalid size value \"{value}\"");
    let (&last, _) = bytes.split_last().ok_or_else(err)?;
    let (digits, scale): (&[u8], u64) = match last {
        b'k' | b'K' => (&bytes[..bytes.len() - 1], 1 << 10),
        b'm' | b'M' => (&bytes[..bytes.len() - 1], 1 << 20),
        b'g' | b'G' => (&bytes[..bytes.len() - 1], 1 << 30),
        _ => (bytes, 1),
    };
    let n = atoi(digits).ok_or_else(err)?;
    if n > MAX_INT_T / scale {
        return Err(err());
    }
    Ok(n * scale)
}

/// `ngx_parse_time` port. `is_sec` selects the seconds variant.
fn parse_time(value: &str, is_sec: bool) -> Option<u64> {
    #[derive(PartialEq, PartialOrd, Clone, Copy)]
    enum Step {
        Start,
        Year,
        Month,
        Week,
        Day,
        Hour,
        Min,
        Sec,
        Msec,
        Last,
    }
    let s = value.as_bytes();
    let mut valid = false;
    let mut v: u64 = 0;
    let mut total: u64 = 0;
    let mut step = if is_sec { Step::Start } else { Step::Month };
    let mut p = 0;

    while p < s.len() {
        let c = s[p];
        p += 1;
        if c.is_ascii_digit() {
            // C does not check this multiplication; overflow is an error here.
            v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
            valid = true;
            continue;
        }
        let (new_step, mut max, mut scale): (Step, u64, u64) = match c {
            b'y' => {
                if step > Step::Start {
                    return None;
                }
                (
                    Step::Year,
                    MAX_INT32 / (60 * 60 * 24 * 365),
                    60 * 60 * 24 * 365,
                )
            }
            b'M' => {
                if step >= Step::Month {
                    return None;
                }
                (
                    Step::Month,
                    MAX_INT32 / (60 * 60 * 24 * 30),
                    60 * 60 * 24 * 30,
                )
            }
            b'w' => {
                if step >= Step::Week {
                    return None;
                }
                (Step::Week, MAX_INT32 / (60 * 60 * 24 * 7), 60 * 60 * 24 * 7)
            }
            b'd' => {
                if step >= Step::Day {
                    return None;
                }
                (Step::Day, MAX_INT32 / (60 * 60 * 24), 60 * 60 * 24)
            }
            b'h' => {
                if step >= Step::Hour {
                    return None;
                }
                (Step::Hour, MAX_INT32 / (60 * 60), 60 * 60)
            }
            b'm' => {
                if p < s.len() && s[p] == b's' {
                    if is_sec || step >= Step::Msec {
                        return None;
                    }
                    p += 1;
                    (Step::Msec, MAX_INT32, 1)
                } else {
                    if step >= Step::Min {
                        return None;
                    }
                    (Step::Min, MAX_INT32 / 60, 60)
                }
            }
            b's' => {
                if step >= Step::Sec {
                    return None;
                }
                (Step::Sec, MAX_INT32, 1)
            }
            b' ' => {
                if step >= Step::Sec {
                    return None;
                }
                (Step::Last, MAX_INT32, 1)
            }
            _ => return None,
        };
        step = new_step;
        if step != Step::Msec && !is_sec {
            scale *= 1000;
            max /= 1000;
        }
        if v > max {
            return None;
        }
        total += v * scale;
        if total > MAX_INT32 {
            return None;
        }
        v = 0;
        while p < s.len() && s[p] == b' ' {
            p += 1;
        }
    }
    if !valid {
        return None;
    }
    let unit = if is_sec { 1 } else { 1000 };
    let total = total.checked_add(v.checked_mul(unit)?)?;
    // C does not re-check the trailing plain number; a value that large is an error here.
    if total > MAX_INT32 {
        return None;
    }
    Some(total)
}

/// Parses a time in milliseconds like `ngx_parse_time(line, 0)` (`ngx_conf_set_msec_slot`).
///
/// Units, largest first and each at most once: `w`, `d`, `h`, `m`, `s`, `ms`, optionally
/// separated by spaces (`1h 30m`, `1m30s`, `1s 500ms`). A plain number is seconds (`30` =
/// 30000 ms). As in nginx, `y` and `M` are refused in the millisecond variant, and the result
/// must not exceed `2^31 - 1` ms.
pub fn parse_time_ms(value: &str) -> Result<u64, String> {
    parse_time(value, false).ok_or_else(|| format!("invalid time value \"{value}\""))
}

/// Parses a time in seconds like `ngx_parse_time(line, 1)` (`ngx_conf_set_sec_slot`).
///
/// Units, largest first and each at most once: `y` (365 days), `M` (30 days), `w`, `d`, `h`,
/// `m`, `s`; `ms` is refused. A plain number is seconds. The result must not exceed `2^31 - 1`.
pub fn parse_time_s(value: &str) -> Result<u64, String> {
    parse_time(value, true).ok_or_else(|| format!("invalid time value \"{value}\""))
}

/// Parses `on` / `off` case-insensitively, like `ngx_conf_set_flag_slot`.
pub fn parse_flag(value: &str) -> Result<bool, String> {
    if value.eq_ignore_ascii_case("on") {
        Ok(true)
    } else if value.eq_ignore_ascii_case("off") {
        Ok(false)
    } else {
        Err(format!(
            "invalid value \"{value}\", it must be \"on\" or \"off\""
        ))
    }
}

/// Parses a non-negative decimal number like `ngx_conf_set_num_slot` (`ngx_atoi`): digits only,
/// no sign or spaces, at most `2^63 - 1`.
pub fn parse_number(value: &str) -> Result<u64, String> {
    atoi(value.as_bytes()).ok_or_else(|| format!("invalid number \"{value}\""))
}

/// `push_stream_publisher [normal|admin]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PublisherMode {
    /// GET, POST, PUT.
    #[default]
    Normal,
    /// Also DELETE.
    Admin,
}

impl PublisherMode {
    /// Parses the directive argument case-insensitively. Use [`Default`] when the directive has
    /// no argument. Error: the exact C message.
    pub fn parse(value: &str) -> Result<Self, String> {
        if value.eq_ignore_ascii_case("normal") {
            Ok(PublisherMode::Normal)
        } else if value.eq_ignore_ascii_case("admin") {
            Ok(PublisherMode::Admin)
        } else {
            Err(format!(
                "push stream module: invalid push_stream_publisher mode value: {value}, accepted values (normal, admin)"
            ))
        }
    }
}

/// `push_stream_subscriber [streaming|polling|long-polling|eventsource|websocket]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SubscriberMode {
    /// Chunked stream (default).
    #[default]
    Streaming,
    /// One request, answered at once.
    Polling,
    /// One request, answered on the first message or timeout.
    LongPolling,
    /// `text/event-stream`.
    EventSource,
    /// WebSocket.
    WebSocket,
}

impl SubscriberMode {
    /// Parses the directive argument case-insensitively. Use [`Default`] when the directive has
    /// no argument. Error: the exact C message.
    pub fn parse(value: &str) -> Result<Self, String> {
        const MODES: [(&str, SubscriberMode); 5] = [
            ("streaming", SubscriberMode::Streaming),
            ("polling", SubscriberMode::Polling),
            ("long-polling", SubscriberMode::LongPolling),
            ("eventsource", SubscriberMode::EventSource),
            ("websocket", SubscriberMode::WebSocket),
        ];
        MODES
            .iter()
            .find(|(name, _)| value.eq_ignore_ascii_case(name))
            .map(|&(_, mode)| mode)
            .ok_or_else(|| {
                format!(
                    "push stream module: invalid push_stream_subscriber mode value: {value}, accepted values (streaming, polling, long-polling, eventsource, websocket)"
                )
            })
    }
}

/// One `regex,header_min,message_min` group of `push_stream_padding_by_user_agent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaddingRule {
    /// PCRE-style, case-sensitive user-agent pattern (compiled by the caller).
    pub regex: String,
    /// Minimum size of the header template chunk.
    pub header_min: usize,
    /// Minimum size of each message chunk.
    pub message_min: usize,
}

/// Parses `regex,H,M[:regex,H,M…]` exactly as the C module does.
///
/// The C module runs the unanchored PCRE `([^:]+),(\d+),(\d+)` on the rest of the value: no
/// match → `push stream module: padding pattern not match the value <rest>`; a match that does
/// not start at the beginning of the rest → `push stream module: error applying padding pattern
/// to <rest>`. After a match it skips the match plus one byte (the `:` separator, or whatever
/// byte follows) and repeats while bytes remain. `[^:]+` is greedy, so `a,b,1,2,3` is the regex
/// `a,b,1` with H=2, M=3.
///
/// Deviations: H or M above `2^63 - 1` is an error here (the C module stores garbage); when
/// the byte after a match starts a multi-byte UTF-8 character, that whole character is skipped
/// (the C module skips one byte and would start the next regex with the character's tail).
pub fn parse_padding(value: &str) -> Result<Vec<PaddingRule>, String> {
    let bytes = value.as_bytes();
    let mut rules = Vec::new();
    let mut pos = 0;
    loop {
        let rest = &bytes[pos..];
        let rest_str = &value[pos..];
        match padding_match_at_start(rest) {
            Some((k, h_end, m_end)) => {
                let h = parse_padding_number(&rest[k + 1..h_end], rest_str)?;
                let m = parse_padding_number(&rest[h_end + 1..m_end], rest_str)?;
                rules.push(PaddingRule {
                    // group 1 ends right before an ASCII ',', so this is a char boundary
                    regex: rest_str[..k].to_string(),
                    header_min: h,
                    message_min: m,
                });
                pos += m_end + 1;
                // The byte skipped after a match may start a multi-byte character: skip the
                // whole character so the rest stays a valid `str` (found by fuzzing: slicing
                // there panicked).
                while pos < bytes.len() && !value.is_char_boundary(pos) {
                    pos += 1;
                }
                if pos >= bytes.len() {
                    return Ok(rules);
                }
            }
            None => {
                return Err(if padding_matches_anywhere(rest) {
                    format!("push stream module: error applying padding pattern to {rest_str}")
                } else {
                    format!("push stream module: padding pattern not match the value {rest_str}")
                });
            }
        }
    }
}

fn parse_padding_number(digits: &[u8], rest: &str) -> Result<usize, String> {
    atoi(digits)
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| format!("push stream module: error applying padding pattern to {rest}"))
}

/// Does `,\d+,\d+` start at `s[k..]`? Returns (end of H digits, end of M digits).
fn tail_at(s: &[u8], k: usize) -> Option<(usize, usize)> {
    if s.get(k) != Some(&b',') {
        return None;
    }
    let digits = |from: usize| from + s[from..].iter().take_while(|b| b.is_ascii_digit()).count();
    let h_end = digits(k + 1);
    if h_end == k + 1 || s.get(h_end) != Some(&b',') {
        return None;
    }
    let m_end = digits(h_end + 1);
    if m_end == h_end + 1 {
        return None;
    }
    Some((h_end, m_end))
}

/// Match of `([^:]+),(\d+),(\d+)` anchored at 0 with greedy group 1:
/// (end of group 1, end of H, end of M = end of match).
fn padding_match_at_start(s: &[u8]) -> Option<(usize, usize, usize)> {
    let limit = s.iter().position(|&b| b == b':').unwrap_or(s.len());
    (1..=limit)
        .rev()
        .find_map(|k| tail_at(s, k).map(|(h, m)| (k, h, m)))
}

/// Whether the unanchored pattern matches anywhere in `s`.
fn padding_matches_anywhere(s: &[u8]) -> bool {
    (1..s.len()).any(|k| s[k - 1] != b':' && tail_at(s, k).is_some())
}

/// Padding length for a shortfall `d` (section 2.11): `min(P, (⌊d/100⌋ + 1) × 100)` when
/// `d > 0`, else 0. `max_padding` is P, the largest H or M in the whole configuration.
pub fn padding_len(shortfall: i64, max_padding: usize) -> usize {
    if shortfall <= 0 {
        return 0;
    }
    let d = shortfall as u64;
    let rounded = (d / 100).saturating_add(1).saturating_mul(100);
    usize::try_from(rounded).map_or(max_padding, |r| r.min(max_padding))
}

/// Padding bytes of length `len` (section 2.11).
///
/// * streaming: `\r\n` repeated; an odd length starts with a lone `\n` (it is the tail of the
///   `\r\n…` run).
/// * EventSource: `len - 1` colons and a final `\n` (an SSE comment line).
pub fn padding_bytes(len: usize, eventsource: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    if len == 0 {
        return out;
    }
    if eventsource {
        out.resize(len - 1, b':');
        out.push(b'\n');
    } else {
        if len % 2 == 1 {
            out.push(b'\n');
        }
        while out.len() < len {
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

/// Every directive that rejects a zero value, in the C module's spelling.
pub const ZERO_REJECTING_DIRECTIVES: [&str; 10] = [
    "push_stream_max_number_of_channels",
    "push_stream_max_number_of_wildcard_channels",
    "push_stream_message_ttl",
    "push_stream_max_subscribers_per_channel",
    "push_stream_max_messages_stored_per_channel",
    "push_stream_max_channel_id_length",
    "push_stream_ping_message_interval",
    "push_stream_subscriber_connection_ttl",
    "push_stream_longpolling_connection_ttl",
    "push_stream_wildcard_channel_max_qtd",
];

/// `push stream module: push_stream_max_number_of_channels cannot be zero.`
pub const ZERO_MAX_NUMBER_OF_CHANNELS: &str =
    "push stream module: push_stream_max_number_of_channels cannot be zero.";
/// `push stream module: push_stream_max_number_of_wildcard_channels cannot be zero.`
pub const ZERO_MAX_NUMBER_OF_WILDCARD_CHANNELS: &str =
    "push stream module: push_stream_max_number_of_wildcard_channels cannot be zero.";
/// `push stream module: push_stream_message_ttl cannot be zero.`
pub const ZERO_MESSAGE_TTL: &str = "push stream module: push_stream_message_ttl cannot be zero.";
/// `push stream module: push_stream_max_subscribers_per_channel cannot be zero.`
pub const ZERO_MAX_SUBSCRIBERS_PER_CHANNEL: &str =
    "push stream module: push_stream_max_subscribers_per_channel cannot be zero.";
/// `push stream module: push_stream_max_messages_stored_per_channel cannot be zero.`
pub const ZERO_MAX_MESSAGES_STORED_PER_CHANNEL: &str =
    "push stream module: push_stream_max_messages_stored_per_channel cannot be zero.";
/// `push stream module: push_stream_max_channel_id_length cannot be zero.`
pub const ZERO_MAX_CHANNEL_ID_LENGTH: &str =
    "push stream module: push_stream_max_channel_id_length cannot be zero.";
/// `push stream module: push_stream_ping_message_interval cannot be zero.`
pub const ZERO_PING_MESSAGE_INTERVAL: &str =
    "push stream module: push_stream_ping_message_interval cannot be zero.";
/// `push stream module: push_stream_subscriber_connection_ttl cannot be zero.`
pub const ZERO_SUBSCRIBER_CONNECTION_TTL: &str =
    "push stream module: push_stream_subscriber_connection_ttl cannot be zero.";
/// `push stream module: push_stream_longpolling_connection_ttl cannot be zero.`
pub const ZERO_LONGPOLLING_CONNECTION_TTL: &str =
    "push stream module: push_stream_longpolling_connection_ttl cannot be zero.";
/// `push stream module: push_stream_wildcard_channel_max_qtd cannot be zero.`
pub const ZERO_WILDCARD_CHANNEL_MAX_QTD: &str =
    "push stream module: push_stream_wildcard_channel_max_qtd cannot be zero.";

/// `push stream module: <directive> cannot be zero.`
pub fn zero_error(directive: &str) -> String {
    format!("push stream module: {directive} cannot be zero.")
}

/// A number directive that must be at least 1: [`parse_number`], then zero refused. Errors in
/// the module's usual wording: `push stream module: invalid value for <directive>: invalid
/// number "<value>"`, and [`zero_error`] for `0`.
pub fn parse_positive_number(directive: &str, value: &str) -> Result<u64, String> {
    let n = parse_number(value)
        .map_err(|e| format!("push stream module: invalid value for {directive}: {e}"))?;
    if n == 0 {
        return Err(zero_error(directive));
    }
    Ok(n)
}

/// The directive that caps how many channels one subscriber request may name (not in the C
/// module).
pub const MAX_CHANNELS_PER_REQUEST: &str = "push_stream_max_channels_per_request";

/// Default of `push_stream_max_channels_per_request`.
pub const DEFAULT_MAX_CHANNELS_PER_REQUEST: usize = 100;

/// `push stream module: push_stream_max_channels_per_request cannot be zero.`
pub const ZERO_MAX_CHANNELS_PER_REQUEST: &str =
    "push stream module: push_stream_max_channels_per_request cannot be zero.";

/// Parses `push_stream_max_channels_per_request N`: a positive integer (see
/// [`parse_positive_number`]; `0`, a sign, spaces or anything but digits are refused). A value
/// above `usize::MAX` (only possible on 32-bit targets) is taken as `usize::MAX`.
pub fn parse_max_channels_per_request(value: &str) -> Result<usize, String> {
    let n = parse_positive_number(MAX_CHANNELS_PER_REQUEST, value)?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_units() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("10k"), Ok(10 * 1024));
        assert_eq!(parse_size("10K"), Ok(10 * 1024));
        assert_eq!(parse_size("32m"), Ok(32 << 20));
        assert_eq!(parse_size("32M"), Ok(32 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
    }

    #[test]
    fn size_errors() {
        for bad in [
            "", "k", "m", "1.5m", "-1", "+1", " 1", "1 ", "1kb", "1t", "abc", "1mm",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_size("9223372036854775807"), Ok(i64::MAX as u64));
        assert!(parse_size("9223372036854775808").is_err());
        assert!(parse_size("9007199254740992k").is_err());
        assert_eq!(
            parse_size("9007199254740991k"),
            Ok(9007199254740991u64 * 1024)
        );
        assert_eq!(parse_size("x").unwrap_err(), "invalid size value \"x\"");
    }

    #[test]
    fn time_seconds() {
        assert_eq!(parse_time_s("30"), Ok(30));
        assert_eq!(parse_time_s("30s"), Ok(30));
        assert_eq!(parse_time_s("30m"), Ok(1800));
        assert_eq!(parse_time_s("1h 30m"), Ok(5400));
        assert_eq!(parse_time_s("1h30m"), Ok(5400));
        assert_eq!(parse_time_s("1d"), Ok(86400));
        assert_eq!(parse_time_s("1w"), Ok(604800));
        assert_eq!(parse_time_s("1M"), Ok(2592000));
        assert_eq!(parse_time_s("1y"), Ok(31536000));
        assert_eq!(
            parse_time_s("1y 1M 1w 1d 1h 1m 1s"),
            Ok(31536000 + 2592000 + 604800 + 86400 + 3600 + 60 + 1)
        );
        assert_eq!(parse_time_s("1h 5"), Ok(3605));
        assert_eq!(parse_time_s("0"), Ok(0));
        assert_eq!(parse_time_s("2147483647"), Ok(2147483647));
        // nginx quirk, copied: a space ends a unit-less number, which then counts as seconds
        assert_eq!(parse_time_s("1 2"), Ok(3));
    }

    #[test]
    fn time_seconds_errors() {
        for bad in [
            "",
            "s",
            "h",
            "1ms",
            "1x",
            "30m 1h",
            "1h1h",
            "1s 1m",
            "-1",
            "1.5h",
            " 1h",
            "68y 1y",
            "2147483648",
            "69y",
        ] {
            assert!(parse_time_s(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn time_milliseconds() {
        assert_eq!(parse_time_ms("500ms"), Ok(500));
        assert_eq!(parse_time_ms("10"), Ok(10_000));
        assert_eq!(parse_time_ms("10s"), Ok(10_000));
        assert_eq!(parse_time_ms("1s 500ms"), Ok(1_500));
        assert_eq!(parse_time_ms("1m30s"), Ok(90_000));
        assert_eq!(parse_time_ms("1h"), Ok(3_600_000));
        assert_eq!(parse_time_ms("1d"), Ok(86_400_000));
        assert_eq!(parse_time_ms("3w"), Ok(3 * 604_800_000));
        assert_eq!(parse_time_ms("2147483647ms"), Ok(2147483647));
    }

    #[test]
    fn time_milliseconds_errors() {
        for bad in [
            "", "1y", "1M", "ms", "1ms 1s", "1msms", "25d", "4w", "2147484s", "x",
        ] {
            assert!(parse_time_ms(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_time_ms("24d"), Ok(24 * 86_400_000));
        assert_eq!(parse_time_ms("x").unwrap_err(), "invalid time value \"x\"");
    }

    #[test]
    fn flags() {
        assert_eq!(parse_flag("on"), Ok(true));
        assert_eq!(parse_flag("ON"), Ok(true));
        assert_eq!(parse_flag("Off"), Ok(false));
        assert_eq!(
            parse_flag("yes").unwrap_err(),
            "invalid value \"yes\", it must be \"on\" or \"off\""
        );
        assert!(parse_flag("").is_err());
        assert!(parse_flag("on ").is_err());
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_number("0"), Ok(0));
        assert_eq!(parse_number("42"), Ok(42));
        assert_eq!(parse_number("9223372036854775807"), Ok(i64::MAX as u64));
        for bad in [
            "",
            "-1",
            "+1",
            "1k",
            "9223372036854775808",
            "99999999999999999999",
            " 1",
        ] {
            assert!(parse_number(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn modes() {
        assert_eq!(PublisherMode::parse("normal"), Ok(PublisherMode::Normal));
        assert_eq!(PublisherMode::parse("ADMIN"), Ok(PublisherMode::Admin));
        assert_eq!(PublisherMode::default(), PublisherMode::Normal);
        assert_eq!(
            PublisherMode::parse("unknown").unwrap_err(),
            "push stream module: invalid push_stream_publisher mode value: unknown, accepted values (normal, admin)"
        );
        assert!(PublisherMode::parse("admins").is_err());

        assert_eq!(SubscriberMode::default(), SubscriberMode::Streaming);
        assert_eq!(
            SubscriberMode::parse("streaming"),
            Ok(SubscriberMode::Streaming)
        );
        assert_eq!(
            SubscriberMode::parse("Polling"),
            Ok(SubscriberMode::Polling)
        );
        assert_eq!(
            SubscriberMode::parse("LONG-POLLING"),
            Ok(SubscriberMode::LongPolling)
        );
        assert_eq!(
            SubscriberMode::parse("eventsource"),
            Ok(SubscriberMode::EventSource)
        );
        assert_eq!(
            SubscriberMode::parse("WebSocket"),
            Ok(SubscriberMode::WebSocket)
        );
        assert_eq!(
            SubscriberMode::parse("unknown").unwrap_err(),
            "push stream module: invalid push_stream_subscriber mode value: unknown, accepted values (streaming, polling, long-polling, eventsource, websocket)"
        );
        assert!(SubscriberMode::parse("poll").is_err());
    }

    fn rule(regex: &str, h: usize, m: usize) -> PaddingRule {
        PaddingRule {
            regex: regex.to_string(),
            header_min: h,
            message_min: m,
        }
    }

    #[test]
    fn padding_parse_ok() {
        assert_eq!(
            parse_padding("[T|t]est 1,1024,512"),
            Ok(vec![rule("[T|t]est 1", 1024, 512)])
        );
        assert_eq!(
            parse_padding("[T|t]est 1,0,545:[T|t]est 2,4097,0"),
            Ok(vec![
                rule("[T|t]est 1", 0, 545),
                rule("[T|t]est 2", 4097, 0)
            ])
        );
        // greedy first group
        assert_eq!(parse_padding("a,b,1,2,3"), Ok(vec![rule("a,b,1", 2, 3)]));
        // trailing separator is skipped like any byte after a match
        assert_eq!(parse_padding("ua,1,2:"), Ok(vec![rule("ua", 1, 2)]));
        assert_eq!(parse_padding("ua,1,2x"), Ok(vec![rule("ua", 1, 2)]));
    }

    /// Regression (fuzz target conf_values): a multi-byte character right after a match used to
    /// panic (`&value[pos..]` not on a char boundary); the whole character is now skipped.
    #[test]
    fn padding_parse_multibyte_separator() {
        assert_eq!(parse_padding("ua,1,2\u{e9}"), Ok(vec![rule("ua", 1, 2)]));
        assert_eq!(parse_padding("ua,1,2\u{20ac}"), Ok(vec![rule("ua", 1, 2)]));
        assert_eq!(
            parse_padding("ua,1,2\u{e9}\u{e9}:x").unwrap_err(),
            "push stream module: padding pattern not match the value \u{e9}:x"
        );
        assert_eq!(
            parse_padding("ua,1,2\u{e9}:b,3,4").unwrap_err(),
            "push stream module: error applying padding pattern to :b,3,4"
        );
        // the input the fuzzer found
        assert_eq!(
            parse_padding("Mozilla,\u{fffd}024ro\u{fffd}me,0,409\u{fffd}7").unwrap_err(),
            "push stream module: padding pattern not match the value 7"
        );
    }

    #[test]
    fn padding_parse_errors_match_c() {
        assert_eq!(
            parse_padding("user_agent,as,df").unwrap_err(),
            "push stream module: padding pattern not match the value user_agent,as,df"
        );
        assert_eq!(
            parse_padding("user_agent;10;0").unwrap_err(),
            "push stream module: padding pattern not match the value user_agent;10;0"
        );
        assert_eq!(
            parse_padding("user_agent,10,0:other_user_agent;20;0:another_user_agent,30,0")
                .unwrap_err(),
            "push stream module: error applying padding pattern to other_user_agent;20;0:another_user_agent,30,0"
        );
        assert_eq!(
            parse_padding("").unwrap_err(),
            "push stream module: padding pattern not match the value "
        );
        assert!(parse_padding(",1,2")
            .unwrap_err()
            .starts_with("push stream module: padding pattern not match the value "));
        assert!(parse_padding("ua,1,2::x,1,2")
            .unwrap_err()
            .starts_with("push stream module: error applying padding pattern to :x,1,2"));
    }

    #[test]
    fn padding_len_spec_examples() {
        // header 10 bytes, H=1024, P=4097 -> 1100
        assert_eq!(padding_len(1024 - 10, 4097), 1100);
        // H=4097 which is also P -> 4097
        assert_eq!(padding_len(4097 - 10, 4097), 4097);
        // message 1 byte, M=545 (P=545) -> 545
        assert_eq!(padding_len(545 - 1, 545), 545);
        // message 105 bytes -> 500
        assert_eq!(padding_len(545 - 105, 545), 500);
        assert_eq!(padding_len(0, 545), 0);
        assert_eq!(padding_len(-5, 545), 0);
        assert_eq!(padding_len(1, 545), 100);
        assert_eq!(padding_len(100, 545), 200);
        assert_eq!(padding_len(i64::MAX, 7), 7);
    }

    #[test]
    fn padding_bytes_shapes() {
        assert_eq!(padding_bytes(0, false), b"".to_vec());
        assert_eq!(padding_bytes(1, false), b"\n".to_vec());
        assert_eq!(padding_bytes(4, false), b"\r\n\r\n".to_vec());
        assert_eq!(padding_bytes(5, false), b"\n\r\n\r\n".to_vec());
        assert_eq!(padding_bytes(0, true), b"".to_vec());
        assert_eq!(padding_bytes(1, true), b"\n".to_vec());
        assert_eq!(padding_bytes(4, true), b":::\n".to_vec());
        let big = padding_bytes(1100, false);
        assert_eq!(big.len(), 1100);
        assert!(big.chunks(2).all(|c| c == b"\r\n"));
        let odd = padding_bytes(4097, false);
        assert_eq!(odd.len(), 4097);
        assert_eq!(odd[0], b'\n');
        assert!(odd[1..].chunks(2).all(|c| c == b"\r\n"));
        let es = padding_bytes(545, true);
        assert_eq!(es.len(), 545);
        assert!(es[..544].iter().all(|&b| b == b':'));
        assert_eq!(es[544], b'\n');
    }

    #[test]
    fn zero_messages() {
        assert_eq!(
            zero_error("push_stream_message_ttl"),
            "push stream module: push_stream_message_ttl cannot be zero."
        );
        let consts = [
            ZERO_MAX_NUMBER_OF_CHANNELS,
            ZERO_MAX_NUMBER_OF_WILDCARD_CHANNELS,
            ZERO_MESSAGE_TTL,
            ZERO_MAX_SUBSCRIBERS_PER_CHANNEL,
            ZERO_MAX_MESSAGES_STORED_PER_CHANNEL,
            ZERO_MAX_CHANNEL_ID_LENGTH,
            ZERO_PING_MESSAGE_INTERVAL,
            ZERO_SUBSCRIBER_CONNECTION_TTL,
            ZERO_LONGPOLLING_CONNECTION_TTL,
            ZERO_WILDCARD_CHANNEL_MAX_QTD,
        ];
        for (c, d) in consts.iter().zip(ZERO_REJECTING_DIRECTIVES) {
            assert_eq!(*c, zero_error(d));
        }
    }

    #[test]
    fn positive_numbers() {
        assert_eq!(parse_positive_number("push_stream_x", "1"), Ok(1));
        assert_eq!(parse_positive_number("push_stream_x", "007"), Ok(7));
        assert_eq!(
            parse_positive_number("push_stream_x", "0").unwrap_err(),
            "push stream module: push_stream_x cannot be zero."
        );
        assert_eq!(
            parse_positive_number("push_stream_x", "ten").unwrap_err(),
            "push stream module: invalid value for push_stream_x: invalid number \"ten\""
        );
    }

    #[test]
    fn max_channels_per_request() {
        assert_eq!(DEFAULT_MAX_CHANNELS_PER_REQUEST, 100);
        assert_eq!(parse_max_channels_per_request("1"), Ok(1));
        assert_eq!(parse_max_channels_per_request("100"), Ok(100));
        assert_eq!(parse_max_channels_per_request("4000"), Ok(4000));
        assert_eq!(
            parse_max_channels_per_request("9223372036854775807"),
            Ok(usize::try_from(i64::MAX as u64).unwrap_or(usize::MAX))
        );
        assert_eq!(
            parse_max_channels_per_request("0").unwrap_err(),
            ZERO_MAX_CHANNELS_PER_REQUEST
        );
        assert_eq!(
            ZERO_MAX_CHANNELS_PER_REQUEST,
            zero_error(MAX_CHANNELS_PER_REQUEST)
        );
        assert_eq!(
            parse_max_channels_per_request("abc").unwrap_err(),
            "push stream module: invalid value for push_stream_max_channels_per_request: invalid number \"abc\""
        );
        for bad in [
            "",
            "-1",
            "+1",
            " 1",
            "1 ",
            "1k",
            "1.5",
            "9223372036854775808",
        ] {
            assert!(parse_max_channels_per_request(bad).is_err(), "{bad:?}");
        }
    }
}
