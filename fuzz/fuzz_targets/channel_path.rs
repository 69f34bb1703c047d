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
//! * `dedupe`, on the parsed channels and on a version with many repeats (ids cut to their
//!   first byte): equals a quadratic reference; ids distinct; a subsequence of the input in
//!   first-occurrence order containing every input id; backtrack = the largest of its repeats.
//!
//! The same input also feeds the request helpers (as a query string, a JSONP callback and a
//! header value):
//! * `query::arg`: equals a reference walking the `&`-separated parts by index, for the key of
//!   each part, for a few fixed names and for the empty name; a value found is the tail of a
//!   `name=value` (or the empty value of a bare `name`) part.
//! * `template::valid_jsonp_callback` ⇔ a reference (1 to 128 bytes, `.`-separated non-empty
//!   parts, each `[A-Za-z_$][A-Za-z0-9_$]*`); an accepted callback has no byte that could end
//!   the JavaScript call (`(`, `)`, `;`, quotes, spaces, line breaks).
//! * `escape::header_value_ok` ⇔ no CR, LF or NUL.
#![no_main]

use libfuzzer_sys::fuzz_target;
use push_stream_core::channel_path::{
    dedupe, is_reserved_id, is_wildcard, parse_channels, stats_prefix, unescape_uri,
    unescape_value, ChannelRef,
};
use push_stream_core::escape::header_value_ok;
use push_stream_core::query;
use push_stream_core::template::valid_jsonp_callback;

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

/// `dedupe` against an O(n²) reference, plus its structural properties.
fn check_dedupe(input: &[ChannelRef]) {
    let got = dedupe(input.to_vec());
    let mut want: Vec<ChannelRef> = Vec::new();
    for c in input {
        match want.iter_mut().find(|w| w.id == c.id) {
            Some(w) => w.backtrack = w.backtrack.max(c.backtrack),
            None => want.push(c.clone()),
        }
    }
    assert_eq!(got, want, "dedupe differs from the reference");
    // Distinct ids, a subsequence of the input's ids, every input id present.
    for (i, c) in got.iter().enumerate() {
        assert!(got[..i].iter().all(|o| o.id != c.id), "dedupe kept {:?} twice", c.id);
        let max = input.iter().filter(|x| x.id == c.id).map(|x| x.backtrack).max();
        assert_eq!(Some(c.backtrack), max, "backtrack of {:?}", c.id);
    }
    let mut it = input.iter();
    for c in &got {
        assert!(it.any(|x| x.id == c.id), "dedupe output is not in input order");
    }
    assert!(input.iter().all(|x| got.iter().any(|c| c.id == x.id)), "dedupe lost an id");
}

/// `query::arg` reference: the parts by index, the key up to the first `=`.
fn arg_reference(args: &[u8], name: &[u8]) -> Option<Vec<u8>> {
    let mut start = 0;
    loop {
        let end = args[start..].iter().position(|&b| b == b'&').map_or(args.len(), |p| start + p);
        let part = &args[start..end];
        let (key, value) = match part.iter().position(|&b| b == b'=') {
            Some(eq) => (&part[..eq], &part[eq + 1..]),
            None => (part, &b""[..]),
        };
        if key == name {
            return Some(value.to_vec());
        }
        if end == args.len() {
            return None;
        }
        start = end + 1;
    }
}

fn check_query(args: &[u8]) {
    let first_key: Vec<u8> =
        args.iter().take_while(|&&b| b != b'&' && b != b'=').copied().collect();
    let names: [&[u8]; 5] = [b"callback", b"a", b"", &first_key, b"\xff"];
    for name in names {
        let got = query::arg(args, name);
        assert_eq!(got, arg_reference(args, name), "query::arg for {name:?}");
        if let Some(v) = got {
            let mut part = name.to_vec();
            if !v.is_empty() {
                part.push(b'=');
                part.extend_from_slice(&v);
            }
            let ok = args.split(|&b| b == b'&').any(|p| {
                p == &part[..]
                    || (v.is_empty() && (p == name || p.strip_prefix(name) == Some(&b"="[..])))
            });
            assert!(ok, "query::arg value {v:?} for {name:?} is not a part of the query");
        }
    }
}

fn check_jsonp(cb: &[u8]) {
    let ident = |p: &[u8]| match p.split_first() {
        Some((f, rest)) => {
            (f.is_ascii_alphabetic() || *f == b'_' || *f == b'$')
                && rest.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'$')
        }
        None => false,
    };
    let want = !cb.is_empty() && cb.len() <= 128 && cb.split(|&b| b == b'.').all(ident);
    let got = valid_jsonp_callback(cb);
    assert_eq!(got, want, "valid_jsonp_callback({cb:?})");
    if got {
        assert!(!cb.iter().any(|b| b"();'\"` \t\r\n\0<>[]{}/\\".contains(b)));
        assert!(cb.is_ascii());
    }
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

    // dedupe: as parsed, and with ids cut to their first byte (many repeats).
    check_dedupe(&chans);
    let repeats: Vec<ChannelRef> = chans
        .iter()
        .map(|c| ChannelRef { id: c.id.iter().take(1).copied().collect(), backtrack: c.backtrack })
        .collect();
    check_dedupe(&repeats);

    // Request helpers on the raw input.
    check_query(data);
    check_jsonp(data);
    assert_eq!(header_value_ok(data), !data.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0));
});
