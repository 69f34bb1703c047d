//! Dates and times: the HTTP date (RFC 1123) nginx writes and the three forms it parses, and
//! the statistics `time` field. Pure calendar arithmetic (proleptic Gregorian, UTC), shared by
//! [`crate::resume`], [`crate::format`] and [`crate::template`].

use std::io::Write as _;

const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Days since 1970-01-01 → (year, month 1–12, day 1–31), proleptic Gregorian.
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// RFC 1123 date as nginx's `ngx_http_time` writes it: `Tue, 24 Nov 2026 16:55:36 GMT`.
/// Used for `~time~`, `Last-Modified` and friends. Epoch → `Thu, 01 Jan 1970 00:00:00 GMT`.
pub fn http_date(unix_secs: i64) -> String {
    let mut out = Vec::with_capacity(29);
    write_http_date(&mut out, unix_secs);
    // Only ASCII is written.
    String::from_utf8(out).unwrap_or_default()
}

/// Appends [`http_date`] of `unix_secs` to `out` (no intermediate string). Never panics, even
/// for `i64::MIN` / `i64::MAX` (years outside 0–9999 are written with more digits or a sign).
pub fn write_http_date(out: &mut Vec<u8>, unix_secs: i64) {
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    // 1970-01-01 was a Thursday.
    let wday = (days + 4).rem_euclid(7) as usize;
    // Writing to a Vec<u8> cannot fail.
    let _ = write!(
        out,
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        DAYS[wday],
        d,
        MONTHS[(m - 1) as usize],
        y,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
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

/// The statistics `time` field: `YYYY-MM-DDTHH:MM:SS`, UTC.
pub fn stats_time(unix_secs: i64) -> String {
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        y,
        m,
        d,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
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
    fn time_format() {
        assert_eq!(stats_time(0), "1970-01-01T00:00:00");
        assert_eq!(stats_time(1_795_539_336), "2026-11-24T16:55:36");
        assert_eq!(stats_time(951_782_400), "2000-02-29T00:00:00");
        assert_eq!(stats_time(-1), "1969-12-31T23:59:59");
        assert_eq!(stats_time(253_402_300_799), "9999-12-31T23:59:59");
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(2_932_896), (9999, 12, 31));
    }

    #[test]
    fn extremes_do_not_panic() {
        for t in [i64::MIN, i64::MIN + 1, -1, 0, i64::MAX - 1, i64::MAX] {
            let _ = http_date(t);
            let _ = stats_time(t);
        }
    }
}
