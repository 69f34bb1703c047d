//! Resuming (reference section 2.8): HTTP dates, the `Etag` tag, and which stored ("old")
//! messages a new subscriber gets.

use crate::format::civil_from_days;

const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// RFC 1123 date as nginx's `ngx_http_time` writes it: `Tue, 24 Nov 2026 16:55:36 GMT`.
/// Used for `~time~`, `Last-Modified` and friends. Epoch → `Thu, 01 Jan 1970 00:00:00 GMT`.
pub fn http_date(unix_secs: i64) -> String {
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let wday = (days + 4).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        DAYS[wday],
        d,
        MONTHS[(m - 1) as usize],
        y,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Parses an HTTP date exactly like nginx's `ngx_parse_http_time` (64-bit `time_t`).
///
/// Accepted: RFC 1123 `Tue, 10 Nov 2002 23:50:13 GMT`, RFC 850 `Tuesday, 10-Nov-02 23:50:13
/// GMT` (two-digit years: < 70 → 20xx, else 19xx) and asctime `Tue Nov 10 23:50:13 2002` (day
/// may be one digit or space-padded). Like nginx, the day-of-week text is not checked, the
/// month is recognised from its first letters only, and anything after the seconds (RFC 1123 /
/// 850) or year (asctime) is ignored. Hours > 23, minutes or seconds > 59 and days past the end
/// of the month are refused (29 February only in leap years). Returns `None` where nginx
/// returns `NGX_ERROR`.
// `u64::is_multiple_of` needs Rust 1.87; the workspace supports 1.81.
#[allow(unknown_lints, clippy::manual_is_multiple_of)]
pub fn parse_http_date(value: &[u8]) -> Option<i64> {
    #[derive(PartialEq, Clone, Copy)]
    enum Fmt {
        No,
        Rfc822,
        Rfc850,
        Isoc,
    }
    // The C code reads within the bounds guaranteed by its length checks; a NUL past the end
    // behaves like any non-matching byte.
    let at = |i: usize| -> u8 { value.get(i).copied().unwrap_or(0) };
    let digit = |i: usize| -> Option<u64> {
        let c = at(i);
        c.is_ascii_digit().then(|| u64::from(c - b'0'))
    };
    const MDAY: [u64; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

    let end = value.len();
    let mut fmt = Fmt::No;
    let mut p = 0;
    while p < end {
        if value[p] == b',' {
            break;
        }
        if value[p] == b' ' {
            fmt = Fmt::Isoc;
            break;
        }
        p += 1;
    }
    p += 1;
    while p < end && value[p] == b' ' {
        p += 1;
    }
    if end < p || end - p < 18 {
        return None;
    }

    let mut day: u64 = 0;
    if fmt != Fmt::Isoc {
        day = digit(p)? * 10 + digit(p + 1)?;
        p += 2;
        if at(p) == b' ' {
            if end - p < 18 {
                return None;
            }
            fmt = Fmt::Rfc822;
        } else if at(p) == b'-' {
            fmt = Fmt::Rfc850;
        } else {
            return None;
        }
        p += 1;
    }

    let mut month: i64 = match at(p) {
        b'J' => {
            if at(p + 1) == b'a' {
                0
            } else if at(p + 2) == b'n' {
                5
            } else {
                6
            }
        }
        b'F' => 1,
        b'M' => {
            if at(p + 2) == b'r' {
                2
            } else {
                4
            }
        }
        b'A' => {
            if at(p + 1) == b'p' {
                3
            } else {
                7
            }
        }
        b'S' => 8,
        b'O' => 9,
        b'N' => 10,
        b'D' => 11,
        _ => return None,
    };
    p += 3;
    if (fmt == Fmt::Rfc822 && at(p) != b' ') || (fmt == Fmt::Rfc850 && at(p) != b'-') {
        return None;
    }
    p += 1;

    let mut year: u64 = 0;
    if fmt == Fmt::Rfc822 {
        year = digit(p)? * 1000 + digit(p + 1)? * 100 + digit(p + 2)? * 10 + digit(p + 3)?;
        p += 4;
    } else if fmt == Fmt::Rfc850 {
        year = digit(p)? * 10 + digit(p + 1)?;
        year += if year < 70 { 2000 } else { 1900 };
        p += 2;
    }

    if fmt == Fmt::Isoc {
        if at(p) == b' ' {
            p += 1;
        }
        day = digit(p)?;
        p += 1;
        if at(p) != b' ' {
            day = day * 10 + digit(p)?;
            p += 1;
        }
        if end < p || end - p < 14 {
            return None;
        }
    }

    if at(p) != b' ' {
        return None;
    }
    p += 1;
    let hour = digit(p)? * 10 + digit(p + 1)?;
    p += 2;
    if at(p) != b':' {
        return None;
    }
    p += 1;
    let min = digit(p)? * 10 + digit(p + 1)?;
    p += 2;
    if at(p) != b':' {
        return None;
    }
    p += 1;
    let sec = digit(p)? * 10 + digit(p + 1)?;

    if fmt == Fmt::Isoc {
        p += 2;
        if at(p) != b' ' {
            return None;
        }
        p += 1;
        year = digit(p)? * 1000 + digit(p + 1)? * 100 + digit(p + 2)? * 10 + digit(p + 3)?;
    }

    if hour > 23 || min > 59 || sec > 59 {
        return None;
    }
    if day == 29 && month == 1 {
        if (year & 3) != 0 || (year % 100 == 0 && year % 400 != 0) {
            return None;
        }
    } else if day > MDAY[month as usize] {
        return None;
    }

    // Gauss' formula, with nginx's unsigned (wrapping) arithmetic.
    month -= 1;
    if month <= 0 {
        month += 12;
        year = year.wrapping_sub(1);
    }
    let month = month as u64;
    let days = (365u64.wrapping_mul(year))
        .wrapping_add(year / 4)
        .wrapping_sub(year / 100)
        .wrapping_add(year / 400)
        .wrapping_add(367 * month / 12)
        .wrapping_sub(30)
        .wrapping_add(day)
        .wrapping_sub(1)
        .wrapping_sub(719_527)
        .wrapping_add(31 + 28);
    let time = days
        .wrapping_mul(86_400)
        .wrapping_add(hour * 3600 + min * 60 + sec);
    Some(time as i64)
}

/// Parses the tag from `If-None-Match` (or `push_stream_last_received_message_tag`): a leading
/// `W/` is removed, then the rest must be an unsigned decimal (`ngx_atoi`: non-empty, digits
/// only, at most `2^63 - 1`). A quoted `"3"`, `-3`, `3 ` or an empty value → `None` ("no tag").
pub fn parse_tag(value: &[u8]) -> Option<u64> {
    let v = value.strip_prefix(b"W/").unwrap_or(value);
    if v.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &b in v {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        if n > i64::MAX as u64 {
            return None;
        }
    }
    Some(n)
}

/// The `Etag` value for a tag: `W/<tag>`.
pub fn etag(tag: u64) -> String {
    format!("W/{tag}")
}

/// What the resume rules need to know about one stored message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageMeta {
    /// Publish time (unix seconds).
    pub time: i64,
    /// Publish tag (order within the second, zone-wide).
    pub tag: u64,
    /// `Event-Id` given at publish time.
    pub event_id: Option<Vec<u8>>,
}

/// Where a subscriber wants to resume one channel from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cursor {
    /// `.bN` of this channel (0 = none).
    pub backtrack: u32,
    /// Last received time (`If-Modified-Since` or `push_stream_last_received_message_time`,
    /// parsed with [`parse_http_date`]). A negative value counts as "not given", as in the C
    /// module, which uses -1 for "absent".
    pub since: Option<i64>,
    /// Last received tag ([`parse_tag`]).
    pub tag: Option<u64>,
    /// Last event id (`Last-Event-Id` or `push_stream_last_event_id`). An empty value counts as
    /// "not given".
    pub last_event_id: Option<Vec<u8>>,
}

