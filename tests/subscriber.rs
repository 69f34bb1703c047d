//! Subscribers in every mode: streaming, polling, long-polling, EventSource and WebSocket,
//! with templates, resume rules, pings, ttls, padding, CORS, refusals and reloads.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;

const JSON_TPL: &str =
    r#"{\"id\":~id~,\"channel\":\"~channel-json~\",\"text\":\"~text-json~\",\"tag\":~tag~}"#;

fn conf() -> String {
    format!(
        r#"
    push_stream_shared_memory_size 32m;
    push_stream_events_channel_id events;
    push_stream_wildcard_channel_prefix bd_;
    push_stream_ping_message_text "ping";
    log_format sent "$bytes_sent $body_bytes_sent $status";
    server {{
        listen 127.0.0.1:{{PORT}} reuseport;
        location /pub {{ push_stream_publisher admin; push_stream_channels_path $arg_id; push_stream_store_messages on; }}
        location /pub-nostore {{ push_stream_publisher; push_stream_channels_path $arg_id; }}
        location ~ /sub/(.*) {{
            push_stream_subscriber;
            push_stream_channels_path $1;
            push_stream_message_template "~id~|~channel~|~text~\n";
            push_stream_footer_template "F\n";
        }}
        location ~ /ev/(.*) {{ push_stream_subscriber eventsource; push_stream_channels_path $1; }}
        location ~ /lp/(.*) {{
            push_stream_subscriber long-polling;
            push_stream_channels_path $1;
            push_stream_message_template "{JSON_TPL}";
            push_stream_longpolling_connection_ttl 1500ms;
        }}
        location ~ /poll/(.*) {{
            push_stream_subscriber polling;
            push_stream_channels_path $1;
            push_stream_message_template "{JSON_TPL}";
        }}
        location ~ /ws/(.*) {{
            push_stream_subscriber websocket;
            push_stream_channels_path $1;
            push_stream_websocket_allow_publish on;
            push_stream_store_messages on;
            push_stream_header_template "hi";
            push_stream_footer_template "bye";
            client_max_body_size 1k;
        }}
        location ~ /ping/(.*) {{
            push_stream_subscriber;
            push_stream_channels_path $1;
            push_stream_message_template "~id~:~text~";
            push_stream_ping_message_interval 300ms;
        }}
        location ~ /ttl/(.*) {{
            push_stream_subscriber;
            push_stream_channels_path $1;
            push_stream_subscriber_connection_ttl 1s;
            push_stream_footer_template "END";
        }}
        location ~ /auth/(.*) {{ push_stream_subscriber; push_stream_channels_path $1; push_stream_authorized_channels_only on; }}
        location ~ /evch/(.*) {{ push_stream_subscriber; push_stream_channels_path $1; push_stream_allow_connections_to_events_channel on; push_stream_message_template "~event-type~ ~text~\n"; }}
        location ~ /wild/(.*) {{ push_stream_subscriber; push_stream_channels_path $1; push_stream_wildcard_channel_max_qtd 1; }}
        location ~ /pad/(.*) {{
            push_stream_subscriber;
            push_stream_channels_path $1;
            push_stream_header_template "0123456789";
            push_stream_padding_by_user_agent "[T|t]est,1024,545";
        }}
        location ~ /cors/(.*) {{ push_stream_subscriber; push_stream_channels_path $1; push_stream_allowed_origins "*"; }}
        # Body filters and limits the module's direct socket writes must leave in charge.
        location ~ /gz/(.*) {{
            push_stream_subscriber;
            push_stream_channels_path $1;
            push_stream_message_template "~text~\n";
            push_stream_subscriber_connection_ttl 1s;
            push_stream_footer_template "END";
            gzip on; gzip_types *; gzip_min_length 1;
        }}
        location ~ /sf/(.*) {{
            push_stream_subscriber;
            push_stream_channels_path $1;
            push_stream_message_template "~text~\n";
            push_stream_subscriber_connection_ttl 1s;
            push_stream_footer_template "END";
            sub_filter apple APPLE; sub_filter_once off; sub_filter_types *;
        }}
        location ~ /rate/(.*) {{
            push_stream_subscriber;
            push_stream_channels_path $1;
            push_stream_message_template "~text~";
            push_stream_header_template "H";
            limit_rate 1k;
        }}
        location ~ /logged/(.*) {{
            push_stream_subscriber;
            push_stream_channels_path $1;
            push_stream_message_template "~text~\n";
            push_stream_subscriber_connection_ttl 1s;
            push_stream_footer_template "END";
            access_log logs/sent.log sent;
        }}
    }}"#
    )
}

fn start() -> Nginx {
    Nginx::start_with(
        &conf(),
        Options {
            workers: 2,
            ..Default::default()
        },
    )
}

