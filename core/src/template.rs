//! Message templates: parsing, rendering, and the EventSource / JSONP wrappers.
//!
//! A location's `push_stream_message_template` is parsed **once** into a [`Template`] (literal
//! segments and placeholder tokens) and then rendered for every message in a single pass, so a
//! message text that itself contains `~id~` is copied as is and never expanded again (docs/reference.md
//! section 2.8, spec "should not be in loop…").
//!
//! Placeholders are recognised case-insensitively:
//!
//! | token | value |
//! |---|---|
//! | `~text~` | the message text, raw bytes, no escaping |
//! | `~id~` | the message id (`-1` ping, `-2` channel deleted, `-3` long-poll timeout) |
//! | `~channel~` | the channel id, raw |
//! | `~event-id~` / `~event-type~` | the `Event-Id` / `Event-Type` given at publish time, raw |
//! | `~time~` | the publish time as an RFC 1123 HTTP date |
//! | `~tag~` | the publish tag |
//! | `~size~` | the byte length of the message text (per line in EventSource mode) |
//!
//! **Deliberate addition** (not in the C module): `~text-json~`, `~channel-json~`,
//! `~event-id-json~` and `~event-type-json~` insert the same value escaped for use *inside* a JSON
//! string literal (the quotes are not added), see [`crate::escape::json_escape_into`]. The raw
//! tokens stay the default and behave exactly like the C module (docs/reference.md section 7, quirk "`~text~`
//! and ids are never escaped"). An unknown `~word~` is kept literally.
//!
//! EventSource locations rewrite their header, message and footer templates at configuration time
//! ([`eventsource_header`], [`eventsource_message_template`], [`eventsource_footer`]); the rewrites
//! are idempotent. Messages are then rendered line by line by [`render_eventsource`].
//! [`LocationTemplates`] bundles all of this per location.

use std::io::Write as _;
use std::ops::Range;

use crate::date::write_http_date;
use crate::escape::json_escape_into;

/// Message id of a ping rendered through the message template.
pub const PING_MESSAGE_ID: i64 = -1;
/// Message id of the "channel deleted" message.
pub const CHANNEL_DELETED_MESSAGE_ID: i64 = -2;
/// Message id of the long-poll timeout message (`push_stream_timeout_with_body on`).
pub const TIMEOUT_MESSAGE_ID: i64 = -3;

/// Text of the long-poll timeout message.
pub const TIMEOUT_MESSAGE_TEXT: &[u8] = b"Timed out";
/// Default `push_stream_channel_deleted_message_text`.
pub const DEFAULT_CHANNEL_DELETED_MESSAGE_TEXT: &[u8] = b"Channel deleted";
/// Default `push_stream_ping_message_text` (a single space, see docs/reference.md section 7).
pub const DEFAULT_PING_MESSAGE_TEXT: &[u8] = b" ";
/// Default `push_stream_message_template`.
pub const DEFAULT_MESSAGE_TEMPLATE: &[u8] = b"~text~";

/// What an EventSource subscriber receives as a ping: an SSE comment.
pub const EVENTSOURCE_PING: &[u8] = b": -1\n";
/// The EventSource header used when the configured header is empty, so that a comment is always
/// sent at once and the browser fires `onopen`.
pub const EVENTSOURCE_DEFAULT_HEADER: &[u8] = b": \n";
/// Prefix of an SSE comment line; a header/footer starting with it is not rewritten again.
pub const EVENTSOURCE_COMMENT_PREFIX: &[u8] = b": ";
/// Prefix of an SSE data line; a message template starting with it is not rewritten again.
pub const EVENTSOURCE_DATA_PREFIX: &[u8] = b"data: ";

/// Opening of a JSONP batch, written right after the callback name.
pub const JSONP_OPEN: &[u8] = b"([";
/// Separator between two messages of a JSONP batch.
pub const JSONP_SEPARATOR: &[u8] = b",";
/// Closing of a JSONP batch.
pub const JSONP_CLOSE: &[u8] = b"]);";
/// `Content-Type` of a JSONP response.
pub const JSONP_CONTENT_TYPE: &[u8] = b"application/javascript";
/// Longest JSONP callback accepted by [`valid_jsonp_callback`], in bytes.
pub const MAX_JSONP_CALLBACK_LEN: usize = 128;

/// The fields of one message, as seen by a template.
///
/// All byte fields are borrowed; an empty slice means "none" (for example no `Event-Id`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Message<'a> {
    /// The published body (or the special text of a ping / deleted / timeout message).
    pub text: &'a [u8],
    /// Message id within its channel (1, 2, 3…), or a negative special id.
    pub id: i64,
    /// Channel id; empty for ping and timeout messages.
    pub channel: &'a [u8],
    /// `Event-Id` given at publish time, empty if none.
    pub event_id: &'a [u8],
    /// `Event-Type` given at publish time, empty if none.
    pub event_type: &'a [u8],
    /// Publish time, unix seconds. Special messages use 0 (the epoch).
    pub time: i64,
    /// Publish tag. Special messages use 0.
    pub tag: u64,
}

impl<'a> Message<'a> {
    /// The ping message: id -1, empty channel, epoch time, tag 0, `text` = the
    /// `push_stream_ping_message_text`.
    pub fn ping(text: &'a [u8]) -> Self {
        Message {
            text,
            id: PING_MESSAGE_ID,
            ..Message::default()
        }
    }

