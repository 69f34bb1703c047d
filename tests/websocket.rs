//! WebSocket subscribers, case by case as the C module's `misc/spec/subscriber/websocket_spec.rb`
//! checks them, with the C specs' configuration (2 workers, `client_max_body_size 1k` and
//! `client_body_timeout 10` at the `http{}` level, no templates unless a case sets them). Where
//! this module differs on purpose (RFC 6455: masked client frames, close codes, pong payloads;
//! a size cap on a client's message) the test states what it does instead, and
//! docs/migration.md lists the difference with its reason.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const KEY: &str = "/mQoZf6pRiv8+6o72GncLQ==";

/// What a case changes in the C specs' configuration.
struct Spec {
    header: Option<&'static str>,
    message: Option<&'static str>,
    footer: Option<&'static str>,
    ping: &'static str,
    ttl: Option<&'static str>,
    authorized_only: bool,
    shared_memory: &'static str,
    /// `client_max_body_size` (and buffer size) of the publisher location.
    pub_body: &'static str,
    /// Extra directives in the WebSocket location.
    ws_extra: &'static str,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            header: None,
            message: None,
            footer: None,
            ping: "10s",
            ttl: None,
            authorized_only: false,
            shared_memory: "10m",
            pub_body: "32k",
            ws_extra: "",
        }
    }
}

fn conf(s: &Spec) -> String {
    let tpl = |name: &str, v: Option<&str>| {
        v.map(|v| format!("push_stream_{name}_template \"{v}\";"))
            .unwrap_or_default()
    };
    format!(
        r#"
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 100;
    send_timeout 10;
    client_body_timeout 10;
    client_header_timeout 10;
    client_header_buffer_size 1k;
    large_client_header_buffers 2 4k;
    client_max_body_size 1k;
    client_body_buffer_size 1k;
    push_stream_shared_memory_size {mem};
    push_stream_ping_message_interval {ping};
    {header}
    {message}
    {footer}
    {ttl}
    push_stream_message_ttl 50m;
    push_stream_max_channel_id_length 200;
    push_stream_max_messages_stored_per_channel 20;
    push_stream_authorized_channels_only {auth};
    server {{
        listen 127.0.0.1:{{PORT}};
        location /channels-stats {{
            push_stream_channels_statistics;
            push_stream_channels_path $arg_id;
        }}
        location /pub {{
            push_stream_publisher;
            push_stream_channels_path $arg_id;
            push_stream_store_messages on;
            client_max_body_size {pub_body};
            client_body_buffer_size {pub_body};
        }}
        location ~ /sub/(.*)? {{
            push_stream_subscriber;
            push_stream_channels_path $1;
            default_type text/html;
        }}
        location ~ /ws/(.*)? {{
            push_stream_subscriber websocket;
            push_stream_channels_path $1;
            push_stream_websocket_allow_publish on;
            push_stream_store_messages on;
            {ws_extra}
        }}
    }}"#,
        mem = s.shared_memory,
        ping = s.ping,
        header = tpl("header", s.header),
        message = tpl("message", s.message),
        footer = tpl("footer", s.footer),
        ttl = s
            .ttl
            .map(|t| format!("push_stream_subscriber_connection_ttl {t};"))
            .unwrap_or_default(),
        auth = if s.authorized_only { "on" } else { "off" },
        pub_body = s.pub_body,
        ws_extra = s.ws_extra,
    )
}

fn start(s: Spec) -> Nginx {
    Nginx::start(&conf(&s))
}

/// The spec's handshake: HTTP/1.0, version 8, its key.
fn handshake(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.0\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 8\r\n\r\n"
    )
}

/// A raw connection and what it has received so far.
struct Raw {
    s: TcpStream,
    got: Vec<u8>,
}

impl Raw {
    fn open(port: u16, request: &str) -> Raw {
        let mut s = connect(port);
        s.write_all(request.as_bytes()).unwrap();
        Raw { s, got: vec![] }
    }

