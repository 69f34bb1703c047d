//! Request headers we parse ourselves: `Accept` (`format::negotiate`), the resume headers
//! (`resume::parse_http_date`, `parse_tag`, `old_messages_start`) and the padding arithmetic
//! applied per request (`conf_values::padding_len`, `padding_bytes`).
//!
//! Byte 0 selects the check; the rest is the header value (or drives `arbitrary`).
//!
//! Checked:
//! * `negotiate`: equals an independent re-implementation of the documented rule (for each `/`,
//!   first of plain, json, yaml, xml, x-json, x-yaml that the text after it starts with; JSON by
//!   default) and the content type always belongs to the format.
//! * `parse_http_date`: a date it accepts (years 1970–9999) is re-rendered by `http_date` and in
//!   the RFC 850 and asctime forms, and all parse back to the same time; `http_date` of any time
//!   in range parses back to it.
//! * `parse_tag`: accepted values are `[W/]digits` ≤ 2^63-1 and equal their decimal value;
//!   `parse_tag(etag(n)) == n`.
//! * `old_messages_start`: equals a straightforward re-implementation of section 2.8 as
//!   documented, and is always a valid index.
//! * `padding_len` / `padding_bytes`: the documented formula (computed in u128) and byte layout.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use push_stream_core::conf_values::{padding_bytes, padding_len};
use push_stream_core::format::{negotiate, Format};
use push_stream_core::resume::{
    etag, http_date, old_messages_start, parse_http_date, parse_tag, Cursor, MessageMeta,
};

/// 9999-12-31T23:59:59Z.
const MAX_TIME: i64 = 253_402_300_799;
const DAYS: [&str; 7] = ["Thursday", "Friday", "Saturday", "Sunday", "Monday", "Tuesday", "Wednesday"];
const MONTHS: [&str; 12] =
    ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

