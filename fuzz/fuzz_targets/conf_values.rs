//! Directive values (`conf_values`): sizes, times, flags, numbers, modes and
//! `push_stream_padding_by_user_agent`.
//!
//! The input is the value (as UTF-8, lossily converted when it is not, so multi-byte characters
//! do occur). Every parser is run on it.
//!
//! Checked:
//! * `parse_size`: `Ok(n)` ⇔ `digits[k|K|m|M|g|G]` with digits×scale ≤ 2^63-1, and then n is
//!   that product; the plain decimal rendering of n parses back to n.
//! * `parse_time_ms` / `parse_time_s`: results ≤ 2^31-1 and need a digit; `"{v}ms"` (ms) and
//!   `"{v}s"`, `"{v}"` (s) parse back to v; when both accept a value, ms = 1000 × s; a plain
//!   number n is n seconds.
//! * `parse_flag`, `parse_number`, `PublisherMode::parse`, `SubscriberMode::parse`: accept exactly
//!   the documented spellings; error messages quote the value.
//! * `parse_padding`: on success every rule has a non-empty regex without `:`; rendering the
//!   rules canonically (`regex,H,M` joined by `:`) parses back to the same rules. Never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use push_stream_core::conf_values::{
    parse_flag, parse_number, parse_padding, parse_size, parse_time_ms, parse_time_s,
    PublisherMode, SubscriberMode,
};

const MAX_INT32: u64 = i32::MAX as u64;

fn size_ref(s: &str) -> Option<u64> {
    let (digits, scale) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 1u128 << 10),
        b'm' | b'M' => (&s[..s.len() - 1], 1 << 20),
        b'g' | b'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut v: u128 = 0;
    for b in digits.bytes() {
        v = v * 10 + u128::from(b - b'0');
        if v > i64::MAX as u128 {
            return None;
        }
    }
    let n = v * scale;
    (n <= i64::MAX as u128).then_some(n as u64)
}

fn digits_only(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u128>().ok().filter(|&v| v <= i64::MAX as u128).map(|v| v as u64)
}

fuzz_target!(|data: &[u8]| {
    let owned;
    let s: &str = match std::str::from_utf8(data) {
        Ok(s) => s,
        Err(_) => {
            owned = String::from_utf8_lossy(data).into_owned();
            &owned
        }
    };

    // sizes
    let size = parse_size(s);
    assert_eq!(size.clone().ok(), size_ref(s), "parse_size({s:?})");
    if let Ok(n) = size {
        assert_eq!(parse_size(&n.to_string()), Ok(n));
    } else {
        assert!(size.unwrap_err().contains(s));
    }

    // times
    let ms = parse_time_ms(s);
    let sec = parse_time_s(s);
    for v in [&ms, &sec].into_iter().flatten() {
        assert!(*v <= MAX_INT32);
        assert!(s.bytes().any(|b| b.is_ascii_digit()));
    }
    if let Ok(v) = ms {
        assert_eq!(parse_time_ms(&format!("{v}ms")), Ok(v));
    }
    if let Ok(v) = sec {
        assert_eq!(parse_time_s(&format!("{v}s")), Ok(v));
        assert_eq!(parse_time_s(&v.to_string()), Ok(v));
    }
    if let (Ok(a), Ok(b)) = (&ms, &sec) {
        assert_eq!(*a, b * 1000, "ms and s variants disagree on {s:?}");
    }
    if let Some(n) = digits_only(s) {
        assert_eq!(sec.clone().ok(), (n <= MAX_INT32).then_some(n));
        let n_ms = n.checked_mul(1000).filter(|&v| v <= MAX_INT32);
        assert_eq!(ms.clone().ok(), n_ms);
    }

    // flags, numbers, modes
    let flag = parse_flag(s);
    match flag {
        Ok(true) => assert!(s.eq_ignore_ascii_case("on")),
        Ok(false) => assert!(s.eq_ignore_ascii_case("off")),
        Err(e) => {
            assert!(!s.eq_ignore_ascii_case("on") && !s.eq_ignore_ascii_case("off"));
            assert!(e.contains(s));
        }
    }
    assert_eq!(parse_number(s).ok(), digits_only(s), "parse_number({s:?})");
    match PublisherMode::parse(s) {
        Ok(PublisherMode::Normal) => assert!(s.eq_ignore_ascii_case("normal")),
        Ok(PublisherMode::Admin) => assert!(s.eq_ignore_ascii_case("admin")),
        Err(e) => assert!(e.contains(s)),
    }
    let modes = ["streaming", "polling", "long-polling", "eventsource", "websocket"];
    match SubscriberMode::parse(s) {
        Ok(m) => {
            let i = [
                SubscriberMode::Streaming,
                SubscriberMode::Polling,
                SubscriberMode::LongPolling,
                SubscriberMode::EventSource,
                SubscriberMode::WebSocket,
            ]
            .iter()
            .position(|x| *x == m)
            .unwrap();
            assert!(s.eq_ignore_ascii_case(modes[i]));
        }
        Err(e) => {
            assert!(!modes.iter().any(|m| s.eq_ignore_ascii_case(m)));
            assert!(e.contains(s));
        }
    }

    // padding
    if let Ok(rules) = parse_padding(s) {
        assert!(!rules.is_empty());
        let mut canon = String::new();
        for (i, r) in rules.iter().enumerate() {
            assert!(!r.regex.is_empty() && !r.regex.contains(':'), "regex {:?}", r.regex);
            if i > 0 {
                canon.push(':');
            }
            canon.push_str(&format!("{},{},{}", r.regex, r.header_min, r.message_min));
        }
        assert_eq!(parse_padding(&canon), Ok(rules), "canonical padding {canon:?}");
    }
});
