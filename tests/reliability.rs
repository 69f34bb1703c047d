//! Reliability: bad input over the wire, hostile and slow clients, floods, faults (a worker
//! killed under load, a full zone, reloads under load) and access control with nginx's own
//! tools. Every load is bounded in count and time and stays on loopback; the outcomes and the
//! figures they print (`--nocapture`) are summarized in docs/reliability.md.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Publish-to-delivery latency a probe client may see while the others misbehave (loopback,
/// two shared cores: generous, but far below any timeout a misbehaving client could cause).
const MAX_PROBE_LATENCY: Duration = Duration::from_millis(500);

fn conf(http_extra: &str) -> String {
    format!(
        r#"
    push_stream_shared_memory_size 32m;
    push_stream_max_channel_id_length 64;
    {http_extra}
    server {{
        listen 127.0.0.1:{{PORT}} reuseport;
        client_max_body_size 16k;
        client_header_timeout 1s;
        client_body_timeout 1s;
        location /pub {{ push_stream_publisher admin; push_stream_channels_path $arg_id; push_stream_store_messages on; }}
        location /pub-nostore {{ push_stream_publisher; push_stream_channels_path $arg_id; push_stream_channel_info_on_publish off; }}
        location /stats {{ push_stream_channels_statistics; push_stream_channels_path $arg_id; }}
        location ~ /sub/(.*) {{
            push_stream_subscriber;
            push_stream_channels_path $1;
            push_stream_message_template "~id~|~channel~|~text~\n";
        }}
        location ~ /ev/(.*) {{ push_stream_subscriber eventsource; push_stream_channels_path $1; }}
        location ~ /lp/(.*) {{
            push_stream_subscriber long-polling;
            push_stream_channels_path $1;
            push_stream_longpolling_connection_ttl 2s;
            push_stream_message_template "~id~|~text~";
        }}
        location ~ /ws/(.*) {{
            push_stream_subscriber websocket;
            push_stream_channels_path $1;
            push_stream_websocket_allow_publish on;
            client_max_body_size 1k;
        }}
    }}"#
    )
}

fn start(workers: usize, http_extra: &str) -> Nginx {
    Nginx::start_with(
        &conf(http_extra),
        Options {
            workers,
            ..Default::default()
        },
    )
}

// ---- local helpers -------------------------------------------------------------------------

fn stats(port: u16) -> Value {
    json(&get(port, "/stats"))
}

/// Sends raw bytes (a whole request, possibly malformed) and reads the answer; None when the
/// server closed the connection without answering.
fn raw(port: u16, bytes: &[u8]) -> Option<Response> {
    let s = connect(port);
    (&s).write_all(bytes).unwrap();
    let mut r = BufReader::new(s);
    if r.fill_buf().map(|b| b.is_empty()).unwrap_or(true) {
        return None;
    }
    Some(read_response(&mut r, false))
}

/// A loopback client whose source address is `src` (e.g. 127.0.0.2: "another host").
fn connect_from(src: [u8; 4], port: u16) -> TcpStream {
    use std::os::fd::FromRawFd;
    // SAFETY: a fresh socket, bound and connected with plain sockaddr_in values; on success
    // its fd is handed to a TcpStream that owns it.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let mut a: libc::sockaddr_in = std::mem::zeroed();
        a.sin_family = libc::AF_INET as libc::sa_family_t;
        a.sin_addr.s_addr = u32::from_ne_bytes(src);
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        assert_eq!(
            libc::bind(fd, &a as *const _ as *const libc::sockaddr, len),
            0
        );
        a.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        a.sin_port = port.to_be();
        assert_eq!(
            libc::connect(fd, &a as *const _ as *const libc::sockaddr, len),
            0,
            "connect from {src:?}"
        );
        let s = TcpStream::from_raw_fd(fd);
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }
}

fn request_from(
    src: [u8; 4],
    port: u16,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &[u8],
) -> Response {
    let mut s = connect_from(src, port);
    send_request(&mut s, method, path, headers, body, true);
    read_response(&mut BufReader::new(s), false)
}

/// Open file descriptors of a process.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The worst publish-to-delivery latency of `rounds` messages through a fresh streaming
/// subscriber of `ch` (a well-behaved client next to whatever else is going on).
fn probe_latency(port: u16, ch: &str, rounds: usize) -> Duration {
    let mut s = Stream::open(port, &format!("/sub/{ch}"), &[]);
    assert_eq!(s.status, 200, "probe subscriber");
    let mut worst = Duration::ZERO;
    for i in 0..rounds {
        let t = Instant::now();
        let r = post(
            port,
            &format!("/pub-nostore?id={ch}"),
            format!("p{i}").as_bytes(),
        );
        assert_eq!(r.status, 200, "probe publish");
        let line = read_lines(&mut s, 1).remove(0);
        assert!(line.ends_with(&format!("|{ch}|p{i}")), "{line}");
        worst = worst.max(t.elapsed());
    }
    worst
}

fn close_code(ws: &mut Ws) -> Option<u16> {
    loop {
        match ws.read_frame() {
            Some((_, 8, p)) if p.len() >= 2 => return Some(u16::from_be_bytes([p[0], p[1]])),
            Some((_, 8, _)) => return Some(1005),
            Some(_) => continue,
            None => return None,
        }
    }
}

/// After a close frame the server ends the TCP connection.
fn assert_closed(ws: &mut Ws) {
    ws.stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut b = [0u8; 64];
    match read_some(&mut ws.stream, &mut b) {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!("data after the close frame: {:?}", &b[..n]),
    }
}

// ---- bad input -----------------------------------------------------------------------------