    /// The "channel deleted" message: id -2, the deleted channel's id, epoch time, tag 0. `text` is
    /// the DELETE body or `push_stream_channel_deleted_message_text`
    /// ([`DEFAULT_CHANNEL_DELETED_MESSAGE_TEXT`] by default).
    pub fn channel_deleted(channel: &'a [u8], text: &'a [u8]) -> Self {
        Message {
            text,
            id: CHANNEL_DELETED_MESSAGE_ID,
            channel,
            ..Message::default()
        }
    }

    /// The long-poll timeout message: id -3, text `Timed out`, empty channel, epoch time, tag 0.
    pub fn timeout() -> Self {
        Message {
            text: TIMEOUT_MESSAGE_TEXT,
            id: TIMEOUT_MESSAGE_ID,
            ..Message::default()
        }
    }

    /// A copy of this message with another text (used for EventSource's per-line rendering).
    pub fn with_text(&self, text: &'a [u8]) -> Self {
        Message { text, ..*self }
    }
}

/// A placeholder recognised in a template.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    Text,
    TextJson,
    Id,
    Channel,
    ChannelJson,
    EventId,
    EventIdJson,
    EventType,
    EventTypeJson,
    Time,
    Tag,
    Size,
}

/// Token names, without the surrounding `~`, compared ASCII-case-insensitively.
const TOKENS: &[(&[u8], Token)] = &[
    (b"text", Token::Text),
    (b"text-json", Token::TextJson),
    (b"id", Token::Id),
    (b"channel", Token::Channel),
    (b"channel-json", Token::ChannelJson),
    (b"event-id", Token::EventId),
    (b"event-id-json", Token::EventIdJson),
    (b"event-type", Token::EventType),
    (b"event-type-json", Token::EventTypeJson),
    (b"time", Token::Time),
    (b"tag", Token::Tag),
    (b"size", Token::Size),
];

/// Length of the longest token name; longer `~…~` spans cannot be tokens.
const MAX_TOKEN_NAME: usize = 15;

fn lookup_token(name: &[u8]) -> Option<Token> {
    if name.len() > MAX_TOKEN_NAME {
        return None;
    }
    TOKENS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|&(_, t)| t)
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    /// A byte range of the template source, copied as is.
    Literal(Range<usize>),
    Token(Token),
}

/// A message template, parsed once into literal and placeholder segments.
///
/// See the [module documentation](self) for the placeholders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    source: Vec<u8>,
    segments: Vec<Segment>,
}

impl Default for Template {
    /// The default message template, `~text~`.
    fn default() -> Self {
        Template::new(DEFAULT_MESSAGE_TEMPLATE)
    }
}

impl Template {
    /// Parses `source`. Parsing never fails: anything that is not a known `~token~` is literal.
    ///
    /// Tokens are found left to right. When `~word~` is not a known token, its first `~` is literal
    /// and the search goes on from its closing `~`, which may open a real token (`~x~text~` is the
    /// literal `~x` followed by `~text~`).
    pub fn new(source: &[u8]) -> Self {
        let mut segments = Vec::new();
        let mut lit_start = 0;
        let mut i = 0;
        while let Some(open) = memchr(b'~', &source[i..]).map(|p| p + i) {
            let Some(close) = memchr(b'~', &source[open + 1..]).map(|p| p + open + 1) else {
                break;
            };
            match lookup_token(&source[open + 1..close]) {
                Some(token) => {
                    if lit_start < open {
                        segments.push(Segment::Literal(lit_start..open));
                    }
                    segments.push(Segment::Token(token));
                    i = close + 1;
                    lit_start = i;
                }
                None => i = close,
            }
        }
        if lit_start < source.len() {
            segments.push(Segment::Literal(lit_start..source.len()));
        }
        Template {
            source: source.to_vec(),
            segments,
        }
    }

    /// The template bytes as configured (after any EventSource rewrite).
    pub fn source(&self) -> &[u8] {
        &self.source
    }

    /// True when the template has no placeholder at all (it renders to its source).
    pub fn is_literal(&self) -> bool {
        self.segments
            .iter()
            .all(|s| matches!(s, Segment::Literal(_)))
    }

    /// Renders `m` into a new vector.
    pub fn render(&self, m: &Message) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.source.len() + m.text.len() + 16);
        self.render_into(&mut out, m);
        out
    }

    /// Appends the rendering of `m` to `out`, in a single pass over the parsed segments (inserted
    /// values are never scanned for placeholders).
    pub fn render_into(&self, out: &mut Vec<u8>, m: &Message) {
        for seg in &self.segments {
            match seg {
                Segment::Literal(r) => out.extend_from_slice(&self.source[r.clone()]),
                Segment::Token(t) => match t {
                    Token::Text => out.extend_from_slice(m.text),
                    Token::TextJson => json_escape_into(out, m.text),
                    Token::Id => push_display(out, m.id),
                    Token::Channel => out.extend_from_slice(m.channel),
                    Token::ChannelJson => json_escape_into(out, m.channel),
                    Token::EventId => out.extend_from_slice(m.event_id),
                    Token::EventIdJson => json_escape_into(out, m.event_id),
                    Token::EventType => out.extend_from_slice(m.event_type),
                    Token::EventTypeJson => json_escape_into(out, m.event_type),
                    Token::Time => write_http_date(out, m.time),
                    Token::Tag => push_display(out, m.tag),
                    Token::Size => push_display(out, m.text.len()),
                },
            }
        }
    }
}

