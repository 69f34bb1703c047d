//! Channel information formats and content negotiation (docs/reference.md sections 2.4 and 2.5).
//!
//! The byte layouts (CRLFs, spacing, key order, `active_subscribers` in plain, the quoted `pid`
//! in JSON, the XML declaration) are those of the C module, with one **deliberate deviation**:
//! channel ids are escaped instead of written raw (issue #186: a `"` in an id broke the JSON).
//!
//! * JSON: the id (and host name) is JSON-string escaped.
//! * XML: the id (and host name) is XML escaped.
//! * plain and YAML: the id is written raw when every byte is a printable ASCII character
//!   (0x20–0x7E) other than `"` and `\`; otherwise it is written as a double-quoted,
//!   JSON-style escaped string (for example `channel: "a\"b\n"`), which is also a valid YAML
//!   double-quoted scalar. Ids that are plain printable text, the normal case, are unchanged.

pub use crate::date::stats_time;
use crate::escape::{json_escape_into, xml_escape_into};

/// A channel-info output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// `key: value` lines.
    Plain,
    /// JSON (the default).
    Json,
    /// YAML-like lines.
    Yaml,
    /// XML.
    Xml,
}

/// The subtypes, in the C module's table order (first hit wins): name, format, content type.
const SUBTYPES: [(&[u8], Format, &str); 6] = [
    (b"plain", Format::Plain, "text/plain"),
    (b"json", Format::Json, "application/json"),
    (b"yaml", Format::Yaml, "application/yaml"),
    (b"xml", Format::Xml, "application/xml"),
    (b"x-json", Format::Json, "text/x-json"),
    (b"x-yaml", Format::Yaml, "text/x-yaml"),
];

/// Picks the format and response `Content-Type` from the request's `Accept` value.
///
/// Like the C module: for each `/` in the value, in order, the text right after it is compared
/// with `plain`, `json`, `yaml`, `xml`, `x-json`, `x-yaml` (in that order); a subtype matches
/// when the text starts with its name (so `application/json; q=1` and `text/xml-ish` match).
/// The first hit wins. No header or no hit → JSON, `application/json`. Matching is byte-exact
/// (case-sensitive). No name in the list is a prefix of another, so `x-json` reaches its own
/// entry and gives `text/x-json`.
pub fn negotiate(accept: Option<&[u8]>) -> (Format, &'static str) {
    let default = (Format::Json, "application/json");
    let Some(accept) = accept else {
        return default;
    };
    for (i, _) in accept.iter().enumerate().filter(|(_, &b)| b == b'/') {
        let after = &accept[i + 1..];
        if let Some(&(_, fmt, ct)) = SUBTYPES.iter().find(|(name, _, _)| after.starts_with(name)) {
            return (fmt, ct);
        }
    }
    default
}

/// Counters of one channel.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChannelInfo {
    /// Channel id (raw bytes).
    pub id: Vec<u8>,
    /// Last message id of the channel (every message ever published to it).
    pub published_messages: u64,
    /// Current queue length.
    pub stored_messages: u64,
    /// Current subscriptions, all workers.
    pub subscribers: u64,
}

/// One live worker slot in the summarized statistics.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WorkerInfo {
    /// Worker process id.
    pub pid: u32,
    /// Subscriber connections in that worker.
    pub subscribers: u64,
    /// Seconds since the worker started.
    pub uptime: u64,
}

/// Summarized statistics (statistics location without an id).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Summary {
    /// Host name.
    pub hostname: String,
    /// [`stats_time`] of now.
    pub time: String,
    /// The host's counters (its `created` is not shown: `uptime` is).
    pub counters: crate::store::Counters,
    /// Seconds since the zone was created.
    pub uptime: u64,
    /// Additional numeric fields of ours (for example shared memory used / limit), printed after
    /// `uptime` and before `by_worker` in every format, in the same style as the other numbers.
    /// Key bytes other than ASCII letters, digits, `_`, `-` and `.` are replaced by `_` so the
    /// key is always a valid JSON string, YAML key and XML element name.
    pub extra: Vec<(String, u64)>,
    /// One entry per live worker.
    pub by_worker: Vec<WorkerInfo>,
}