    /// Reads until `needle` arrived (or the connection closed); returns everything read so
    /// far and forgets it.
    fn until(&mut self, needle: &[u8]) -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 65536];
        while !self.got.windows(needle.len()).any(|w| w == needle) {
            assert!(
                Instant::now() < deadline,
                "{needle:?} not received; got {:?}",
                String::from_utf8_lossy(&self.got)
            );
            match read_some(&mut self.s, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(k) => self.got.extend_from_slice(&buf[..k]),
            }
        }
        std::mem::take(&mut self.got)
    }

    /// Exactly `n` bytes (the rest stays for the next read).
    fn take(&mut self, n: usize) -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 65536];
        while self.got.len() < n {
            assert!(
                Instant::now() < deadline,
                "{n} bytes not received; got {} {:?}",
                self.got.len(),
                &self.got[..self.got.len().min(40)]
            );
            match read_some(&mut self.s, &mut buf) {
                Ok(0) | Err(_) => panic!("closed after {} of {n} bytes", self.got.len()),
                Ok(k) => self.got.extend_from_slice(&buf[..k]),
            }
        }
        let rest = self.got.split_off(n);
        std::mem::replace(&mut self.got, rest)
    }

    /// The response head (through the blank line); what follows stays for the next read.
    fn head(&mut self) -> String {
        let all = self.until(b"\r\n\r\n");
        let at = all
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(&all)))
            + 4;
        self.got = all[at..].to_vec();
        String::from_utf8_lossy(&all[..at]).into_owned()
    }

    /// Everything until the server closes the connection.
    fn rest(&mut self) -> Vec<u8> {
        self.s
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 65536];
        loop {
            match self.s.read(&mut buf) {
                Ok(0) | Err(_) => return std::mem::take(&mut self.got),
                Ok(k) => self.got.extend_from_slice(&buf[..k]),
            }
        }
    }
}

fn ws_open(port: u16, path: &str) -> (Raw, String) {
    let mut r = Raw::open(port, &handshake(path));
    let head = r.head();
    (r, head)
}

/// The summarized statistics.
fn summary(port: u16) -> Value {
    let r = get(port, "/channels-stats");
    assert_eq!(r.status, 200, "{:?}", r.text());
    json(&r)
}

fn channel_stats(port: u16, ch: &str) -> Value {
    let r = get(port, &format!("/channels-stats?id={ch}"));
    assert_eq!(r.status, 200, "{:?}", r.text());
    json(&r)
}

fn num(v: &Value) -> u64 {
    match v {
        Value::Number(n) => n.as_u64().unwrap(),
        Value::String(s) => s.parse().unwrap(),
        other => panic!("not a number: {other:?}"),
    }
}

/// (published, stored, subscribers) of a channel.
fn counts(port: u16, ch: &str) -> (u64, u64, u64) {
    let v = channel_stats(port, ch);
    (
        num(&v["published_messages"]),
        num(&v["stored_messages"]),
        num(&v["subscribers"]),
    )
}

/// The close code of the first close frame in `bytes` (None: no close frame, or one without a
/// code).
fn close_code_in(bytes: &[u8]) -> Option<u16> {
    let mut at = 0;
    while at + 2 <= bytes.len() {
        let op = bytes[at] & 0x0f;
        let (len, hdr) = match bytes[at + 1] & 0x7f {
            126 => (
                u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]) as usize,
                4,
            ),
            127 => (
                u64::from_be_bytes(bytes[at + 2..at + 10].try_into().unwrap()) as usize,
                10,
            ),
            n => (n as usize, 2),
        };
        let payload = &bytes[(at + hdr).min(bytes.len())..(at + hdr + len).min(bytes.len())];
        if op == 8 {
            return (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
        }
        at += hdr + len;
    }
    None
}

/// C: "should check accepted methods". Only GET: the others are `405` with `Allow: GET`.
#[test]
fn only_get_is_accepted() {
    let n = start(Spec::default());
    for (i, m) in ["HEAD", "PUT", "POST", "DELETE"].into_iter().enumerate() {
        let body: &[u8] = if m == "PUT" { b"body" } else { b"" };
        let r = request(
            n.port,
            m,
            &format!("/ws/ch_test_accepted_methods_{}", i + 1),
            &[],
            body,
        );
        assert_eq!(r.status, 405, "{m}");
        assert_eq!(r.header("Allow"), Some("GET"), "{m}");
    }
    let r = get(n.port, "/ws/ch_test_accepted_methods_5");
    assert_ne!(r.status, 405);
    n.stop();
}

