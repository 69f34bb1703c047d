//! The RabbitMQ mapping (`amqp`): `map` (headers and routing key to channels, event fields,
//! the delete op), `check_url` / `redact`, `ExchangeSource::parse`, `routing_key`,
//! `dedupe_key` and `Occurrences`.
//!
//! The input is cut at 0xFF bytes into: routing key, `channel` header, `event-id`,
//! `event-type`, `push-stream-op`, a URL, exchange directive words (space-separated), a
//! message id, a body, and a sequence of (key, time step) pairs for `Occurrences`. A missing
//! part is an absent header.
//!
//! Checked:
//! * `map`: equals a reference built from `channel_path::parse_channels` on the `channel`
//!   header (when present and not empty) or else the routing key: empty ids dropped;
//!   `NoChannel` exactly when none is left; `ReservedChannel` exactly when one is `ALL` or
//!   has `*` (the first such); otherwise the same channels, none with `/`, event fields as
//!   given, `delete` exactly for a case-insensitive `delete` op.
//! * `check_url` and `redact` never panic; for a URL `scheme://user:PASSWORD@rest`, neither
//!   `redact` nor `check_url`'s error shows `:PASSWORD@` (the redacted form is `user:***@`).
//! * `ExchangeSource::parse`: `Ok` exactly for `name type [keys]` with a 1–255-byte name, a
//!   type among direct/fanout/topic, keys of at most 255 bytes, keys for direct, none for
//!   fanout; the keys are then the given ones, `[""]` for fanout, `["#"]` for a keyless topic.
//! * `routing_key`: `Some` exactly up to 255 bytes.
//! * `dedupe_key`: deterministic; with a non-empty message id it depends on nothing else.
//! * `Occurrences::see` (non-decreasing times, window 30): equals a model that forgets a key
//!   once its newest sighting is `window` seconds old and otherwise counts sightings.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use push_stream_core::amqp::{
    check_url, dedupe_key, map, redact, routing_key, ExchangeKind, ExchangeSource, MapError,
    Occurrences, MAX_SHORT,
};
use push_stream_core::channel_path::{is_reserved_id, parse_channels};

fn part<'a>(parts: &[&'a [u8]], i: usize) -> Option<&'a [u8]> {
    parts.get(i).copied()
}

fn check_map(parts: &[&[u8]]) {
    let rk = part(parts, 0).unwrap_or(b"");
    let names = ["channel", "event-id", "event-type", "push-stream-op"];
    let header = |n: &str| {
        let i = names.iter().position(|x| *x == n)?;
        part(parts, i + 1).map(|v| v.to_vec())
    };
    let got = map(rk, header);
    // Reference.
    let path: Vec<u8> = match header("channel").filter(|c| !c.is_empty()) {
        Some(c) => c,
        None => rk.to_vec(),
    };
    let ids: Vec<Vec<u8>> = parse_channels(&path)
        .into_iter()
        .map(|c| c.id)
        .filter(|id| !id.is_empty())
        .collect();
    match got {
        Err(MapError::NoChannel) => assert!(ids.is_empty()),
        Err(MapError::ReservedChannel(id)) => {
            assert_eq!(ids.iter().find(|i| is_reserved_id(i)), Some(&id));
        }
        Ok(m) => {
            assert!(!ids.is_empty() && !ids.iter().any(|i| is_reserved_id(i)));
            assert_eq!(m.channels, ids);
            assert!(m.channels.iter().all(|c| !c.contains(&b'/') && !c.is_empty()));
            assert_eq!(m.event_id, header("event-id").unwrap_or_default());
            assert_eq!(m.event_type, header("event-type").unwrap_or_default());
            let op = header("push-stream-op");
            assert_eq!(m.delete, op.is_some_and(|v| v.eq_ignore_ascii_case(b"delete")));
            // Deterministic, and a message id is the whole key.
            let body = part(parts, 8).unwrap_or(b"");
            let a = dedupe_key(None, rk, &m, Some(7), body);
            assert_eq!(a, dedupe_key(None, rk, &m, Some(7), body));
            if let Some(id) = part(parts, 7).filter(|i| !i.is_empty()) {
                assert_eq!(
                    dedupe_key(Some(id), rk, &m, None, body),
                    dedupe_key(Some(id), b"other", &m, Some(1), b"x")
                );
            }
        }
    }
}