/// Index of the first stored message (oldest first) to send to a new subscriber of this
/// channel; every message from there to the end is sent. `None` = nothing old to send.
///
/// Section 2.8, exactly as the C module's `ngx_http_push_stream_send_old_messages`:
///
/// 1. `backtrack > 0`: the last `min(backtrack, stored)` messages. Time, tag and event id are
///    ignored.
/// 2. Otherwise, with a last event id or a time, walk oldest-first until the first message that
///    * has an event id byte-equal to the last event id: start **after** it; or
///    * has `time > since`, or `time == since` with a tag given and `message.tag >= tag`: start
///      at it, or after it when `time == since` and `message.tag == tag`.
///
///    Both tests are tried on each message, event id first. No such message → nothing (so an
///    unknown event id without a time gives nothing; a time without a tag skips messages of the
///    same second; the epoch time gives everything).
/// 3. Otherwise nothing.
///
/// Not modelled: the C polling path also caps the batch at the newest message seen when it
/// first checked (a race guard); callers holding the channel lock do not need it.
pub fn old_messages_start(stored: &[MessageMeta], cur: &Cursor) -> Option<usize> {
    if stored.is_empty() {
        return None;
    }
    if cur.backtrack > 0 {
        let n = usize::try_from(cur.backtrack)
            .unwrap_or(usize::MAX)
            .min(stored.len());
        return Some(stored.len() - n);
    }
    let event_id = cur.last_event_id.as_deref().filter(|e| !e.is_empty());
    let since = cur.since.filter(|&s| s >= 0);
    if event_id.is_none() && since.is_none() {
        return None;
    }
    let start = stored.iter().enumerate().find_map(|(i, m)| {
        if let (Some(want), Some(have)) = (event_id, m.event_id.as_deref()) {
            if want == have {
                return Some(i + 1);
            }
        }
        if let Some(since) = since {
            let tag_reached = cur.tag.is_some_and(|t| m.tag >= t);
            if m.time > since || (m.time == since && tag_reached) {
                let same = m.time == since && cur.tag == Some(m.tag);
                return Some(if same { i + 1 } else { i });
            }
        }
        None
    })?;
    (start < stored.len()).then_some(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_795_539_336; // Tue, 24 Nov 2026 16:55:36 GMT

    #[test]
    fn formats_http_date() {
        assert_eq!(http_date(T0), "Tue, 24 Nov 2026 16:55:36 GMT");
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(1), "Thu, 01 Jan 1970 00:00:01 GMT");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(http_date(-1), "Wed, 31 Dec 1969 23:59:59 GMT");
    }

    #[test]
    fn parses_three_formats() {
        assert_eq!(parse_http_date(b"Tue, 24 Nov 2026 16:55:36 GMT"), Some(T0));
        assert_eq!(
            parse_http_date(b"Tuesday, 24-Nov-26 16:55:36 GMT"),
            Some(T0)
        );
        assert_eq!(parse_http_date(b"Tue Nov 24 16:55:36 2026"), Some(T0));
        assert_eq!(parse_http_date(b"Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            parse_http_date(b"Sun Nov  6 08:49:37 1994"),
            Some(784_111_777)
        );
        assert_eq!(
            parse_http_date(b"Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(
            parse_http_date(b"Sunday, 06-Nov-94 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(
            parse_http_date(b"Thursday, 01-Jan-70 00:00:00 GMT"),
            Some(0)
        );
    }

    #[test]
    fn round_trips() {
        for t in [
            0,
            1,
            59,
            86_399,
            86_400,
            951_782_400,
            T0,
            4_102_444_800,
            253_402_300_799,
        ] {
            assert_eq!(parse_http_date(http_date(t).as_bytes()), Some(t), "{t}");
        }
    }

    #[test]
    fn nginx_leniencies() {
        // weekday text and trailing text are not checked
        assert_eq!(parse_http_date(b"Xyz, 24 Nov 2026 16:55:36"), Some(T0));
        assert_eq!(
            parse_http_date(b"Tue, 24 Nov 2026 16:55:36 UTC garbage"),
            Some(T0)
        );
        // several spaces after the comma
        assert_eq!(
            parse_http_date(b"Tue,   24 Nov 2026 16:55:36 GMT"),
            Some(T0)
        );
        // month from first letters only
        assert_eq!(parse_http_date(b"Tue, 24 Nxx 2026 16:55:36 GMT"), Some(T0));
        // leap years
        assert_eq!(
            parse_http_date(b"Tue, 29 Feb 2000 00:00:00 GMT"),
            Some(951_782_400)
        );
    }

    #[test]
    fn rejects_bad_dates() {
        for bad in [
            &b""[..],
            b"garbage",
            b"1700000000",
            b"Tue, 24 Nov 2026 24:00:00 GMT",
            b"Tue, 24 Nov 2026 23:60:00 GMT",
            b"Tue, 24 Nov 2026 23:59:60 GMT",
            b"Tue, 31 Nov 2026 00:00:00 GMT",
            b"Thu, 29 Feb 2026 00:00:00 GMT",
            b"Mon, 29 Feb 1900 00:00:00 GMT",
            b"Tue, 24 Xov 2026 16:55:36 GMT",
            b"Tue, 24 Nov 26 16:55:36 GMT",
            b"Tue, 24/Nov/2026 16:55:36 GMT",
            b"Tue, 24 Nov 2026 16:55",
            b"Tue Nov 24 16:55:36",
            b"Tue, 2a Nov 2026 16:55:36 GMT",
        ] {
            assert_eq!(
                parse_http_date(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn tags() {
        assert_eq!(parse_tag(b"3"), Some(3));
        assert_eq!(parse_tag(b"W/3"), Some(3));
        assert_eq!(parse_tag(b"0"), Some(0));
        assert_eq!(parse_tag(b"W/0"), Some(0));
        for bad in [
            &b""[..],
            b"W/",
            b"\"3\"",
            b"W/\"3\"",
            b"-3",
            b"3 ",
            b"w/3",
            b"9223372036854775808",
        ] {
            assert_eq!(parse_tag(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse_tag(b"9223372036854775807"), Some(i64::MAX as u64));
        assert_eq!(etag(7), "W/7");
    }

    fn msg(time: i64, tag: u64, event_id: Option<&str>) -> MessageMeta {
        MessageMeta {
            time,
            tag,
            event_id: event_id.map(|e| e.as_bytes().to_vec()),
        }
    }

    /// 5 messages: two in second 100 (tags 1, 2), two in 101 (tags 1, 2), one in 102 (tag 1).
    fn stored() -> Vec<MessageMeta> {
        vec![
            msg(100, 1, Some("e1")),
            msg(100, 2, None),
            msg(101, 1, Some("e3")),
            msg(101, 2, Some("e4")),
            msg(102, 1, Some("e5")),
        ]
    }

    fn cur() -> Cursor {
        Cursor::default()
    }

    #[test]
    fn nothing_stored_or_nothing_asked() {
        let c = Cursor {
            backtrack: 3,
            ..cur()
        };
        assert_eq!(old_messages_start(&[], &c), None);
        assert_eq!(old_messages_start(&stored(), &cur()), None);
        // a tag alone means nothing
        let c = Cursor {
            tag: Some(1),
            ..cur()
        };
        assert_eq!(old_messages_start(&stored(), &c), None);
    }

    #[test]
    fn backtrack_wins() {
        let s = stored();
        let bt = |n| Cursor {
            backtrack: n,
            since: Some(0),
            tag: Some(1),
            last_event_id: Some(b"e4".to_vec()),
        };
        assert_eq!(old_messages_start(&s, &bt(1)), Some(4));
        assert_eq!(old_messages_start(&s, &bt(2)), Some(3));
        assert_eq!(old_messages_start(&s, &bt(5)), Some(0));
        assert_eq!(old_messages_start(&s, &bt(50)), Some(0));
        assert_eq!(old_messages_start(&s, &bt(u32::MAX)), Some(0));
    }

    #[test]
    fn event_id_resume() {
        let s = stored();
        let ev = |e: &str| Cursor {
            last_event_id: Some(e.as_bytes().to_vec()),
            ..cur()
        };
        assert_eq!(old_messages_start(&s, &ev("e1")), Some(1));
        assert_eq!(old_messages_start(&s, &ev("e3")), Some(3));
        // the last message: nothing after it
        assert_eq!(old_messages_start(&s, &ev("e5")), None);
        // unknown event id -> nothing
        assert_eq!(old_messages_start(&s, &ev("nope")), None);
        // byte-exact
        assert_eq!(old_messages_start(&s, &ev("E3")), None);
        assert_eq!(old_messages_start(&s, &ev("e")), None);
        // empty = not given
        assert_eq!(old_messages_start(&s, &ev("")), None);
    }

    #[test]
    fn time_resume() {
        let s = stored();
        let t = |since: i64, tag: Option<u64>| Cursor {
            since: Some(since),
            tag,
            ..cur()
        };
        // epoch returns everything
        assert_eq!(old_messages_start(&s, &t(0, None)), Some(0));
        assert_eq!(old_messages_start(&s, &t(0, Some(0))), Some(0));
        // time without tag: only later seconds (same-second messages lost)
        assert_eq!(old_messages_start(&s, &t(100, None)), Some(2));
        assert_eq!(old_messages_start(&s, &t(101, None)), Some(4));
        assert_eq!(old_messages_start(&s, &t(102, None)), None);
        // time + tag: the message with exactly (time, tag) is skipped
        assert_eq!(old_messages_start(&s, &t(100, Some(1))), Some(1));
        assert_eq!(old_messages_start(&s, &t(100, Some(2))), Some(2));
        assert_eq!(old_messages_start(&s, &t(101, Some(1))), Some(3));
        assert_eq!(old_messages_start(&s, &t(102, Some(1))), None);
        // a tag higher than any in that second moves to the next second
        assert_eq!(old_messages_start(&s, &t(100, Some(9))), Some(2));
        // a tag lower than the first one of that second: starts at it (not skipped)
        assert_eq!(old_messages_start(&s, &t(101, Some(0))), Some(2));
        // a time between messages / before all
        assert_eq!(old_messages_start(&s, &t(99, Some(5))), Some(0));
        assert_eq!(old_messages_start(&s, &t(200, Some(1))), None);
        // negative time counts as not given
        assert_eq!(old_messages_start(&s, &t(-1, None)), None);
        assert_eq!(old_messages_start(&s, &t(-100, Some(1))), None);
    }

    #[test]
    fn event_id_and_time_together() {
        let s = stored();
        // whichever condition hits first while walking
        let c = Cursor {
            since: Some(100),
            tag: None,
            last_event_id: Some(b"e1".to_vec()),
            ..cur()
        };
        assert_eq!(old_messages_start(&s, &c), Some(1));
        let c = Cursor {
            since: Some(100),
            tag: None,
            last_event_id: Some(b"e4".to_vec()),
            ..cur()
        };
        assert_eq!(old_messages_start(&s, &c), Some(2));
        // unknown event id, but a time: the time decides
        let c = Cursor {
            since: Some(0),
            tag: None,
            last_event_id: Some(b"nope".to_vec()),
            ..cur()
        };
        assert_eq!(old_messages_start(&s, &c), Some(0));
    }
}