/// C: "should check mandatory headers". Each of Connection, Upgrade, Sec-WebSocket-Key and
/// Sec-WebSocket-Version is needed (an HTTP/1.0 request, as the spec sends): until all four
/// are there the answer has no body and explains; with all four it is `101`.
#[test]
fn the_four_mandatory_headers() {
    let n = start(Spec::default());
    let explain = "Don't have at least one of the mandatory headers: Connection, Upgrade, Sec-WebSocket-Key and Sec-WebSocket-Version";
    let mut req = "GET /ws/ch_test_check_mandatory_headers.b1 HTTP/1.0\r\n".to_string();
    for add in [
        "",
        "Connection: Upgrade\r\n",
        &format!("Sec-WebSocket-Key: {KEY}\r\n"),
        "Upgrade: websocket\r\n",
    ] {
        req.push_str(add);
        let mut r = Raw::open(n.port, &format!("{req}\r\n"));
        let head = r.head();
        assert!(head.starts_with("HTTP/1.1 400"), "{head}");
        assert!(
            head.contains(&format!("X-Nginx-PushStream-Explain: {explain}\r\n")),
            "{head}"
        );
        assert_eq!(r.rest(), b"".to_vec(), "no body");
    }
    req.push_str("Sec-WebSocket-Version: 8\r\n");
    let mut r = Raw::open(n.port, &format!("{req}\r\n"));
    let head = r.head();
    assert!(
        head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{head}"
    );
    assert!(!head.contains("mandatory"), "{head}");
    n.stop();
}

/// C: "should check supported versions": 8 and 13; another is refused with the versions in
/// `Sec-WebSocket-Version` and the explain header, and no body.
#[test]
fn versions_8_and_13_are_supported() {
    let n = start(Spec::default());
    let base = format!("GET /ws/ch_test_supported_versions.b1 HTTP/1.0\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nUpgrade: websocket\r\n");
    let mut r = Raw::open(n.port, &format!("{base}Sec-WebSocket-Version: 7\r\n\r\n"));
    let head = r.head();
    assert!(head.contains("Sec-WebSocket-Version: 8, 13\r\n"), "{head}");
    assert!(
        head.contains(
            "X-Nginx-PushStream-Explain: Version not supported. Supported versions: 8, 13\r\n"
        ),
        "{head}"
    );
    assert_eq!(r.rest(), b"".to_vec());
    for v in [8, 13] {
        let mut r = Raw::open(n.port, &format!("{base}Sec-WebSocket-Version: {v}\r\n\r\n"));
        let head = r.head();
        assert!(head.starts_with("HTTP/1.1 101"), "{v}: {head}");
        assert!(!head.contains("Sec-WebSocket-Version: 8, 13"), "{head}");
        assert!(!head.contains("Version not supported"), "{head}");
    }
    n.stop();
}

/// C: "should check response headers" and "should not cache the response".
#[test]
fn the_101_headers() {
    let n = start(Spec::default());
    let (_r, head) = ws_open(n.port, "/ws/ch_test_response_headers.b1");
    assert!(
        head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{head}"
    );
    for h in [
        "Sec-WebSocket-Accept: RaIOIcQ6CBoc74B9EKdH0avYZnw=\r\n",
        "Upgrade: WebSocket\r\n",
        "Connection: Upgrade\r\n",
        "Expires: Thu, 01 Jan 1970 00:00:01 GMT\r\n",
        "Cache-Control: no-cache, no-store, must-revalidate\r\n",
    ] {
        assert!(head.contains(h), "{h:?} missing in {head}");
    }
    n.stop();
}

/// C: "should receive header template".
#[test]
fn the_header_template_is_the_first_frame() {
    let n = start(Spec {
        header: Some("HEADER_TEMPLATE"),
        ..Default::default()
    });
    let (mut r, _) = ws_open(n.port, "/ws/ch_test_receive_header_template.b1");
    assert_eq!(r.until(b"TEMPLATE"), b"\x81\x0fHEADER_TEMPLATE".to_vec());
    n.stop();
}