fn check_url_redaction(parts: &[&[u8]]) {
    let Some(raw) = part(parts, 5) else { return };
    let url = String::from_utf8_lossy(raw).into_owned();
    let err = check_url(&url).err();
    let shown = redact(&url);
    // scheme://user:PASSWORD@rest with a password found nowhere else in the URL.
    if let Some(sep) = url.find("://") {
        let after = &url[sep + 3..];
        let authority = &after[..after.find(['/', '?']).unwrap_or(after.len())];
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            if let Some((_, pw)) = userinfo.split_once(':') {
                // The password in its place (`:PASSWORD@`) appears in neither the redacted
                // URL nor the error, where the URL is shown as `user:***@host`.
                let in_place = format!(":{pw}@");
                if !pw.is_empty() && pw != "***" && url.matches(&in_place).count() == 1 {
                    assert!(!shown.contains(&in_place), "{shown}");
                    assert!(shown.contains(":***@"), "{shown}");
                    if let Some(e) = &err {
                        assert!(!e.contains(&in_place), "{e}");
                    }
                }
            }
        }
    }
}

fn check_exchange(parts: &[&[u8]]) {
    let Some(raw) = part(parts, 6) else { return };
    let text = String::from_utf8_lossy(raw).into_owned();
    let words: Vec<String> = text.split(' ').map(String::from).collect();
    let got = ExchangeSource::parse(&words);
    let expected_ok = match words.as_slice() {
        [name, kind, keys @ ..] => {
            !name.is_empty()
                && name.len() <= MAX_SHORT
                && keys.iter().all(|k| k.len() <= MAX_SHORT)
                && match kind.as_str() {
                    "direct" => !keys.is_empty(),
                    "fanout" => keys.is_empty(),
                    "topic" => true,
                    _ => false,
                }
        }
        _ => false,
    };
    assert_eq!(got.is_ok(), expected_ok, "{words:?}: {got:?}");
    if let Ok(x) = got {
        assert_eq!(x.name, words[0]);
        assert_eq!(x.kind.as_str(), words[1]);
        let given = &words[2..];
        let keys: Vec<String> = match x.kind {
            ExchangeKind::Fanout => vec![String::new()],
            ExchangeKind::Topic if given.is_empty() => vec!["#".to_string()],
            _ => given.to_vec(),
        };
        assert_eq!(x.keys, keys);
    }
    assert_eq!(routing_key(raw).is_some(), raw.len() <= MAX_SHORT);
}

fn check_occurrences(parts: &[&[u8]]) {
    let Some(raw) = part(parts, 9) else { return };
    const WINDOW: i64 = 30;
    let mut o = Occurrences::default();
    let mut model: HashMap<u128, (u32, i64)> = HashMap::new();
    let mut now: i64 = 1_000;
    for pair in raw.chunks(2) {
        let key = u128::from(pair[0] % 8);
        now += i64::from(*pair.get(1).unwrap_or(&0) % 20);
        model.retain(|_, (_, last)| *last > now - WINDOW);
        let e = model.entry(key).or_insert((0, now));
        e.0 += 1;
        e.1 = now;
        assert_eq!(o.see(key, now, WINDOW), e.0, "key {key} at {now}");
        assert_eq!(o.len(), model.len());
    }
}

fuzz_target!(|data: &[u8]| {
    let parts: Vec<&[u8]> = data.split(|b| *b == 0xFF).collect();
    check_map(&parts);
    check_url_redaction(&parts);
    check_exchange(&parts);
    check_occurrences(&parts);
});
