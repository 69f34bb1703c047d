//! Resuming (docs/reference.md section 2.8): HTTP dates, the `Etag` tag, and which stored ("old")
//! messages a new subscriber gets.

pub use crate::date::{http_date, parse_http_date};

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

/// The `Etag` value for a tag: `W/<tag>` (what `src/` writes as `format!("W/{tag}")`).
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

    #[test]
    fn etag_is_the_weak_tag_and_parses_back() {
        assert_eq!(etag(0), "W/0");
        assert_eq!(etag(7), "W/7");
        assert_eq!(etag(u64::MAX), "W/18446744073709551615");
        for t in [0, 1, 42, i64::MAX as u64] {
            assert_eq!(parse_tag(etag(t).as_bytes()), Some(t));
        }
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