#[test]
fn bad_and_over_long_channel_ids_get_defined_answers() {
    let n = start(2, "");
    let p = n.port;
    let long = "x".repeat(65);
    // (request, status, explain)
    let cases: Vec<(Response, u16, Option<&str>)> = vec![
        (
            post(p, &format!("/pub?id={long}"), b"m"),
            400,
            Some("Channel id is too large."),
        ),
        (
            get(p, &format!("/sub/{long}")),
            400,
            Some("Channel id is too large."),
        ),
        (
            get(p, &format!("/lp/ok/{long}")),
            400,
            Some("Channel id is too large."),
        ),
        // 64 bytes after unescaping: %41 is one byte.
        (
            post(p, &format!("/pub?id={}", "%41".repeat(64)), b"m"),
            200,
            None,
        ),
        (
            post(p, &format!("/pub?id={}", "%41".repeat(65)), b"m"),
            400,
            Some("Channel id is too large."),
        ),
        (
            post(p, "/pub?id=", b"m"),
            400,
            Some("No channel id provided."),
        ),
        (
            post(p, "/pub?id=///", b"m"),
            400,
            Some("No channel id provided."),
        ),
        (get(p, "/sub//"), 400, Some("No channel id provided.")),
        (
            post(p, "/pub?id=*", b"m"),
            403,
            Some("Channel id not authorized for this method."),
        ),
        (
            get(p, "/sub/a/ALL"),
            403,
            Some("Channel id not authorized for this method."),
        ),
    ];
    for (i, (r, status, exp)) in cases.iter().enumerate() {
        assert_eq!((r.status, explain(r)), (*status, *exp), "case {i}: {r:?}");
    }
    // Invalid UTF-8 (unescaped %FF%FE, and raw bytes in the URI), NUL and control bytes, a
    // bad percent escape: publishable, subscribable and reported as valid JSON.
    let odd_ids: [(&str, &[u8]); 4] = [
        ("%FF%FE", b"\xff\xfe"),
        ("a%00b", b"a\0b"),
        ("c%01%1b%7f", b"c\x01\x1b\x7f"),
        ("bad%zz", b"bad%zz"),
    ];
    for (i, (esc, bytes)) in odd_ids.iter().enumerate() {
        let r = post(p, &format!("/pub?id={esc}"), format!("odd{i}").as_bytes());
        assert_eq!(r.status, 200, "{esc}: {r:?}");
        let v = json(&r);
        assert_eq!(v["published_messages"], 1, "{esc}");
        let name = v["channel"].as_str().unwrap().to_string();
        // The same channel through its raw bytes in a subscriber URI.
        let mut req = b"GET /sub/".to_vec();
        req.extend_from_slice(
            &bytes
                .iter()
                .flat_map(|b| format!("%{b:02X}").into_bytes())
                .collect::<Vec<u8>>(),
        );
        req.extend_from_slice(b".b1 HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut s = connect(p);
        s.write_all(&req).unwrap();
        let mut sr = BufReader::new(s);
        let (status, _) = read_head(&mut sr);
        if bytes.contains(&0) {
            // nginx itself refuses a URI whose path decodes to a NUL.
            assert_eq!(status, 400, "{esc}");
            continue;
        }
        assert_eq!(status, 200, "{esc}");
        let chunk = read_chunk(&mut sr).unwrap();
        assert!(
            chunk.starts_with(b"1|") && chunk.ends_with(format!("|odd{i}\n").as_bytes()),
            "{esc}: {chunk:?} ({name:?})"
        );
    }
    // Raw non-UTF-8 bytes directly in the request line.
    let r = raw(p, b"POST /pub?id=raw\xc3\x28 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nraw").unwrap();
    assert_eq!(r.status, 200);
    let r = raw(
        p,
        b"GET /lp/raw\xc3\x28.b1?x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "1|raw"));
    // A backtrack too large for any integer, and a channel list of 300 ids.
    let r = get(p, "/lp/ok.b99999999999999999999999");
    assert_eq!(
        r.status, 304,
        "a backtrack beyond u64 on an empty channel: nothing to send"
    );
    let many: Vec<String> = (0..300).map(|i| format!("m{i}")).collect();
    let r = post(p, &format!("/pub?id={}", many.join("/")), b"fan");
    assert_eq!(r.status, 200);
    assert_eq!(json(&r)["infos"].as_array().unwrap().len(), 300);
    // Every statistics format still answers, JSON parses, and the counts add up.
    let all = json(&get(p, "/stats?id=ALL"));
    let infos = all["infos"].as_array().unwrap();
    let s = stats(p);
    assert_eq!(s["channels"].as_u64().unwrap() as usize, infos.len(), "{s}");
    for accept in ["text/plain", "application/yaml", "application/xml"] {
        let h = format!("Accept: {accept}");
        let r = request(p, "GET", "/stats?id=ALL", &[h.as_str()], b"");
        assert_eq!(r.status, 200, "{accept}");
    }
    n.stop();
}

#[test]
fn invalid_utf8_and_garbage_in_headers_get_defined_answers() {
    let n = start(1, "");
    let p = n.port;
    let mut es = Stream::open(p, "/ev/hdr", &[]);
    assert_eq!(es.next_chunk().unwrap(), b": \n".to_vec());
    // Event-Id / Event-Type with bytes that are not UTF-8, quotes and backslashes.
    let r = raw(
        p,
        b"POST /pub?id=hdr HTTP/1.1\r\nHost: x\r\nEvent-Id: i\xff\"d\\\r\nEvent-Type: t\xfe\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbody",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        es.next_chunk().unwrap(),
        b"id: i\xff\"d\\\nevent: t\xfe\ndata: body\n\n".to_vec()
    );
    // Resume headers that are not dates, tags or known ids: treated as absent / no match.
    for h in [
        "If-Modified-Since: yesterday",
        "If-None-Match: W/notanumber",
        "If-None-Match: 99999999999999999999999999",
        "Last-Event-Id: \u{fffd}nope",
        "X-Nginx-PushStream-Mode: sideways",
    ] {
        let r = request(p, "GET", "/lp/hdr.b1", &[h], b"");
        assert_eq!(r.status, 200, "{h}: {r:?}");
        assert_eq!(r.text(), "1|body", "{h}");
    }
    let r = raw(
        p,
        b"GET /lp/hdr.b1 HTTP/1.1\r\nHost: x\r\nLast-Event-Id: \xff\xfe\r\nIf-None-Match: \xc3\x28\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "1|body"));
    // nginx refuses a NUL in a header line and an over-long header (its own 400 / 494 family).
    let r = raw(
        p,
        b"GET /sub/x HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.map(|r| r.status), Some(400));
    let big = format!(
        "GET /sub/x HTTP/1.1\r\nHost: x\r\nLast-Event-Id: {}\r\nConnection: close\r\n\r\n",
        "e".repeat(20_000)
    );
    let r = raw(p, big.as_bytes()).unwrap();
    assert_eq!(r.status, 400, "Request Header Or Cookie Too Large");
    // The channel is intact and the statistics still parse.
    let v = json(&get(p, "/pub?id=hdr"));
    assert_eq!(
        (v["published_messages"].as_u64(), v["subscribers"].as_u64()),
        (Some(1), Some(1))
    );
    stats(p);
    n.stop();
}

#[test]
fn unknown_and_unexpected_methods_are_refused() {
    let n = start(1, "");
    let p = n.port;
    for (path, allow) in [
        ("/pub?id=m", "GET, POST, PUT, DELETE"),
        ("/sub/m", "GET"),
        ("/stats", "GET"),
        ("/ws/m", "GET"),
        ("/lp/m", "GET"),
    ] {
        for method in ["PATCH", "FOO", "PROPFIND", "MKCOL", "COPY", "LOCK"] {
            let r = request(p, method, path, &[], b"");
            assert_eq!(
                (r.status, r.header("Allow")),
                (405, Some(allow)),
                "{method} {path}"
            );
        }
    }
    // nginx answers these itself before any location runs.
    let r = raw(
        p,
        b"TRACE /sub/m HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 405);
    let r = raw(
        p,
        b"get /sub/m HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 400);
    let r = raw(
        p,
        b"G\xffT /sub/m HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 400);
    // Nothing was created by any of them.
    assert_eq!(get(p, "/pub?id=m").status, 404);
    assert_eq!(stats(p)["channels"], 0);
    n.stop();
}

#[test]
fn oversize_bodies_are_413_and_create_nothing() {
    let n = start(1, "");
    let p = n.port;
    // Exactly the limit passes.
    assert_eq!(post(p, "/pub?id=size", &vec![b'x'; 16 * 1024]).status, 200);
    // One byte over; a huge declared length never sent; chunked over the limit; Expect.
    assert_eq!(
        post(p, "/pub?id=big1", &vec![b'x'; 16 * 1024 + 1]).status,
        413
    );
    let r = raw(p, b"POST /pub?id=big2 HTTP/1.1\r\nHost: x\r\nContent-Length: 10737418240\r\nConnection: close\r\n\r\n").unwrap();
    assert_eq!(r.status, 413);
    let mut chunked = b"POST /pub?id=big3 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..20 {
        chunked.extend_from_slice(b"400\r\n");
        chunked.extend_from_slice(&[b'y'; 0x400]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let r = raw(p, &chunked).unwrap();
    assert_eq!(r.status, 413);
    let r = raw(p, b"POST /pub?id=big4 HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n").unwrap();
    assert_eq!(r.status, 413);
    // A content length that is not a number, and one that disagrees with chunked.
    let r = raw(
        p,
        b"POST /pub?id=big5 HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 400);
    // A WebSocket message over the location's limit (1k) is a close 1009 (see subscriber.rs);
    // a chunked body under the limit publishes.
    let r = raw(p, b"POST /pub?id=okchunk HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap();
    assert_eq!(r.status, 200);
    for ch in ["big1", "big2", "big3", "big4", "big5"] {
        assert_eq!(
            get(p, &format!("/pub?id={ch}")).status,
            404,
            "{ch} was created"
        );
    }
    let mut s = Stream::open(p, "/sub/okchunk.b1", &[]);
    assert_eq!(read_lines(&mut s, 1), vec!["1|okchunk|abcde"]);
    assert_eq!(stats(p)["channels"], 2);
    n.stop();
}

/// A masked client frame with a raw first byte (FIN, RSV bits, opcode).
fn masked_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![b0];
    if payload.len() < 126 {
        f.push(0x80 | payload.len() as u8);
    } else if payload.len() < 65536 {
        f.push(0x80 | 126);
        f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    } else {
        f.push(0x80 | 127);
        f.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    }
    let key = [1u8, 2, 3, 4];
    f.extend_from_slice(&key);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

#[test]
fn websocket_garbage_is_closed_with_its_code_and_publishes_nothing() {
    let n = start(2, "");
    let p = n.port;
    // (what, bytes sent after the handshake, close code)
    let mut frag_too_big = vec![];
    frag_too_big.extend(masked_frame(0x01, &[b'a'; 600]));
    frag_too_big.extend(masked_frame(0x00, &[b'b'; 600]));
    let mut new_text_in_fragment = masked_frame(0x01, b"part");
    new_text_in_fragment.extend(masked_frame(0x81, b"other"));
    let huge_len = {
        let mut f = vec![0x81, 0x80 | 127];
        f.extend_from_slice(&(1u64 << 63).to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 0]);
        f
    };
    let big_len = {
        let mut f = vec![0x81, 0x80 | 127];
        f.extend_from_slice(&(1u64 << 40).to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 0]);
        f
    };
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("rsv1 set", masked_frame(0xc1, b"x"), 1002),
        ("rsv3 set", masked_frame(0x91, b"x"), 1002),
        ("opcode 3", masked_frame(0x83, b"x"), 1002),
        ("opcode 11", masked_frame(0x8b, b"x"), 1002),
        ("fragmented ping", masked_frame(0x09, b"x"), 1002),
        ("ping of 126 bytes", masked_frame(0x89, &[b'p'; 126]), 1002),
        ("continuation first", masked_frame(0x80, b"x"), 1002),
        (
            "text inside a fragmented message",
            new_text_in_fragment,
            1002,
        ),
        ("64-bit length with the top bit", huge_len, 1002),
        ("a 1 TiB frame", big_len, 1009),
        ("fragments adding up over 1k", frag_too_big, 1009),
        (
            "invalid UTF-8 text",
            masked_frame(0x81, b"ok\xc3\x28"),
            1007,
        ),
        ("close with one byte", masked_frame(0x88, b"\x03"), 1002),
        (
            "close code 1005 on the wire",
            masked_frame(0x88, &1005u16.to_be_bytes()),
            1002,
        ),
        (
            "close reason not UTF-8",
            masked_frame(0x88, b"\x03\xe8\xff"),
            1007,
        ),
        ("binary message", masked_frame(0x82, b"\x00\x01"), 1003),
        ("unmasked pong", vec![0x8a, 0x00], 1002),
    ];
    let mut good = Ws::connect(p, "/ws/wsg");
    assert_eq!(good.status(), 101);
    for (what, bytes, code) in &cases {
        let mut ws = Ws::connect(p, "/ws/wsg");
        assert_eq!(ws.status(), 101, "{what}");
        ws.stream.write_all(bytes).unwrap();
        assert_eq!(close_code(&mut ws), Some(*code), "{what}");
        assert_closed(&mut ws);
    }
    // A valid frame split byte by byte over 1.2 s is still one message.
    let mut slow = Ws::connect(p, "/ws/wsg");
    let frame = masked_frame(0x81, b"slow but valid");
    for b in &frame {
        slow.stream.write_all(&[*b]).unwrap();
        std::thread::sleep(Duration::from_millis(60));
    }
    assert_eq!(good.read_text().unwrap(), b"slow but valid".to_vec());
    drop(slow);
    // Clients that vanish mid-frame or mid-handshake.
    for cut in [1usize, 3, 7, 10] {
        let mut ws = Ws::connect(p, "/ws/wsg");
        ws.stream
            .write_all(&masked_frame(0x81, &[b'z'; 300])[..cut])
            .unwrap();
        drop(ws);
    }
    let mut half = connect(p);
    half.write_all(b"GET /ws/wsg HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgr")
        .unwrap();
    drop(half);
    // Only the valid message was published; the well-behaved client and the others were not
    // delayed.
    let v = json(&get(p, "/pub?id=wsg"));
    assert_eq!(v["published_messages"], 1, "{v}");
    let worst = probe_latency(p, "wsg-probe", 20);
    assert!(worst < MAX_PROBE_LATENCY, "probe latency {worst:?}");
    post(p, "/pub?id=wsg", b"after");
    assert_eq!(good.read_text().unwrap(), b"after".to_vec());
    wait_for("bad clients unsubscribed", Duration::from_secs(5), || {
        json(&get(p, "/pub?id=wsg"))["subscribers"] == 1
    });
    eprintln!(
        "FIGURE ws-garbage: {} bad clients closed, probe worst latency {worst:?}",
        cases.len()
    );
    n.stop();
}

// ---- hostile and slow clients ---------------------------------------------------------------

#[test]
fn slowloris_clients_are_dropped_at_the_timeouts_and_do_not_delay_others() {
    const HEADERS: usize = 150;
    const BODIES: usize = 20;
    let n = start(2, "");
    let p = n.port;
    // Subscribers that drip their request head a byte at a time and never finish it.
    let mut drippers: Vec<TcpStream> = (0..HEADERS)
        .map(|_| {
            let mut s = connect(p);
            s.write_all(b"GET /sub/sl HTTP/1.1\r\nHost: x\r\n").unwrap();
            s
        })
        .collect();
    // Publishers that announce 1000 bytes, send 10 and stall.
    let stallers: Vec<TcpStream> = (0..BODIES)
        .map(|_| {
            let mut s = connect(p);
            s.write_all(
                b"POST /pub?id=sl HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789",
            )
            .unwrap();
            s
        })
        .collect();
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let drip = {
        let stop = stop.clone();
        let socks: Vec<TcpStream> = drippers.iter().map(|s| s.try_clone().unwrap()).collect();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for mut s in &socks {
                    let _ = s.write_all(b"X");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    // Meanwhile a normal subscriber and publisher see no delay.
    let worst = probe_latency(p, "sl-probe", 20);
    assert!(worst < MAX_PROBE_LATENCY, "probe latency {worst:?}");
    // client_header_timeout (1s, total) ends the drippers although they keep sending;
    // client_body_timeout (1s between reads) ends the stalled publishers. Neither gets an
    // answer: nginx closes the connection.
    for (what, socks) in [
        ("header", &mut drippers),
        (
            "body",
            &mut stallers.iter().map(|s| s.try_clone().unwrap()).collect(),
        ),
    ] {
        for s in socks.iter_mut() {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = vec![];
            let _ = s.read_to_end(&mut buf);
            assert!(
                buf.is_empty() || buf.starts_with(b"HTTP/1.1 408"),
                "{what}: {:?}",
                String::from_utf8_lossy(&buf)
            );
        }
    }
    let took = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    drip.join().unwrap();
    assert!(
        took < Duration::from_secs(4),
        "slow clients were held {took:?}"
    );
    // The stalled bodies published nothing and created no channel.
    assert_eq!(get(p, "/pub?id=sl").status, 404);
    let v = stats(p);
    assert_eq!(v["published_messages"], 20, "only the probe's 20: {v}");
    eprintln!("FIGURE slowloris: {HEADERS} header + {BODIES} body slow clients closed after {took:?}; probe worst latency {worst:?}");
    n.stop();
}

/// One subscriber per worker (new connections until every worker serves one).
/// Reads `id|channel|text` lines from a streaming subscriber until the response ends, the
/// connection fails, or nothing comes for 2 s; returns the ids in order.
fn collect_ids(mut s: Stream) -> Vec<u64> {
    s.reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut ids = vec![];
    let mut buf = Vec::new();
    while let Some(c) = s.try_next_chunk() {
        buf.extend_from_slice(&c);
        while let Some(i) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            let id = String::from_utf8_lossy(&line)
                .split('|')
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap();
            ids.push(id);
        }
    }
    ids
}

/// `ids` is exactly 1..=n; otherwise a short description of what differs.
fn assert_ids(ids: &[u64], n: u64, who: &str) {
    if ids.iter().copied().eq(1..=n) {
        return;
    }
    let first_bad = ids.iter().enumerate().find(|(i, id)| **id != *i as u64 + 1);
    panic!(
        "{who}: got {} ids for {n} messages; first {:?}, last {:?}, first out of place {:?}",
        ids.len(),
        ids.first(),
        ids.last(),
        first_bad
    );
}

/// Reads one response's status and explain and skips its body; None on EOF, reset or garbage.
fn try_status<R: BufRead>(r: &mut R) -> Option<(u16, Option<String>)> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let status: u16 = line.split_whitespace().nth(1)?.parse().ok()?;
    let (mut len, mut chunked, mut explain) = (0usize, false, None);
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 {
            return None;
        }
        if let Some(v) = h.strip_prefix("X-Nginx-PushStream-Explain:") {
            explain = Some(v.trim().to_string());
        }
        let h = h.trim_end().to_ascii_lowercase();
        if h.is_empty() {
            break;
        }
        if let Some(v) = h.strip_prefix("content-length:") {
            len = v.trim().parse().ok()?;
        }
        chunked |= h == "transfer-encoding: chunked";
    }
    if chunked {
        loop {
            let mut sz = String::new();
            r.read_line(&mut sz).ok()?;
            let n = usize::from_str_radix(sz.trim(), 16).ok()?;
            let mut d = vec![0; n + 2];
            r.read_exact(&mut d).ok()?;
            if n == 0 {
                break;
            }
        }
    } else {
        let mut d = vec![0; len];
        r.read_exact(&mut d).ok()?;
    }
    Some((status, explain))
}

/// Publishes with one keep-alive connection (reconnecting when nginx closes it); returns
/// (answered 200, answered 500 "Shared memory exhausted.", got no answer).
fn publish_loop(
    port: u16,
    path: String,
    body: Vec<u8>,
    stop: Arc<AtomicBool>,
    pause: Duration,
) -> (u64, u64, u64) {
    let (mut ok, mut full, mut failed) = (0, 0, 0);
    let mut conn: Option<(TcpStream, BufReader<TcpStream>)> = None;
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if conn.is_none() || sent.is_multiple_of(200) {
            conn = TcpStream::connect(("127.0.0.1", port)).ok().map(|c| {
                c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                c.set_nodelay(true).unwrap();
                let r = BufReader::new(c.try_clone().unwrap());
                (c, r)
            });
        }
        sent += 1;
        let Some((c, r)) = conn.as_mut() else {
            failed += 1;
            continue;
        };
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(&body);
        let sent_ok = c.write_all(&req).is_ok();
        let status = if sent_ok { try_status(r) } else { None };
        match status {
            Some((200, _)) => ok += 1,
            Some((500, Some(e))) if e == "Shared memory exhausted." => full += 1,
            Some(s) => panic!("publish answered {s:?}"),
            None => {
                failed += 1;
                conn = None;
            }
        }
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }
    (ok, full, failed)
}

#[test]
fn a_publish_flood_with_subscribers_that_read_slowly_or_never() {
    let mut n = start(1, "");
    n.allowed.push("stopped reading".into());
    let p = n.port;
    let worker = *n.worker_pids().iter().next().unwrap();
    // One subscriber that keeps up, one that reads 16 KiB every 50 ms, and one that never
    // reads in each of streaming, EventSource and WebSocket.
    let fast = Stream::open(p, "/sub/flood", &[]);
    // (A small receive buffer: the kernel's autotuning would otherwise soak up megabytes.)
    let mut slow = {
        let mut c = connect(p);
        set_rcvbuf(&c, 32 * 1024);
        send_request(&mut c, "GET", "/sub/flood", &[], b"", false);
        let mut reader = BufReader::new(c);
        let (status, headers) = read_head(&mut reader);
        assert_eq!(status, 200);
        Stream {
            status,
            headers,
            reader,
        }
    };
    let mut never = vec![];
    for path in ["/sub/flood", "/ev/flood"] {
        let mut s = connect(p);
        send_request(&mut s, "GET", path, &[], b"", false);
        never.push(s);
    }
    let ws = Ws::connect(p, "/ws/flood");
    assert_eq!(ws.status(), 101);
    never.push(ws.stream);
    wait_for("5 subscribers", Duration::from_secs(5), || {
        json(&get(p, "/pub?id=flood"))["subscribers"] == 5
    });
    let shm0 = stats(p)["shared_memory_used"].as_u64().unwrap();
    let rss0 = rss_bytes(worker);
    let stop = Arc::new(AtomicBool::new(false));
    let fast_t = std::thread::spawn(move || collect_ids(fast));
    let slow_stop = stop.clone();
    let slow_t = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        while !slow_stop.load(Ordering::Relaxed) {
            match read_some(&mut slow.reader, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(k) => got.extend_from_slice(&buf[..k]),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Then drain what the kernel still holds, up to the end of the connection.
        slow.reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let eof = slow.reader.read_to_end(&mut got).is_ok();
        (got.len(), eof && !got.ends_with(b"0\r\n\r\n"))
    });
    // Two keep-alive publishers send 16 KiB messages as fast as nginx takes them for 3 s.
    let body = vec![b'f'; 16 * 1024];
    let pubs: Vec<_> = (0..2)
        .map(|_| {
            let (stop, body) = (stop.clone(), body.clone());
            std::thread::spawn(move || {
                publish_loop(
                    p,
                    "/pub-nostore?id=flood".into(),
                    body,
                    stop,
                    Duration::ZERO,
                )
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    // A probe client in the middle of the flood, on the same (only) worker: the zone is full
    // by now (publishes are refused), so it measures statistics requests and subscribing.
    let worst = (0..10)
        .map(|_| {
            let t = Instant::now();
            assert_eq!(get(p, "/stats").status, 200);
            // Subscribing needs a little of the zone: served, or refused with the explain
            // when the flood has taken the last page; either way at once.
            let s = Stream::open(p, "/sub/flood-probe", &[]);
            assert!(
                s.status == 200
                    || (s.status == 500
                        && s.header("X-Nginx-PushStream-Explain")
                            == Some("Shared memory exhausted.")),
                "probe subscriber answered {} {:?}",
                s.status,
                s.headers
            );
            drop(s.reader);
            t.elapsed()
        })
        .max()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut full, mut failed) = (0, 0, 0);
    for t in pubs {
        let (o, z, f) = t.join().unwrap();
        ok += o;
        full += z;
        failed += f;
    }
    let rss1 = rss_bytes(worker);
    let shm_peak = stats(p)["shared_memory_used"].as_u64().unwrap();
    let ids = fast_t.join().unwrap();
    let (slow_bytes, slow_closed) = slow_t.join().unwrap();
    let published = json(&get(p, "/pub?id=flood"))["published_messages"]
        .as_u64()
        .unwrap();
    assert_eq!(failed, 0, "publishes that got no answer");
    assert_eq!(
        published, ok,
        "every 200 was one message, every refusal none"
    );
    assert!(ok > 300, "the flood was only {ok} messages");
    // The slow and the never-reading ones were closed (without the end of the response), and
    // counted.
    assert!(
        slow_closed,
        "the slow reader was not cut off after {slow_bytes} bytes"
    );
    let s = stats(p);
    let closed = s["slow_subscribers_closed_by_this_worker"]
        .as_u64()
        .unwrap();
    assert!(closed >= 4, "{s}");
    // The reader that keeps up got every accepted message in order, nothing skipped or
    // repeated. (On two shared cores it can fall more than 1 MiB behind a burst: then it
    // is closed like the others, after a gapless prefix, and counted.)
    let prefix = ids.len() as u64;
    assert_ids(&ids, prefix, "fast subscriber");
    assert!(
        prefix == published || closed == 5,
        "fast subscriber got {prefix} of {published} and was not closed as slow"
    );
    for mut s in never {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut sink = vec![];
        let _ = s.read_to_end(&mut sink);
    }
    wait_for(
        "every flood subscriber gone",
        Duration::from_secs(5),
        || subscribers(p, "flood") == 0,
    );
    // Memory: the worker's heap stays bounded; the zone (where unstored messages wait 10 s
    // in the trash) is back to where it started once they are freed, and publishes succeed.
    let grown = rss1.saturating_sub(rss0);
    assert!(
        grown < 16 << 20,
        "worker heap grew by {grown} bytes during the flood"
    );
    let drained = Instant::now();
    wait_for("the zone drained", Duration::from_secs(15), || {
        stats(p)["shared_memory_used"].as_u64().unwrap() <= shm0 + 64 * 1024
    });
    let drained = drained.elapsed();
    let shm1 = stats(p)["shared_memory_used"].as_u64().unwrap();
    assert_eq!(post(p, "/pub-nostore?id=flood", &body).status, 200);
    assert!(
        worst < Duration::from_secs(2),
        "probe latency during the flood {worst:?}"
    );
    eprintln!(
        "FIGURE flood: {} publishes of 16 KiB in 3 s: {published} accepted ({} MiB), {full} refused 500 \
         (zone full), 0 unanswered; fast subscriber got {} (lost {}); slow reader closed after \
         {slow_bytes} bytes; {closed} subscribers closed as slow; worker RssAnon {} -> {} KiB; zone \
         used {shm0} -> {shm_peak} (peak) -> {shm1} bytes, drained {drained:?} after the flood; \
         probe worst latency {worst:?}",
        ok + full,
        published * 16 / 1024,
        ids.len(),
        published - ids.len() as u64,
        rss0 / 1024,
        rss1 / 1024
    );
    n.stop();
}

#[test]
fn three_thousand_subscribers_opening_and_closing_leak_nothing() {
    const ROUNDS: usize = 30;
    const BATCH: usize = 100;
    let n = start(2, "push_stream_channel_inactivity_time 1s;");
    let p = n.port;
    let workers: Vec<u32> = n.worker_pids().into_iter().collect();
    // Warm up each worker once, then take the baseline.
    for _ in 0..20 {
        get(p, "/stats");
    }
    let fds0: usize = workers.iter().map(|w| fd_count(*w)).sum();
    let rss0: u64 = workers.iter().map(|w| rss_bytes(*w)).sum();
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let r = post(p, &format!("/pub-nostore?id=oc{}", i % 10), b"tick");
                assert_eq!(r.status, 200);
                i += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            i
        })
    };
    // A well-behaved client measuring delivery latency the whole time.
    let prober = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut worst = Duration::ZERO;
            while !stop.load(Ordering::Relaxed) {
                worst = worst.max(probe_latency(p, "oc-probe", 5));
            }
            worst
        })
    };
    let paths = ["/sub/oc", "/ev/oc", "/lp/oc", "/ws/oc"];
    let mut opened = 0;
    let mut rss_half = 0;
    for round in 0..ROUNDS {
        if round == ROUNDS / 2 {
            rss_half = workers.iter().map(|w| rss_bytes(*w)).sum();
        }
        let mut socks = vec![];
        for k in 0..BATCH {
            let path = format!("{}{}", paths[k % 4], k % 10);
            let mut s = connect(p);
            let req = if k % 4 == 3 {
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n")
            } else {
                format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")
            };
            s.write_all(req.as_bytes()).unwrap();
            socks.push(s);
            opened += 1;
        }
        for (k, mut s) in socks.into_iter().enumerate() {
            match (k + round) % 3 {
                // Gone before the answer.
                0 => drop(s),
                // Gone after the first bytes of the answer.
                1 => {
                    let mut b = [0u8; 16];
                    let _ = read_some(&mut s, &mut b);
                    drop(s);
                }
                // Reset (SO_LINGER 0) after the answer began.
                _ => {
                    let mut b = [0u8; 16];
                    let _ = read_some(&mut s, &mut b);
                    set_linger_zero(&s);
                    drop(s);
                }
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let published = publisher.join().unwrap();
    let probe = prober.join().unwrap();
    wait_for("no subscriber left", Duration::from_secs(10), || {
        stats(p)["subscribers"] == 0
    });
    // Without subscribers or stored messages every channel goes after its inactivity time.
    wait_for("channels removed", Duration::from_secs(10), || {
        stats(p)["channels"] == 0
    });
    wait_for(
        "worker sockets back to the baseline",
        Duration::from_secs(10),
        || workers.iter().map(|w| fd_count(*w)).sum::<usize>() <= fds0,
    );
    let rss1: u64 = workers.iter().map(|w| rss_bytes(*w)).sum();
    let grown = rss1.saturating_sub(rss0);
    assert!(grown < 4 << 20, "workers' heap grew by {grown} bytes");
    // Warm-up is in the first half; the second 1500 add (almost) nothing.
    let second_half = rss1.saturating_sub(rss_half);
    assert!(
        second_half < 512 << 10,
        "workers' heap grew by {second_half} bytes over the second half"
    );
    assert!(probe < MAX_PROBE_LATENCY, "probe latency {probe:?}");
    assert_eq!(n.worker_pids().len(), 2);
    eprintln!(
        "FIGURE open-close: {opened} subscribers opened and dropped ({published} publishes meanwhile); \
         worker fds {fds0} -> {}, RssAnon {} -> {} (half-way) -> {} KiB; probe worst latency {probe:?}",
        workers.iter().map(|w| fd_count(*w)).sum::<usize>(),
        rss0 / 1024,
        rss_half / 1024,
        rss1 / 1024
    );
    n.stop();
}

// ---- faults -------------------------------------------------------------------------------

#[test]
fn kill_9_of_a_worker_under_load_keeps_the_others_serving_and_the_store_consistent() {
    const WORKERS: usize = 3;
    let mut n = start(WORKERS, "");
    n.allowed.push("exited on signal 9".into());
    // nginx's master releases the zone's mutex if the victim held it, and says so.
    n.allowed.push("was locked by".into());
    let p = n.port;
    let mut subs = subscriber_per_worker(&n, "/sub/kl");
    // Workers A and B (each with a subscriber) and A's replacement get killed; C survives.
    let (a, a_sub) = subs.remove(0);
    let (b, b_sub) = subs.remove(0);
    let readers: Vec<_> = subs
        .into_iter()
        .map(|(pid, s)| (pid, std::thread::spawn(move || collect_ids(s))))
        .collect();
    let victim_readers = [a_sub, b_sub].map(|s| std::thread::spawn(move || collect_ids(s)));
    let stop = Arc::new(AtomicBool::new(false));
    let pubs: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                publish_loop(
                    p,
                    "/pub?id=kl".into(),
                    b"load".to_vec(),
                    stop,
                    Duration::from_millis(1),
                )
            })
        })
        .collect();
    let kill = |pid: u32| {
        // SAFETY: a worker of the nginx this test started.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    };
    let mut respawns = vec![];
    let before = n.worker_pids();
    std::thread::sleep(Duration::from_millis(600));
    for victim in [Some(a), None, Some(b)] {
        let victim = victim.unwrap_or_else(|| {
            *n.worker_pids()
                .difference(&before)
                .next()
                .expect("A's replacement")
        });
        kill(victim);
        let t = Instant::now();
        wait_for("respawn", Duration::from_secs(5), || {
            let now = n.worker_pids();
            now.len() == WORKERS && !now.contains(&victim)
        });
        respawns.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(400));
    }
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failed) = (0u64, 0u64);
    for t in pubs {
        let (o, full, f) = t.join().unwrap();
        assert_eq!(full, 0);
        ok += o;
        failed += f;
    }
    let info = json(&get(p, "/pub?id=kl"));
    let published = info["published_messages"].as_u64().unwrap();
    // Each publish that was answered 200 is in the store; one that died with the worker may
    // or may not be.
    assert!(
        ok <= published && published <= ok + failed,
        "ok {ok}, failed {failed}, published {published}"
    );
    assert_eq!(info["stored_messages"].as_u64(), Some(published));
    let mut delivered = vec![];
    for (pid, t) in readers {
        let ids = t.join().unwrap();
        assert_ids(
            &ids,
            published,
            &format!("subscriber on surviving worker {pid}"),
        );
        delivered.push(ids.len());
    }
    let victims_got: Vec<usize> = victim_readers
        .into_iter()
        .map(|t| {
            let ids = t.join().unwrap();
            let k = ids.len() as u64;
            assert_ids(&ids, k, "subscriber of a killed worker (a prefix)");
            ids.len()
        })
        .collect();
    // Every worker answers the same, quickly (no lock held).
    for _ in 0..30 {
        let t = Instant::now();
        let v = json(&get(p, "/pub?id=kl"));
        assert!(t.elapsed() < Duration::from_millis(500));
        assert_eq!(v["published_messages"].as_u64(), Some(published));
    }
    wait_for(
        "dead worker's subscriber released",
        Duration::from_secs(10),
        || json(&get(p, "/pub?id=kl"))["subscribers"] == 0,
    );
    let s = stats(p);
    assert_eq!(s["by_worker"].as_array().unwrap().len(), WORKERS, "{s}");
    // The stored messages are intact: a late subscriber replays them all.
    let mut late = Stream::open(p, &format!("/sub/kl.b{published}"), &[]);
    let lines = read_lines(&mut late, published as usize);
    assert_eq!(lines[0], "1|kl|load");
    assert_eq!(lines.last().unwrap(), &format!("{published}|kl|load"));
    drop(late);
    let probe = probe_latency(p, "kl-probe", 10);
    assert!(probe < MAX_PROBE_LATENCY);
    let unlocked = n.error_log().matches("was locked by").count();
    eprintln!(
        "FIGURE kill-9: 3 workers killed under load (respawned in {respawns:?}; the master force-unlocked \
         the zone {unlocked} times); published {published} ({ok} answered 200, {failed} cut by the kills), \
         delivered {delivered:?} to the surviving worker's subscriber (lost 0); the killed workers' \
         subscribers got gapless prefixes {victims_got:?}"
    );
    n.stop();
}

