//! `push_stream_detached_subscribers`: once a subscriber's response head and first bytes are
//! out, the module frees its request (as nginx frees an idle keep-alive connection's) and
//! keeps only the connection. These tests check that it happens where it may (EventSource,
//! streaming, WebSocket over plain HTTP/1.x), not where it may not (gzip, limit_rate,
//! limit_conn, TLS, HTTP/2, directive off), and that a detached subscriber keeps every
//! guarantee of an attached one: framing, pings, ttl with footer and last chunk, a client
//! that leaves, a paused reader, a reader that stops (max pending bytes, send_timeout), a
//! reload, the access log line (written at detach time). The subscriber suites also run
//! whole with the directive on everywhere (`PUSH_STREAM_TEST_DETACHED=1` in `ci/test`).

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn conf(extra_http: &str) -> String {
    // (`extra_http`: more of the http block, for variants.)
    format!(
        r#"
    push_stream_shared_memory_size 32m;
    limit_conn_zone $binary_remote_addr zone=perip:1m;
    log_format sent '$request_uri $bytes_sent $body_bytes_sent $status';
    {extra_http}
    server {{
        listen 127.0.0.1:{{PORT}} reuseport sndbuf=4k;
        push_stream_detached_subscribers on;
        location /pub {{ push_stream_publisher admin; push_stream_channels_path $arg_id; }}
        location /inbox {{ push_stream_test_hook inbox; }}
        location /metrics {{ push_stream_metrics; }}
        location ~ /ev/(.*) {{
            push_stream_subscriber eventsource;
            push_stream_channels_path $1;
            push_stream_ping_message_interval 1s;
        }}
        location ~ /sub/(.*) {{
            push_stream_subscriber;
            push_stream_channels_path $1;
            push_stream_header_template "H";
            push_stream_message_template "~id~|~text~\n";
            push_stream_footer_template "F";
            access_log logs/sent.log sent;
        }}
        location ~ /ttl/(.*) {{
            push_stream_subscriber;
            push_stream_channels_path $1;
            push_stream_footer_template "BYE";
            push_stream_subscriber_connection_ttl 2s;
        }}
        location ~ /ws/(.*) {{
            push_stream_subscriber websocket;
            push_stream_channels_path $1;
            push_stream_websocket_allow_publish on;
        }}
        location ~ /small/(.*) {{
            push_stream_subscriber;
            push_stream_channels_path $1;
            push_stream_max_pending_bytes 64k;
        }}
        location ~ /stall/(.*) {{
            push_stream_subscriber;
            push_stream_channels_path $1;
            push_stream_max_pending_bytes 16m;
            send_timeout 1s;
            reset_timedout_connection on;
        }}
        location ~ /gz/(.*) {{
            push_stream_subscriber;
            push_stream_channels_path $1;
            gzip on; gzip_min_length 1; gzip_types text/plain;
            push_stream_message_template "~text~\n";
        }}
        location ~ /rate/(.*) {{
            push_stream_subscriber;
            push_stream_channels_path $1;
            limit_rate 100k;
        }}
        location ~ /lc/(.*) {{
            push_stream_subscriber;
            push_stream_channels_path $1;
            limit_conn perip 100;
        }}
        location ~ /pa/(.*) {{
            push_stream_subscriber;
            push_stream_channels_path $1;
            post_action /after;
        }}
        location /after {{ return 204; }}
        location ~ /off/(.*) {{
            push_stream_subscriber;
            push_stream_channels_path $1;
            push_stream_detached_subscribers off;
        }}
    }}"#
    )
}

fn start() -> Nginx {
    Nginx::start_with(
        &conf(""),
        Options {
            workers: 1,
            ..Default::default()
        },
    )
}

fn hook(n: &Nginx) -> Value {
    json(&get(n.port, "/inbox"))
}

fn detached_now(n: &Nginx) -> u64 {
    hook(n)["detached"].as_u64().unwrap()
}

fn wait_detached(n: &Nginx, want: u64) {
    wait_for(
        &format!("{want} detached subscriber(s)"),
        Duration::from_secs(10),
        || detached_now(n) == want,
    );
}

