//! Signals, as the C module's `misc/spec/mix/send_signals_spec.rb` sends them: `nginx -s stop`
//! (TERM) with a long-polling and a streaming subscriber open, `nginx -s reload` (HUP) with a
//! streaming and a long-polling subscriber open (new workers only in `by_worker`, the channel
//! and its message kept, a `.b1` subscriber gets the message, no socket left behind), a fast
//! reload with a big ping interval or a big connection ttl, and a reload that changes the
//! shared memory size. Run with 2 workers (the C specs' default) and, where the C spec sets
//! it, with 1.

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::Value;

/// The C specs' configuration (misc/spec/nginx_configuration.rb) with send_signals_spec's
/// settings: header `HEADER`, footer `FOOTER`, `message_ttl 60s`,
/// `subscriber_connection_ttl 65s`; the zone size, ping interval and connection ttl are what
/// the specs vary.
fn spec_conf(shared_memory: &str, ping: &str, ttl: &str) -> String {
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
    push_stream_shared_memory_size {shared_memory};
    push_stream_ping_message_interval {ping};
    push_stream_message_template "<script>p(~id~,'~channel~','~text~');</script>";
    push_stream_subscriber_connection_ttl {ttl};
    push_stream_header_template "HEADER";
    push_stream_footer_template "FOOTER";
    push_stream_message_ttl 60s;
    push_stream_max_channel_id_length 200;
    push_stream_max_messages_stored_per_channel 20;
    push_stream_wildcard_channel_max_qtd 3;
    push_stream_wildcard_channel_prefix broad_;
    push_stream_authorized_channels_only off;
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
            push_stream_channel_info_on_publish on;
            client_max_body_size 32k;
            client_body_buffer_size 32k;
        }}
        location ~ /sub/(.*)? {{
            push_stream_subscriber;
            push_stream_channels_path $1;
            default_type text/html;
        }}
    }}"#
    )
}

fn default_conf() -> String {
    spec_conf("10m", "10s", "65s")
}

fn start(conf: &str, workers: usize) -> Nginx {
    Nginx::start_with(
        conf,
        Options {
            workers,
            ..Default::default()
        },
    )
}

fn stats(port: u16) -> Value {
    let r = get(port, "/channels-stats");
    assert_eq!(r.status, 200);
    json(&r)
}

fn num(v: &Value) -> u64 {
    match v {
        Value::Number(n) => n.as_u64().unwrap(),
        Value::String(s) => s.parse().unwrap(),
        other => panic!("not a number: {other:?}"),
    }
}

/// The pids `by_worker` lists.
fn by_worker(st: &Value) -> HashSet<u32> {
    st["by_worker"]
        .as_array()
        .expect("by_worker")
        .iter()
        .map(|w| num(&w["pid"]) as u32)
        .collect()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit_once(')')
                .is_some_and(|x| x.1.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Socket descriptors a process holds.
fn sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
                })
                .count()
        })
        .unwrap_or(0)
}

/// The socket descriptors of all workers, once the count holds still for 300 ms (a
/// connection a test client just closed may still be open in nginx for a moment).
fn worker_sockets(n: &Nginx) -> usize {
    let count = || n.worker_pids().iter().map(|p| sockets(*p)).sum::<usize>();
    let mut last = count();
    let mut same_since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(10);
    while same_since.elapsed() < Duration::from_millis(300) {
        assert!(Instant::now() < deadline, "socket count never settled");
        std::thread::sleep(Duration::from_millis(20));
        let now = count();
        if now != last {
            last = now;
            same_since = Instant::now();
        }
    }
    last
}

/// Everything a raw connection receives until the server closes it.
fn read_to_close(s: &mut std::net::TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut all = vec![];
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return all,
            Ok(k) => all.extend_from_slice(&buf[..k]),
            Err(e) => panic!(
                "reading until close: {e}; got {:?}",
                String::from_utf8_lossy(&all)
            ),
        }
    }
}

/// The chunks of a streaming response until it ends (or the connection does).
fn chunks_until_end(s: &mut Stream) -> Vec<Vec<u8>> {
    let mut out = vec![];
    while let Some(c) = s.try_next_chunk() {
        out.push(c);
    }
    out
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Seconds since the epoch of an HTTP date (`Thu, 01 Jan 1970 00:00:01 GMT`).
fn http_date(s: &str) -> i64 {
    let parts: Vec<&str> = s.split_whitespace().collect();
    assert_eq!(parts.len(), 6, "{s:?}");
    let day: i64 = parts[1].parse().unwrap();
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == parts[2])
    .unwrap() as i64
        + 1;
    let year: i64 = parts[3].parse().unwrap();
    let hms: Vec<i64> = parts[4].split(':').map(|x| x.parse().unwrap()).collect();
    // Days from civil (Howard Hinnant's algorithm).
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    days * 86400 + hms[0] * 3600 + hms[1] * 60 + hms[2]
}