fn publish(n: &Nginx, ch: &str, body: &str) {
    let r = request(
        n.port,
        "POST",
        &format!("/pub?id={ch}"),
        &[],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{r:?}");
}

fn read_until(s: &mut Stream, needle: &str) -> String {
    let mut got = String::new();
    while !got.contains(needle) {
        let c = s
            .next_chunk()
            .unwrap_or_else(|| panic!("stream ended before {needle:?}; got {got:?}"));
        got.push_str(&String::from_utf8_lossy(&c));
    }
    got
}

#[test]
fn eventsource_framing_and_last_event_id_resume() {
    let n = start();
    let mut s = Stream::open(n.port, "/ev/es", &[]);
    assert_eq!(s.status, 200);
    assert_eq!(
        s.header("Content-Type"),
        Some("text/event-stream; charset=utf-8")
    );
    assert_eq!(s.next_chunk().unwrap(), b": \n".to_vec());
    let r = request(
        n.port,
        "POST",
        "/pub?id=es",
        &["Event-Id: E3", "Event-Type: T3"],
        b"a\nb\r\nc",
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        read_until(&mut s, "\n\n"),
        "id: E3\nevent: T3\ndata: a\ndata: b\ndata: c\n\n"
    );
    for id in ["e1", "e2", "e3"] {
        let h = format!("Event-Id: {id}");
        request(
            n.port,
            "POST",
            "/pub?id=es",
            &[h.as_str()],
            format!("m-{id}").as_bytes(),
        );
    }
    let mut again = Stream::open(n.port, "/ev/es", &["Last-Event-Id: e1"]);
    let got = read_until(&mut again, "data: m-e3\n\n");
    assert!(
        got.starts_with(": \nid: e2\ndata: m-e2\n\nid: e3\ndata: m-e3\n\n"),
        "{got:?}"
    );
    n.stop();
}

#[test]
fn long_polling_gets_one_message_then_resumes_with_etag_and_last_modified() {
    let n = start();
    let port = n.port;
    let waiter = std::thread::spawn(move || request(port, "GET", "/lp/lpc", &[], b""));
    std::thread::sleep(Duration::from_millis(300));
    publish(&n, "lpc", "first");
    let r = waiter.join().unwrap();
    assert_eq!(r.status, 200);
    let etag = r.header("Etag").unwrap().to_string();
    let lm = r.header("Last-Modified").unwrap().to_string();
    assert!(etag.starts_with("W/"), "{etag}");
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        (v["id"].as_i64(), v["text"].as_str()),
        (Some(1), Some("first"))
    );
    // Two more, then a poll with the cursor: both at once, in order.
    publish(&n, "lpc", "second");
    publish(&n, "lpc", "third");
    let inm = format!("If-None-Match: {etag}");
    let ims = format!("If-Modified-Since: {lm}");
    let r = request(n.port, "GET", "/lp/lpc", &[inm.as_str(), ims.as_str()], b"");
    assert_eq!(r.status, 200);
    let text = r.text();
    let parts: Vec<serde_json::Value> = text
        .replace("}{", "}\n{")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got: Vec<(i64, &str)> = parts
        .iter()
        .map(|v| (v["id"].as_i64().unwrap(), v["text"].as_str().unwrap()))
        .collect();
    assert_eq!(got, vec![(2, "second"), (3, "third")]);
    assert!(parts[1]["tag"].as_u64() > Some(0));
    n.stop();
}

#[test]
fn long_polling_times_out_with_304_and_jsonp_wraps() {
    let n = start();
    let t = Instant::now();
    let r = get(n.port, "/lp/quiet");
    assert_eq!(r.status, 304);
    assert_eq!(r.header("Etag"), Some("W/0"));
    assert!(r.header("Last-Modified").is_some());
    assert!(
        t.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        t.elapsed()
    );
    publish(&n, "jp", "x\"y");
    let r = request(n.port, "GET", "/lp/jp.b1?callback=cb", &[], b"");
    assert_eq!(r.header("Content-Type"), Some("application/javascript"));
    let body = r.text();
    assert!(
        body.starts_with("cb([{\"id\":1,\"channel\":\"jp\",\"text\":\"x\\\"y\"")
            && body.ends_with("}]);"),
        "{body}"
    );
    n.stop();
}

#[test]
fn polling_answers_304_or_the_batch() {
    let n = start();
    let r = get(n.port, "/poll/p1");
    assert_eq!((r.status, r.header("Etag")), (304, None));
    publish(&n, "p1", "a");
    publish(&n, "p1", "b");
    let r = request(
        n.port,
        "GET",
        "/poll/p1",
        &["If-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT"],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.text().matches("\"channel\":\"p1\"").count(),
        2,
        "{}",
        r.text()
    );
    let etag = r.header("Etag").unwrap().to_string();
    let lm = r.header("Last-Modified").unwrap().to_string();
    let (inm, ims) = (
        format!("If-None-Match: {etag}"),
        format!("If-Modified-Since: {lm}"),
    );
    let r = request(
        n.port,
        "GET",
        "/poll/p1",
        &[inm.as_str(), ims.as_str()],
        b"",
    );
    assert_eq!((r.status, r.header("Etag")), (304, Some(etag.as_str())));
    // The mode header turns a streaming location into polling.
    let r = request(
        n.port,
        "GET",
        "/sub/p1",
        &["X-Nginx-PushStream-Mode: polling"],
        b"",
    );
    assert_eq!(r.status, 304);
    n.stop();
}