/// True when a configured `push_stream_message_template` is "blank", i.e. rejected with
/// `push stream module: push_stream_message_template cannot be blank.`
///
/// Like the C module (`message_template.len == 0`) only the empty string is blank; a template of
/// spaces is accepted.
pub fn is_blank(bytes: &[u8]) -> bool {
    bytes.is_empty()
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}

fn push_display(out: &mut Vec<u8>, v: impl std::fmt::Display) {
    // Writing to a Vec<u8> cannot fail.
    let _ = write!(out, "{v}");
}

/// Iterates over the non-empty lines of `s`, split on CRLF, CR or LF (empty lines are dropped,
/// like the C module's `split_by_crlf`).
fn non_empty_lines(s: &[u8]) -> impl Iterator<Item = &[u8]> {
    s.split(|&b| b == b'\n' || b == b'\r')
        .filter(|line| !line.is_empty())
}

/// Prefixes each non-empty line of `tpl` with `: ` and ends it with `\n` (an SSE comment per line).
fn comment_lines(tpl: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(tpl.len() + 8);
    for line in non_empty_lines(tpl) {
        out.extend_from_slice(EVENTSOURCE_COMMENT_PREFIX);
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out
}

/// Rewrites a header template for an EventSource location (configuration time).
///
/// * already starting with `: ` → unchanged (idempotency: nested `if` locations merge the same
///   template again);
/// * otherwise each non-empty line (split on CRLF, CR or LF) becomes `: <line>\n`;
/// * an empty header — and, as a small deliberate deviation from the C module, a header made only
///   of line breaks — becomes [`EVENTSOURCE_DEFAULT_HEADER`] (`: \n`), so a comment is always sent
///   at once and the browser fires `onopen`. (The C module sends nothing for a header of only line
///   breaks, and a second rewrite would then produce `: \n`, which is not idempotent.)
pub fn eventsource_header(tpl: &[u8]) -> Vec<u8> {
    if tpl.starts_with(EVENTSOURCE_COMMENT_PREFIX) {
        return tpl.to_vec();
    }
    let out = comment_lines(tpl);
    if out.is_empty() {
        EVENTSOURCE_DEFAULT_HEADER.to_vec()
    } else {
        out
    }
}

/// Rewrites a footer template for an EventSource location (configuration time).
///
/// Already starting with `: ` → unchanged; otherwise each non-empty line becomes `: <line>\n`. An
/// empty footer (or one made only of line breaks) becomes empty. Idempotent.
pub fn eventsource_footer(tpl: &[u8]) -> Vec<u8> {
    if tpl.starts_with(EVENTSOURCE_COMMENT_PREFIX) {
        return tpl.to_vec();
    }
    comment_lines(tpl)
}

/// Rewrites a message template for an EventSource location (configuration time): `data: <tpl>\n`.
///
/// A template already starting with `data: ` is unchanged (idempotent). An empty template is
/// treated as the default `~text~` (as the C module does), giving `data: ~text~\n`.
pub fn eventsource_message_template(tpl: &[u8]) -> Vec<u8> {
    if tpl.starts_with(EVENTSOURCE_DATA_PREFIX) {
        return tpl.to_vec();
    }
    let tpl = if tpl.is_empty() {
        DEFAULT_MESSAGE_TEMPLATE
    } else {
        tpl
    };
    let mut out = Vec::with_capacity(EVENTSOURCE_DATA_PREFIX.len() + tpl.len() + 1);
    out.extend_from_slice(EVENTSOURCE_DATA_PREFIX);
    out.extend_from_slice(tpl);
    out.push(b'\n');
    out
}

/// Renders one message for an EventSource subscriber.
///
/// `data_tpl` is the already rewritten message template (see [`eventsource_message_template`]).
/// Output: `id: <event_id>\n` if the message has an event id, `event: <event_type>\n` if it has an
/// event type, then every **non-empty** line of the text (split on CRLF/CR/LF) rendered through
/// `data_tpl` with that line as `~text~` (so `~size~` is the line's length), then one more `\n`.
///
/// The event id and type are written raw, like the C module (they come from request headers, which
/// cannot contain line breaks).
pub fn render_eventsource(data_tpl: &Template, m: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(data_tpl.source.len() + m.text.len() + 32);
    render_eventsource_into(&mut out, data_tpl, m);
    out
}

/// [`render_eventsource`], appending to `out`.
pub fn render_eventsource_into(out: &mut Vec<u8>, data_tpl: &Template, m: &Message) {
    if !m.event_id.is_empty() {
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(m.event_id);
        out.push(b'\n');
    }
    if !m.event_type.is_empty() {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(m.event_type);
        out.push(b'\n');
    }
    for line in non_empty_lines(m.text) {
        data_tpl.render_into(out, &m.with_text(line));
    }
    out.push(b'\n');
}

/// Wraps already rendered messages as a JSONP batch: `callback([m1,m2,…]);`.
///
/// The callback name is used as given: check it first with [`valid_jsonp_callback`].
pub fn jsonp_wrap(callback: &[u8], messages: &[Vec<u8>]) -> Vec<u8> {
    let body: usize = messages.iter().map(|m| m.len() + 1).sum();
    let mut out = Vec::with_capacity(callback.len() + body + JSONP_OPEN.len() + JSONP_CLOSE.len());
    out.extend_from_slice(callback);
    out.extend_from_slice(JSONP_OPEN);
    for (i, m) in messages.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(JSONP_SEPARATOR);
        }
        out.extend_from_slice(m);
    }
    out.extend_from_slice(JSONP_CLOSE);
    out
}