fn civil(t: i64) -> (i64, usize, i64, i64, i64, i64, usize) {
    // (year, month index, day, h, m, s, weekday index from Thursday) via a naive day walk by year
    let days = t.div_euclid(86_400);
    let sod = t.rem_euclid(86_400);
    let mut y = 1970;
    let mut d = days;
    let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    loop {
        let n = if leap(y) { 366 } else { 365 };
        if d < n {
            break;
        }
        d -= n;
        y += 1;
    }
    let ml = [31, if leap(y) { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let mut m = 0;
    while d >= ml[m] {
        d -= ml[m];
        m += 1;
    }
    (y, m, d + 1, sod / 3600, sod / 60 % 60, sod % 60, days.rem_euclid(7) as usize)
}

fn check_date_roundtrip(t: i64) {
    let rfc1123 = http_date(t);
    assert_eq!(rfc1123.len(), 29, "{rfc1123}");
    assert_eq!(parse_http_date(rfc1123.as_bytes()), Some(t), "RFC 1123 {rfc1123}");
    let (y, m, d, hh, mm, ss, wd) = civil(t);
    let wday = DAYS[wd];
    let expect = format!("{}, {d:02} {} {y:04} {hh:02}:{mm:02}:{ss:02} GMT", &wday[..3], MONTHS[m]);
    assert_eq!(rfc1123, expect, "http_date({t})");
    let asctime = format!("{} {} {d:>2} {hh:02}:{mm:02}:{ss:02} {y:04}", &wday[..3], MONTHS[m]);
    assert_eq!(parse_http_date(asctime.as_bytes()), Some(t), "asctime {asctime}");
    if (1970..2070).contains(&y) {
        let rfc850 =
            format!("{wday}, {d:02}-{}-{:02} {hh:02}:{mm:02}:{ss:02} GMT", MONTHS[m], y % 100);
        assert_eq!(parse_http_date(rfc850.as_bytes()), Some(t), "RFC 850 {rfc850}");
    }
}

fn negotiate_ref(accept: &[u8]) -> (Format, &'static str) {
    const TABLE: [(&[u8], Format, &str); 6] = [
        (b"plain", Format::Plain, "text/plain"),
        (b"json", Format::Json, "application/json"),
        (b"yaml", Format::Yaml, "application/yaml"),
        (b"xml", Format::Xml, "application/xml"),
        (b"x-json", Format::Json, "text/x-json"),
        (b"x-yaml", Format::Yaml, "text/x-yaml"),
    ];
    for i in 0..accept.len() {
        if accept[i] != b'/' {
            continue;
        }
        for (name, f, ct) in TABLE {
            if accept.len() - (i + 1) >= name.len() && &accept[i + 1..i + 1 + name.len()] == name {
                return (f, ct);
            }
        }
    }
    (Format::Json, "application/json")
}

#[derive(Arbitrary, Debug)]
struct Resume {
    /// (time offset, tag, event id index) of stored messages, oldest first.
    stored: Vec<(u8, u8, Option<u8>)>,
    backtrack: u8,
    since: Option<i8>,
    tag: Option<u8>,
    last_event_id: Option<u8>,
}

fn old_ref(stored: &[MessageMeta], cur: &Cursor) -> Option<usize> {
    let len = stored.len();
    if len == 0 {
        return None;
    }
    if cur.backtrack > 0 {
        return Some(len - (cur.backtrack as usize).min(len));
    }
    let eid = cur.last_event_id.clone().filter(|e| !e.is_empty());
    let since = cur.since.filter(|s| *s >= 0);
    if eid.is_none() && since.is_none() {
        return None;
    }
    for (i, m) in stored.iter().enumerate() {
        if eid.is_some() && m.event_id.is_some() && eid == m.event_id {
            return if i + 1 < len { Some(i + 1) } else { None };
        }
        if let Some(s) = since {
            if m.time > s {
                return Some(i);
            }
            if m.time == s {
                if let Some(t) = cur.tag {
                    if m.tag == t {
                        return if i + 1 < len { Some(i + 1) } else { None };
                    }
                    if m.tag > t {
                        return Some(i);
                    }
                }
            }
        }
    }
    None
}

fn check_resume(u: &mut Unstructured) -> arbitrary::Result<()> {
    let r = Resume::arbitrary(u)?;
    let base = 1_000_000i64;
    let mut time = base;
    let stored: Vec<MessageMeta> = r
        .stored
        .iter()
        .map(|&(dt, tag, eid)| {
            time += i64::from(dt % 3);
            MessageMeta {
                time,
                tag: u64::from(tag % 4),
                event_id: eid.map(|e| vec![b'a' + e % 4]),
            }
        })
        .collect();
    let cur = Cursor {
        backtrack: u32::from(r.backtrack % 8),
        since: r.since.map(|s| if s < 0 { i64::from(s) } else { base + i64::from(s % 16) }),
        tag: r.tag.map(|t| u64::from(t % 4)),
        last_event_id: r.last_event_id.map(|e| if e % 5 == 4 { Vec::new() } else { vec![b'a' + e % 5] }),
    };
    let got = old_messages_start(&stored, &cur);
    if let Some(i) = got {
        assert!(i < stored.len());
    }
    assert_eq!(got, old_ref(&stored, &cur), "old_messages_start({stored:?}, {cur:?})");
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, v)) = data.split_first() else {
        return;
    };
    match sel % 5 {
        0 => {
            let got = negotiate(Some(v));
            assert_eq!(got, negotiate_ref(v));
            let ok = match got.0 {
                Format::Plain => got.1 == "text/plain",
                Format::Json => got.1 == "application/json" || got.1 == "text/x-json",
                Format::Yaml => got.1 == "application/yaml" || got.1 == "text/x-yaml",
                Format::Xml => got.1 == "application/xml",
            };
            assert!(ok, "{got:?}");
            if !v.contains(&b'/') {
                assert_eq!(got, (Format::Json, "application/json"));
            }
            assert_eq!(negotiate(None), (Format::Json, "application/json"));
        }
        1 => {
            if let Some(t) = parse_http_date(v) {
                if (0..=MAX_TIME).contains(&t) {
                    check_date_roundtrip(t);
                }
            }
            if v.len() >= 8 {
                let t = i64::from_le_bytes(v[..8].try_into().unwrap()).rem_euclid(MAX_TIME + 1);
                check_date_roundtrip(t);
            }
        }
        2 => {
            if let Some(n) = parse_tag(v) {
                assert!(n <= i64::MAX as u64);
                let digits = v.strip_prefix(b"W/").unwrap_or(v);
                assert!(!digits.is_empty() && digits.iter().all(u8::is_ascii_digit));
                let trimmed = std::str::from_utf8(digits).unwrap().trim_start_matches('0');
                let canon = if trimmed.is_empty() { "0" } else { trimmed };
                assert_eq!(canon, n.to_string());
                assert_eq!(parse_tag(etag(n).as_bytes()), Some(n));
            }
            if v.len() >= 8 {
                let n = u64::from_le_bytes(v[..8].try_into().unwrap()) >> 1;
                assert_eq!(parse_tag(etag(n).as_bytes()), Some(n));
                assert_eq!(parse_tag(n.to_string().as_bytes()), Some(n));
            }
        }
        3 => {
            let _ = check_resume(&mut Unstructured::new(v));
        }
        _ => {
            if v.len() < 17 {
                return;
            }
            let d = i64::from_le_bytes(v[..8].try_into().unwrap());
            let p = usize::from_le_bytes(v[8..16].try_into().unwrap());
            let got = padding_len(d, p);
            let want = if d <= 0 {
                0
            } else {
                ((d as u128 / 100 + 1) * 100).min(p as u128) as usize
            };
            assert_eq!(got, want, "padding_len({d}, {p})");
            let len = got % 4096;
            let es = v[16] & 1 == 1;
            let bytes = padding_bytes(len, es);
            assert_eq!(bytes.len(), len);
            if len > 0 {
                if es {
                    assert!(bytes[..len - 1].iter().all(|&b| b == b':') && bytes[len - 1] == b'\n');
                } else {
                    let body = if len % 2 == 1 {
                        assert_eq!(bytes[0], b'\n');
                        &bytes[1..]
                    } else {
                        &bytes[..]
                    };
                    assert!(body.chunks(2).all(|c| c == b"\r\n"));
                }
            }
        }
    }
});