#[test]
fn the_mode_header_chooses_polling_or_long_polling_as_the_c_module_does() {
    // X-Nginx-PushStream-Mode (any case) turns a streaming, EventSource or polling location
    // into polling or long-polling; long-polling wins over polling whichever of the two the
    // location or the header names; other values change nothing.
    let n = start();
    let p = n.port;
    let held = |path: &'static str, mode: &'static str, ch: &'static str| {
        let t = std::thread::spawn(move || {
            let h = format!("X-Nginx-PushStream-Mode: {mode}");
            request(p, "GET", path, &[h.as_str()], b"")
        });
        wait_for(&format!("{path} held"), Duration::from_secs(5), || {
            subscribers(p, ch) == 1
        });
        publish(&n, ch, "x");
        t.join().unwrap()
    };
    let r = held("/sub/md1", "LONG-POLLING", "md1");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "1|md1|x\nF\n");
    assert!(r.header("Etag").is_some() && r.header("Last-Modified").is_some());
    // A polling location with the header long-polling, a long-polling location with the
    // header polling: both wait for the message.
    let r = held("/poll/md2", "long-polling", "md2");
    assert_eq!(r.status, 200);
    assert!(r.text().contains(r#""text":"x""#), "{}", r.text());
    let r = held("/lp/md3", "polling", "md3");
    assert_eq!(r.status, 200);
    assert!(r.text().contains(r#""text":"x""#), "{}", r.text());
    // Polling on an EventSource location: a 304 at once, not an event stream.
    let r = request(
        p,
        "GET",
        "/ev/md4",
        &["X-Nginx-PushStream-Mode: Polling"],
        b"",
    );
    assert_eq!(r.status, 304);
    // Other values: still streaming.
    for mode in ["streaming", "websocket", "long-polling2"] {
        let h = format!("X-Nginx-PushStream-Mode: {mode}");
        let mut s = Stream::open(p, "/sub/md5", &[h.as_str()]);
        assert_eq!(s.status, 200, "{mode}");
        assert_eq!(s.header("Transfer-Encoding"), Some("chunked"), "{mode}");
        publish(&n, "md5", mode);
        assert!(read_until(&mut s, "\n").ends_with(&format!("|md5|{mode}\n")));
    }
    n.stop();
}

#[test]
fn pings_on_idle_streams_and_the_connection_ttl() {
    let n = start();
    let mut s = Stream::open(n.port, "/ping/pg", &[]);
    let t = Instant::now();
    assert_eq!(s.next_chunk().unwrap(), b"-1:ping".to_vec());
    assert!(t.elapsed() >= Duration::from_millis(200));
    publish(&n, "pg", "hello");
    assert_eq!(s.next_chunk().unwrap(), b"1:hello".to_vec());
    assert_eq!(s.next_chunk().unwrap(), b"-1:ping".to_vec());
    let t = Instant::now();
    let mut s = Stream::open(n.port, "/ttl/tt", &[]);
    assert_eq!(s.rest(), b"END".to_vec());
    assert!(t.elapsed() >= Duration::from_millis(900));
    n.stop();
}

#[test]
fn refusals_authorized_only_events_channel_and_wildcards() {
    let n = start();
    let status = |path: &str| {
        let r = get(n.port, path);
        (
            r.status,
            r.header("X-Nginx-PushStream-Explain").map(str::to_string),
        )
    };
    let expl = |s: &str| Some(s.to_string());
    assert_eq!(
        status("/auth/newch"),
        (403, expl("Subscriber could not create channels."))
    );
    assert_eq!(
        status("/sub/events"),
        (403, expl("Subscription to events channel is not allowed."))
    );
    assert_eq!(
        status("/sub/ALL"),
        (403, expl("Channel id not authorized for this method."))
    );
    assert_eq!(
        status("/wild/bd_1"),
        (403, expl("Subscribed too much wildcard channels."))
    );
    assert_eq!(
        status("/wild/x/bd_1/bd_2"),
        (403, expl("Subscribed too much wildcard channels."))
    );
    assert_eq!(status("/sub/"), (400, expl("No channel id provided.")));
    let r = request(n.port, "POST", "/sub/x", &[], b"x");
    assert_eq!((r.status, r.header("Allow")), (405, Some("GET")));
    // Allowed once the channel has a stored message; a wildcard next to a normal one is fine.
    publish(&n, "newch", "m");
    let s = Stream::open(n.port, "/auth/newch", &[]);
    assert_eq!(s.status, 200);
    drop(s.reader);
    let s = Stream::open(n.port, "/wild/x/bd_1", &[]);
    assert_eq!(s.status, 200);
    n.stop();
}

#[test]
fn the_events_channel_reports_subscriptions() {
    let n = start();
    let mut ev = Stream::open(n.port, "/evch/events", &[]);
    assert_eq!(ev.status, 200);
    let s = Stream::open(n.port, "/sub/watched", &[]);
    assert_eq!(s.status, 200);
    let got = read_until(&mut ev, "client_subscribed");
    assert!(
        got.contains(r#"channel_created {"type": "channel_created", "channel": "watched"}"#),
        "{got}"
    );
    drop(s);
    let got = read_until(&mut ev, "client_unsubscribed");
    assert!(
        got.contains(r#"{"type": "client_unsubscribed", "channel": "watched"}"#),
        "{got}"
    );
    n.stop();
}

#[test]
fn padding_by_user_agent_and_cors() {
    let n = start();
    let mut s = Stream::open(n.port, "/pad/pd", &["User-Agent: Test"]);
    // The header template, then its padding, each a chunk of its own (as the C module sends
    // them).
    assert_eq!(s.next_chunk().unwrap(), b"0123456789".to_vec());
    let padding = s.next_chunk().unwrap();
    assert_eq!(
        padding.len(),
        1024,
        "header padding: min(P=1024, (1014/100+1)*100)"
    );
    assert!(padding.iter().all(|b| *b == b'\r' || *b == b'\n'));
    publish(&n, "pd", "x");
    let m = s.next_chunk().unwrap();
    // The cap P is the largest minimum in the configuration (1024): 544 short rounds to 600.
    assert_eq!(m.len(), 1 + 600);
    let mut plain = Stream::open(n.port, "/pad/pd", &["User-Agent: curl"]);
    assert_eq!(plain.next_chunk().unwrap(), b"0123456789".to_vec());
    let r = request(n.port, "OPTIONS", "/cors/c", &[], b"");
    assert_eq!(
        (r.status, r.header("Access-Control-Allow-Origin")),
        (200, Some("*"))
    );
    assert_eq!(r.header("Access-Control-Allow-Methods"), Some("GET"));
    let c = Stream::open(n.port, "/cors/c", &[]);
    assert_eq!(c.header("Access-Control-Allow-Origin"), Some("*"));
    let no = Stream::open(n.port, "/sub/c", &[]);
    assert_eq!(no.header("Access-Control-Allow-Origin"), None);
    n.stop();
}

#[test]
fn websocket_messages_publish_ping_and_close() {
    let n = start();
    let mut ws = Ws::connect(n.port, "/ws/wsc");
    assert_eq!(ws.status(), 101, "{}", ws.head);
    assert!(
        ws.head
            .contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "{}",
        ws.head
    );
    assert!(!ws.head.contains("Server:"));
    assert_eq!(ws.read_text().unwrap(), b"hi".to_vec());
    publish(&n, "wsc", "from http");
    assert_eq!(ws.read_text().unwrap(), b"from http".to_vec());
    // A streaming subscriber sees what the WebSocket client publishes; so does the client.
    let mut s = Stream::open(n.port, "/sub/wsc", &[]);
    ws.send_text("from ws");
    assert_eq!(read_until(&mut s, "\n"), "2|wsc|from ws\n");
    assert_eq!(ws.read_text().unwrap(), b"from ws".to_vec());
    // Fragmented: reassembled and published once, a ping in between is answered.
    ws.send_frame(false, 1, b"frag", true);
    ws.send_frame(true, 9, b"pp", true);
    ws.send_frame(true, 0, b"mented", true);
    let (_, op, payload) = ws.read_frame().unwrap();
    assert_eq!((op, payload), (10, b"pp".to_vec()));
    assert_eq!(ws.read_text().unwrap(), b"fragmented".to_vec());
    // Several frames in one write are all handled.
    let mut two = Ws::connect(n.port, "/ws/wsc");
    two.read_text();
    ws.send_text("a");
    ws.send_text("b");
    assert_eq!(two.read_text().unwrap(), b"a".to_vec());
    assert_eq!(two.read_text().unwrap(), b"b".to_vec());
    // Close handshake.
    ws.send_frame(true, 8, &1000u16.to_be_bytes(), true);
    loop {
        match ws.read_frame() {
            Some((_, 8, _)) => break,
            Some(_) => continue,
            None => panic!("no close frame"),
        }
    }
    assert!(ws.read_frame().is_none(), "closed after the close frame");
    n.stop();
}

fn close_code(ws: &mut Ws) -> u16 {
    loop {
        match ws.read_frame() {
            Some((_, 8, p)) => return u16::from_be_bytes([p[0], p[1]]),
            Some(_) => continue,
            None => panic!("no close frame"),
        }
    }
}

#[test]
fn websocket_protocol_errors_are_closed_with_their_codes() {
    let n = start();
    let mut ws = Ws::connect(n.port, "/ws/err");
    ws.read_text();
    ws.send_frame(true, 1, b"unmasked", false);
    assert_eq!(close_code(&mut ws), 1002);
    let mut ws = Ws::connect(n.port, "/ws/err");
    ws.read_text();
    ws.send_frame(true, 1, &vec![b'x'; 2000], true);
    assert_eq!(close_code(&mut ws), 1009);
    let mut ws = Ws::connect(n.port, "/ws/err");
    ws.read_text();
    ws.stream.write_all(b"\xff\xff\xff garbage").unwrap();
    assert_eq!(close_code(&mut ws), 1002);
    // Refusals after the handshake: 1008 with the HTTP status and explain as JSON.
    let mut ws = Ws::connect(n.port, "/ws/ALL");
    assert_eq!(ws.status(), 101);
    let (_, op, p) = ws.read_frame().unwrap();
    assert_eq!(op, 8);
    assert_eq!(&p[..2], b"\x03\xf0");
    assert_eq!(
        &p[2..],
        br#"{"http_status": 403, "explain":"Channel id not authorized for this method."}"#
    );
    // Handshake errors are HTTP answers.
    let r = request(
        n.port,
        "GET",
        "/ws/x",
        &[
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Key: abc",
            "Sec-WebSocket-Version: 7",
        ],
        b"",
    );
    assert_eq!(
        (r.status, r.header("Sec-WebSocket-Version")),
        (400, Some("8, 13"))
    );
    let r = get(n.port, "/ws/x");
    assert_eq!(r.status, 400);
    assert!(r
        .header("X-Nginx-PushStream-Explain")
        .unwrap()
        .starts_with("Don't have at least one of the mandatory headers"));
    n.stop();
}

#[test]
fn a_subscriber_that_stops_reading_is_closed_and_does_not_hold_back_others() {
    let mut n = Nginx::start_with(
        &conf(),
        Options {
            workers: 1,
            ..Default::default()
        },
    );
    n.allowed.push("stopped reading".into());
    // A client that never reads: a tiny receive buffer, and it never calls read.
    let stuck = std::net::TcpStream::connect(("127.0.0.1", n.port)).unwrap();
    (&stuck)
        .write_all(b"GET /sub/slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut fast = Stream::open(n.port, "/sub/slow", &[]);
    std::thread::sleep(Duration::from_millis(200));
    let worker = *n.worker_pids().iter().next().unwrap();
    let rss_before = rss_bytes(worker);
    let body = "y".repeat(60 * 1024);
    let t = Instant::now();
    // Enough to fill the kernel's socket buffers of the stuck client and then the bound.
    for _ in 0..300 {
        publish(&n, "slow", &body);
        let got = read_until(&mut fast, "\n");
        assert!(got.ends_with(&format!("{body}\n")));
    }
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "the fast subscriber was held back: {:?}",
        t.elapsed()
    );
    let log = n.error_log();
    assert!(
        log.contains("closing a subscriber that stopped reading"),
        "{log}"
    );
    // 18 MB went out; the worker kept at most the 1 MiB bound (plus its buffers) for the stuck one.
    let grown = rss_bytes(worker).saturating_sub(rss_before);
    assert!(grown < 8 << 20, "worker heap grew by {grown} bytes");
    drop(stuck);
    n.stop();
}

#[test]
fn reload_ends_every_mode_and_eventsource_resumes_without_loss() {
    let mut n = start();
    publish(&n, "rl", "before");
    let mut streams: Vec<Stream> = (0..20)
        .map(|_| Stream::open(n.port, "/sub/rl", &[]))
        .collect();
    let mut es: Vec<Stream> = (0..20)
        .map(|_| Stream::open(n.port, "/ev/rl", &[]))
        .collect();
    let mut wss: Vec<Ws> = (0..20).map(|_| Ws::connect(n.port, "/ws/rl")).collect();
    let port = n.port;
    let lps: Vec<_> = (0..20)
        .map(|_| std::thread::spawn(move || get(port, "/lp/rl-quiet")))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let old = n.reload();
    for s in streams.iter_mut() {
        assert!(String::from_utf8_lossy(&s.rest()).ends_with("F\n"));
    }
    for s in es.iter_mut() {
        s.rest();
    }
    for w in wss.iter_mut() {
        let mut saw_close = false;
        while let Some((_, op, p)) = w.read_frame() {
            if op == 8 {
                saw_close = true;
            } else if op == 1 && saw_close {
                panic!("text after close: {p:?}");
            }
        }
        assert!(saw_close);
    }
    for lp in lps {
        let r = lp.join().unwrap();
        assert_eq!((r.status, r.header("Etag")), (304, Some("W/0")));
    }
    let took = n.wait_gone(&old, Duration::from_secs(1));
    assert!(took <= Duration::from_secs(1));
    // Published while nobody was connected; an EventSource client resumes with Last-Event-Id.
    for i in 1..=5 {
        let h = format!("Event-Id: r{i}");
        request(
            n.port,
            "POST",
            "/pub?id=rl",
            &[h.as_str()],
            format!("after {i}").as_bytes(),
        );
    }
    let mut back = Stream::open(n.port, "/ev/rl", &["Last-Event-Id: r2"]);
    let got = read_until(&mut back, "data: after 5\n\n");
    assert_eq!(
        got,
        ": \nid: r3\ndata: after 3\n\nid: r4\ndata: after 4\n\nid: r5\ndata: after 5\n\n"
    );
    n.stop();
}

#[test]
fn a_long_lived_subscriber_does_not_grow_the_worker() {
    let n = Nginx::start_with(
        &conf(),
        Options {
            workers: 1,
            ..Default::default()
        },
    );
    let worker = *n.worker_pids().iter().next().unwrap();
    let mut s = Stream::open(n.port, "/sub/long", &[]);
    let body = "z".repeat(2048);
    let mut conn = None;
    // Keep-alive publishing (nginx closes a connection after keepalive_requests: reopen).
    let mut send = |i: usize| {
        if i.is_multiple_of(500) {
            conn = None;
        }
        let (c, r) = conn.get_or_insert_with(|| {
            let c = connect(n.port);
            let r = std::io::BufReader::new(c.try_clone().unwrap());
            (c, r)
        });
        send_request(
            c,
            "POST",
            "/pub-nostore?id=long",
            &[],
            body.as_bytes(),
            false,
        );
        let resp = read_response(r, false);
        assert_eq!(resp.status, 200, "publish {i}");
    };
    for i in 0..500 {
        send(i);
        read_until(&mut s, "\n");
    }
    let rss_warm = rss_bytes(worker);
    // 10 MB more through the same subscriber (keep-alive publisher, messages not stored).
    for i in 500..5500 {
        send(i);
        read_until(&mut s, "\n");
    }
    let grown = rss_bytes(worker).saturating_sub(rss_warm);
    assert!(
        grown < 2 << 20,
        "worker heap grew by {grown} bytes over 10 MB of messages"
    );
    n.stop();
}

#[test]
fn a_reload_with_a_thousand_subscribers_in_each_mode_ends_them_all_and_old_workers_exit_within_a_second(
) {
    const N: usize = 1000;
    let limit = raise_fd_limit();
    assert!(
        limit >= (4 * N + 200) as u64,
        "open-files limit {limit} too low for this test"
    );
    let mut n = Nginx::start_with(
        &conf(),
        Options {
            workers: 2,
            worker_connections: 4 * N + 512,
            main_extra: format!("worker_rlimit_nofile {};", 4 * N + 1024),
        },
    );
    let paths = ["/sub/big", "/ev/big", "/ws/big", "/lp/big"];
    let mut socks: Vec<(usize, std::net::TcpStream)> = Vec::new();
    for (mode, path) in paths.iter().enumerate() {
        for _ in 0..N {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", n.port)).unwrap();
            let req = if mode == 2 {
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n")
            } else {
                format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")
            };
            s.write_all(req.as_bytes()).unwrap();
            socks.push((mode, s));
        }
    }
    let want = (4 * N) as u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = get(n.port, "/pub?id=big");
        let subs = serde_json::from_slice::<serde_json::Value>(&r.body)
            .ok()
            .and_then(|v| v["subscribers"].as_u64());
        if subs == Some(want) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {subs:?} of {want} subscribed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let old = n.reload();
    let took = n.wait_gone(&old, Duration::from_secs(1));
    for (mode, s) in socks.iter_mut() {
        use std::io::Read;
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut all = Vec::new();
        s.read_to_end(&mut all).unwrap();
        let text = String::from_utf8_lossy(&all);
        match mode {
            0 => assert!(
                text.starts_with("HTTP/1.1 200") && text.ends_with("2\r\nF\n\r\n0\r\n\r\n"),
                "{text:?}"
            ),
            1 => assert!(
                text.starts_with("HTTP/1.1 200") && text.ends_with("\r\n0\r\n\r\n"),
                "{text:?}"
            ),
            2 => assert!(
                text.starts_with("HTTP/1.1 101") && all.ends_with(b"\x81\x03bye\x88\x00"),
                "{text:?}"
            ),
            _ => assert!(
                text.starts_with("HTTP/1.1 304") && text.contains("Etag: W/0"),
                "{text:?}"
            ),
        }
    }
    assert!(took <= Duration::from_secs(1), "old workers took {took:?}");
    n.stop();
}

#[test]
fn messages_that_reach_a_subscriber_together_are_written_together_each_its_own_chunk() {
    // One publish to two channels is two messages for a subscriber of both, found in one
    // batch: they go out in one write, not one write each, and each is a chunk of its own,
    // as the C module writes them (clients that read chunk by chunk see one message each).
    let n = Nginx::start(&conf());
    let mut c = connect(n.port);
    send_request(&mut c, "GET", "/sub/ga/gb", &[], b"", false);
    let mut got = vec![];
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let k = read_some(&mut c, &mut buf).expect("response head");
        assert!(k > 0);
        got.extend_from_slice(&buf[..k]);
    }
    let r = request(n.port, "POST", "/pub?id=ga/gb", &[], b"both");
    assert_eq!(r.status, 200);
    // Everything in the first read: one write.
    let k = read_some(&mut c, &mut buf).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&buf[..k]),
        "a\r\n1|ga|both\n\r\na\r\n1|gb|both\n\r\n"
    );
    // Through nginx's filters (limit_rate: no direct write), a chunk each too.
    let mut s = Stream::open(n.port, "/rate/ga/gb", &[]);
    assert_eq!(s.next_chunk().unwrap(), b"H");
    assert_eq!(
        request(n.port, "POST", "/pub?id=ga/gb", &[], b"x").status,
        200
    );
    assert_eq!(s.next_chunk().unwrap(), b"x");
    assert_eq!(s.next_chunk().unwrap(), b"x");
    // Eighty messages in one batch (more than the iovecs kept on the stack): eighty chunks.
    let ids: Vec<String> = (0..80).map(|i| format!("gm{i}")).collect();
    let mut s = Stream::open(n.port, &format!("/sub/{}", ids.join("/")), &[]);
    assert_eq!(s.status, 200);
    let r = request(
        n.port,
        "POST",
        &format!("/pub?id={}", ids.join("/")),
        &[],
        b"m",
    );
    assert_eq!(r.status, 200);
    for id in &ids {
        assert_eq!(s.next_chunk().unwrap(), format!("1|{id}|m\n").into_bytes());
    }
    // A message alone is a write of its own.
    let mut s = Stream::open(n.port, "/sub/gb", &[]);
    assert_eq!(
        request(n.port, "POST", "/pub?id=gb", &[], b"one").status,
        200
    );
    assert_eq!(s.next_chunk().unwrap(), b"3|gb|one\n".to_vec());
    n.stop();
}

#[test]
fn the_header_template_and_each_old_message_are_chunks_of_their_own() {
    // The C module writes the header template, then each old message, each with its own
    // output call (one chunk each): clients that read a stream chunk by chunk (em-http,
    // urllib3's read_chunked) see the header template alone before the old messages.
    let n = Nginx::start(&conf());
    for body in ["one", "two", "three"] {
        publish(&n, "own", body);
    }
    let mut s = Stream::open(n.port, "/pad/own.b2", &[]);
    assert_eq!(s.next_chunk().unwrap(), b"0123456789".to_vec());
    assert_eq!(s.next_chunk().unwrap(), b"two".to_vec());
    assert_eq!(s.next_chunk().unwrap(), b"three".to_vec());
    // Header, then its padding (a User-Agent the padding rule matches), then each message
    // with its padding after it.
    let mut p = Stream::open(n.port, "/pad/own.b1", &["User-Agent: test"]);
    assert_eq!(p.next_chunk().unwrap(), b"0123456789".to_vec());
    assert_eq!(p.next_chunk().unwrap().len(), 1024);
    assert_eq!(p.next_chunk().unwrap(), b"three".to_vec());
    assert_eq!(p.next_chunk().unwrap().len(), 600);
    n.stop();
}

/// A raw HTTP/1.x request on a fresh connection; everything the server sends until it closes.
fn raw_until_close(port: u16, request: &str, during: impl FnOnce()) -> Vec<u8> {
    let mut c = connect(port);
    c.write_all(request.as_bytes()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = vec![];
    let mut buf = [0u8; 4096];
    // The head first, so that `during` publishes to a subscriber that is in place.
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let k = read_some(&mut c, &mut buf).expect("response head");
        assert!(k > 0, "closed before the head: {got:?}");
        got.extend_from_slice(&buf[..k]);
    }
    during();
    loop {
        match read_some(&mut c, &mut buf) {
            Ok(0) => return got,
            Ok(k) => got.extend_from_slice(&buf[..k]),
            Err(e) => panic!("reading until close: {e}; got {} bytes", got.len()),
        }
    }
}

/// Splits a raw response into its head and the de-chunked body.
fn head_and_body(raw: &[u8]) -> (String, Vec<u8>) {
    let at = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&raw[..at]).to_string();
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return (head, raw[at..].to_vec());
    }
    let mut r = std::io::BufReader::new(&raw[at..]);
    let mut body = vec![];
    while let Some(c) = read_chunk(&mut r) {
        body.extend_from_slice(&c);
    }
    let mut rest = vec![];
    std::io::Read::read_to_end(&mut r, &mut rest).unwrap();
    assert!(rest.is_empty(), "bytes after the last chunk: {rest:?}");
    (head, body)
}