/// C: "should disconnect subscribers when receives TERM signal". A long-polling subscriber
/// (mode chosen by `X-Nginx-PushStream-Mode`) is answered `304` with `Last-Modified` now and
/// `Etag: W/0`; a streaming subscriber gets its footer.
#[test]
fn term_answers_a_long_poll_with_304_and_ends_a_stream_with_its_footer() {
    let n = start(&default_conf(), 2);
    let port = n.port;
    let ch = "ch_test_send_term_signal";
    let lp = std::thread::spawn(move || {
        request(
            port,
            "GET",
            &format!("/sub/{ch}"),
            &["X-Nginx-PushStream-Mode: long-polling"],
            b"",
        )
    });
    let mut s = Stream::open(port, &format!("/sub/{ch}"), &[]);
    assert_eq!(s.status, 200);
    assert_eq!(s.next_chunk().unwrap(), b"HEADER".to_vec());
    // Both are held before the signal.
    wait_for("both subscribers counted", Duration::from_secs(5), || {
        num(&json(&get(port, &format!("/channels-stats?id={ch}")))["subscribers"]) == 2
    });
    let before = unix_now();
    n.terminate();
    let after = unix_now();
    let rest = chunks_until_end(&mut s).concat();
    assert!(
        String::from_utf8_lossy(&rest).contains("FOOTER"),
        "stream after TERM: {:?}",
        String::from_utf8_lossy(&rest)
    );
    let r = lp.join().unwrap();
    assert_eq!(r.status, 304, "{:?}", r.text());
    assert!(r.body.is_empty());
    assert_eq!(r.header("Etag"), Some("W/0"));
    let lm = http_date(r.header("Last-Modified").expect("Last-Modified"));
    assert!(
        lm >= before - 1 && lm <= after,
        "Last-Modified {lm} not within [{}, {after}]",
        before - 1
    );
}

/// C: "should reload normaly when receives HUP signal". A streaming subscriber and a
/// long-polling one (raw, `X-Nginx-PushStream-Mode: long-polling`) are open when nginx
/// reloads; once the old workers are gone `by_worker` lists exactly the new workers, a message
/// published then reaches a new `.b1` subscriber (the header template first, in a chunk of
/// its own, as the C module sends it), the statistics count 1 channel, 1 message and 1
/// subscriber, the new workers hold as many sockets as the old ones did, and no socket is
/// left open at stop.
fn reload_normally(workers: usize) {
    let mut n = start(&default_conf(), workers);
    let port = n.port;
    let ch = "ch_test_send_hup_signal";
    let mut s = Stream::open(port, &format!("/sub/{ch}"), &[]);
    assert_eq!(s.next_chunk().unwrap(), b"HEADER".to_vec());
    let st = stats(port);
    assert_eq!(num(&st["channels"]), 1);
    let old_pids = n.worker_pids();
    assert_eq!(by_worker(&st), old_pids);
    let sockets_before = worker_sockets(&n);

    let mut lp = connect(port);
    lp.write_all(
        format!(
            "GET /sub/{ch} HTTP/1.1\r\nHost: test\r\nX-Nginx-PushStream-Mode: long-polling\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    wait_for("the long poll counted", Duration::from_secs(5), || {
        num(&stats(port)["subscribers"]) == 2
    });

    let old = n.reload();
    assert_eq!(old, old_pids);
    // The old workers end their subscribers: the footer, and the long poll's 304.
    let rest = chunks_until_end(&mut s).concat();
    assert_eq!(rest, b"FOOTER".to_vec());
    let answer = String::from_utf8_lossy(&read_to_close(&mut lp)).into_owned();
    assert!(answer.starts_with("HTTP/1.1 304"), "{answer:?}");
    assert!(answer.contains("\r\nEtag: W/0\r\n"), "{answer:?}");

    // Until the old workers are gone; then only the new ones are listed.
    let new_pids: HashSet<u32> = n.worker_pids().difference(&old).copied().collect();
    assert_eq!(new_pids.len(), workers);
    wait_for(
        "the old workers gone and only the new ones in by_worker",
        Duration::from_secs(10),
        || !old_pids.iter().any(|p| alive(*p)) && by_worker(&stats(port)) == new_pids,
    );

    let r = post(port, &format!("/pub?id={ch}"), b"body");
    assert_eq!(r.status, 200);
    let mut s2 = Stream::open(port, &format!("/sub/{ch}.b1"), &[]);
    assert_eq!(s2.next_chunk().unwrap(), b"HEADER".to_vec());
    assert_eq!(
        String::from_utf8(s2.next_chunk().unwrap()).unwrap(),
        format!("<script>p(1,'{ch}','body');</script>")
    );
    let st = stats(port);
    assert_eq!(num(&st["channels"]), 1);
    assert_eq!(num(&st["published_messages"]), 1);
    assert_eq!(num(&st["subscribers"]), 1);
    assert_eq!(by_worker(&st), new_pids);
    // As many sockets as before the reload, each with one subscriber held: nothing leaked.
    assert_eq!(worker_sockets(&n), sockets_before);

    let log = n.prefix.join("logs/error.log");
    n.stop();
    let log = std::fs::read_to_string(log).unwrap();
    assert!(!log.contains("open socket"), "{log}");
    drop((s, s2));
}

