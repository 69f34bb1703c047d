//! Channel paths (`channel_path`): `parse_channels` (`.bN` backtrack, `/` separators),
//! `unescape_uri` / `unescape_value`, reserved and wildcard ids.
//!
//! The whole input is the path. Byte 0 also selects a wildcard prefix for `is_wildcard`.
//!
//! Checked:
//! * `parse_channels`: ids never contain `/`; walking the input, it is exactly
//!   `id0 [.b<digits>] (/ | end) id1 …` where the digits give the reported backtrack (saturated
//!   at `u32::MAX`, 0 when absent or all zeros), with nothing left over; the canonical
//!   re-rendering `id.b<N>/…` parses to the same channels; at most `count('/') + 1` channels.
//! * `unescape_uri`: never longer than the input; identity on input without `%` and `?`;
//!   percent-encoding every byte and unescaping gives the bytes back up to and including the
//!   first `?`.
//! * `unescape_value`: the input unchanged, or `unescape_uri(input)` when that is shorter.
//! * `is_reserved_id` ⇔ `ALL` or contains `*`; `stats_prefix` is the text before the first `*`;
//!   `is_wildcard` ⇔ starts with the (non-empty) prefix.
#![no_main]

use libfuzzer_sys::fuzz_target;
use push_stream_core::channel_path::{
    is_reserved_id, is_wildcard, parse_channels, stats_prefix, unescape_uri, unescape_value,
    ChannelRef,
};

fn saturating_digits(d: &[u8]) -> u32 {
    let mut v: u64 = 0;
    for &b in d {
        v = (v * 10 + u64::from(b - b'0')).min(u64::from(u32::MAX));
    }
    v as u32
}

/// Walks `path` along the parsed channels; panics unless they cover it exactly.
fn check_walk(path: &[u8], chans: &[ChannelRef]) {
    let mut pos = 0;
    for (i, c) in chans.iter().enumerate() {
        assert!(!c.id.contains(&b'/'), "id with '/': {:?}", c.id);
        assert!(path[pos..].starts_with(&c.id), "channel {i} is not the next part of the path");
        pos += c.id.len();
        let rest = &path[pos..];
        let mut bt = 0;
        let mut group = false;
        if rest.starts_with(b".b") {
            let n = rest[2..].iter().take_while(|b| b.is_ascii_digit()).count();
            let after = rest.get(2 + n);
            if n > 0 && matches!(after, None | Some(b'/')) {
                bt = saturating_digits(&rest[2..2 + n]);
                pos += 2 + n;
                group = true;
            }
        }
        assert_eq!(c.backtrack, bt, "backtrack of channel {i}");
        match path.get(pos) {
            None => {}
            Some(b'/') => pos += 1,
            Some(other) => panic!("channel {i} ends before byte {other:#x}, not at '/' or end"),
        }
        // Leftmost match: without a `.bN` group, the id must not itself end with `.b<digits>`
        // (that would have been the match). It contains no `/`, so nothing earlier qualifies.
        if !group {
            let digits = c.id.iter().rev().take_while(|b| b.is_ascii_digit()).count();
            let head = &c.id[..c.id.len() - digits];
            assert!(
                digits == 0 || !head.ends_with(b".b"),
                "channel {i}: id {:?} ends with a .bN group that was not taken",
                c.id
            );
        }
    }
    assert_eq!(pos, path.len(), "path not fully consumed");
}

fn canonical(chans: &[ChannelRef]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, c) in chans.iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(&c.id);
        out.extend_from_slice(format!(".b{}", c.backtrack).as_bytes());
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let chans = parse_channels(data);
    if data.is_empty() {
        assert!(chans.is_empty());
    }
    assert!(chans.len() <= data.iter().filter(|&&b| b == b'/').count() + 1);
    check_walk(data, &chans);
    let canon = canonical(&chans);
    assert_eq!(parse_channels(&canon), chans, "canonical form parses differently");

    // unescape_uri
    let u = unescape_uri(data);
    assert!(u.len() <= data.len());
    if !data.contains(&b'%') && !data.contains(&b'?') {
        assert_eq!(u, data);
    }
    let mut enc = Vec::with_capacity(data.len() * 3);
    for (i, &b) in data.iter().enumerate() {
        // alternate upper and lower case hex digits
        if i % 2 == 0 {
            enc.extend_from_slice(format!("%{b:02X}").as_bytes());
        } else {
            enc.extend_from_slice(format!("%{b:02x}").as_bytes());
        }
    }
    let expect = match data.iter().position(|&b| b == b'?') {
        Some(q) => &data[..=q],
        None => data,
    };
    assert_eq!(unescape_uri(&enc), expect, "percent-encoding round trip");

    // unescape_value
    let v = unescape_value(data);
    assert!(v == data || (v == u && u.len() < data.len()), "unescape_value");

    // reserved / wildcard / stats prefix, on the whole value and on each id
    let prefix: &[&[u8]] = &[b"", b"w", b"__", b"ALL", b"\xff"];
    let p = prefix[data.first().map_or(0, |&b| b as usize) % prefix.len()];
    for id in chans.iter().map(|c| &c.id[..]).chain([data]) {
        assert_eq!(is_reserved_id(id), id == b"ALL" || id.contains(&b'*'));
        match stats_prefix(id) {
            Some(sp) => {
                assert!(!sp.contains(&b'*'));
                assert_eq!(id.get(sp.len()), Some(&b'*'));
                assert!(id.starts_with(sp));
            }
            None => assert!(!id.contains(&b'*')),
        }
        assert_eq!(is_wildcard(id, Some(p)), !p.is_empty() && id.starts_with(p));
        assert!(!is_wildcard(id, None));
    }
});