#[test]
fn direct_writes_keep_chunking_byte_counts_and_the_filters_and_limits_that_need_the_body() {
    let n = start();
    let p = n.port;
    // Plain HTTP/1.1: the module writes around the body filters; the chunk framing must be
    // exactly what the chunked filter would produce, and the access log's byte counts must
    // be what the client received.
    let raw = raw_until_close(
        p,
        "GET /logged/dw HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        || {
            for m in ["one", "two", &"x".repeat(5000)] {
                publish(&n, "dw", m);
            }
        },
    );
    let (head, body) = head_and_body(&raw);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(
        body,
        format!("one\ntwo\n{}\nEND", "x".repeat(5000)).into_bytes()
    );
    let log = n.prefix.join("logs/sent.log");
    let mut line = String::new();
    for _ in 0..200 {
        line = std::fs::read_to_string(&log).unwrap_or_default();
        if !line.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let head_len = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    if detached_everywhere() {
        // Detached, the line is written when the request is freed: the head only (this
        // location has no header template), none of the messages pushed after it.
        assert_eq!(line.trim(), format!("{head_len} 0 200"));
    } else {
        assert_eq!(
            line.trim(),
            format!("{} {} 200", raw.len(), raw.len() - head_len),
            "access log against {} bytes received",
            raw.len()
        );
    }

    // The same when the client is the one that leaves: the count is settled in the request's
    // cleanup, before nginx logs it.
    // (Raw reads: the two messages may come as one chunk or two; the count is of the bytes.)
    let mut c = connect(p);
    c.write_all(b"GET /logged/dw2 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut got = vec![];
    let mut buf = [0u8; 4096];
    let mut read_until = |got: &mut Vec<u8>, done: &dyn Fn(&[u8]) -> bool| {
        while !done(got) {
            let k = read_some(&mut c, &mut buf).expect("subscriber read");
            assert!(k > 0, "closed early: {:?}", String::from_utf8_lossy(got));
            got.extend_from_slice(&buf[..k]);
        }
    };
    read_until(&mut got, &|g| g.windows(4).any(|w| w == b"\r\n\r\n"));
    assert!(got.starts_with(b"HTTP/1.1 200"));
    publish(&n, "dw2", "three");
    publish(&n, "dw2", "four");
    read_until(&mut got, &|g| g.ends_with(b"four\n\r\n"));
    drop(c);
    let head_len = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    // The chunks so far (the response is still open: no last chunk).
    let mut body = vec![];
    let mut rest = &got[head_len..];
    while !rest.is_empty() {
        body.extend(read_chunk(&mut rest).expect("a data chunk, not the last one"));
    }
    assert_eq!(body, b"three\nfour\n".to_vec());
    let mut lines = vec![];
    for _ in 0..200 {
        lines = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect();
        if lines.len() == 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let fields: Vec<u64> = lines[1]
        .split(' ')
        .take(2)
        .map(|f| f.parse().unwrap())
        .collect();
    let expected = if detached_everywhere() {
        // Logged when detached: the head only.
        [head_len as u64, 0]
    } else {
        [got.len() as u64, (got.len() - head_len) as u64]
    };
    assert_eq!(fields, expected, "{lines:?}");

    // HTTP/1.0: no chunking, the bare bytes until the server closes.
    let raw = raw_until_close(p, "GET /logged/dw10 HTTP/1.0\r\n\r\n", || {
        publish(&n, "dw10", "a");
        publish(&n, "dw10", "b");
    });
    let (head, body) = head_and_body(&raw);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(!head.to_ascii_lowercase().contains("chunked"), "{head}");
    assert_eq!(body, b"a\nb\nEND".to_vec());

    // gzip: the messages must go through the gzip filter, not around it.
    let raw = raw_until_close(
        p,
        "GET /gz/dwz HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n",
        || {
            publish(&n, "dwz", "zipped-1");
            publish(&n, "dwz", "zipped-2");
        },
    );
    let (head, body) = head_and_body(&raw);
    assert!(
        head.to_ascii_lowercase().contains("content-encoding: gzip"),
        "{head}"
    );
    let mut plain = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&body[..]), &mut plain)
        .unwrap_or_else(|e| panic!("not a gzip stream ({e}): {body:?}"));
    assert_eq!(plain, "zipped-1\nzipped-2\nEND");

    // sub_filter: the messages must go through it too.
    let raw = raw_until_close(
        p,
        "GET /sf/dws HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        || {
            publish(&n, "dws", "an apple a day");
            publish(&n, "dws", "apple pie");
        },
    );
    let (_, body) = head_and_body(&raw);
    assert_eq!(
        String::from_utf8_lossy(&body),
        "an APPLE a day\nAPPLE pie\nEND"
    );

    // limit_rate: 4 000 bytes at 1 KiB/s cannot arrive in under ~3 s; written around the
    // write filter they would arrive at once. (The header template first, and a pause for
    // the write filter's short delay after it: then nothing is queued or delayed when the
    // message comes, the case where a direct write would be possible.)
    let mut s = Stream::open(p, "/rate/dwr", &[]);
    assert_eq!(s.next_chunk().unwrap(), b"H".to_vec());
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    publish(&n, "dwr", &"r".repeat(4000));
    let mut got = 0;
    while got < 4000 {
        got += s.next_chunk().expect("rate-limited message").len();
    }
    assert_eq!(got, 4000);
    assert!(
        t.elapsed() >= Duration::from_secs(2),
        "limit_rate 1k ignored: 4000 bytes in {:?}",
        t.elapsed()
    );
    n.stop();
}