/// Whether `cb` is acceptable as a JSONP callback name: a JavaScript identifier path, i.e. one
/// or more identifiers separated by `.` (`cb`, `jQuery_123`, `app.handlers.$push`), each
/// matching `[A-Za-z_$][A-Za-z0-9_$]*`, at most [`MAX_JSONP_CALLBACK_LEN`] bytes in all.
///
/// Anything else (empty, a leading, trailing or doubled `.`, brackets, parentheses, quotes,
/// spaces, non-ASCII) is refused, so the callback cannot inject script into the response.
/// [`jsonp_wrap`] itself does not check: callers check first.
pub fn valid_jsonp_callback(cb: &[u8]) -> bool {
    if cb.is_empty() || cb.len() > MAX_JSONP_CALLBACK_LEN {
        return false;
    }
    cb.split(|&b| b == b'.')
        .all(|ident| match ident.split_first() {
            Some((&first, rest)) => {
                (first.is_ascii_alphabetic() || first == b'_' || first == b'$')
                    && rest
                        .iter()
                        .all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$')
            }
            None => false,
        })
}

/// The kind of subscriber location, as far as templates are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Kind {
    /// Streaming, polling and long-polling: templates used as configured.
    #[default]
    Plain,
    /// `eventsource`: templates rewritten (see [`eventsource_header`] and friends), messages
    /// rendered with [`render_eventsource`].
    EventSource,
    /// `websocket`: templates used as configured; the caller frames the header, footer and every
    /// rendered message as text frames (see `crate::websocket`).
    WebSocket,
}

/// The header, message and footer templates of one location, ready to use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocationTemplates {
    /// Bytes sent right after the response headers (EventSource: rewritten; WebSocket: not yet
    /// framed).
    pub header: Vec<u8>,
    /// The parsed message template (EventSource: the rewritten `data: …\n` template).
    pub message: Template,
    /// Bytes sent before the module ends a response (EventSource: rewritten; WebSocket: not yet
    /// framed).
    pub footer: Vec<u8>,
    /// The location kind.
    pub kind: Kind,
}

impl LocationTemplates {
    /// Builds the templates of a location from the configured (raw) header, message and footer,
    /// applying the EventSource rewrites when `kind` is [`Kind::EventSource`]. Plain and WebSocket
    /// templates are kept as configured (WebSocket framing happens elsewhere).
    ///
    /// The rewrites are idempotent, so passing already rewritten templates is harmless. Rejecting a
    /// blank message template ([`is_blank`]) is the configuration code's job.
    pub fn new(header: &[u8], message: &[u8], footer: &[u8], kind: Kind) -> Self {
        match kind {
            Kind::EventSource => LocationTemplates {
                header: eventsource_header(header),
                message: Template::new(&eventsource_message_template(message)),
                footer: eventsource_footer(footer),
                kind,
            },
            Kind::Plain | Kind::WebSocket => LocationTemplates {
                header: header.to_vec(),
                message: Template::new(message),
                footer: footer.to_vec(),
                kind,
            },
        }
    }