fn publish(n: &Nginx, ch: &str, body: &str) {
    let r = post(n.port, &format!("/pub?id={ch}"), body.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn eventsource_streaming_and_websocket_subscribers_are_detached_and_get_every_message() {
    let n = start();
    let p = n.port;
    let mut sub = Stream::open(p, "/sub/d1", &[]);
    assert_eq!(sub.status, 200);
    assert_eq!(sub.next_chunk().unwrap(), b"H".to_vec());
    let mut ev = Stream::open(p, "/ev/d1", &[]);
    assert_eq!(ev.status, 200);
    let mut ws = Ws::connect(p, "/ws/d1");
    assert_eq!(ws.status(), 101);
    wait_detached(&n, 3);
    let before = hook(&n)["detached_total"].as_u64().unwrap();
    assert_eq!(before, 3);
    // The access log line was written when the request was freed: the head and the header
    // template's chunk, no message yet.
    let log = n.prefix.join("logs/sent.log");
    wait_for("the access log line", Duration::from_secs(5), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.starts_with("/sub/d1 "))
    });
    let line = std::fs::read_to_string(&log).unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[2], "6", "{line}"); // "1\r\nH\r\n"
    assert_eq!(fields[3], "200", "{line}");

    for i in 0..5 {
        publish(&n, "d1", &format!("m{i}"));
    }
    // Each message its own chunk, framed as nginx's chunked filter frames it.
    for i in 0..5 {
        assert_eq!(
            sub.next_chunk().unwrap(),
            format!("{}|m{i}\n", i + 1).into_bytes()
        );
    }
    let lines = read_lines(&mut ev, 10);
    let data: Vec<&String> = lines.iter().filter(|l| l.starts_with("data:")).collect();
    assert_eq!(data.len(), 5, "{lines:?}");
    for i in 0..5 {
        assert_eq!(ws.read_text().unwrap(), format!("m{i}").into_bytes());
    }
    // A ping from the detached subscriber's own timer.
    let t = Instant::now();
    let ping = read_lines(&mut ev, 1);
    assert_eq!(ping[0], ": -1", "{ping:?}");
    assert!(t.elapsed() < Duration::from_secs(3));
    // A WebSocket client publishes through its detached connection.
    ws.send_text("from-ws");
    assert_eq!(sub.next_chunk().unwrap(), b"6|from-ws\n".to_vec());
    assert_eq!(ws.read_text().unwrap(), b"from-ws".to_vec());
    // The gauge in the metrics.
    let m = get(p, "/metrics").text();
    assert!(
        m.lines().any(
            |l| l.starts_with("push_stream_worker_subscribers_detached{") && l.ends_with(" 3")
        ),
        "{m}"
    );
    // A WebSocket close frame is answered and the connection closed.
    ws.send_frame(true, 8, &[0x03, 0xe8], true);
    let mut closed = false;
    while let Some((_, op, _)) = ws.read_frame() {
        closed |= op == 8;
    }
    assert!(closed, "no close frame back");
    wait_detached(&n, 2);
    n.stop();
}

#[test]
fn a_detached_subscribers_ttl_ends_it_with_its_footer_and_the_last_chunk() {
    let n = start();
    let mut s = Stream::open(n.port, "/ttl/d2", &[]);
    wait_detached(&n, 1);
    publish(&n, "d2", "before");
    let t = Instant::now();
    // The message, the footer, then the last chunk (next_chunk gives None only for it).
    let rest = s.rest();
    assert_eq!(rest, b"beforeBYE".to_vec());
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    wait_for(
        "the channel to lose its subscriber",
        Duration::from_secs(5),
        || subscribers(n.port, "d2") == 0,
    );
    assert_eq!(detached_now(&n), 0);
    n.stop();
}

#[test]
fn a_client_that_leaves_a_detached_subscriber_is_forgotten() {
    let n = start();
    let subs: Vec<Stream> = (0..20)
        .map(|_| Stream::open(n.port, "/ev/d3", &[]))
        .collect();
    wait_detached(&n, 20);
    assert_eq!(subscribers(n.port, "d3"), 20);
    // Half leave normally, half with a reset.
    for (i, s) in subs.into_iter().enumerate() {
        let sock = s.reader.into_inner();
        if i % 2 == 1 {
            set_linger_zero(&sock);
        }
        drop(sock);
    }
    wait_for(
        "the subscribers to be forgotten",
        Duration::from_secs(10),
        || subscribers(n.port, "d3") == 0 && detached_now(&n) == 0,
    );
    // The worker still serves.
    let mut s = Stream::open(n.port, "/sub/d3", &[]);
    assert_eq!(s.next_chunk().unwrap(), b"H".to_vec());
    publish(&n, "d3", "still");
    assert_eq!(s.next_chunk().unwrap(), b"1|still\n".to_vec());
    n.stop();
}

#[test]
fn where_the_module_may_not_write_around_nginx_the_request_stays() {
    let n = start();
    let p = n.port;
    let mut gz = raw_stream(p, "/gz/d4", "Accept-Encoding: gzip\r\n");
    let mut rate = Stream::open(p, "/rate/d4", &[]);
    let mut lc = Stream::open(p, "/lc/d4", &[]);
    let mut off = Stream::open(p, "/off/d4", &[]);
    let mut pa = Stream::open(p, "/pa/d4", &[]);
    let mut on = Stream::open(p, "/sub/d4on", &[]);
    assert_eq!(on.next_chunk().unwrap(), b"H".to_vec());
    // Only the one in a plain location.
    wait_detached(&n, 1);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(detached_now(&n), 1);
    assert_eq!(subscribers(p, "d4"), 5);
    publish(&n, "d4", "x");
    publish(&n, "d4on", "y");
    for s in [&mut rate, &mut lc, &mut off, &mut pa] {
        assert_eq!(s.next_chunk().unwrap(), b"x".to_vec());
    }
    assert_eq!(on.next_chunk().unwrap(), b"1|y\n".to_vec());
    // Why, once per worker and reason.
    let log = n.error_log();
    for why in [
        "stays attached to its request: TLS, HTTP/2 or 3, a body filter",
        "stays attached to its request: another module keeps state in the request's pool",
        "stays attached to its request: the location has a post_action",
    ] {
        assert_eq!(log.matches(why).count(), 1, "{why}: {log}");
    }
    // gzip still compresses what it is given (the bytes are not plain text).
    let mut buf = [0u8; 256];
    let k = read_some(&mut gz, &mut buf).unwrap();
    assert!(k > 0);
    assert!(!buf[..k].windows(2).any(|w| w == b"x\n"), "gzip bypassed");
    n.stop();
}