/// C: "should send a ping frame to client": an empty ping frame every ping interval.
#[test]
fn an_empty_ping_frame_every_ping_interval() {
    let n = start(Spec {
        ping: "1s",
        ..Default::default()
    });
    let (mut r, _) = ws_open(n.port, "/ws/ch_test_receive_ping_frame.b1");
    assert_eq!(r.until(b"\x89\x00"), b"\x89\x00".to_vec());
    n.stop();
}

/// C: "should send a close frame to client" and "should receive footer template": at the
/// connection ttl, the footer as a text frame, then an empty close frame.
#[test]
fn the_connection_ttl_sends_the_footer_and_an_empty_close_frame() {
    let n = start(Spec {
        ttl: Some("1s"),
        ..Default::default()
    });
    let (mut r, _) = ws_open(n.port, "/ws/ch_test_receive_close_frame.b1");
    assert_eq!(r.until(b"\x88\x00"), b"\x88\x00".to_vec());
    assert_eq!(
        r.rest(),
        b"".to_vec(),
        "the connection ends after the close frame"
    );
    n.stop();
    let n = start(Spec {
        ttl: Some("1s"),
        footer: Some("FOOTER_TEMPLATE"),
        ..Default::default()
    });
    let (mut r, _) = ws_open(n.port, "/ws/ch_test_receive_footer_template.b1");
    assert_eq!(
        r.until(b"\x88\x00"),
        b"\x81\x0fFOOTER_TEMPLATE\x88\x00".to_vec()
    );
    n.stop();
}

/// C: "should send a explain message on close frame": a refusal after the 101 is a close
/// frame with code 1008 and the HTTP status and explain as JSON, byte for byte.
#[test]
fn a_refusal_after_the_101_is_a_close_frame_with_the_explain() {
    let n = start(Spec {
        authorized_only: true,
        ..Default::default()
    });
    let (mut r, head) = ws_open(n.port, "/ws/ch_test_receive_explain_message_close_frame.b1");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(
        r.until(b"\"}"),
        b"\x88I\x03\xF0{\"http_status\": 403, \"explain\":\"Subscriber could not create channels.\"}"
            .to_vec()
    );
    n.stop();
}

/// C: "should check frames for messages with less than 125 bytes", "more than 125 and less
/// than 65535" and "more than 65535": the 7-bit, 16-bit and 64-bit length forms.
#[test]
fn message_frames_use_the_three_length_forms() {
    let n = start(Spec {
        pub_body: "70k",
        ..Default::default()
    });
    let ch = "ch_test_receive_message_length_less_than_125";
    let (mut r, _) = ws_open(n.port, &format!("/ws/{ch}.b1"));
    assert_eq!(post(n.port, &format!("/pub?id={ch}"), b"Hello").status, 200);
    assert_eq!(r.until(b"Hello"), b"\x81\x05Hello".to_vec());

    let ch = "ch_test_receive_message_length_more_than_125_less_then_65535";
    let body = vec![b'a'; 65535];
    assert_eq!(post(n.port, &format!("/pub?id={ch}"), &body).status, 200);
    let (mut r, _) = ws_open(n.port, &format!("/ws/{ch}.b1"));
    let mut want = b"\x81\x7e\xff\xff".to_vec();
    want.extend_from_slice(&body);
    assert!(r.take(want.len()) == want);

    let ch = "ch_test_receive_message_length_more_than_65535";
    let body = vec![b'a'; 65536];
    assert_eq!(post(n.port, &format!("/pub?id={ch}"), &body).status, 200);
    let (mut r, _) = ws_open(n.port, &format!("/ws/{ch}.b1"));
    let mut want = b"\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00".to_vec();
    want.extend_from_slice(&body);
    assert!(r.take(want.len()) == want);
    n.stop();
}