#[test]
fn a_zone_filled_with_channels_refuses_clearly_recovers_and_fills_the_same_twice() {
    let mut n = Nginx::start_with(
        &conf("push_stream_message_ttl 2s; push_stream_channel_inactivity_time 1s;").replace(
            "push_stream_shared_memory_size 32m;",
            "push_stream_shared_memory_size 256k;",
        ),
        Options {
            workers: 2,
            ..Default::default()
        },
    );
    n.allowed.push("is full".into());
    let p = n.port;
    let limit = stats(p)["shared_memory_limit"].as_u64().unwrap();
    let used0 = stats(p)["shared_memory_used"].as_u64().unwrap();
    let body = vec![b'c'; 200];
    let fill = |round: usize| -> (usize, Vec<Stream>) {
        let mut ok = 0;
        loop {
            let r = post(p, &format!("/pub?id=r{round}c{ok}"), &body);
            if r.status != 200 {
                assert_eq!(
                    (r.status, explain(&r)),
                    (500, Some("Shared memory exhausted.")),
                    "channel {ok}"
                );
                return (ok, fill_channel_nodes(p, &format!("r{round}")));
            }
            ok += 1;
            assert!(ok < 20_000, "the zone never filled");
        }
    };
    let check_full = |round: usize, count: usize, held: usize| {
        let s = stats(p);
        assert_eq!(s["channels"].as_u64(), Some((count + held) as u64), "{s}");
        assert_eq!(s["stored_messages"].as_u64(), Some(count as u64), "{s}");
        assert!(s["shared_memory_used"].as_u64().unwrap() <= limit, "{s}");
        // A subscriber that would create a channel gets an answer too (and the channel is
        // not half-made), while one on an existing channel is served.
        let r = get(p, &format!("/lp/r{round}-new-channel"));
        assert_eq!(r.status, 500, "long-poll subscribe on a full zone: {r:?}");
        let s = Stream::open(p, &format!("/sub/r{round}-new-stream"), &[]);
        assert_eq!(s.status, 500, "streaming subscribe on a full zone");
        drop(s.reader);
        let mut ws = Ws::connect(p, &format!("/ws/r{round}-new-ws"));
        assert_eq!(ws.status(), 101);
        let (_, op, payload) = ws.read_frame().unwrap();
        assert_eq!(op, 8);
        assert_eq!(
            &payload[2..],
            br#"{"http_status": 500, "explain":"Shared memory exhausted."}"#,
            "WebSocket subscribe on a full zone"
        );
        // Every stored message reads back intact, on every worker.
        for i in [0, count / 2, count - 1] {
            let r = get(p, &format!("/lp/r{round}c{i}.b1"));
            assert_eq!(
                (r.status, r.text()),
                (200, format!("1|{}", "c".repeat(200))),
                "channel {i}"
            );
        }
        assert_eq!(get(p, &format!("/pub?id=r{round}-new-channel")).status, 404);
    };
    let (first, held) = fill(1);
    assert!(first > 100, "only {first} channels fit");
    check_full(1, first, held.len());
    drop(held);
    let recover = Instant::now();
    wait_for(
        "expiry of messages and channels",
        Duration::from_secs(20),
        || {
            let s = stats(p);
            s["channels"] == 0 && s["messages_in_trash"] == 0
        },
    );
    let recovered_in = recover.elapsed();
    let used_between = stats(p)["shared_memory_used"].as_u64().unwrap();
    let (second, held) = fill(2);
    check_full(2, second, held.len());
    drop(held);
    assert!(
        second + 5 >= first && second <= first + 5,
        "first fill {first} channels, second {second}"
    );
    eprintln!(
        "FIGURE zone-full: 256 KiB zone, used {used0} at start; fill 1: {first} channels of 200 B then 500; \
         emptied {recovered_in:?} after, used {used_between}; fill 2: {second} channels"
    );
    n.stop();
}

