//! Message templates (`template`): `Template::new` / `render`, the EventSource rewrites,
//! `render_eventsource`, `jsonp_wrap` and `LocationTemplates`.
//!
//! The input drives `arbitrary`: a template source, header/footer templates and a message.
//!
//! Checked:
//! * `source()` is the input; a template without `~` is literal and renders to itself.
//! * `render` equals an independent single-pass renderer written from the module docs
//!   (case-insensitive `~token~`, unknown `~word~` kept and its closing `~` reused, inserted values
//!   never re-scanned, `~time~` via `resume::http_date`, `-json` variants via `escape::json_escape`),
//!   and `is_literal()` ⇔ that renderer found no token.
//! * The EventSource rewrites are idempotent; the header is never empty and starts with `: `,
//!   the footer is empty or starts with `: `, the message template starts with `data: ` and ends
//!   with a newline (unless it already started with `data: `).
//! * `render_eventsource` = `id:`/`event:` lines + one rendering per non-empty text line + `\n`.
//! * `jsonp_wrap` = `callback([m1,m2,…]);`; `LocationTemplates` renders like the above per kind.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use push_stream_core::escape::json_escape;
use push_stream_core::resume::http_date;
use push_stream_core::template::{
    eventsource_footer, eventsource_header, eventsource_message_template, jsonp_wrap,
    render_eventsource, Kind, LocationTemplates, Message, Template,
};

#[derive(Arbitrary, Debug)]
struct Input {
    source: Vec<u8>,
    header: Vec<u8>,
    footer: Vec<u8>,
    text: Vec<u8>,
    channel: Vec<u8>,
    event_id: Vec<u8>,
    event_type: Vec<u8>,
    id: i64,
    time: i64,
    tag: u64,
    callback: Vec<u8>,
}

fn value(name: &[u8], m: &Message) -> Option<Vec<u8>> {
    let n = name.to_ascii_lowercase();
    Some(match &n[..] {
        b"text" => m.text.to_vec(),
        b"text-json" => json_escape(m.text),
        b"id" => m.id.to_string().into_bytes(),
        b"channel" => m.channel.to_vec(),
        b"channel-json" => json_escape(m.channel),
        b"event-id" => m.event_id.to_vec(),
        b"event-id-json" => json_escape(m.event_id),
        b"event-type" => m.event_type.to_vec(),
        b"event-type-json" => json_escape(m.event_type),
        b"time" => http_date(m.time).into_bytes(),
        b"tag" => m.tag.to_string().into_bytes(),
        b"size" => m.text.len().to_string().into_bytes(),
        _ => return None,
    })
}

/// (rendering, number of tokens found).
fn render_ref(src: &[u8], m: &Message) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    let mut tokens = 0;
    let mut i = 0;
    while i < src.len() {
        if src[i] != b'~' {
            out.push(src[i]);
            i += 1;
            continue;
        }
        match src[i + 1..].iter().position(|&b| b == b'~') {
            None => {
                out.extend_from_slice(&src[i..]);
                break;
            }
            Some(k) => {
                let close = i + 1 + k;
                match value(&src[i + 1..close], m) {
                    Some(v) => {
                        out.extend_from_slice(&v);
                        tokens += 1;
                        i = close + 1;
                    }
                    None => {
                        // the opening `~` and the word are literal; the closing `~` may open
                        // the next token
                        out.extend_from_slice(&src[i..close]);
                        i = close;
                    }
                }
            }
        }
    }
    (out, tokens)
}

fn lines(s: &[u8]) -> impl Iterator<Item = &[u8]> {
    s.split(|&b| b == b'\n' || b == b'\r').filter(|l| !l.is_empty())
}

fn eventsource_ref(tpl: &Template, m: &Message) -> Vec<u8> {
    let mut out = Vec::new();
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
    for l in lines(m.text) {
        out.extend_from_slice(&tpl.render(&m.with_text(l)));
    }
    out.push(b'\n');
    out
}

fn check(inp: &Input) {
    // Keep `~time~` in the range where both date formatters agree on a 4-digit year.
    let time = inp.time.rem_euclid(253_402_300_800);
    let m = Message {
        text: &inp.text,
        id: inp.id,
        channel: &inp.channel,
        event_id: &inp.event_id,
        event_type: &inp.event_type,
        time,
        tag: inp.tag,
    };
    let t = Template::new(&inp.source);
    assert_eq!(t.source(), &inp.source[..]);
    let got = t.render(&m);
    let (want, tokens) = render_ref(&inp.source, &m);
    assert_eq!(got, want, "render");
    assert_eq!(t.is_literal(), tokens == 0, "is_literal");
    if !inp.source.contains(&b'~') {
        assert!(t.is_literal());
        assert_eq!(got, inp.source);
    }
    let mut appended = b"prefix".to_vec();
    t.render_into(&mut appended, &m);
    assert_eq!(&appended[6..], &got[..]);

    // EventSource rewrites
    let h = eventsource_header(&inp.header);
    assert!(h.starts_with(b": "));
    assert_eq!(eventsource_header(&h), h, "header rewrite not idempotent");
    let f = eventsource_footer(&inp.footer);
    assert!(f.is_empty() || f.starts_with(b": "));
    assert_eq!(eventsource_footer(&f), f, "footer rewrite not idempotent");
    let mt = eventsource_message_template(&inp.source);
    assert!(mt.starts_with(b"data: "));
    if !inp.source.starts_with(b"data: ") {
        assert!(mt.ends_with(b"\n"));
    }
    assert_eq!(eventsource_message_template(&mt), mt, "message rewrite not idempotent");
    let data_tpl = Template::new(&mt);
    let es = render_eventsource(&data_tpl, &m);
    assert_eq!(es, eventsource_ref(&data_tpl, &m), "render_eventsource");
    assert!(es.ends_with(b"\n"));

    // Location bundles
    let loc = LocationTemplates::new(&inp.header, &inp.source, &inp.footer, Kind::EventSource);
    assert_eq!(loc.header, h);
    assert_eq!(loc.footer, f);
    assert_eq!(loc.render_message(&m), es);
    for kind in [Kind::Plain, Kind::WebSocket] {
        let loc = LocationTemplates::new(&inp.header, &inp.source, &inp.footer, kind);
        assert_eq!(loc.header, inp.header);
        assert_eq!(loc.render_message(&m), got);
    }

    // JSONP
    let msgs = vec![got.clone(), inp.text.clone(), Vec::new()];
    let n = inp.text.len() % 4;
    let j = jsonp_wrap(&inp.callback, &msgs[..n.min(3)]);
    let mut want = inp.callback.clone();
    want.extend_from_slice(b"([");
    want.extend_from_slice(&msgs[..n.min(3)].join(&b","[..]));
    want.extend_from_slice(b"]);");
    assert_eq!(j, want, "jsonp_wrap");
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    if let Ok(inp) = Input::arbitrary(&mut u) {
        check(&inp);
    }
    // The raw input as a template, with a fixed message: exercises long sources.
    let m = Message {
        text: b"hi~id~",
        id: 7,
        channel: b"ch",
        event_id: b"",
        event_type: b"",
        time: 0,
        tag: 1,
    };
    let t = Template::new(data);
    assert_eq!(t.render(&m), render_ref(data, &m).0);
});