/// A raw HTTP/1.1 subscriber with extra header lines, its head read.
fn raw_stream(port: u16, path: &str, extra: &str) -> std::net::TcpStream {
    let mut c = connect(port);
    c.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n").as_bytes())
        .unwrap();
    let mut got = vec![];
    let mut b = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        assert_eq!(c.read(&mut b).unwrap(), 1, "closed in the head");
        got.push(b[0]);
    }
    assert!(got.starts_with(b"HTTP/1.1 200"));
    c
}

#[test]
fn a_paused_detached_reader_gets_everything_in_order_and_stopped_ones_are_closed() {
    let n = start();
    let p = n.port;
    // A small receive buffer: the socket fills and the rest waits in the module.
    let mut c = connect_small(p, 4096);
    c.write_all(b"GET /sub/d5 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    // Its head and header template arrive before the detach; then nothing is read.
    wait_detached(&n, 1);
    let text = "p".repeat(2000);
    for _ in 0..100 {
        publish(&n, "d5", &text);
    }
    std::thread::sleep(Duration::from_millis(200));
    let mut r = std::io::BufReader::new(c);
    let (status, _) = read_head(&mut r);
    assert_eq!(status, 200);
    assert_eq!(read_chunk(&mut r).unwrap(), b"H".to_vec());
    for i in 0..100 {
        let chunk = read_chunk(&mut r).unwrap();
        assert_eq!(
            chunk,
            format!("{}|{text}\n", i + 1).into_bytes(),
            "message {i}"
        );
    }

    // One that stops reading past push_stream_max_pending_bytes is closed.
    let small = connect_small(p, 4096);
    (&small)
        .write_all(b"GET /small/d6 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    wait_detached(&n, 2);
    let big = "s".repeat(10_000);
    for _ in 0..40 {
        publish(&n, "d6", &big);
    }
    wait_for(
        "the slow reader to be closed",
        Duration::from_secs(10),
        || subscribers(p, "d6") == 0,
    );
    // Its connection too, at once (not after draining its backlog): only d5's is left.
    wait_detached(&n, 1);
    let m = get(p, "/metrics").text();
    assert!(
        m.lines().any(
            |l| l.starts_with("push_stream_worker_slow_subscribers_closed_total{")
                && !l.ends_with(" 0")
        ),
        "{m}"
    );

    // One that takes nothing for send_timeout while output waits is closed.
    let stall = connect_small(p, 4096);
    (&stall)
        .write_all(b"GET /stall/d7 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    wait_detached(&n, 2);
    for _ in 0..40 {
        publish(&n, "d7", &big);
    }
    let t = Instant::now();
    wait_for(
        "send_timeout to close the stalled reader",
        Duration::from_secs(10),
        || subscribers(p, "d7") == 0,
    );
    wait_detached(&n, 1);
    assert!(
        t.elapsed() >= Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    assert!(n
        .error_log()
        .contains("client timed out (send_timeout) with output pending"));
    // reset_timedout_connection: the client's read ends in a reset, not a clean end.
    let mut rest = vec![];
    let end = (&stall).read_to_end(&mut rest);
    assert!(end.is_err(), "a clean end after {} bytes", rest.len());
    drop((small, stall));
    n.stop();
}

#[test]
fn a_reload_ends_detached_subscribers_with_their_footer() {
    let mut n = start();
    let mut s = Stream::open(n.port, "/sub/d8", &[]);
    assert_eq!(s.next_chunk().unwrap(), b"H".to_vec());
    let mut ws = Ws::connect(n.port, "/ws/d8");
    wait_detached(&n, 2);
    let old = n.worker_pids();
    n.reload();
    // The footer, then the last chunk; the close frame for the WebSocket.
    assert_eq!(s.rest(), b"F".to_vec());
    let mut close = None;
    while let Some((_, op, p)) = ws.read_frame() {
        if op == 8 {
            close = Some(p);
        }
    }
    assert!(close.is_some());
    n.wait_gone(&old, Duration::from_secs(10));
    // The new worker detaches too.
    let _s2 = Stream::open(n.port, "/ev/d8", &[]);
    wait_detached(&n, 1);
    n.stop();
}