#[test]
fn reload_with_a_stream_and_a_long_poll_open_leaves_only_the_new_workers_two_workers() {
    reload_normally(2);
}

#[test]
fn reload_with_a_stream_and_a_long_poll_open_leaves_only_the_new_workers_one_worker() {
    reload_normally(1);
}

/// C: "reload server" / "should reload fast", with a ping interval or a connection ttl much
/// longer than the test: the old worker does not wait for them, the subscriber count drops to
/// 0 and the channel stays.
fn reload_fast(ping: &str, ttl: &str) {
    let mut n = start(&spec_conf("10m", ping, ttl), 2);
    let port = n.port;
    let ch = "ch_test_send_hup_signal";
    let mut s = Stream::open(port, &format!("/sub/{ch}"), &[]);
    assert_eq!(s.next_chunk().unwrap(), b"HEADER".to_vec());
    let st = stats(port);
    assert_eq!(num(&st["subscribers"]), 1);
    assert_eq!(num(&st["channels"]), 1);
    let old_pids = by_worker(&st);
    assert_eq!(old_pids, n.worker_pids());
    let started = Instant::now();
    let old = n.reload();
    assert_eq!(old, old_pids);
    // The new workers (the old ones may still be exiting).
    let new_pids: HashSet<u32> = n.worker_pids().difference(&old).copied().collect();
    assert_eq!(new_pids.len(), 2);
    // The C spec gives the whole test 5 s.
    wait_for(
        "only the new workers in by_worker",
        Duration::from_secs(4),
        || by_worker(&stats(port)) == new_pids,
    );
    let st = stats(port);
    assert_eq!(num(&st["subscribers"]), 0, "{st}");
    assert_eq!(num(&st["channels"]), 1);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(chunks_until_end(&mut s).concat(), b"FOOTER".to_vec());
    n.stop();
}

#[test]
fn reload_is_fast_with_a_big_ping_message_interval() {
    reload_fast("10m", "10s");
}

#[test]
fn reload_is_fast_with_a_big_subscriber_connection_ttl() {
    reload_fast("1s", "10m");
}

/// C: "should ignore changes on shared memory size when doing a reload": the channel and its
/// message stay, and the error log says why the new size was not applied.
#[test]
fn a_reload_ignores_a_changed_shared_memory_size_and_keeps_the_channels() {
    let mut n = start(&default_conf(), 2);
    let port = n.port;
    let ch = "ch_test_reload_with_different_shared_memory_size";
    assert_eq!(post(port, &format!("/pub?id={ch}"), b"body").status, 200);
    let st = stats(port);
    assert_eq!(num(&st["channels"]), 1);
    assert_eq!(num(&st["published_messages"]), 1);
    let old = n.reload_with(
        &spec_conf("20m", "10s", "65s"),
        &Options {
            workers: 2,
            ..Default::default()
        },
    );
    n.wait_gone(&old, Duration::from_secs(5));
    let st = stats(port);
    assert_eq!(num(&st["channels"]), 1);
    assert_eq!(num(&st["published_messages"]), 1);
    assert!(n
        .error_log()
        .contains("Cannot change memory area size without restart, ignoring change"));
    let mut s = Stream::open(port, &format!("/sub/{ch}.b1"), &[]);
    assert_eq!(s.next_chunk().unwrap(), b"HEADER".to_vec());
    assert_eq!(
        String::from_utf8(s.next_chunk().unwrap()).unwrap(),
        format!("<script>p(1,'{ch}','body');</script>")
    );
    drop(s);
    n.stop();
}
