//! Escaping shared by the output formats and the templates.

/// Appends `s` to `out` escaped for use inside a JSON string literal (without the quotes).
///
/// Bytes that are not valid UTF-8 are emitted as `\u00XX` of the raw byte so the output is
/// always valid JSON; valid multi-byte UTF-8 sequences are copied unchanged.
pub fn json_escape_into(out: &mut Vec<u8>, s: &[u8]) {
    let mut rest = s;
    while !rest.is_empty() {
        let (valid, invalid) = match std::str::from_utf8(rest) {
            Ok(v) => (v.as_bytes(), &[][..]),
            Err(e) => {
                let (v, r) = rest.split_at(e.valid_up_to());
                (v, r)
            }
        };
        for &b in valid {
            match b {
                b'"' => out.extend_from_slice(b"\\\""),
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                0x08 => out.extend_from_slice(b"\\b"),
                0x0c => out.extend_from_slice(b"\\f"),
                b if b < 0x20 || b == 0x7f => push_u00(out, b),
                b => out.push(b),
            }
        }
        if invalid.is_empty() {
            break;
        }
        push_u00(out, invalid[0]);
        rest = &invalid[1..];
    }
}

fn push_u00(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend_from_slice(b"\\u00");
    out.push(HEX[(b >> 4) as usize]);
    out.push(HEX[(b & 15) as usize]);
}

/// `s` escaped for a JSON string literal, as a new vector.
pub fn json_escape(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() + 8);
    json_escape_into(&mut out, s);
    out
}

/// Appends `s` to `out` escaped for XML text and attribute content.
pub fn xml_escape_into(out: &mut Vec<u8>, s: &[u8]) {
    for &b in s {
        match b {
            b'&' => out.extend_from_slice(b"&amp;"),
            b'<' => out.extend_from_slice(b"&lt;"),
            b'>' => out.extend_from_slice(b"&gt;"),
            b'"' => out.extend_from_slice(b"&quot;"),
            b'\'' => out.extend_from_slice(b"&apos;"),
            b => out.push(b),
        }
    }
}

/// Whether `v` can be sent as an HTTP header value as is: false when it contains CR, LF or NUL
/// (which would end the header, split the response, or truncate it in C code). Every other
/// byte, including other control bytes and non-ASCII, is accepted.
pub fn header_value_ok(v: &[u8]) -> bool {
    !v.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_escapes_quotes_controls_and_invalid_utf8() {
        assert_eq!(
            json_escape(b"a\"b\\c\nd\x01"),
            b"a\\\"b\\\\c\\nd\\u0001".to_vec()
        );
        assert_eq!(json_escape("é".as_bytes()), "é".as_bytes().to_vec());
        assert_eq!(json_escape(b"x\xffy"), b"x\\u00ffy".to_vec());
    }

    #[test]
    fn xml_escapes_markup() {
        let mut out = Vec::new();
        xml_escape_into(&mut out, b"<a&\"'>");
        assert_eq!(out, b"&lt;a&amp;&quot;&apos;&gt;".to_vec());
    }

    #[test]
    fn header_values() {
        assert!(header_value_ok(b""));
        assert!(header_value_ok(b"text/plain; charset=utf-8"));
        assert!(header_value_ok(b"tab\there \x7f \x01 \xff"));
        assert!(header_value_ok("é".as_bytes()));
        for bad in [&b"a\rb"[..], b"a\nb", b"a\0b", b"\r\n", b"end\n", b"\0"] {
            assert!(!header_value_ok(bad), "{bad:?}");
        }
    }
}