#[test]
fn a_paused_reader_gets_every_message_framed_and_in_order_after_its_socket_filled() {
    // A small send buffer on nginx's side and a small receive buffer on ours: the direct
    // writes fill the socket, the rest waits in nginx's write filter, later messages queue
    // behind it, and direct writes resume once it has drained.
    let n = Nginx::start_with(
        r#"
    push_stream_shared_memory_size 32m;
    server {
        listen 127.0.0.1:{PORT} reuseport sndbuf=4k;
        location /pub { push_stream_publisher admin; push_stream_channels_path $arg_id; }
        location ~ /sub/(.*) {
            push_stream_subscriber;
            push_stream_channels_path $1;
            push_stream_message_template "~id~|~text~\n";
        }
        location ~ /st/(.*) {
            push_stream_subscriber;
            push_stream_channels_path $1;
            send_timeout 1s;
        }
    }"#,
        Options {
            workers: 1,
            ..Default::default()
        },
    );
    let p = n.port;
    let mut c = connect_small(p, 4096);
    send_request(&mut c, "GET", "/sub/pause", &[], b"", false);
    let mut reader = std::io::BufReader::new(c);
    let (status, _) = read_head(&mut reader);
    assert_eq!(status, 200);
    let mut s = Stream {
        status,
        headers: vec![],
        reader,
    };
    // Messages larger than the socket buffers, so that writes stop part-way through one.
    let text = |i: usize| format!("{i:06}-{}", "m".repeat(i % 3 * 15_000 + 300));
    let total = 40;
    for round in 0..2 {
        // Published while the reader is paused: ~600 KB against a few KiB of socket buffers
        // (under the 1 MiB a subscriber may fall behind before it is closed).
        for i in round * total / 2 + 1..=(round + 1) * total / 2 {
            publish(&n, "pause", &text(i));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut got = String::new();
    let mut lines = 0;
    while lines < total {
        let chunk = s.next_chunk().expect("the stream ended early");
        got.push_str(std::str::from_utf8(&chunk).unwrap());
        lines = got.matches('\n').count();
    }
    for (i, line) in got.lines().enumerate() {
        assert_eq!(
            line,
            format!("{}|{}", i + 1, text(i + 1)),
            "message {}",
            i + 1
        );
    }
    assert_eq!(lines, total);
    // And the subscriber still gets what comes next.
    publish(&n, "pause", "after");
    assert_eq!(
        s.next_chunk().unwrap(),
        format!("{}|after\n", total + 1).into_bytes()
    );

    // A subscriber that takes nothing while output waits for it is closed at send_timeout,
    // as nginx closes any response it cannot write for that long, even while small messages
    // keep coming (they do not restart the timeout; only the socket taking bytes does).
    let mut c = connect_small(p, 4096);
    send_request(&mut c, "GET", "/st/stuck", &[], b"", false);
    let mut reader = std::io::BufReader::new(c);
    assert_eq!(read_head(&mut reader).0, 200);
    assert_eq!(subscribers(p, "stuck"), 1);
    let t = Instant::now();
    for i in 0..20 {
        publish(&n, "stuck", &text(i));
    }
    while subscribers(p, "stuck") != 0 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "not closed at send_timeout"
        );
        publish(&n, "stuck", "tick");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "closed after {:?}",
        t.elapsed()
    );
    assert!(n.error_log().contains("client timed out (send_timeout)"));
    n.stop();
}