/// An EventSource client that reconnects with `Last-Event-Id` whenever its response ends
/// (each reload ends it) until `stop`; returns the event ids it saw, in order.
fn resuming_eventsource(
    port: u16,
    ch: &str,
    stop: Arc<AtomicBool>,
    connects: Arc<AtomicU64>,
) -> Vec<u64> {
    let mut seen: Vec<u64> = vec![];
    while !stop.load(Ordering::Relaxed) {
        let last = seen.last().map(|i| format!("Last-Event-Id: e{i}"));
        let headers: Vec<&str> = last.iter().map(String::as_str).collect();
        let mut s = Stream::open(port, &format!("/ev/{ch}"), &headers);
        assert_eq!(s.status, 200);
        connects.fetch_add(1, Ordering::Relaxed);
        s.reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        // Lines of the chunked body: the event lines start lines of their own; "0\r\n" is
        // the end of the response.
        let mut line = Vec::new();
        loop {
            match s.reader.read_until(b'\n', &mut line) {
                Ok(0) => break,
                Ok(_) if line.ends_with(b"\n") => {
                    if line == b"0\r\n" {
                        break;
                    }
                    if let Some(id) = line.strip_prefix(b"id: e") {
                        seen.push(String::from_utf8_lossy(id).trim().parse().unwrap());
                    }
                    line.clear();
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if stop.load(Ordering::Relaxed) {
                        return seen;
                    }
                }
                Err(_) => break,
            }
        }
    }
    seen
}