    /// Renders a message for this location (EventSource: [`render_eventsource`]; otherwise the
    /// message template). WebSocket output is the payload, not yet framed.
    pub fn render_message(&self, m: &Message) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.message.source.len() + m.text.len() + 16);
        self.render_message_into(&mut out, m);
        out
    }

    /// [`render_message`](Self::render_message), appending to `out`.
    pub fn render_message_into(&self, out: &mut Vec<u8>, m: &Message) {
        match self.kind {
            Kind::EventSource => render_eventsource_into(out, &self.message, m),
            Kind::Plain | Kind::WebSocket => self.message.render_into(out, m),
        }
    }

    /// The bytes of a keep-alive ping for this location (docs/reference.md section 2.9):
    ///
    /// * [`Kind::Plain`] (streaming): `ping_text` rendered through the message template as the
    ///   special message id -1 (empty channel, epoch time, tag 0). Default template and text give
    ///   `" "`; the template `~id~:~text~` gives `-1: `.
    /// * [`Kind::EventSource`]: [`EVENTSOURCE_PING`] (`: -1\n`); `ping_text` is not used.
    /// * [`Kind::WebSocket`]: the complete ping frame `\x89\x00`
    ///   ([`crate::websocket::PING_FRAME`]), **already framed**: write it as is, do not wrap it in
    ///   a text frame.
    pub fn ping(&self, ping_text: &[u8]) -> Vec<u8> {
        match self.kind {
            Kind::Plain => self.message.render(&Message::ping(ping_text)),
            Kind::EventSource => EVENTSOURCE_PING.to_vec(),
            Kind::WebSocket => crate::websocket::PING_FRAME.to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg() -> Message<'static> {
        Message {
            text: b"hello",
            id: 7,
            channel: b"ch1",
            event_id: b"E1",
            event_type: b"T1",
            time: 1_700_000_000,
            tag: 3,
        }
    }

    fn render(tpl: &str, m: &Message) -> Vec<u8> {
        Template::new(tpl.as_bytes()).render(m)
    }

    fn date(secs: i64) -> String {
        let mut out = Vec::new();
        write_http_date(&mut out, secs);
        String::from_utf8(out).unwrap()
    }

    // ---- tokens ----------------------------------------------------------------------------

    #[test]
    fn default_template_is_text() {
        let t = Template::default();
        assert_eq!(t.source(), b"~text~");
        assert_eq!(t.render(&msg()), b"hello");
    }

    #[test]
    fn every_token() {
        let m = msg();
        assert_eq!(render("~text~", &m), b"hello");
        assert_eq!(render("~id~", &m), b"7");
        assert_eq!(render("~channel~", &m), b"ch1");
        assert_eq!(render("~event-id~", &m), b"E1");
        assert_eq!(render("~event-type~", &m), b"T1");
        assert_eq!(render("~time~", &m), b"Tue, 14 Nov 2023 22:13:20 GMT");
        assert_eq!(render("~tag~", &m), b"3");
        assert_eq!(render("~size~", &m), b"5");
        assert_eq!(render("~text-json~", &m), b"hello");
        assert_eq!(render("~channel-json~", &m), b"ch1");
        assert_eq!(render("~event-id-json~", &m), b"E1");
        assert_eq!(render("~event-type-json~", &m), b"T1");
    }

    #[test]
    fn js_client_json_template() {
        let tpl = r#"{"id":~id~,"channel":"~channel~","text":"~text~","tag":~tag~,"time":"~time~","eventid":"~event-id~"}"#;
        assert_eq!(
            String::from_utf8(render(tpl, &msg())).unwrap(),
            r#"{"id":7,"channel":"ch1","text":"hello","tag":3,"time":"Tue, 14 Nov 2023 22:13:20 GMT","eventid":"E1"}"#
        );
    }

    #[test]
    fn tokens_are_case_insensitive() {
        let m = msg();
        assert_eq!(
            render("~TEXT~|~Id~|~CHANNEL~|~Event-ID~", &m),
            b"hello|7|ch1|E1"
        );
        assert_eq!(
            render("~EVENT-TYPE~|~TiMe~|~TAG~|~SIZE~", &m),
            b"T1|Tue, 14 Nov 2023 22:13:20 GMT|3|5"
        );
        assert_eq!(render("~Text-JSON~|~CHANNEL-json~", &m), b"hello|ch1");
        assert_eq!(render("~EVENT-ID-JSON~|~event-TYPE-json~", &m), b"E1|T1");
    }

    #[test]
    fn literals_around_and_between_tokens() {
        assert_eq!(render("<~id~~text~>", &msg()), b"<7hello>");
        assert_eq!(render("~text~~text~", &msg()), b"hellohello");
        assert_eq!(render("no tokens", &msg()), b"no tokens");
        assert_eq!(render("", &msg()), b"");
    }

    #[test]
    fn unknown_tokens_and_stray_tildes_stay_literal() {
        let m = msg();
        assert_eq!(render("~foo~", &m), b"~foo~");
        assert_eq!(render("~", &m), b"~");
        assert_eq!(render("~~", &m), b"~~");
        assert_eq!(render("a~b", &m), b"a~b");
        assert_eq!(render("~text", &m), b"~text");
        assert_eq!(render("text~", &m), b"text~");
        assert_eq!(render("~ text ~", &m), b"~ text ~");
        assert_eq!(render("~texts~", &m), b"~texts~");
        // The closing tilde of an unknown word can open a real token.
        assert_eq!(render("~x~text~", &m), b"~xhello");
        assert_eq!(render("~~text~~", &m), b"~hello~");
        assert_eq!(render("~~id~", &m), b"~7");
        // Over-long names are never tokens.
        assert_eq!(
            render("~aaaaaaaaaaaaaaaaaaaaaaaaaaaa~id~", &m),
            b"~aaaaaaaaaaaaaaaaaaaaaaaaaaaa7"
        );
    }

    #[test]
    fn is_literal_reports_placeholders() {
        assert!(Template::new(b"abc ~foo~").is_literal());
        assert!(Template::new(b"").is_literal());
        assert!(!Template::new(b"a~ID~").is_literal());
    }

    #[test]
    fn no_re_expansion_of_inserted_values() {
        let m = Message {
            text: b"~id~ ~channel~ ~text~",
            channel: b"~tag~",
            event_id: b"~text~",
            event_type: b"~size~",
            ..msg()
        };
        assert_eq!(
            render("~text~|~channel~|~event-id~|~event-type~", &m),
            b"~id~ ~channel~ ~text~|~tag~|~text~|~size~"
        );
        // Value ending with `~` next to a literal that starts a token-like word.
        let m = Message {
            text: b"~te",
            ..msg()
        };
        assert_eq!(render("~text~xt~", &m), b"~text~");
    }

    #[test]
    fn raw_tokens_do_not_escape() {
        let m = Message {
            text: b"a\"b\nc",
            channel: b"q\"",
            ..msg()
        };
        assert_eq!(render("~text~ ~channel~", &m), b"a\"b\nc q\"");
    }

    #[test]
    fn json_tokens_escape_quotes_newlines_and_invalid_utf8() {
        let m = Message {
            text: b"say \"hi\"\r\n\tback\\slash \xff end",
            channel: b"c\"h",
            event_id: b"id\n1",
            event_type: "t\u{e9}\x01".as_bytes(),
            ..msg()
        };
        assert_eq!(
            render(r#"{"text":"~text-json~"}"#, &m),
            br#"{"text":"say \"hi\"\r\n\tback\\slash \u00ff end"}"#.to_vec()
        );
        assert_eq!(render("~channel-json~", &m), br#"c\"h"#.to_vec());
        assert_eq!(render("~event-id-json~", &m), br#"id\n1"#.to_vec());
        assert_eq!(
            render("~event-type-json~", &m),
            "t\u{e9}\\u0001".as_bytes().to_vec()
        );
    }

    #[test]
    fn size_is_raw_text_length_in_bytes() {
        let m = Message {
            text: "h\u{e9}\"".as_bytes(),
            ..msg()
        };
        // 1 + 2 (é) + 1, whatever the json form is.
        assert_eq!(
            render("~size~:~text-json~", &m),
            "4:h\u{e9}\\\"".as_bytes().to_vec()
        );
        assert_eq!(render("~size~", &Message { text: b"", ..msg() }), b"0");
    }

    #[test]
    fn numbers_render_full_range() {
        let m = Message {
            id: i64::MIN,
            tag: u64::MAX,
            ..msg()
        };
        assert_eq!(
            render("~id~ ~tag~", &m),
            b"-9223372036854775808 18446744073709551615"
        );
    }

    #[test]
    fn render_into_appends() {
        let t = Template::new(b"[~id~]");
        let mut out = b"x".to_vec();
        t.render_into(&mut out, &msg());
        t.render_into(&mut out, &Message { id: 8, ..msg() });
        assert_eq!(out, b"x[7][8]");
    }

    #[test]
    fn template_is_reusable_and_comparable() {
        let a = Template::new(b"~id~");
        let b = a.clone();
        assert_eq!(a, b);
        assert_ne!(a, Template::new(b"~ID~"));
        assert_eq!(a.render(&msg()), b.render(&msg()));
    }

    // ---- dates -----------------------------------------------------------------------------

    #[test]
    fn http_dates() {
        assert_eq!(date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(date(1_700_000_000), "Tue, 14 Nov 2023 22:13:20 GMT");
        assert_eq!(date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        // 2100 is not a leap year.
        assert_eq!(date(4_107_542_399), "Sun, 28 Feb 2100 23:59:59 GMT");
        assert_eq!(date(4_107_542_400), "Mon, 01 Mar 2100 00:00:00 GMT");
        assert_eq!(date(4_133_980_799), "Fri, 31 Dec 2100 23:59:59 GMT");
        assert_eq!(date(1_795_539_336), "Tue, 24 Nov 2026 16:55:36 GMT");
        assert_eq!(date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(date(-1), "Wed, 31 Dec 1969 23:59:59 GMT");
        assert_eq!(date(253_402_300_799), "Fri, 31 Dec 9999 23:59:59 GMT");
    }

    #[test]
    fn http_date_extremes_do_not_panic() {
        let _ = date(i64::MAX);
        let _ = date(i64::MIN);
    }

    // ---- JSONP -----------------------------------------------------------------------------

    #[test]
    fn jsonp_callbacks() {
        for ok in [
            &b"cb"[..],
            b"_",
            b"$",
            b"jQuery_123",
            b"jQuery1910_1700000000000",
            b"app.handlers.$push",
            b"a.b.c.d",
            b"A9_$.z",
        ] {
            assert!(
                valid_jsonp_callback(ok),
                "{:?}",
                String::from_utf8_lossy(ok)
            );
        }
        for bad in [
            &b""[..],
            b".",
            b".cb",
            b"cb.",
            b"a..b",
            b"1cb",
            b"a.1b",
            b"cb()",
            b"cb;alert(1)",
            b"a[0]",
            b"a b",
            b"a-b",
            b"'cb'",
            b"cb\n",
            b"\xc3\xa9",
            b"a/b",
        ] {
            assert!(
                !valid_jsonp_callback(bad),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let max = vec![b'a'; MAX_JSONP_CALLBACK_LEN];
        assert!(valid_jsonp_callback(&max));
        let too_long = vec![b'a'; MAX_JSONP_CALLBACK_LEN + 1];
        assert!(!valid_jsonp_callback(&too_long));
        assert_eq!(MAX_JSONP_CALLBACK_LEN, 128);
        assert_eq!(JSONP_CONTENT_TYPE, b"application/javascript");
    }

    // ---- special messages ------------------------------------------------------------------

    #[test]
    fn special_messages() {
        let p = Message::ping(b"PING");
        assert_eq!(
            (p.text, p.id, p.channel, p.time, p.tag),
            (&b"PING"[..], -1, &b""[..], 0, 0)
        );
        assert!(p.event_id.is_empty() && p.event_type.is_empty());

        let d = Message::channel_deleted(b"ch", DEFAULT_CHANNEL_DELETED_MESSAGE_TEXT);
        assert_eq!(
            (d.text, d.id, d.channel, d.time, d.tag),
            (&b"Channel deleted"[..], -2, &b"ch"[..], 0, 0)
        );

        let t = Message::timeout();
        assert_eq!(
            (t.text, t.id, t.channel, t.time, t.tag),
            (&b"Timed out"[..], -3, &b""[..], 0, 0)
        );
    }

    #[test]
    fn special_messages_through_a_template() {
        let t = Template::new(b"~id~|~channel~|~text~|~time~|~tag~|~size~");
        assert_eq!(
            t.render(&Message::ping(b" ")),
            b"-1|| |Thu, 01 Jan 1970 00:00:00 GMT|0|1"
        );
        assert_eq!(
            t.render(&Message::channel_deleted(b"news", b"bye")),
            b"-2|news|bye|Thu, 01 Jan 1970 00:00:00 GMT|0|3"
        );
        assert_eq!(
            t.render(&Message::timeout()),
            b"-3||Timed out|Thu, 01 Jan 1970 00:00:00 GMT|0|9"
        );
    }

    #[test]
    fn is_blank_only_for_empty() {
        assert!(is_blank(b""));
        assert!(!is_blank(b" "));
        assert!(!is_blank(b"~text~"));
    }

    // ---- EventSource transformations -------------------------------------------------------

    #[test]
    fn eventsource_header_rewrite() {
        assert_eq!(eventsource_header(b""), b": \n");
        assert_eq!(eventsource_header(b"hello"), b": hello\n");
        assert_eq!(eventsource_header(b"a\r\nb\rc\nd"), b": a\n: b\n: c\n: d\n");
        assert_eq!(eventsource_header(b"a\n\n\r\nb\n"), b": a\n: b\n");
        assert_eq!(eventsource_header(b"\r\n\n"), b": \n");
        assert_eq!(eventsource_header(b": already\nx"), b": already\nx");
        assert_eq!(eventsource_header(b":no-space"), b": :no-space\n");
    }

    #[test]
    fn eventsource_footer_rewrite() {
        assert_eq!(eventsource_footer(b""), b"");
        assert_eq!(eventsource_footer(b"\n\r\n"), b"");
        assert_eq!(eventsource_footer(b"bye"), b": bye\n");
        assert_eq!(eventsource_footer(b"a\r\nb"), b": a\n: b\n");
        assert_eq!(eventsource_footer(b": done"), b": done");
    }

    #[test]
    fn eventsource_message_template_rewrite() {
        assert_eq!(eventsource_message_template(b"~text~"), b"data: ~text~\n");
        assert_eq!(eventsource_message_template(b""), b"data: ~text~\n");
        assert_eq!(
            eventsource_message_template(b"{\"t\":\"~text~\"}"),
            b"data: {\"t\":\"~text~\"}\n"
        );
        assert_eq!(eventsource_message_template(b"data: ~id~"), b"data: ~id~");
        assert_eq!(
            eventsource_message_template(b"data:~id~"),
            b"data: data:~id~\n"
        );
    }

    #[test]
    fn eventsource_rewrites_are_idempotent() {
        let inputs: &[&[u8]] = &[
            b"",
            b"x",
            b"a\nb",
            b"a\r\n\r\nb\r",
            b"\n",
            b"\r\n\r\n",
            b": c",
            b"data: d",
            b"~text~",
            b" lead",
        ];
        for &i in inputs {
            let h = eventsource_header(i);
            assert_eq!(eventsource_header(&h), h, "header {i:?}");
            let f = eventsource_footer(i);
            assert_eq!(eventsource_footer(&f), f, "footer {i:?}");
            let m = eventsource_message_template(i);
            assert_eq!(eventsource_message_template(&m), m, "message {i:?}");
        }
    }

    // ---- EventSource rendering -------------------------------------------------------------

    fn es_template(tpl: &[u8]) -> Template {
        Template::new(&eventsource_message_template(tpl))
    }

    #[test]
    fn eventsource_reference_example() {
        let m = Message {
            text: b"a\nb\r\nc",
            event_id: b"E3",
            event_type: b"T3",
            ..msg()
        };
        assert_eq!(
            render_eventsource(&es_template(b"~text~"), &m),
            b"id: E3\nevent: T3\ndata: a\ndata: b\ndata: c\n\n"
        );
    }

    #[test]
    fn eventsource_without_id_or_type() {
        let m = Message {
            text: b"x",
            event_id: b"",
            event_type: b"",
            ..msg()
        };
        assert_eq!(
            render_eventsource(&es_template(b"~text~"), &m),
            b"data: x\n\n"
        );
        let m = Message {
            event_type: b"T",
            ..m
        };
        assert_eq!(
            render_eventsource(&es_template(b"~text~"), &m),
            b"event: T\ndata: x\n\n"
        );
        let m = Message {
            event_id: b"I",
            event_type: b"",
            ..m
        };
        assert_eq!(
            render_eventsource(&es_template(b"~text~"), &m),
            b"id: I\ndata: x\n\n"
        );
    }

    #[test]
    fn eventsource_drops_empty_lines_and_size_is_per_line() {
        let m = Message {
            text: b"\r\nab\n\n\r\rcde\r\n",
            event_id: b"",
            event_type: b"",
            ..msg()
        };
        assert_eq!(
            render_eventsource(&es_template(b"~size~:~text~:~id~"), &m),
            b"data: 2:ab:7\ndata: 3:cde:7\n\n"
        );
        // Only line breaks: no data line at all.
        let m = Message {
            text: b"\n\r\n",
            ..m
        };
        assert_eq!(render_eventsource(&es_template(b"~text~"), &m), b"\n");
    }

    #[test]
    fn eventsource_json_template_per_line() {
        let m = Message {
            text: b"x\"1\ny",
            event_id: b"",
            event_type: b"",
            ..msg()
        };
        assert_eq!(
            render_eventsource(&es_template(br#"{"t":"~text-json~","c":"~channel~"}"#), &m),
            b"data: {\"t\":\"x\\\"1\",\"c\":\"ch1\"}\ndata: {\"t\":\"y\",\"c\":\"ch1\"}\n\n"
                .to_vec()
        );
    }

    #[test]
    fn eventsource_line_text_is_not_expanded() {
        let m = Message {
            text: b"~id~\n~text~",
            event_id: b"",
            event_type: b"",
            ..msg()
        };
        assert_eq!(
            render_eventsource(&es_template(b"~text~"), &m),
            b"data: ~id~\ndata: ~text~\n\n"
        );
    }

    #[test]
    fn eventsource_ping_const() {
        assert_eq!(EVENTSOURCE_PING, b": -1\n");
    }

    // ---- LocationTemplates -----------------------------------------------------------------

    #[test]
    fn location_plain_keeps_templates() {
        let lt = LocationTemplates::new(b"HEAD\n", b"<~id~:~text~>", b"FOOT", Kind::Plain);
        assert_eq!(lt.header, b"HEAD\n");
        assert_eq!(lt.footer, b"FOOT");
        assert_eq!(lt.message.source(), b"<~id~:~text~>");
        assert_eq!(lt.render_message(&msg()), b"<7:hello>");
    }

    #[test]
    fn location_websocket_keeps_templates_unframed() {
        let lt = LocationTemplates::new(b"H", b"~text~", b"F", Kind::WebSocket);
        assert_eq!(lt.header, b"H");
        assert_eq!(lt.footer, b"F");
        assert_eq!(
            lt.render_message(&Message {
                text: b"a\nb",
                ..msg()
            }),
            b"a\nb"
        );
        assert_eq!(lt.ping(b" "), b"\x89\x00");
    }

    #[test]
    fn location_eventsource_rewrites_and_renders() {
        let lt = LocationTemplates::new(b"", b"~text~", b"bye\r\nnow", Kind::EventSource);
        assert_eq!(lt.header, b": \n");
        assert_eq!(lt.footer, b": bye\n: now\n");
        assert_eq!(lt.message.source(), b"data: ~text~\n");
        let m = Message {
            text: b"a\nb\r\nc",
            event_id: b"E3",
            event_type: b"T3",
            ..msg()
        };
        assert_eq!(
            lt.render_message(&m),
            b"id: E3\nevent: T3\ndata: a\ndata: b\ndata: c\n\n"
        );
        assert_eq!(lt.ping(b"ignored"), b": -1\n");
    }

    #[test]
    fn location_eventsource_is_idempotent() {
        let once = LocationTemplates::new(b"hi", b"~id~", b"f", Kind::EventSource);
        let twice = LocationTemplates::new(
            &once.header,
            once.message.source(),
            &once.footer,
            Kind::EventSource,
        );
        assert_eq!(once, twice);
    }

    #[test]
    fn render_message_into_appends() {
        let lt = LocationTemplates::new(b"", b"~text~", b"", Kind::EventSource);
        let mut out = b"pre".to_vec();
        lt.render_message_into(
            &mut out,
            &Message {
                text: b"x",
                event_id: b"",
                event_type: b"",
                ..msg()
            },
        );
        assert_eq!(out, b"predata: x\n\n");
    }

    #[test]
    fn plain_ping_four_combinations() {
        // Default template, default text.
        let def = LocationTemplates::new(b"", DEFAULT_MESSAGE_TEMPLATE, b"", Kind::Plain);
        assert_eq!(def.ping(DEFAULT_PING_MESSAGE_TEXT), b" ");
        // Default template, custom text.
        assert_eq!(def.ping(b"PING"), b"PING");
        // Custom template, default text.
        let custom = LocationTemplates::new(b"", b"~id~:~text~", b"", Kind::Plain);
        assert_eq!(custom.ping(DEFAULT_PING_MESSAGE_TEXT), b"-1: ");
        // Custom template, custom text.
        assert_eq!(custom.ping(b"PING"), b"-1:PING");
    }

    #[test]
    fn plain_ping_full_fields() {
        let lt = LocationTemplates::new(
            b"",
            b"{\"id\":~id~,\"channel\":\"~channel~\",\"time\":\"~time~\",\"tag\":~tag~}",
            b"",
            Kind::Plain,
        );
        assert_eq!(
            lt.ping(b" "),
            b"{\"id\":-1,\"channel\":\"\",\"time\":\"Thu, 01 Jan 1970 00:00:00 GMT\",\"tag\":0}"
                .to_vec()
        );
    }

    #[test]
    fn kind_default_is_plain() {
        assert_eq!(Kind::default(), Kind::Plain);
    }

    // ---- JSONP -----------------------------------------------------------------------------

    #[test]
    fn jsonp() {
        assert_eq!(jsonp_wrap(b"cb", &[]), b"cb([]);");
        assert_eq!(
            jsonp_wrap(b"cb", &[b"{\"a\":1}".to_vec()]),
            b"cb([{\"a\":1}]);"
        );
        assert_eq!(
            jsonp_wrap(b"f.g", &[b"1".to_vec(), b"2".to_vec(), b"3".to_vec()]),
            b"f.g([1,2,3]);"
        );
        let mut pieces = b"cb".to_vec();
        pieces.extend_from_slice(JSONP_OPEN);
        pieces.extend_from_slice(b"1");
        pieces.extend_from_slice(JSONP_SEPARATOR);
        pieces.extend_from_slice(b"2");
        pieces.extend_from_slice(JSONP_CLOSE);
        assert_eq!(pieces, jsonp_wrap(b"cb", &[b"1".to_vec(), b"2".to_vec()]));
    }

    #[test]
    fn with_text_keeps_other_fields() {
        let m = msg();
        let l = m.with_text(b"line");
        assert_eq!(l.text, b"line");
        assert_eq!(Message { text: m.text, ..l }, m);
    }
}