/// Head of a group listing (several channels, `ALL`, prefix).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupHead {
    /// Host name.
    pub hostname: String,
    /// [`stats_time`] of now.
    pub time: String,
    /// Live non-wildcard channels (zone total).
    pub channels: u64,
    /// Live wildcard channels (zone total).
    pub wildcard_channels: u64,
    /// Seconds since the zone was created.
    pub uptime: u64,
}

const XML_DECL: &[u8] = b"<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\r\n";

fn push_num(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(n.to_string().as_bytes());
}

/// Plain/YAML value: raw when safe, else a JSON-style quoted string.
fn push_text_value(out: &mut Vec<u8>, s: &[u8]) {
    if s.iter()
        .all(|&b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\')
    {
        out.extend_from_slice(s);
    } else {
        out.push(b'"');
        json_escape_into(out, s);
        out.push(b'"');
    }
}

fn push_json_str(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    json_escape_into(out, s);
    out.push(b'"');
}

fn sanitized_key(k: &str) -> Vec<u8> {
    k.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.' {
                b
            } else {
                b'_'
            }
        })
        .collect()
}

/// The single-channel pattern without the format's final CRLF (XML: with it, no declaration).
fn channel_item(out: &mut Vec<u8>, fmt: Format, c: &ChannelInfo) {
    match fmt {
        Format::Json => {
            out.extend_from_slice(b"{\"channel\": ");
            push_json_str(out, &c.id);
            out.extend_from_slice(b", \"published_messages\": ");
            push_num(out, c.published_messages);
            out.extend_from_slice(b", \"stored_messages\": ");
            push_num(out, c.stored_messages);
            out.extend_from_slice(b", \"subscribers\": ");
            push_num(out, c.subscribers);
            out.push(b'}');
        }
        Format::Plain | Format::Yaml => {
            let (indent, subs): (&[u8], &[u8]) = if fmt == Format::Plain {
                (b"", b"active_subscribers: ")
            } else {
                (b"  ", b"subscribers: ")
            };
            out.extend_from_slice(indent);
            out.extend_from_slice(b"channel: ");
            push_text_value(out, &c.id);
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(indent);
            out.extend_from_slice(b"published_messages: ");
            push_num(out, c.published_messages);
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(indent);
            out.extend_from_slice(b"stored_messages: ");
            push_num(out, c.stored_messages);
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(indent);
            out.extend_from_slice(subs);
            push_num(out, c.subscribers);
        }
        Format::Xml => {
            out.extend_from_slice(b"<channel>\r\n  <name>");
            xml_escape_into(out, &c.id);
            out.extend_from_slice(b"</name>\r\n  <published_messages>");
            push_num(out, c.published_messages);
            out.extend_from_slice(b"</published_messages>\r\n  <stored_messages>");
            push_num(out, c.stored_messages);
            out.extend_from_slice(b"</stored_messages>\r\n  <subscribers>");
            push_num(out, c.subscribers);
            out.extend_from_slice(b"</subscribers>\r\n</channel>\r\n");
        }
    }
}