#[test]
fn twenty_reloads_under_load_grow_no_sockets_or_memory_and_lose_no_message() {
    const RELOADS: usize = 20;
    let mut n = start(2, "");
    let p = n.port;
    let master = n.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let connects = Arc::new(AtomicU64::new(0));
    let sub = {
        let (stop, connects) = (stop.clone(), connects.clone());
        std::thread::spawn(move || resuming_eventsource(p, "rl", stop, connects))
    };
    wait_for("the subscriber", Duration::from_secs(5), || {
        subscribers(p, "rl") == 1
    });
    // The publisher numbers its messages with Event-Id and keeps going through the reloads.
    let published = Arc::new(AtomicU64::new(0));
    let pause = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (stop, published, pause) = (stop.clone(), published.clone(), pause.clone());
        std::thread::spawn(move || {
            let mut failed = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if pause.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                let i = published.load(Ordering::Relaxed) + 1;
                let h = format!("Event-Id: e{i}");
                let mut s = connect(p);
                send_request(&mut s, "POST", "/pub?id=rl", &[h.as_str()], b"m", true);
                match try_status(&mut BufReader::new(s)) {
                    Some((200, _)) => {
                        published.store(i, Ordering::Relaxed);
                    }
                    Some(st) => panic!("publish answered {st:?}"),
                    None => failed += 1,
                }
                std::thread::sleep(Duration::from_millis(3));
            }
            failed
        })
    };
    // Quiet points: the publisher paused, the subscriber reconnected, nothing in flight.
    let quiet = |n: &Nginx| -> (usize, usize, u64, u64) {
        pause.store(true, Ordering::Relaxed);
        wait_for("the subscriber back", Duration::from_secs(5), || {
            subscribers(n.port, "rl") == 1
        });
        std::thread::sleep(Duration::from_millis(300));
        let workers = n.worker_pids();
        let w_fds = workers.iter().map(|w| fd_count(*w)).sum();
        let w_rss = workers.iter().map(|w| rss_bytes(*w)).sum();
        let m = (fd_count(master), w_fds, rss_bytes(master), w_rss);
        pause.store(false, Ordering::Relaxed);
        m
    };
    let mut at = vec![];
    let t0 = Instant::now();
    for i in 1..=RELOADS {
        std::thread::sleep(Duration::from_millis(100));
        let old = n.reload();
        n.wait_gone(&old, Duration::from_secs(3));
        if i == 2 || i == RELOADS {
            at.push(quiet(&n));
        }
    }
    let took = t0.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let failed = publisher.join().unwrap();
    let seen = sub.join().unwrap();
    let published = published.load(Ordering::Relaxed);
    let info = json(&get(p, "/pub?id=rl"));
    assert_eq!(info["published_messages"].as_u64(), Some(published));
    assert_eq!(failed, 0, "publishes without an answer during reloads");
    // Every message reached the resuming subscriber exactly once, in order.
    assert_ids(&seen, published, "resuming EventSource subscriber");
    assert!(connects.load(Ordering::Relaxed) > RELOADS as u64);
    let (m2, w2, mr2, wr2) = at[0];
    let (m20, w20, mr20, wr20) = at[1];
    assert_eq!(m20, m2, "master fds after reload 2 and {RELOADS}");
    assert_eq!(w20, w2, "workers' fds after reload 2 and {RELOADS}");
    assert!(mr20 <= mr2 + (1 << 20), "master RssAnon {mr2} -> {mr20}");
    assert!(wr20 <= wr2 + (2 << 20), "workers' RssAnon {wr2} -> {wr20}");
    let s = stats(p);
    assert_eq!(
        s["by_worker"].as_array().unwrap().len(),
        2,
        "old workers left the store: {s}"
    );
    eprintln!(
        "FIGURE reloads: {RELOADS} reloads in {took:?}; published {published}, delivered {} (lost 0) over {} connections; \
         master fds {m2} -> {m20}, RssAnon {} -> {} KiB; workers fds {w2} -> {w20}, RssAnon {} -> {} KiB",
        seen.len(),
        connects.load(Ordering::Relaxed),
        mr2 / 1024,
        mr20 / 1024,
        wr2 / 1024,
        wr20 / 1024
    );
    n.stop();
}