/// A subscriber run by curl (TLS and HTTP/2 clients): its whole output once the response
/// ends. `args` come before the URL.
fn curl_subscriber(args: &[&str], url: &str) -> std::process::Child {
    std::process::Command::new("curl")
        .args(["-sS", "-N", "--max-time", "20"])
        .args(args)
        .arg(url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("curl (ci/test installs it)")
}

#[test]
fn tls_and_http2_subscribers_get_every_message_through_nginxs_own_writer() {
    // Subscribers the module does not write to directly: TLS (HTTP/1.1 and HTTP/2 by ALPN)
    // and cleartext HTTP/2. Each client reads slowly (curl --limit-rate), so output waits in
    // nginx (a 32 KiB send buffer; the TLS buffer, HTTP/2 flow control) and has to be
    // written on the write event.
    let certs = temp_prefix("tls");
    let (cert, key) = (certs.join("cert.pem"), certs.join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (ci/test installs it)");
    assert!(made.status.success(), "{made:?}");
    let (tls_port, h2c_port) = (free_port(), free_port());
    let n = Nginx::start_with(
        &format!(
            r#"
    push_stream_shared_memory_size 32m;
    server {{
        listen 127.0.0.1:{{PORT}} reuseport;
        listen 127.0.0.1:{tls_port} ssl http2 sndbuf=32k;
        listen 127.0.0.1:{h2c_port} http2 sndbuf=32k;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location /pub {{ push_stream_publisher admin; push_stream_channels_path $arg_id; }}
        location ~ /sub/(.*) {{
            push_stream_subscriber;
            push_stream_channels_path $1;
            push_stream_message_template "~text~\n";
        }}
    }}"#,
            cert = cert.display(),
            key = key.display(),
        ),
        Options {
            workers: 1,
            ..Default::default()
        },
    );
    let p = n.port;
    let clients = [
        (
            "tls11",
            vec!["-k", "--http1.1", "--limit-rate", "200k"],
            format!("https://127.0.0.1:{tls_port}"),
        ),
        (
            "tlsh2",
            vec!["-k", "--http2", "--limit-rate", "200k"],
            format!("https://127.0.0.1:{tls_port}"),
        ),
        (
            "h2c",
            vec!["--http2-prior-knowledge", "--limit-rate", "200k"],
            format!("http://127.0.0.1:{h2c_port}"),
        ),
    ];
    let mut running = vec![];
    for (ch, args, base) in &clients {
        running.push((ch, curl_subscriber(args, &format!("{base}/sub/{ch}"))));
    }
    let t = Instant::now();
    while clients.iter().any(|(ch, _, _)| subscribers(p, ch) != 1) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the curl subscribers did not connect"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // ~300 KB each, far more than the socket and TLS buffers hold at once.
    let text = |i: usize| format!("{i:03}-{}", "t".repeat(30_000));
    for (ch, _, _) in &clients {
        for i in 0..10 {
            publish(&n, ch, &text(i));
        }
    }
    // Everything arrives while the response is still open (nothing waits for its end to be
    // flushed), within a deadline far above the ~1.5 s the rate limit takes.
    let want: Vec<u8> = (0..10)
        .map(|i| text(i) + "\n")
        .collect::<String>()
        .into_bytes();
    let readers: Vec<_> = running
        .into_iter()
        .map(|(ch, mut child)| {
            let mut out = child.stdout.take().unwrap();
            let want = want.len();
            let reader = std::thread::spawn(move || {
                let mut got = vec![];
                let mut buf = [0u8; 65536];
                while got.len() < want {
                    match read_some(&mut out, &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => got.extend_from_slice(&buf[..k]),
                    }
                }
                got
            });
            (ch, child, reader)
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    for (ch, mut child, reader) in readers {
        while !reader.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        // Our own child: ends its read (and the subscriber) either way.
        let _ = child.kill();
        let _ = child.wait();
        let got = reader.join().unwrap();
        assert!(
            got == want,
            "{ch}: got {} of {} bytes by the deadline",
            got.len(),
            want.len()
        );
    }
    n.stop();
}

/// A message larger than `push_stream_max_pending_bytes` (4 MB against the default 1 MiB,
/// the body spooled to a temporary file) reaches a subscriber that reads it: the bound is on
/// a backlog the client does not drain besides the message it is receiving, never on that
/// message. A later `.b1` subscriber gets it whole from the store too (as with the C module).
#[test]
fn a_message_larger_than_the_backlog_bound_reaches_a_reading_subscriber() {
    let conf = conf().replacen(
        "location /pub {",
        "location /pubbig { push_stream_publisher admin; push_stream_channels_path $arg_id; push_stream_store_messages on; client_max_body_size 5m; client_body_buffer_size 1m; }\n        location /pub {",
        1,
    );
    let n = Nginx::start_with(
        &conf,
        Options {
            workers: 1,
            ..Default::default()
        },
    );
    let mut live = Stream::open(n.port, "/sub/big", &[]);
    let text = "z".repeat(4_000_000);
    let r = request(n.port, "POST", "/pubbig?id=big", &[], text.as_bytes());
    assert_eq!(r.status, 200, "{r:?}");
    let got = read_until(&mut live, "\n");
    assert_eq!(
        got,
        format!("1|big|{text}\n").as_str().to_string(),
        "the live subscriber"
    );
    let mut later = Stream::open(n.port, "/sub/big.b1", &[]);
    let got = read_until(&mut later, "\n");
    assert_eq!(
        got.len(),
        text.len() + "1|big|\n".len(),
        "the .b1 subscriber"
    );
    let log = n.error_log();
    assert!(!log.contains("stopped reading"), "{log}");
    drop((live, later));
    n.stop();
}
