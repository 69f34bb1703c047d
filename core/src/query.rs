//! Query strings (`$args`): the raw value of one argument.

/// The raw value of the first argument called `name` in the query string `args` (the part of
/// the URI after `?`, without it), or `None` when there is none.
///
/// The string is split on `&`; in each part the key is what precedes the first `=` (the whole
/// part when there is no `=`), compared byte for byte (case-sensitive), and the value is what
/// follows that `=` (empty when there is none: `a&b` gives `b` the value `""`). Nothing is
/// URL-decoded, `+` is not a space and `;` is not a separator. Same logic as the module's
/// former private `query_arg` in `src/handlers.rs`.
pub fn arg(args: &[u8], name: &[u8]) -> Option<Vec<u8>> {
    args.split(|b| *b == b'&').find_map(|kv| {
        let mut it = kv.splitn(2, |b| *b == b'=');
        let k = it.next()?;
        (k == name).then(|| it.next().unwrap_or(b"").to_vec())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(args: &str, name: &str) -> Option<String> {
        arg(args.as_bytes(), name.as_bytes()).map(|v| String::from_utf8(v).unwrap())
    }

    #[test]
    fn finds_values() {
        assert_eq!(get("callback=cb", "callback").as_deref(), Some("cb"));
        assert_eq!(
            get("a=1&callback=cb&b=2", "callback").as_deref(),
            Some("cb")
        );
        assert_eq!(get("a=1&b=2", "b").as_deref(), Some("2"));
        assert_eq!(get("a=1&b=2", "c"), None);
        assert_eq!(get("", "a"), None);
    }

    #[test]
    fn first_occurrence_wins() {
        assert_eq!(get("a=1&a=2", "a").as_deref(), Some("1"));
        assert_eq!(get("a&a=2", "a").as_deref(), Some(""));
    }

    #[test]
    fn missing_or_empty_values_are_empty() {
        assert_eq!(get("a", "a").as_deref(), Some(""));
        assert_eq!(get("a=", "a").as_deref(), Some(""));
        assert_eq!(get("x=1&a", "a").as_deref(), Some(""));
    }

    #[test]
    fn value_is_raw_after_the_first_equals_sign() {
        assert_eq!(get("a=1=2", "a").as_deref(), Some("1=2"));
        assert_eq!(get("cb=a%2Eb+c", "cb").as_deref(), Some("a%2Eb+c"));
        assert_eq!(get("a=x;b=y", "a").as_deref(), Some("x;b=y"));
        assert_eq!(get("a=x;b=y", "b"), None);
    }

    #[test]
    fn keys_are_byte_exact() {
        assert_eq!(get("Callback=cb", "callback"), None);
        assert_eq!(get("callback =cb", "callback"), None);
        assert_eq!(get("callbackx=cb", "callback"), None);
        assert_eq!(get("cb%3D=1", "cb="), None);
        // An empty name matches an empty key (a leading `&`, `&&`, or `=v`).
        assert_eq!(get("&a=1", "").as_deref(), Some(""));
        assert_eq!(get("=v&a=1", "").as_deref(), Some("v"));
        assert_eq!(get("a=1", ""), None);
        // The empty query string is one empty part.
        assert_eq!(get("", "").as_deref(), Some(""));
    }

    #[test]
    fn non_utf8_bytes_are_kept() {
        assert_eq!(
            arg(b"k=\xff\x00&x", b"k").as_deref(),
            Some(&b"\xff\x00"[..])
        );
        assert_eq!(arg(b"\xfe=1", b"\xfe").as_deref(), Some(&b"1"[..]));
    }
}