/// C: "should accept same message template in different locations".
#[test]
fn the_same_message_template_in_a_websocket_and_a_stream_location() {
    let n = start(Spec {
        message: Some(r#"{\"text\":\"~text~\"}"#),
        ttl: Some("1s"),
        ..Default::default()
    });
    let ch = "ch_test_same_message_template_different_locations";
    assert_eq!(post(n.port, &format!("/pub?id={ch}"), b"body").status, 200);
    let (mut ws, _) = ws_open(n.port, &format!("/ws/{ch}.b1"));
    assert_eq!(ws.until(b"}"), b"\x81\x0f{\"text\":\"body\"}".to_vec());
    let mut sub = Raw::open(n.port, &format!("GET /sub/{ch}.b1 HTTP/1.0\r\n\r\n"));
    sub.head();
    assert_eq!(sub.until(b"}"), b"{\"text\":\"body\"}".to_vec());
    n.stop();
}

/// C: "should publish message to all subscribed channels using the same stream": a text
/// frame from a client of /ws/ch2/ch1 is published to ch2 and ch1 (in that order), stored in
/// both, and a later `.b1` subscriber of each gets it.
#[test]
fn a_client_message_is_published_to_every_channel_of_its_connection() {
    let n = start(Spec {
        message: Some(r#"{\"channel\":\"~channel~\", \"id\":\"~id~\", \"message\":\"~text~\"}"#),
        ..Default::default()
    });
    let (mut r, _) = ws_open(n.port, "/ws/ch2/ch1");
    // The spec's masked 'hello' frame.
    r.s.write_all(&[
        0x81, 0x85, 0xBD, 0xD0, 0xE5, 0x2A, 0xD5, 0xB5, 0x89, 0x46, 0xD2,
    ])
    .unwrap();
    assert_eq!(
        r.until(b"ch1\", \"id\":\"1\", \"message\":\"hello\"}"),
        b"\x81.{\"channel\":\"ch2\", \"id\":\"1\", \"message\":\"hello\"}\x81.{\"channel\":\"ch1\", \"id\":\"1\", \"message\":\"hello\"}".to_vec()
    );
    drop(r);
    let all = channel_stats(n.port, "ALL");
    assert_eq!(num(&all["channels"]), 2);
    let infos = all["infos"].as_array().unwrap();
    let names: Vec<&str> = infos
        .iter()
        .map(|i| i["channel"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ch2", "ch1"]);
    for i in infos {
        assert_eq!(num(&i["published_messages"]), 1);
        assert_eq!(num(&i["stored_messages"]), 1);
    }
    for ch in ["ch1", "ch2"] {
        let mut s = Stream::open(n.port, &format!("/sub/{ch}.b1"), &[]);
        let line = String::from_utf8(s.next_chunk().unwrap()).unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            (
                v["channel"].as_str(),
                v["message"].as_str(),
                v["id"].as_str()
            ),
            (Some(ch), Some("hello"), Some("1"))
        );
    }
    n.stop();
}

/// C: "should publish large message". The C module takes a client message of any size; this
/// module caps it at the location's `client_max_body_size` (1k at the `http{}` level in the C
/// specs' configuration), closing with 1009, so that one client cannot make a worker buffer
/// an unbounded message (docs/migration.md). With the cap raised in the WebSocket location,
/// the 4 MiB message and then a 10 KiB one come back whole, as with the C module.
#[test]
fn a_large_client_message_within_client_max_body_size_is_published_whole() {
    let json_tpl = r#"{\"channel\":\"~channel~\", \"id\":\"~id~\", \"message\":\"~text~\"}"#;
    let ch = "ch_test_publish_large_message";
    let small = format!("^|{}|$", "0123456789".repeat(1020));
    let large = format!("^|{}|$", "0123456789".repeat(419430));
    assert_eq!(large.len(), 4194304);
    // The C specs' configuration: the cap is 1k.
    let n = start(Spec {
        shared_memory: "15m",
        message: Some(json_tpl),
        ..Default::default()
    });
    let mut ws = Ws::connect(n.port, &format!("/ws/{ch}"));
    ws.send_text(&large);
    let mut code = None;
    while let Some((_, op, p)) = ws.read_frame() {
        assert_ne!(op, 1, "nothing is published");
        if op == 8 {
            code = Some(u16::from_be_bytes([p[0], p[1]]));
            break;
        }
    }
    assert_eq!(code, Some(1009));
    assert_eq!(counts(n.port, ch).0, 0);
    n.stop();
    // Raised in the location.
    let n = start(Spec {
        shared_memory: "15m",
        message: Some(json_tpl),
        ws_extra: "client_max_body_size 5m;",
        ..Default::default()
    });
    let mut ws = Ws::connect(n.port, &format!("/ws/{ch}"));
    ws.send_text(&large);
    let got: Value = serde_json::from_slice(&ws.read_text().unwrap()).unwrap();
    assert_eq!(got["channel"].as_str(), Some(ch));
    assert_eq!(got["message"].as_str().map(|m| m.len()), Some(4194304));
    assert!(got["message"].as_str() == Some(large.as_str()));
    ws.send_text(&small);
    let got: Value = serde_json::from_slice(&ws.read_text().unwrap()).unwrap();
    assert_eq!(got["message"].as_str(), Some(small.as_str()));
    assert_eq!(small.len(), 10204);
    n.stop();
}

/// C: "should publish message with a low bitrate": a frame sent one byte at a time is
/// published once complete. `client_body_timeout` counts between reads (as nginx counts it
/// for a request body), not for the whole message: here 1 s, with a byte every 400 ms over
/// 4.4 s.
#[test]
fn a_frame_sent_one_byte_at_a_time_is_published() {
    let n = start(Spec {
        shared_memory: "15m",
        message: Some(r#"{\"channel\":\"~channel~\", \"message\":\"~text~\"}"#),
        ws_extra: "client_body_timeout 1s;",
        ..Default::default()
    });
    let ch = "ch_test_publish_message_low_bitrate";
    let (mut r, _) = ws_open(n.port, &format!("/ws/{ch}"));
    // The spec's masked 'Hello' frame.
    let frame = [
        0x81u8, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    for b in frame {
        r.s.write_all(&[b]).unwrap();
        std::thread::sleep(Duration::from_millis(400));
    }
    let got = r.until(b"llo\"}");
    assert!(
        String::from_utf8_lossy(&got)
            .contains(r#"{"channel":"ch_test_publish_message_low_bitrate", "message":"Hello"}"#),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(counts(n.port, ch), (1, 1, 1));
    n.stop();
}

/// C: "should accept ping message and return a pong frame". The spec's ping is unmasked,
/// which RFC 6455 forbids: this module closes with 1002 (the C module answers it). A masked
/// ping is answered with a pong carrying the ping's payload (RFC 6455 §5.5.3; the C module's
/// pong is empty), nothing is published and the subscriber stays.
#[test]
fn a_ping_is_answered_with_a_pong() {
    let n = start(Spec::default());
    let ch = "ch_test_accept_ping_message";
    let (mut r, _) = ws_open(n.port, &format!("/ws/{ch}.b1"));
    r.s.write_all(&ws_client_frame(true, 9, b"Hello", true))
        .unwrap();
    assert_eq!(r.until(b"Hello"), b"\x8a\x05Hello".to_vec());
    assert_eq!(counts(n.port, ch), (0, 0, 1));
    // The spec's unmasked ping.
    let (mut r, _) = ws_open(n.port, "/ws/ch_test_accept_ping_message_unmasked.b1");
    r.s.write_all(&[0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f])
        .unwrap();
    assert_eq!(close_code_in(&r.rest()), Some(1002));
    n.stop();
}

/// C: "should accept pong message": nothing is answered or published, the subscriber stays.
#[test]
fn a_pong_is_accepted() {
    let n = start(Spec::default());
    let ch = "ch_test_accept_pong_message";
    let (mut r, _) = ws_open(n.port, &format!("/ws/{ch}.b1"));
    r.s.write_all(&[0x8A, 0x80, 0xBD, 0xD0, 0xE5, 0x2A])
        .unwrap();
    // A ping after it is answered: the pong was read and ignored.
    r.s.write_all(&ws_client_frame(true, 9, b"after", true))
        .unwrap();
    assert_eq!(r.until(b"after"), b"\x8a\x05after".to_vec());
    assert_eq!(counts(n.port, ch), (0, 0, 1));
    n.stop();
}

/// C: "should accept close message": an empty close frame is answered with one, and the
/// subscriber is gone.
#[test]
fn a_close_frame_is_answered_and_the_subscriber_leaves() {
    let n = start(Spec::default());
    let ch = "ch_test_accept_close_message";
    let (mut r, _) = ws_open(n.port, &format!("/ws/{ch}.b1"));
    r.s.write_all(&[0x88, 0x80, 0xBD, 0xD0, 0xE5, 0x2A])
        .unwrap();
    assert_eq!(r.rest(), b"\x88\x00".to_vec());
    wait_for("the subscriber gone", Duration::from_secs(5), || {
        counts(n.port, ch) == (0, 0, 0)
    });
    n.stop();
}

/// C: "should accept messages with different bytes": a published body of every byte pair
/// reaches a WebSocket subscriber unchanged, in a text frame with the 64-bit length form.
#[test]
fn every_byte_value_reaches_a_websocket_subscriber_unchanged() {
    let n = start(Spec {
        message: Some("~text~|"),
        pub_body: "130k",
        ..Default::default()
    });
    let ch = "ch_test_publish_messages_with_different_bytes_0..255";
    let mut body = Vec::with_capacity(131072);
    for i in 0..=255u8 {
        for j in 0..=255u8 {
            body.extend_from_slice(&[i, j]);
        }
    }
    let (mut r, _) = ws_open(n.port, &format!("/ws/{ch}"));
    assert_eq!(post(n.port, &format!("/pub?id={ch}"), &body).status, 200);
    let mut want = b"\x81\x7f\x00\x00\x00\x00\x00\x02\x00\x01".to_vec();
    want.extend_from_slice(&body);
    want.push(b'|');
    assert!(r.take(want.len()) == want);
    n.stop();
}

/// C: "should accept non latin characters" and "should reject an invalid utf8 sequence": a
/// UTF-8 text comes back; an invalid one is not published and the connection is closed
/// (with close code 1007 here; the C module closes without a close frame).
#[test]
fn utf8_text_is_published_and_invalid_utf8_closes_with_1007() {
    let n = start(Spec::default());
    let text = "\u{623}\u{64e}\u{628}\u{652}\u{62c}\u{64e}\u{62f}\u{650}\u{64a}\u{64e}\u{651}\u{629} \u{639}\u{64e}";
    let mut ws = Ws::connect(n.port, "/ws/ch_test_publish_non_latin");
    ws.send_text(text);
    assert_eq!(ws.read_text().unwrap(), text.as_bytes().to_vec());

    let ch = "ch_test_publish_invalid_utf8";
    let mut ws = Ws::connect(n.port, &format!("/ws/{ch}"));
    ws.send_frame(true, 1, &text.as_bytes()[1..], true);
    let mut code = None;
    while let Some((_, op, p)) = ws.read_frame() {
        assert_ne!(op, 1, "should not have received {p:?}");
        if op == 8 {
            code = Some(u16::from_be_bytes([p[0], p[1]]));
        }
    }
    assert_eq!(code, Some(1007));
    assert_eq!(counts(n.port, ch).0, 0);
    n.stop();
}

/// C: "should reject unsupported frames": a binary frame is not published and ends the
/// connection, with close code 1003 here (the C module sends an empty close frame).
#[test]
fn a_binary_frame_is_refused_with_1003() {
    let n = start(Spec::default());
    let ch = "ch_test_reject_unsupported_frames";
    let (mut r, _) = ws_open(n.port, &format!("/ws/{ch}.b1"));
    r.s.write_all(&[
        0x82, 0x85, 0xBD, 0xD0, 0xE5, 0x2A, 0xD5, 0xB5, 0x89, 0x46, 0xD2,
    ])
    .unwrap();
    assert_eq!(close_code_in(&r.rest()), Some(1003));
    wait_for("the subscriber gone", Duration::from_secs(5), || {
        counts(n.port, ch) == (0, 0, 0)
    });
    n.stop();
}

/// C: "should not try to parse the request line when receive a frame after send close
/// frame": after the ttl's close frame, what the client still sends is never read as a new
/// HTTP request on the connection.
#[test]
fn data_after_the_close_frame_is_not_parsed_as_a_request() {
    let n = start(Spec {
        ttl: Some("1s"),
        ..Default::default()
    });
    let req = format!("GET /ws/ch_test_data_after_close_frame_parse_request_line.b1 HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 8\r\n\r\n");
    let mut r = Raw::open(n.port, &req);
    r.head();
    assert_eq!(r.until(b"\x88\x00"), b"\x88\x00".to_vec());
    let _ = r.s.write_all(b"WRITE SOMETHING UNKNOWN\r\n");
    // No answer (an HTTP 400 would mean it was parsed), then the end of the connection.
    assert_eq!(r.rest(), b"".to_vec());
    let log = n.error_log();
    assert!(!log.contains("client sent invalid"), "{log}");
    n.stop();
}

/// C: "should not try to parse the request line when doing a reload": a WebSocket client
/// keeps sending frames (pings) and then a line of garbage around `nginx -s reload`; the old
/// worker ends it with a close frame, nothing it sent is read as an HTTP request (no answer
/// but frames, no "client sent invalid" in the log), and the subscriber count returns to 0
/// while the channel stays.
#[test]
fn frames_sent_around_a_reload_are_not_parsed_as_a_request() {
    let mut n = start(Spec {
        ping: "1s",
        ..Default::default()
    });
    let ch = "ch_test_reload_not_parse_request_line";
    assert_eq!(post(n.port, &format!("/pub?id={ch}"), b"body").status, 200);
    let req = format!("GET /ws/{ch}.b1 HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 8\r\n\r\n");
    let mut r = Raw::open(n.port, &req);
    assert!(r.head().starts_with("HTTP/1.1 101"));
    assert_eq!(r.until(b"body"), b"\x81\x04body".to_vec());
    let st = summary(n.port);
    assert_eq!(num(&st["channels"]), 1);
    assert_eq!(num(&st["subscribers"]), 1);
    // A writer that sends a masked ping every 2 ms, and the spec's line of garbage once the
    // reload has started the new workers, until the connection is gone.
    let mut w = r.s.try_clone().unwrap();
    let reloaded = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let reloaded = reloaded.clone();
        std::thread::spawn(move || {
            use std::sync::atomic::Ordering::SeqCst;
            let ping = ws_client_frame(true, 9, b"p", true);
            let mut sent = 0;
            let mut garbage = false;
            while sent < 5000 {
                if !garbage && reloaded.load(SeqCst) {
                    garbage = true;
                    if w.write_all(b"WRITE SOMETHING UNKNOWN\r\n").is_err() {
                        break;
                    }
                }
                if w.write_all(&ping).is_err() {
                    break;
                }
                sent += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            sent
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    let reader = std::thread::spawn(move || r.rest());
    let old = n.reload();
    reloaded.store(true, std::sync::atomic::Ordering::SeqCst);
    let rest = reader.join().unwrap();
    let sent = writer.join().unwrap();
    assert!(sent > 10, "only {sent} pings went out");
    // Only frames: pongs (and pings), then the close frame, then nothing.
    let mut at = 0;
    let mut closed = false;
    while at < rest.len() {
        assert!(
            !closed,
            "bytes after the close frame: {:?}",
            String::from_utf8_lossy(&rest[at..])
        );
        let (op, len) = (rest[at] & 0x0f, (rest[at + 1] & 0x7f) as usize);
        assert!(
            (8..=10).contains(&op) && rest[at] & 0x80 != 0 && len < 126,
            "not a frame at {at}: {:?}",
            String::from_utf8_lossy(&rest[at..])
        );
        closed = op == 8;
        at += 2 + len;
    }
    assert!(closed, "no close frame in {rest:?}");
    n.wait_gone(&old, Duration::from_secs(5));
    wait_for(
        "the subscriber count back to 0",
        Duration::from_secs(5),
        || num(&summary(n.port)["subscribers"]) == 0,
    );
    assert_eq!(num(&summary(n.port)["channels"]), 1);
    let log = n.error_log();
    assert!(!log.contains("client sent invalid"), "{log}");
    n.stop();
}