/// Single-channel info (publisher GET/POST, statistics for one id).
pub fn render_channel(fmt: Format, c: &ChannelInfo) -> Vec<u8> {
    let mut out = Vec::with_capacity(160 + c.id.len());
    match fmt {
        Format::Xml => {
            out.extend_from_slice(XML_DECL);
            channel_item(&mut out, fmt, c);
            out.extend_from_slice(b"\r\n");
        }
        _ => {
            channel_item(&mut out, fmt, c);
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

/// Group listing: head, one item per channel, tail.
pub fn render_group(fmt: Format, head: &GroupHead, channels: &[ChannelInfo]) -> Vec<u8> {
    let mut out = Vec::with_capacity(200 + channels.len() * 160);
    // head
    match fmt {
        Format::Json => {
            out.extend_from_slice(b"{\"hostname\": ");
            push_json_str(&mut out, head.hostname.as_bytes());
            out.extend_from_slice(b", \"time\": ");
            push_json_str(&mut out, head.time.as_bytes());
            out.extend_from_slice(b", \"channels\": ");
            push_num(&mut out, head.channels);
            out.extend_from_slice(b", \"wildcard_channels\": ");
            push_num(&mut out, head.wildcard_channels);
            out.extend_from_slice(b", \"uptime\": ");
            push_num(&mut out, head.uptime);
            out.extend_from_slice(b", \"infos\": [\r\n");
        }
        Format::Plain => {
            out.extend_from_slice(b"hostname: ");
            push_text_value(&mut out, head.hostname.as_bytes());
            out.extend_from_slice(b", time: ");
            push_text_value(&mut out, head.time.as_bytes());
            out.extend_from_slice(b", channels: ");
            push_num(&mut out, head.channels);
            out.extend_from_slice(b", wildcard_channels: ");
            push_num(&mut out, head.wildcard_channels);
            out.extend_from_slice(b", uptime: ");
            push_num(&mut out, head.uptime);
            out.extend_from_slice(b", infos: \r\n");
        }
        Format::Yaml => {
            out.extend_from_slice(b"hostname: ");
            push_text_value(&mut out, head.hostname.as_bytes());
            out.extend_from_slice(b"\r\ntime: ");
            push_text_value(&mut out, head.time.as_bytes());
            out.extend_from_slice(b"\r\nchannels: ");
            push_num(&mut out, head.channels);
            out.extend_from_slice(b"\r\nwildcard_channels: ");
            push_num(&mut out, head.wildcard_channels);
            out.extend_from_slice(b"\r\nuptime: ");
            push_num(&mut out, head.uptime);
            out.extend_from_slice(b"\r\ninfos: \r\n");
        }
        Format::Xml => {
            out.extend_from_slice(XML_DECL);
            out.extend_from_slice(b"<root>\r\n  <hostname>");
            xml_escape_into(&mut out, head.hostname.as_bytes());
            out.extend_from_slice(b"</hostname>\r\n  <time>");
            xml_escape_into(&mut out, head.time.as_bytes());
            out.extend_from_slice(b"</time>\r\n  <channels>");
            push_num(&mut out, head.channels);
            out.extend_from_slice(b"</channels>\r\n  <wildcard_channels>");
            push_num(&mut out, head.wildcard_channels);
            out.extend_from_slice(b"</wildcard_channels>\r\n  <uptime>");
            push_num(&mut out, head.uptime);
            out.extend_from_slice(b"</uptime>\r\n  <infos>\r\n");
        }
    }
    // items
    let n = channels.len();
    for (i, c) in channels.iter().enumerate() {
        let last = i + 1 == n;
        match fmt {
            Format::Json => {
                channel_item(&mut out, fmt, c);
                out.extend_from_slice(if last { b"\r\n" } else { b",\r\n" });
            }
            Format::Plain => {
                channel_item(&mut out, fmt, c);
                if !last {
                    out.extend_from_slice(b",\r\n");
                }
            }
            Format::Yaml => {
                out.extend_from_slice(b" -\r\n");
                channel_item(&mut out, fmt, c);
                if !last {
                    out.extend_from_slice(b"\r\n");
                }
            }
            Format::Xml => channel_item(&mut out, fmt, c),
        }
    }
    // tail
    out.extend_from_slice(match fmt {
        Format::Json => b"]}\r\n",
        Format::Plain | Format::Yaml => b"\r\n",
        Format::Xml => b"  </infos>\r\n</root>\r\n",
    });
    out
}

/// Summarized statistics (statistics location without an id).
pub fn render_summary(fmt: Format, s: &Summary) -> Vec<u8> {
    let mut out = Vec::with_capacity(600 + s.by_worker.len() * 80);
    let numbers: [(&str, u64); 9] = [
        ("channels", s.counters.channels),
        ("wildcard_channels", s.counters.wildcard_channels),
        ("published_messages", s.counters.published_messages),
        ("stored_messages", s.counters.stored_messages),
        ("messages_in_trash", s.counters.messages_in_trash),
        ("channels_in_delete", s.counters.channels_in_delete),
        ("channels_in_trash", s.counters.channels_in_trash),
        ("subscribers", s.counters.subscribers),
        ("uptime", s.uptime),
    ];
    let numbers: Vec<(Vec<u8>, u64)> = numbers
        .iter()
        .map(|&(k, v)| (k.as_bytes().to_vec(), v))
        .collect();
    // This module's own fields come after the C module's, `by_worker` included, so tools that
    // read the C module's output in order see it unchanged.
    let extra: Vec<(Vec<u8>, u64)> = s
        .extra
        .iter()
        .map(|(k, v)| (sanitized_key(k), *v))
        .collect();
    let nw = s.by_worker.len();
    match fmt {
        Format::Json => {
            out.extend_from_slice(b"{\"hostname\": ");
            push_json_str(&mut out, s.hostname.as_bytes());
            out.extend_from_slice(b", \"time\": ");
            push_json_str(&mut out, s.time.as_bytes());
            for (k, v) in &numbers {
                out.extend_from_slice(b", \"");
                out.extend_from_slice(k);
                out.extend_from_slice(b"\": ");
                push_num(&mut out, *v);
            }
            out.extend_from_slice(b", \"by_worker\": [\r\n");
            for (i, w) in s.by_worker.iter().enumerate() {
                out.extend_from_slice(b"{\"pid\": \"");
                push_num(&mut out, u64::from(w.pid));
                out.extend_from_slice(b"\", \"subscribers\": ");
                push_num(&mut out, w.subscribers);
                out.extend_from_slice(b", \"uptime\": ");
                push_num(&mut out, w.uptime);
                out.push(b'}');
                if i + 1 < nw {
                    out.extend_from_slice(b",\r\n");
                }
            }
            out.extend_from_slice(b"\r\n]");
            for (k, v) in &extra {
                out.extend_from_slice(b", \"");
                out.extend_from_slice(k);
                out.extend_from_slice(b"\": ");
                push_num(&mut out, *v);
            }
            out.extend_from_slice(b"}\r\n");
        }
        Format::Plain | Format::Yaml => {
            let yaml = fmt == Format::Yaml;
            let indent: &[u8] = if yaml { b"  " } else { b"" };
            out.extend_from_slice(indent);
            out.extend_from_slice(b"hostname: ");
            push_text_value(&mut out, s.hostname.as_bytes());
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(indent);
            out.extend_from_slice(b"time: ");
            push_text_value(&mut out, s.time.as_bytes());
            out.extend_from_slice(b"\r\n");
            for (k, v) in &numbers {
                out.extend_from_slice(indent);
                out.extend_from_slice(k);
                out.extend_from_slice(b": ");
                push_num(&mut out, *v);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(indent);
            out.extend_from_slice(b"by_worker:\r\n");
            for (i, w) in s.by_worker.iter().enumerate() {
                let last = i + 1 == nw;
                let wi: &[u8] = if yaml {
                    out.extend_from_slice(b"   -\r\n");
                    b"    "
                } else {
                    b"  "
                };
                out.extend_from_slice(wi);
                out.extend_from_slice(b"pid: ");
                push_num(&mut out, u64::from(w.pid));
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(wi);
                out.extend_from_slice(b"subscribers: ");
                push_num(&mut out, w.subscribers);
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(wi);
                out.extend_from_slice(b"uptime: ");
                push_num(&mut out, w.uptime);
                if !last {
                    out.extend_from_slice(if yaml { b"\r\n" } else { b",\r\n" });
                }
            }
            out.extend_from_slice(b"\r\n");
            for (k, v) in &extra {
                out.extend_from_slice(indent);
                out.extend_from_slice(k);
                out.extend_from_slice(b": ");
                push_num(&mut out, *v);
                out.extend_from_slice(b"\r\n");
            }
        }
        Format::Xml => {
            out.extend_from_slice(XML_DECL);
            out.extend_from_slice(b"<infos>\r\n  <hostname>");
            xml_escape_into(&mut out, s.hostname.as_bytes());
            out.extend_from_slice(b"</hostname>\r\n  <time>");
            xml_escape_into(&mut out, s.time.as_bytes());
            out.extend_from_slice(b"</time>\r\n");
            let fields = |out: &mut Vec<u8>, fields: &[(Vec<u8>, u64)]| {
                for (k, v) in fields {
                    out.extend_from_slice(b"  <");
                    out.extend_from_slice(k);
                    out.push(b'>');
                    push_num(out, *v);
                    out.extend_from_slice(b"</");
                    out.extend_from_slice(k);
                    out.extend_from_slice(b">\r\n");
                }
            };
            fields(&mut out, &numbers);
            out.extend_from_slice(b"  <by_worker>");
            for w in &s.by_worker {
                out.extend_from_slice(b"<worker>\r\n  <pid>");
                push_num(&mut out, u64::from(w.pid));
                out.extend_from_slice(b"</pid>\r\n  <subscribers>");
                push_num(&mut out, w.subscribers);
                out.extend_from_slice(b"</subscribers>\r\n  <uptime>");
                push_num(&mut out, w.uptime);
                out.extend_from_slice(b"</uptime>\r\n</worker>\r\n");
            }
            out.extend_from_slice(b"</by_worker>\r\n");
            fields(&mut out, &extra);
            out.extend_from_slice(b"</infos>\r\n");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Minimal strict JSON validator (enough to prove the outputs parse).
    fn json_valid(s: &[u8]) -> bool {
        fn ws(s: &[u8], mut i: usize) -> usize {
            while i < s.len() && matches!(s[i], b' ' | b'\t' | b'\r' | b'\n') {
                i += 1;
            }
            i
        }
        fn value(s: &[u8], i: usize) -> Option<usize> {
            let i = ws(s, i);
            match *s.get(i)? {
                b'{' => {
                    let mut i = ws(s, i + 1);
                    if s.get(i) == Some(&b'}') {
                        return Some(i + 1);
                    }
                    loop {
                        i = string(s, ws(s, i))?;
                        i = ws(s, i);
                        if s.get(i) != Some(&b':') {
                            return None;
                        }
                        i = ws(s, value(s, i + 1)?);
                        match s.get(i)? {
                            b',' => i += 1,
                            b'}' => return Some(i + 1),
                            _ => return None,
                        }
                    }
                }
                b'[' => {
                    let mut i = ws(s, i + 1);
                    if s.get(i) == Some(&b']') {
                        return Some(i + 1);
                    }
                    loop {
                        i = ws(s, value(s, i)?);
                        match s.get(i)? {
                            b',' => i += 1,
                            b']' => return Some(i + 1),
                            _ => return None,
                        }
                    }
                }
                b'"' => string(s, i),
                b'0'..=b'9' | b'-' => {
                    let mut j = i + 1;
                    while j < s.len() && s[j].is_ascii_digit() {
                        j += 1;
                    }
                    Some(j)
                }
                _ => None,
            }
        }
        fn string(s: &[u8], i: usize) -> Option<usize> {
            if s.get(i) != Some(&b'"') {
                return None;
            }
            let mut i = i + 1;
            loop {
                match *s.get(i)? {
                    b'"' => return Some(i + 1),
                    b'\\' => match *s.get(i + 1)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                        b'u' => {
                            if !s.get(i + 2..i + 6)?.iter().all(u8::is_ascii_hexdigit) {
                                return None;
                            }
                            i += 6;
                        }
                        _ => return None,
                    },
                    c if c < 0x20 => return None,
                    _ => i += 1,
                }
            }
        }
        std::str::from_utf8(s).is_ok() && value(s, 0).map(|i| ws(s, i)) == Some(s.len())
    }

    fn info(id: &[u8], p: u64, st: u64, sub: u64) -> ChannelInfo {
        ChannelInfo {
            id: id.to_vec(),
            published_messages: p,
            stored_messages: st,
            subscribers: sub,
        }
    }

    fn head() -> GroupHead {
        GroupHead {
            hostname: "host".into(),
            time: "2026-11-24T16:55:36".into(),
            channels: 3,
            wildcard_channels: 1,
            uptime: 42,
        }
    }

    #[test]
    fn negotiation() {
        assert_eq!(negotiate(None), (Format::Json, "application/json"));
        assert_eq!(negotiate(Some(b"")), (Format::Json, "application/json"));
        assert_eq!(negotiate(Some(b"*/*")), (Format::Json, "application/json"));
        assert_eq!(
            negotiate(Some(b"text/plain")),
            (Format::Plain, "text/plain")
        );
        assert_eq!(
            negotiate(Some(b"application/json")),
            (Format::Json, "application/json")
        );
        assert_eq!(
            negotiate(Some(b"text/json")),
            (Format::Json, "application/json")
        );
        assert_eq!(
            negotiate(Some(b"text/x-json")),
            (Format::Json, "text/x-json")
        );
        assert_eq!(
            negotiate(Some(b"application/yaml")),
            (Format::Yaml, "application/yaml")
        );
        assert_eq!(
            negotiate(Some(b"text/x-yaml")),
            (Format::Yaml, "text/x-yaml")
        );
        assert_eq!(
            negotiate(Some(b"application/xml")),
            (Format::Xml, "application/xml")
        );
        assert_eq!(
            negotiate(Some(b"text/xml; q=0.9")),
            (Format::Xml, "application/xml")
        );
        // first slash without a hit is skipped, the next one wins
        assert_eq!(
            negotiate(Some(b"text/html, application/xml, text/plain")),
            (Format::Xml, "application/xml")
        );
        assert_eq!(
            negotiate(Some(b"text/html")),
            (Format::Json, "application/json")
        );
        // prefix compare of the whole name
        assert_eq!(
            negotiate(Some(b"text/plainer")),
            (Format::Plain, "text/plain")
        );
        assert_eq!(
            negotiate(Some(b"text/pla")),
            (Format::Json, "application/json")
        );
        assert_eq!(
            negotiate(Some(b"text/PLAIN")),
            (Format::Json, "application/json")
        );
        assert_eq!(
            negotiate(Some(b"text/xhtml+xml")),
            (Format::Json, "application/json")
        );
    }

    #[test]
    fn single_channel_all_formats() {
        let c = info(b"ch1", 10, 3, 2);
        assert_eq!(
            render_channel(Format::Json, &c),
            b"{\"channel\": \"ch1\", \"published_messages\": 10, \"stored_messages\": 3, \"subscribers\": 2}\r\n".to_vec()
        );
        assert_eq!(
            render_channel(Format::Plain, &c),
            b"channel: ch1\r\npublished_messages: 10\r\nstored_messages: 3\r\nactive_subscribers: 2\r\n".to_vec()
        );
        assert_eq!(
            render_channel(Format::Yaml, &c),
            b"  channel: ch1\r\n  published_messages: 10\r\n  stored_messages: 3\r\n  subscribers: 2\r\n".to_vec()
        );
        assert_eq!(
            render_channel(Format::Xml, &c),
            b"<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\r\n<channel>\r\n  <name>ch1</name>\r\n  <published_messages>10</published_messages>\r\n  <stored_messages>3</stored_messages>\r\n  <subscribers>2</subscribers>\r\n</channel>\r\n\r\n".to_vec()
        );
        assert!(json_valid(&render_channel(Format::Json, &c)));
    }

    #[test]
    fn ids_are_escaped() {
        let c = info(b"a\"b\\c\n", 1, 0, 0);
        let json = render_channel(Format::Json, &c);
        assert_eq!(
            json,
            b"{\"channel\": \"a\\\"b\\\\c\\n\", \"published_messages\": 1, \"stored_messages\": 0, \"subscribers\": 0}\r\n".to_vec()
        );
        assert!(json_valid(&json));
        assert_eq!(
            render_channel(Format::Plain, &c),
            b"channel: \"a\\\"b\\\\c\\n\"\r\npublished_messages: 1\r\nstored_messages: 0\r\nactive_subscribers: 0\r\n".to_vec()
        );
        assert!(render_channel(Format::Yaml, &c).starts_with(b"  channel: \"a\\\"b\\\\c\\n\"\r\n"));
        let xml = render_channel(Format::Xml, &info(b"<a&'\">", 0, 0, 0));
        assert!(xml
            .windows(b"<name>&lt;a&amp;&apos;&quot;&gt;</name>".len())
            .any(|w| w == b"<name>&lt;a&amp;&apos;&quot;&gt;</name>"));
        // a safe id with spaces and punctuation stays raw in plain
        assert!(render_channel(Format::Plain, &info(b"a b:c/d", 0, 0, 0))
            .starts_with(b"channel: a b:c/d\r\n"));
        // empty id stays raw
        assert!(render_channel(Format::Plain, &info(b"", 0, 0, 0)).starts_with(b"channel: \r\n"));
        // invalid UTF-8 is escaped and still valid JSON
        assert!(json_valid(&render_channel(
            Format::Json,
            &info(b"\xff\x01", 0, 0, 0)
        )));
    }

    #[test]
    fn group_json() {
        let chans = [info(b"a", 1, 1, 0), info(b"b\"", 2, 0, 5)];
        let out = render_group(Format::Json, &head(), &chans);
        assert_eq!(
            out,
            b"{\"hostname\": \"host\", \"time\": \"2026-11-24T16:55:36\", \"channels\": 3, \"wildcard_channels\": 1, \"uptime\": 42, \"infos\": [\r\n{\"channel\": \"a\", \"published_messages\": 1, \"stored_messages\": 1, \"subscribers\": 0},\r\n{\"channel\": \"b\\\"\", \"published_messages\": 2, \"stored_messages\": 0, \"subscribers\": 5}\r\n]}\r\n".to_vec()
        );
        assert!(json_valid(&out));
        let empty = render_group(Format::Json, &head(), &[]);
        assert_eq!(
            empty,
            b"{\"hostname\": \"host\", \"time\": \"2026-11-24T16:55:36\", \"channels\": 3, \"wildcard_channels\": 1, \"uptime\": 42, \"infos\": [\r\n]}\r\n".to_vec()
        );
        assert!(json_valid(&empty));
    }

    #[test]
    fn group_plain_yaml_xml() {
        let chans = [info(b"a", 1, 1, 0), info(b"b", 2, 0, 5)];
        assert_eq!(
            render_group(Format::Plain, &head(), &chans),
            b"hostname: host, time: 2026-11-24T16:55:36, channels: 3, wildcard_channels: 1, uptime: 42, infos: \r\nchannel: a\r\npublished_messages: 1\r\nstored_messages: 1\r\nactive_subscribers: 0,\r\nchannel: b\r\npublished_messages: 2\r\nstored_messages: 0\r\nactive_subscribers: 5\r\n".to_vec()
        );
        assert_eq!(
            render_group(Format::Yaml, &head(), &chans),
            b"hostname: host\r\ntime: 2026-11-24T16:55:36\r\nchannels: 3\r\nwildcard_channels: 1\r\nuptime: 42\r\ninfos: \r\n -\r\n  channel: a\r\n  published_messages: 1\r\n  stored_messages: 1\r\n  subscribers: 0\r\n -\r\n  channel: b\r\n  published_messages: 2\r\n  stored_messages: 0\r\n  subscribers: 5\r\n".to_vec()
        );
        assert_eq!(
            render_group(Format::Xml, &head(), &chans[..1]),
            b"<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\r\n<root>\r\n  <hostname>host</hostname>\r\n  <time>2026-11-24T16:55:36</time>\r\n  <channels>3</channels>\r\n  <wildcard_channels>1</wildcard_channels>\r\n  <uptime>42</uptime>\r\n  <infos>\r\n<channel>\r\n  <name>a</name>\r\n  <published_messages>1</published_messages>\r\n  <stored_messages>1</stored_messages>\r\n  <subscribers>0</subscribers>\r\n</channel>\r\n  </infos>\r\n</root>\r\n".to_vec()
        );
        assert_eq!(
            render_group(Format::Plain, &head(), &[]),
            b"hostname: host, time: 2026-11-24T16:55:36, channels: 3, wildcard_channels: 1, uptime: 42, infos: \r\n\r\n".to_vec()
        );
    }

    fn summary(extra: Vec<(String, u64)>, workers: usize) -> Summary {
        Summary {
            hostname: "h".into(),
            time: "T".into(),
            counters: crate::store::Counters {
                channels: 1,
                wildcard_channels: 2,
                published_messages: 3,
                stored_messages: 4,
                messages_in_trash: 5,
                channels_in_delete: 6,
                channels_in_trash: 7,
                subscribers: 8,
                created: 0,
            },
            uptime: 9,
            extra,
            by_worker: (0..workers)
                .map(|i| WorkerInfo {
                    pid: 100 + i as u32,
                    subscribers: i as u64,
                    uptime: 10 + i as u64,
                })
                .collect(),
        }
    }

    #[test]
    fn summary_json() {
        let out = render_summary(Format::Json, &summary(vec![], 2));
        assert_eq!(
            out,
            b"{\"hostname\": \"h\", \"time\": \"T\", \"channels\": 1, \"wildcard_channels\": 2, \"published_messages\": 3, \"stored_messages\": 4, \"messages_in_trash\": 5, \"channels_in_delete\": 6, \"channels_in_trash\": 7, \"subscribers\": 8, \"uptime\": 9, \"by_worker\": [\r\n{\"pid\": \"100\", \"subscribers\": 0, \"uptime\": 10},\r\n{\"pid\": \"101\", \"subscribers\": 1, \"uptime\": 11}\r\n]}\r\n".to_vec()
        );
        assert!(json_valid(&out));
        let with_extra = render_summary(
            Format::Json,
            &summary(vec![("shm used".into(), 77), ("shm_limit".into(), 88)], 1),
        );
        assert!(json_valid(&with_extra));
        let text = String::from_utf8(with_extra).unwrap();
        assert!(text.contains(
            "\"uptime\": 9, \"by_worker\": [\r\n{\"pid\": \"100\", \"subscribers\": 0, \"uptime\": 10}\r\n], \"shm_used\": 77, \"shm_limit\": 88}\r\n"
        ));
        assert!(json_valid(&render_summary(
            Format::Json,
            &summary(vec![], 0)
        )));
    }

    #[test]
    fn summary_plain_yaml_xml() {
        let s = summary(vec![("shm_used".into(), 77)], 2);
        assert_eq!(
            render_summary(Format::Plain, &s),
            b"hostname: h\r\ntime: T\r\nchannels: 1\r\nwildcard_channels: 2\r\npublished_messages: 3\r\nstored_messages: 4\r\nmessages_in_trash: 5\r\nchannels_in_delete: 6\r\nchannels_in_trash: 7\r\nsubscribers: 8\r\nuptime: 9\r\nby_worker:\r\n  pid: 100\r\n  subscribers: 0\r\n  uptime: 10,\r\n  pid: 101\r\n  subscribers: 1\r\n  uptime: 11\r\nshm_used: 77\r\n".to_vec()
        );
        assert_eq!(
            render_summary(Format::Yaml, &s),
            b"  hostname: h\r\n  time: T\r\n  channels: 1\r\n  wildcard_channels: 2\r\n  published_messages: 3\r\n  stored_messages: 4\r\n  messages_in_trash: 5\r\n  channels_in_delete: 6\r\n  channels_in_trash: 7\r\n  subscribers: 8\r\n  uptime: 9\r\n  by_worker:\r\n   -\r\n    pid: 100\r\n    subscribers: 0\r\n    uptime: 10\r\n   -\r\n    pid: 101\r\n    subscribers: 1\r\n    uptime: 11\r\n  shm_used: 77\r\n".to_vec()
        );
        assert_eq!(
            render_summary(Format::Xml, &summary(vec![("shm_used".into(), 77)], 1)),
            b"<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\r\n<infos>\r\n  <hostname>h</hostname>\r\n  <time>T</time>\r\n  <channels>1</channels>\r\n  <wildcard_channels>2</wildcard_channels>\r\n  <published_messages>3</published_messages>\r\n  <stored_messages>4</stored_messages>\r\n  <messages_in_trash>5</messages_in_trash>\r\n  <channels_in_delete>6</channels_in_delete>\r\n  <channels_in_trash>7</channels_in_trash>\r\n  <subscribers>8</subscribers>\r\n  <uptime>9</uptime>\r\n  <by_worker><worker>\r\n  <pid>100</pid>\r\n  <subscribers>0</subscribers>\r\n  <uptime>10</uptime>\r\n</worker>\r\n</by_worker>\r\n  <shm_used>77</shm_used>\r\n</infos>\r\n".to_vec()
        );
    }
}