// ---- access control with nginx's own tools -------------------------------------------------

const ACCESS: &str = r#"
    push_stream_shared_memory_size 32m;
    server {
        listen 127.0.0.1:{PORT};
        # 1. By address: only this host may use the admin publisher (and so DELETE).
        location /pub-admin {
            allow 127.0.0.1;
            deny all;
            push_stream_publisher admin;
            push_stream_channels_path $arg_id;
            push_stream_store_messages on;
        }
        # 2. By a subrequest: the application (here a stand-in) says yes (2xx) or no (401/403).
        location /pub {
            auth_request /auth;
            push_stream_publisher;
            push_stream_channels_path $arg_id;
            push_stream_store_messages on;
        }
        location = /auth {
            internal;
            if ($http_x_pub_token = "s3cret") { return 204; }
            return 403;
        }
        # 3. internal + X-Accel-Redirect: clients only reach these through the application.
        location ~ ^/internal-sub/(.*) {
            internal;
            push_stream_subscriber;
            push_stream_channels_path $1;
            push_stream_message_template "~id~|~text~\n";
        }
        location /internal-pub {
            internal;
            push_stream_publisher admin;
            push_stream_channels_path $arg_id;
        }
        location /app/ { proxy_pass http://127.0.0.1:{PORT}/backend/; }
        location /backend/sub {
            if ($http_x_user != "alice") { return 403; }
            add_header X-Accel-Redirect /internal-sub/$arg_ch;
            return 200;
        }
        location /backend/pub {
            add_header X-Accel-Redirect /internal-pub?id=$arg_ch;
            return 200;
        }
        location ~ /sub/(.*) { push_stream_subscriber; push_stream_channels_path $1; }
        location /stats { push_stream_channels_statistics; push_stream_channels_path $arg_id; }
    }"#;

#[test]
fn publishers_are_protected_with_allow_deny_auth_request_and_internal_locations() {
    let n = Nginx::start_with(
        ACCESS,
        Options {
            workers: 1,
            ..Default::default()
        },
    );
    let p = n.port;
    let local = [127, 0, 0, 1];
    let remote = [127, 0, 0, 2];
    let published = |ch: &str| -> u64 {
        json(&get(p, &format!("/stats?id={ch}")))["published_messages"]
            .as_u64()
            .unwrap()
    };
    // 1. allow/deny: another address gets nginx's 403 for every method, the module never runs.
    for m in ["POST", "GET", "DELETE"] {
        let r = request_from(remote, p, m, "/pub-admin?id=acc", &[], b"x");
        assert_eq!((r.status, explain(&r)), (403, None), "{m} from 127.0.0.2");
    }
    let r = request_from(local, p, "POST", "/pub-admin?id=acc", &[], b"from admin");
    assert_eq!(r.status, 200);
    // 2. auth_request: no token or a wrong one is 403 before the body is read.
    assert_eq!(post(p, "/pub?id=acc", b"x").status, 403);
    assert_eq!(
        request(p, "POST", "/pub?id=acc", &["X-Pub-Token: nope"], b"x").status,
        403
    );
    let r = request(
        p,
        "POST",
        "/pub?id=acc",
        &["X-Pub-Token: s3cret"],
        b"with token",
    );
    assert_eq!(r.status, 200);
    assert_eq!(published("acc"), 2);
    // 3. internal: not reachable directly...
    assert_eq!(get(p, "/internal-sub/acc").status, 404);
    assert_eq!(post(p, "/internal-pub?id=acc", b"x").status, 404);
    // ...only after the application said yes, through X-Accel-Redirect.
    assert_eq!(
        request(p, "GET", "/app/sub?ch=acc", &["X-User: mallory"], b"").status,
        403
    );
    let mut s = Stream::open(p, "/app/sub?ch=acc", &["X-User: alice"]);
    assert_eq!(s.status, 200);
    request(
        p,
        "POST",
        "/pub?id=acc",
        &["X-Pub-Token: s3cret"],
        b"hello alice",
    );
    assert_eq!(read_lines(&mut s, 1), vec!["3|hello alice"]);
    // nginx turns a redirected request into a GET: through X-Accel-Redirect a publisher can
    // only answer channel info, it cannot publish or delete.
    let r = post(p, "/app/pub?ch=acc", b"smuggled");
    assert_eq!(r.status, 200);
    assert_eq!(json(&r)["published_messages"], 3);
    let r = request(p, "DELETE", "/app/pub?ch=acc", &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(published("acc"), 3);
    // Only the admin publisher deletes: a normal publisher (even with its token), a subscriber
    // and the statistics answer 405 with their Allow list, and the channel stays.
    let r = request(p, "DELETE", "/pub?id=acc", &["X-Pub-Token: s3cret"], b"");
    assert_eq!((r.status, r.header("Allow")), (405, Some("GET, POST, PUT")));
    let r = request(p, "DELETE", "/sub/acc", &[], b"");
    assert_eq!((r.status, r.header("Allow")), (405, Some("GET")));
    let r = request(p, "DELETE", "/stats?id=acc", &[], b"");
    assert_eq!((r.status, r.header("Allow")), (405, Some("GET")));
    assert_eq!(get(p, "/stats?id=acc").status, 200);
    let r = request_from(local, p, "DELETE", "/pub-admin?id=acc", &[], b"");
    assert_eq!((r.status, explain(&r)), (200, Some("Channel deleted.")));
    assert_eq!(
        s.rest(),
        b"-2|Channel deleted\n".to_vec(),
        "the subscriber was told"
    );
    assert_eq!(get(p, "/stats?id=acc").status, 404);
    n.stop();
}

/// Channels are nodes of their own arena in the zone: one that a message no longer fits in may
/// still take a few channels. Subscribes to new channels (`PREFIX-sK`) until one is refused,
/// and returns the subscribers that got in (held: their channels stay).
fn fill_channel_nodes(port: u16, prefix: &str) -> Vec<Stream> {
    let mut held = Vec::new();
    loop {
        let s = Stream::open(port, &format!("/sub/{prefix}-s{}", held.len()), &[]);
        if s.status != 200 {
            assert_eq!(s.status, 500);
            return held;
        }
        held.push(s);
        assert!(held.len() < 1000, "channels never refused");
    }
}

#[test]
fn a_subscriber_refused_on_a_full_zone_is_told_why_and_it_is_logged() {
    let n = Nginx::start_with(
        &conf("").replace(
            "push_stream_shared_memory_size 32m;",
            "push_stream_shared_memory_size 256k;",
        ),
        Options {
            workers: 1,
            ..Default::default()
        },
    );
    let p = n.port;
    let mut i = 0;
    while post(p, &format!("/pub?id=f{i}"), &[b'x'; 200]).status == 200 {
        i += 1;
        assert!(i < 20_000);
    }
    let _held = fill_channel_nodes(p, "f");
    let logged = n.error_log().matches("is full").count();
    for path in ["/sub/new1", "/lp/new2", "/ev/new3"] {
        let r = Stream::open(p, path, &[]);
        assert_eq!(
            (r.status, r.header("X-Nginx-PushStream-Explain")),
            (500, Some("Shared memory exhausted.")),
            "{path}"
        );
    }
    assert_eq!(
        n.error_log().matches("is full").count(),
        logged + 3,
        "each refused subscriber is logged like a refused publish"
    );
    n.stop();
}

#[test]
fn a_fan_out_wider_than_one_turn_reaches_everyone_in_order() {
    // One worker, 1500 subscribers of one channel: a message's writes take several event-loop
    // turns (the worker answers publishers in between); every subscriber still gets every
    // message once, in order, and a subscriber that leaves mid-fan-out is skipped.
    raise_fd_limit();
    let n = Nginx::start_with(
        &conf(""),
        Options {
            workers: 1,
            worker_connections: 4096,
            ..Default::default()
        },
    );
    let mut subs: Vec<Stream> = (0..1500)
        .map(|_| Stream::open(n.port, "/sub/wide", &[]))
        .collect();
    assert!(subs.iter().all(|s| s.status == 200));
    let leaving = subs.split_off(1490);
    let publisher = std::thread::spawn({
        let port = n.port;
        move || {
            for i in 1..=30 {
                assert_eq!(
                    post(port, "/pub?id=wide", format!("w{i}").as_bytes()).status,
                    200
                );
            }
        }
    });
    drop(leaving);
    publisher.join().unwrap();
    let expected: String = (1..=30).map(|i| format!("{i}|wide|w{i}\n")).collect();
    for (i, s) in subs.iter_mut().enumerate() {
        let mut got = String::new();
        while got.len() < expected.len() {
            let c = s
                .next_chunk()
                .unwrap_or_else(|| panic!("subscriber {i}: {got:?}"));
            got.push_str(&String::from_utf8(c).unwrap());
        }
        assert_eq!(got, expected, "subscriber {i}");
    }
    n.stop();
}
