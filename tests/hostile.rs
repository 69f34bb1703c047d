//! Hostile clients: each test performs one attack against a real nginx with the module, as a
//! client would, and asserts the safe outcome decided for it (status codes, explain strings,
//! close codes, bounds). Everything runs on loopback, bounded in count and time; every test
//! ends with `Nginx::stop`, which fails on an `[alert]`, `[crit]` or `[emerg]` line or a worker
//! that exited on a signal. docs/reliability.md lists the attacks and outcomes.
//!
//! Under `ci/memcheck` (`PUSH_STREAM_UNDER_MEMCHECK=1`) the flood test is skipped (valgrind
//! slows the worker far below the time bound that is its point) and the memory-growth bound of
//! the repeated-channel test is not checked (valgrind's own heap); everything else runs.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const EXPLAIN: &str = "X-Nginx-PushStream-Explain";

// ---- configuration and local helpers --------------------------------------------------------

/// The tests of this file run in parallel, but the wake-up socket squatting test takes the
/// socket names of the next few hundred pids, which would also hit the nginx of a test
/// started next to it: that one holds the lock exclusively, the others share it.
static PID_RANGE: RwLock<()> = RwLock::new(());

fn shared() -> RwLockReadGuard<'static, ()> {
    PID_RANGE.read().unwrap_or_else(|e| e.into_inner())
}

fn exclusive() -> RwLockWriteGuard<'static, ()> {
    PID_RANGE.write().unwrap_or_else(|e| e.into_inner())
}

/// An `http{}` body: a 64 MiB zone, `http_extra`, and one server (`server_extra` is where a
/// second `listen` goes) with the common locations and `locations`.
fn conf(http_extra: &str, server_extra: &str, locations: &str) -> String {
    format!(
        r#"
    push_stream_shared_memory_size 64m;
    {http_extra}
    server {{
        listen 127.0.0.1:{{PORT}} reuseport;
        {server_extra}
        client_max_body_size 1m;
        location /pub {{ push_stream_publisher admin; push_stream_channels_path $arg_id; push_stream_store_messages on; }}
        location /pub-nostore {{ push_stream_publisher; push_stream_channels_path $arg_id; }}
        location /stats {{ push_stream_channels_statistics; push_stream_channels_path $arg_id; }}
        location ~ /sub/(.*) {{
            push_stream_subscriber;
            push_stream_channels_path $1;
            push_stream_message_template "~id~|~channel~|~text~\n";
        }}
        location ~ /lp/(.*) {{
            push_stream_subscriber long-polling;
            push_stream_channels_path $1;
            push_stream_longpolling_connection_ttl 2s;
            push_stream_message_template "~id~|~text~\n";
        }}
        location ~ /poll/(.*) {{
            push_stream_subscriber polling;
            push_stream_channels_path $1;
            push_stream_message_template "~id~|~text~\n";
        }}
        location ~ /ws/(.*) {{
            push_stream_subscriber websocket;
            push_stream_channels_path $1;
            push_stream_websocket_allow_publish on;
            client_max_body_size 1k;
        }}
        {locations}
    }}"#
    )
}

fn start(workers: usize, locations: &str) -> Nginx {
    Nginx::start_with(
        &conf("", "", locations),
        Options {
            workers,
            ..Default::default()
        },
    )
}

/// nginx with a second, cleartext HTTP/2 listener (`listen ... http2`, which nginx 1.22 and
/// 1.28 both take); returns it and the HTTP/2 port.
fn start_h2(main_extra: &str, locations: &str) -> (Nginx, u16) {
    let h2 = free_port();
    let n = Nginx::start_with(
        &conf("", &format!("listen 127.0.0.1:{h2} http2;"), locations),
        Options {
            workers: 1,
            main_extra: main_extra.to_string(),
            ..Default::default()
        },
    );
    (n, h2)
}

fn only_worker(n: &Nginx) -> u32 {
    let w = n.worker_pids();
    assert_eq!(w.len(), 1, "one worker expected: {w:?}");
    *w.iter().next().unwrap()
}

fn publish(port: u16, ch: &str, body: &[u8]) {
    let r = post(port, &format!("/pub?id={ch}"), body);
    assert_eq!(r.status, 200, "publish to {ch}: {r:?}");
}

fn publish_nostore(port: u16, ch: &str, body: &[u8]) {
    let r = post(port, &format!("/pub-nostore?id={ch}"), body);
    assert_eq!(r.status, 200, "publish to {ch}: {:?}", explain(&r));
}

fn stats(port: u16) -> Value {
    json(&get(port, "/stats"))
}

/// The next line of a streaming subscriber (template `~id~|~channel~|~text~\n`), or None when
/// none arrived within `limit` (or the response ended).
fn line_within(s: &mut Stream, limit: Duration) -> Option<String> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    while !got.contains(&b'\n') {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        s.reader.get_ref().set_read_timeout(Some(left)).unwrap();
        got.extend(s.try_next_chunk()?);
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    Some(text.trim_end_matches('\n').to_string())
}

/// The rest of a chunked streaming response and whether it ended (last chunk, or the server
/// closed the connection) within `limit`.
fn rest_within(s: &mut Stream, limit: Duration) -> (String, bool) {
    s.reader.get_ref().set_read_timeout(Some(limit)).unwrap();
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    while Instant::now() < deadline {
        let mut line = String::new();
        match s.reader.read_line(&mut line) {
            Ok(0) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(_) => {}
            Err(_) => break,
        }
        let Ok(size) = usize::from_str_radix(line.trim(), 16) else {
            panic!(
                "bad chunk size line {line:?} after {:?}",
                String::from_utf8_lossy(&got)
            );
        };
        let mut data = vec![0; size + 2];
        if std::io::Read::read_exact(&mut s.reader, &mut data).is_err() {
            break;
        }
        if size == 0 {
            return (String::from_utf8_lossy(&got).into_owned(), true);
        }
        got.extend_from_slice(&data[..size]);
    }
    (String::from_utf8_lossy(&got).into_owned(), false)
}

/// A streaming subscriber whose response head must come within `limit`.
fn open_within(port: u16, path: &str, limit: Duration) -> Result<Stream, String> {
    let mut c = connect(port);
    c.set_read_timeout(Some(limit)).unwrap();
    send_request(&mut c, "GET", path, &[], b"", false);
    let mut reader = BufReader::new(c);
    let mut status_line = String::new();
    reader
        .read_line(&mut status_line)
        .map_err(|e| format!("no response head for {path} within {limit:?}: {e}"))?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(format!("bad status line {status_line:?}"))?;
    let mut headers = vec![];
    loop {
        let mut l = String::new();
        reader
            .read_line(&mut l)
            .map_err(|e| format!("response head for {path} cut: {e}"))?;
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    Ok(Stream {
        status,
        headers,
        reader,
    })
}

/// A publish whose answer must come within `limit`; its status.
fn post_within(port: u16, path: &str, body: &[u8], limit: Duration) -> Result<u16, String> {
    let mut c = connect(port);
    c.set_read_timeout(Some(limit)).unwrap();
    send_request(&mut c, "POST", path, &[], body, true);
    let mut line = String::new();
    BufReader::new(c)
        .read_line(&mut line)
        .map_err(|e| format!("no answer to POST {path} within {limit:?}: {e}"))?;
    line.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(format!("bad status line {line:?}"))
}

/// A new subscriber gets a message published now: the worker still serves.
fn assert_still_serves(n: &Nginx, ch: &str) {
    let mut s = Stream::open(n.port, &format!("/sub/{ch}"), &[]);
    assert_eq!(s.status, 200, "a new subscriber after the attack");
    publish_nostore(n.port, ch, b"still serving");
    let line = line_within(&mut s, Duration::from_secs(5));
    assert_eq!(
        line.as_deref(),
        Some(format!("1|{ch}|still serving").as_str()),
        "a new subscriber did not get a message published after the attack"
    );
}

/// Error-log lines that contain `needle` (at any level).
fn log_lines(n: &Nginx, needle: &str) -> Vec<String> {
    n.error_log()
        .lines()
        .filter(|l| l.contains(needle))
        .map(String::from)
        .collect()
}

/// The close code of the next close frame; None when the connection ended (or the read timed
/// out) without one.
fn close_code(ws: &mut Ws) -> Option<u16> {
    loop {
        match ws.read_frame()? {
            (_, 8, p) if p.len() >= 2 => return Some(u16::from_be_bytes([p[0], p[1]])),
            (_, 8, _) => return Some(1005),
            _ => continue,
        }
    }
}

/// What a flood of client bytes came to.
struct Flood {
    bytes: usize,
    elapsed: Duration,
    /// The write error that ended it (the server closed or reset the connection).
    error: Option<std::io::Error>,
}

/// Writes `frame` over and over (whole frames, however the kernel splits the writes) until
/// `max_bytes` went out, `limit` passed, `stop` is set, or a write fails. Never reads. Each
/// write waits at most 200 ms, so a server that stops reading cannot hang the test.
fn flood(
    s: &TcpStream,
    frame: &[u8],
    max_bytes: usize,
    limit: Duration,
    stop: &AtomicBool,
) -> Flood {
    let mut w = s.try_clone().unwrap();
    w.set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let batch = frame.repeat((65536 / frame.len()).max(1));
    let start = Instant::now();
    let mut off = 0usize;
    while off < max_bytes && start.elapsed() < limit && !stop.load(Ordering::Relaxed) {
        let at = off % batch.len();
        let end = batch.len().min(at + (max_bytes - off));
        match w.write(&batch[at..end]) {
            Ok(0) => {
                return Flood {
                    bytes: off,
                    elapsed: start.elapsed(),
                    error: Some(std::io::ErrorKind::WriteZero.into()),
                }
            }
            Ok(k) => off += k,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                return Flood {
                    bytes: off,
                    elapsed: start.elapsed(),
                    error: Some(e),
                }
            }
        }
    }
    Flood {
        bytes: off,
        elapsed: start.elapsed(),
        error: None,
    }
}

/// The response head of a raw HTTP/1.1 request (`Connection: close`), as lines, split on
/// every `\n` (so that a bare LF in a header value shows as a line of its own).
fn raw_head(port: u16, request: &str) -> Vec<String> {
    let mut c = connect(port);
    c.write_all(request.as_bytes()).unwrap();
    let mut all = vec![];
    let mut buf = [0u8; 4096];
    while !all.windows(4).any(|w| w == b"\r\n\r\n") {
        match read_some(&mut c, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(k) => all.extend_from_slice(&buf[..k]),
        }
    }
    let end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head: {:?}", String::from_utf8_lossy(&all)));
    String::from_utf8_lossy(&all[..end])
        .split('\n')
        .map(|l| l.trim_end_matches('\r').to_string())
        .collect()
}

// ---- 1. WebSocket ping flood -----------------------------------------------------------------

/// Attack: a WebSocket subscriber with a 4 KiB receive buffer sends 20 000 masked pings
/// (125-byte payloads) without ever reading the pongs, then resets the connection (SO_LINGER
/// 0); three times. Then one that keeps flooding pings until the server gives up on it.
///
/// Expected: the server closes the flooding connection (within 20 s; the location has
/// `send_timeout 5s`), the error log has no `[alert]` and no `Bad file descriptor` at any
/// level, the one worker is still the same process, and a new subscriber on it still receives
/// a published message.
#[test]
fn websocket_ping_flood_that_never_reads_the_pongs() {
    let _g = shared();
    let n = start(
        1,
        r#"location ~ /wsp/(.*) { push_stream_subscriber websocket; push_stream_channels_path $1; send_timeout 5s; }"#,
    );
    let worker = only_worker(&n);
    let ping = ws_client_frame(true, 0x9, &[b'p'; 125], true);
    let never = AtomicBool::new(false);
    for round in 0..3 {
        let ws = Ws::handshake(connect_small(n.port, 4096), "/wsp/pf", b"");
        assert_eq!(ws.status(), 101, "{}", ws.head);
        let f = flood(
            &ws.stream,
            &ping,
            20_000 * ping.len(),
            Duration::from_secs(15),
            &never,
        );
        eprintln!(
            "FIGURE ping burst {round}: {} pings written in {:?} ({:?}), then reset",
            f.bytes / ping.len(),
            f.elapsed,
            f.error
        );
        set_linger_zero(&ws.stream);
        drop(ws);
    }
    let ws = Ws::handshake(connect_small(n.port, 4096), "/wsp/pf", b"");
    assert_eq!(ws.status(), 101, "{}", ws.head);
    let f = flood(
        &ws.stream,
        &ping,
        usize::MAX,
        Duration::from_secs(20),
        &never,
    );
    eprintln!(
        "FIGURE ping flood: {} pings written in {:?}, ended by {:?}",
        f.bytes / ping.len(),
        f.elapsed,
        f.error
    );
    assert!(
        f.error.is_some(),
        "the server did not close a connection that sent {} pings and read no pong in {:?}",
        f.bytes / ping.len(),
        f.elapsed
    );
    set_linger_zero(&ws.stream);
    drop(ws);
    let ebadf = log_lines(&n, "Bad file descriptor");
    assert!(ebadf.is_empty(), "error log:\n{}", ebadf.join("\n"));
    assert_eq!(
        n.worker_pids(),
        [worker].into(),
        "the worker was replaced (it died)"
    );
    assert_still_serves(&n, "pf-after");
    n.stop();
}

// ---- 2. WebSocket upgrade on HTTP/2 ------------------------------------------------------------

/// Attack: on a cleartext HTTP/2 connection (prior knowledge), stream 1 is a GET to the
/// WebSocket subscriber location with `upgrade: websocket`, `connection: upgrade`,
/// `sec-websocket-key` and `sec-websocket-version: 13` (raw HPACK literals: libraries strip
/// these headers).
///
/// Expected: `:status` 400 (explain `WebSocket is only supported on HTTP/1.1.`; decoding it
/// needs HPACK Huffman, so the status is checked), every byte on the socket is part of a
/// well-formed HTTP/2 frame (no HTTP/1.1 `101` or WebSocket frame written into the
/// connection), no subscriber is left on the channel, and a second request on stream 3 of the
/// same connection (the statistics) answers 200.
#[test]
fn websocket_upgrade_over_http2_is_refused_and_the_connection_stays_intact() {
    let _g = shared();
    let (n, h2port) = start_h2("", "");
    let mut h2 = H2::connect(h2port, &[]);
    h2.request(
        1,
        "GET",
        "/ws/h2ws",
        &[
            ("upgrade", "websocket"),
            ("connection", "upgrade"),
            ("sec-websocket-key", WS_KEY),
            ("sec-websocket-version", "13"),
        ],
        true,
    );
    let r = h2.response(1, Duration::from_secs(5), false);
    assert_eq!(r.status, Some(400), "WebSocket upgrade over HTTP/2: {r:?}");
    assert!(
        r.ended && !r.closed && r.goaway.is_none(),
        "the 400 did not end its stream cleanly: {r:?}"
    );
    h2.request(3, "GET", "/stats", &[], true);
    let r = h2.response(3, Duration::from_secs(5), false);
    assert_eq!(
        (r.status, r.ended, r.closed),
        (Some(200), true, false),
        "a second request on the same connection: {r:?}"
    );
    let v: Value = serde_json::from_slice(&r.data).expect("statistics JSON over HTTP/2");
    assert!(v["channels"].is_u64(), "{v}");
    assert_eq!(
        subscribers(n.port, "h2ws"),
        0,
        "a subscriber was left behind"
    );
    drop(h2);
    n.stop();
}

// ---- 3. HTTP/2 subscriber ended with DATA queued ------------------------------------------------

/// Attack: an HTTP/2 streaming subscriber with SETTINGS_INITIAL_WINDOW_SIZE 1024 that never
/// sends WINDOW_UPDATE; 10 messages of 200 KB are published to it (nginx queues ~2 MB of DATA
/// it may not send), then the client sends RST_STREAM (CANCEL) on that stream, or (every other
/// round) closes the TCP connection with SO_LINGER 0. Four rounds. Meant for memcheck too.
///
/// Expected: the stream's subscriber is released (count back to 0), after RST_STREAM the same
/// connection still answers a request, no `[alert]`/`[crit]`, the worker is the same process,
/// and a new subscriber still receives a published message.
#[test]
fn http2_subscriber_reset_while_data_frames_are_queued() {
    let _g = shared();
    let (n, h2port) = start_h2("", "");
    let worker = only_worker(&n);
    let big = |i: usize| format!("{i:02}-{}", "d".repeat(200_000));
    for round in 0..4 {
        let ch = format!("h2q{round}");
        let mut h2 = H2::connect(h2port, &[(H2_SETTINGS_INITIAL_WINDOW_SIZE, 1024)]);
        h2.request(1, "GET", &format!("/sub/{ch}"), &[], true);
        let r = h2.response(1, Duration::from_secs(5), true);
        assert_eq!(r.status, Some(200), "HTTP/2 subscriber: {r:?}");
        for i in 0..10 {
            publish_nostore(n.port, &ch, big(i).as_bytes());
        }
        // The first 1024 bytes come; the rest waits in nginx for a window that never opens.
        let r = h2.response(1, Duration::from_millis(1500), false);
        assert!(
            !r.data.is_empty() && r.data.len() <= 1024 && !r.ended && !r.closed,
            "round {round}: {} bytes of DATA, {r:?}",
            r.data.len()
        );
        if round % 2 == 0 {
            h2.send(H2_RST_STREAM, 0, 1, &8u32.to_be_bytes()).unwrap();
            h2.request(3, "GET", "/stats", &[], true);
            let r = h2.response(3, Duration::from_secs(5), false);
            assert_eq!(
                (r.status, r.ended),
                (Some(200), true),
                "round {round}: a request after RST_STREAM on the same connection: {r:?}"
            );
        } else {
            set_linger_zero(&h2.stream);
        }
        drop(h2);
        wait_for(
            &format!("round {round}: the reset subscriber released"),
            Duration::from_secs(5),
            || subscribers(n.port, &ch) == 0,
        );
    }
    assert_eq!(
        n.worker_pids(),
        [worker].into(),
        "the worker was replaced (it died)"
    );
    assert_still_serves(&n, "h2q-after");
    n.stop();
}

// ---- 4. Wake-up socket squatting -----------------------------------------------------------------

/// Binds the abstract datagram names `"\0ngx_push_stream.<pid>"` of the next `count` pids
/// (from `/proc/sys/kernel/ns_last_pid`), as a local user could; returns the sockets (kept
/// open by the caller) and the pids.
fn squat_wake_names(count: u32) -> (Vec<OwnedFd>, std::collections::HashSet<u32>) {
    let read = |p: &str| -> u32 {
        std::fs::read_to_string(p)
            .unwrap_or_else(|e| panic!("{p}: {e}"))
            .trim()
            .parse()
            .unwrap()
    };
    let last = read("/proc/sys/kernel/ns_last_pid");
    let max = read("/proc/sys/kernel/pid_max");
    let mut fds = vec![];
    let mut pids = std::collections::HashSet::new();
    for k in 1..=count {
        // The kernel wraps to 300 past pid_max.
        let pid = if last + k < max {
            last + k
        } else {
            last + k - max + 300
        };
        let name = format!("\0ngx_push_stream.{pid}").into_bytes();
        // SAFETY: a new socket; a zeroed sockaddr_un with a name shorter than sun_path; the
        // fd is owned by an OwnedFd from here on.
        unsafe {
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
            let owned = OwnedFd::from_raw_fd(fd);
            let mut a: libc::sockaddr_un = std::mem::zeroed();
            a.sun_family = libc::AF_UNIX as libc::sa_family_t;
            for (i, b) in name.iter().enumerate() {
                a.sun_path[i] = *b as libc::c_char;
            }
            let len = std::mem::size_of::<libc::sa_family_t>() + name.len();
            let rc = libc::bind(
                fd,
                &a as *const _ as *const libc::sockaddr,
                len as libc::socklen_t,
            );
            if rc == 0 {
                fds.push(owned);
                pids.insert(pid);
            }
        }
    }
    (fds, pids)
}

/// Attack: before nginx starts, a local user binds the abstract UNIX datagram names
/// `"\0ngx_push_stream.<pid>"` of the next 400 pids (the name each worker binds today).
/// nginx starts with 2 workers; a streaming subscriber on each; one message; then
/// `nginx -s reload` (SIGHUP) and the same with new subscribers.
///
/// Expected: both subscribers receive each message, and the error log has no `bind of the
/// wake-up socket failed` (nor any alert).
#[test]
fn squatted_wake_up_socket_names_do_not_break_delivery() {
    let _g = exclusive();
    let (_squat, squatted) = squat_wake_names(400);
    assert!(
        squatted.len() > 300,
        "could bind only {} names",
        squatted.len()
    );
    let mut n = start(2, "");
    let workers = n.worker_pids();
    assert!(
        workers.iter().any(|p| squatted.contains(p)),
        "the workers {workers:?} did not get a squatted pid (other processes took > 400 pids)"
    );
    for (round, text) in ["before reload", "after reload"].into_iter().enumerate() {
        let mut subs = subscriber_per_worker(&n, "/sub/sq");
        publish_nostore(n.port, "sq", text.as_bytes());
        for (pid, s) in subs.iter_mut() {
            let line = line_within(s, Duration::from_secs(5));
            assert_eq!(
                line.as_deref(),
                Some(format!("{}|sq|{text}", round + 1).as_str()),
                "the subscriber on worker {pid} (squatted name: {})",
                squatted.contains(pid)
            );
        }
        let bind = log_lines(&n, "bind of the wake-up socket failed");
        assert!(bind.is_empty(), "{round}: error log:\n{}", bind.join("\n"));
        if round == 0 {
            drop(subs);
            let old = n.reload();
            n.wait_gone(&old, Duration::from_secs(10));
        }
    }
    n.stop();
}

// ---- 5. Repeated and numerous channels in one request ----------------------------------------------

/// Attack: 20 stored messages of 5 000 bytes on one channel, then one long-polling GET that
/// names that channel with a backtrack 200 times: `/lp/rep.b50/rep.b50/...`.
///
/// Expected: 200, each stored message exactly once in the body (under 2 × the stored bytes),
/// and the worker's peak and current private memory grow by less than 4 MiB (200 copies
/// would be 20 MB).
#[test]
fn a_channel_named_200_times_in_one_long_poll_is_answered_once() {
    let _g = shared();
    let n = start(1, "");
    let text = |i: usize| format!("<m{i:02}>{}", "r".repeat(4995));
    for i in 1..=20 {
        publish(n.port, "rep", text(i).as_bytes());
    }
    let stored = 20 * text(1).len();
    let worker = only_worker(&n);
    let (rss0, peak0) = (rss_bytes(worker), peak_rss_bytes(worker));
    let path = format!("/lp/{}", vec!["rep.b50"; 200].join("/"));
    let r = get(n.port, &path);
    let (rss1, peak1) = (rss_bytes(worker), peak_rss_bytes(worker));
    eprintln!(
        "FIGURE repeated channel: body {} bytes for {stored} stored; worker RssAnon {} -> {} KiB, VmHWM {} -> {} KiB",
        r.body.len(),
        rss0 / 1024,
        rss1 / 1024,
        peak0 / 1024,
        peak1 / 1024
    );
    assert_eq!(r.status, 200, "{:?}", explain(&r));
    let body = r.text();
    for i in 1..=20 {
        assert_eq!(
            body.matches(&format!("<m{i:02}>")).count(),
            1,
            "message {i} in a body of {} bytes",
            body.len()
        );
    }
    assert!(
        body.len() < 2 * stored,
        "body {} bytes for {stored} stored",
        body.len()
    );
    if !under_memcheck() {
        assert!(
            peak1.saturating_sub(peak0) < 4 << 20 && rss1.saturating_sub(rss0) < 4 << 20,
            "worker memory grew: RssAnon {rss0} -> {rss1}, VmHWM {peak0} -> {peak1}"
        );
    }
    n.stop();
}

/// Attack: with `push_stream_max_subscribers_per_channel 100`, one streaming subscriber names
/// the same channel 99 times (`/sub/ms/ms/.../ms`), to take the channel's whole quota alone.
///
/// Expected: it is accepted (200) and counts once (`subscribers: 1`); 99 more distinct
/// subscribers are accepted, and the 101st is refused `403 Subscribers limit per channel has
/// been exceeded.` as before.
#[test]
fn a_channel_named_99_times_by_one_subscriber_counts_once_against_the_limit() {
    let _g = shared();
    let n = Nginx::start_with(
        &conf("push_stream_max_subscribers_per_channel 100;", "", ""),
        Options {
            workers: 1,
            ..Default::default()
        },
    );
    let path = format!("/sub/{}", vec!["ms"; 99].join("/"));
    let first = Stream::open(n.port, &path, &[]);
    assert_eq!(first.status, 200, "{:?}", first.header(EXPLAIN));
    assert_eq!(
        subscribers(n.port, "ms"),
        1,
        "one request naming ms 99 times"
    );
    let mut others = vec![];
    for i in 2..=100 {
        let s = Stream::open(n.port, "/sub/ms", &[]);
        assert_eq!(
            s.status,
            200,
            "distinct subscriber {i} of 100: {:?}",
            s.header(EXPLAIN)
        );
        others.push(s);
    }
    assert_eq!(subscribers(n.port, "ms"), 100);
    let over = Stream::open(n.port, "/sub/ms", &[]);
    assert_eq!(
        (over.status, over.header(EXPLAIN)),
        (
            403,
            Some("Subscribers limit per channel has been exceeded.")
        ),
        "the 101st subscriber"
    );
    drop((first, others, over));
    n.stop();
}

/// `n` distinct channel ids `{prefix}1/.../{prefix}n`.
fn ids(prefix: &str, n: usize) -> String {
    (1..=n)
        .map(|i| format!("{prefix}{i}"))
        .collect::<Vec<_>>()
        .join("/")
}

/// Attack: one subscriber request names many distinct channels (101). (Default
/// `push_stream_max_channels_per_request`: 100.)
///
/// Expected: `400 Too many channels in one request.`, and no channel is created (the
/// statistics' `channels` unchanged); 100 distinct channels are accepted, and so are 101 names
/// of which 100 are distinct (the bound is on distinct channels). Publishers (the site's own
/// backend, as in the C module) are not capped: 101 channels are published to.
#[test]
fn more_than_100_distinct_channels_in_one_request_are_refused_by_default() {
    let _g = shared();
    let n = start(1, "");
    let before = stats(n.port)["channels"].as_u64().unwrap();
    let s = Stream::open(n.port, &format!("/sub/{}", ids("mc", 101)), &[]);
    assert_eq!(
        (s.status, s.header(EXPLAIN)),
        (400, Some("Too many channels in one request.")),
        "a subscriber naming 101 distinct channels"
    );
    drop(s);
    assert_eq!(
        stats(n.port)["channels"].as_u64().unwrap(),
        before,
        "a refused subscriber created channels"
    );
    let r = post(n.port, &format!("/pub?id={}", ids("mp", 101)), b"x");
    assert_eq!(r.status, 200, "a publisher naming 101 distinct channels");
    assert_eq!(
        stats(n.port)["channels"].as_u64().unwrap(),
        before + 101,
        "a publisher's 101 channels"
    );
    let hundred = Stream::open(n.port, &format!("/sub/{}", ids("mc", 100)), &[]);
    assert_eq!(hundred.status, 200, "100 distinct channels");
    let repeated = Stream::open(n.port, &format!("/sub/{}/mc1", ids("mc", 100)), &[]);
    assert_eq!(repeated.status, 200, "101 names, 100 distinct");
    let r = post(n.port, &format!("/pub?id={}", ids("mp", 100)), b"x");
    assert_eq!(r.status, 200, "a publisher naming 100 distinct channels");
    drop((hundred, repeated));
    n.stop();
}

/// Attack: the same, against `push_stream_max_channels_per_request 5` in `http{}` and `3` in
/// two locations (a subscriber and a publisher).
///
/// Expected: the location's 3 wins there: 4 distinct channels → `400 Too many channels in one
/// request.`, `a/a/a/b/b/c` (3 distinct) accepted; the other locations inherit 5: 6 distinct
/// refused, 5 accepted. The publisher is not capped, and a channel it names twice gets the
/// message once.
#[test]
fn push_stream_max_channels_per_request_bounds_distinct_channels() {
    let _g = shared();
    let n = Nginx::start_with(
        &conf(
            "push_stream_max_channels_per_request 5;",
            "",
            r#"
        location ~ /sub3/(.*) { push_stream_subscriber; push_stream_channels_path $1; push_stream_max_channels_per_request 3; }
        location /pub3 { push_stream_publisher admin; push_stream_channels_path $arg_id; push_stream_max_channels_per_request 3; }"#,
        ),
        Options {
            workers: 1,
            ..Default::default()
        },
    );
    let p = n.port;
    let too_many = (400, Some("Too many channels in one request."));
    let s = Stream::open(p, "/sub3/a/b/c/d", &[]);
    assert_eq!((s.status, s.header(EXPLAIN)), too_many, "/sub3/a/b/c/d");
    let ok = Stream::open(p, "/sub3/a/a/a/b/b/c", &[]);
    assert_eq!(
        ok.status,
        200,
        "/sub3/a/a/a/b/b/c: {:?}",
        ok.header(EXPLAIN)
    );
    assert_eq!(subscribers(p, "a"), 1);
    let r = post(p, "/pub3?id=a/b/c/d", b"x");
    assert_eq!(r.status, 200, "/pub3?id=a/b/c/d: {:?}", explain(&r));
    let r = post(p, "/pub3?id=a/a/b/c", b"x");
    assert_eq!(r.status, 200, "/pub3?id=a/a/b/c: {:?}", explain(&r));
    let info = json(&get(p, "/pub3?id=a"));
    assert_eq!(
        info["published_messages"].as_u64(),
        Some(2),
        "a named twice in one publish gets the message once: {info}"
    );
    let s = Stream::open(p, "/sub/a/b/c/d/e/f", &[]);
    assert_eq!(
        (s.status, s.header(EXPLAIN)),
        too_many,
        "/sub/ (http: 5), 6"
    );
    let five = Stream::open(p, "/sub/a/b/c/d/e", &[]);
    assert_eq!(
        five.status,
        200,
        "/sub/ (http: 5), 5: {:?}",
        five.header(EXPLAIN)
    );
    drop((ok, five));
    n.stop();
}

/// Attack: a streaming subscriber names a channel twice (`/sub/twice/twice`); an admin
/// publisher DELETEs the channel; then the channel is published to again (re-created).
///
/// Expected: the subscriber receives the channel-deleted message (once: it is subscribed
/// once) and its response ends; the re-created channel's statistics show `subscribers: 0`.
#[test]
fn a_channel_named_twice_then_deleted_leaves_no_subscriber_count() {
    let _g = shared();
    let n = start(1, "");
    let mut s = Stream::open(n.port, "/sub/twice/twice", &[]);
    assert_eq!(s.status, 200);
    let r = request(n.port, "DELETE", "/pub?id=twice", &[], b"");
    assert_eq!((r.status, explain(&r)), (200, Some("Channel deleted.")));
    let (rest, ended) = rest_within(&mut s, Duration::from_secs(5));
    assert_eq!(
        rest.matches("|twice|Channel deleted").count(),
        1,
        "the subscriber got: {rest:?}"
    );
    assert!(ended, "the subscriber's response did not end: {rest:?}");
    publish(n.port, "twice", b"again");
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut v = json(&get(n.port, "/pub?id=twice"));
    while v["subscribers"] != 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        v = json(&get(n.port, "/pub?id=twice"));
    }
    assert_eq!(v["subscribers"], 0, "the re-created channel: {v}");
    n.stop();
}

// ---- 6. Header injection ----------------------------------------------------------------------------

/// Attack: a location with `push_stream_allowed_origins $http_origin;` and requests (GET and
/// the OPTIONS preflight) whose `Origin` carries %-encoded CR/LF or NUL:
/// `x%0d%0aSet-Cookie:%20injected=1`, the same with `%0a` or `%0d` alone, `x%00injected`.
///
/// Expected: no `Set-Cookie` header and no header line containing `injected`, and no
/// `Access-Control-Allow-Origin` header; a normal origin `http://example.com` is still
/// reflected.
#[test]
fn an_origin_with_encoded_crlf_or_nul_injects_no_header() {
    let _g = shared();
    let n = start(
        1,
        r#"location ~ /cors/(.*) { push_stream_subscriber polling; push_stream_channels_path $1; push_stream_allowed_origins $http_origin; }"#,
    );
    let mut failures = vec![];
    for method in ["GET", "OPTIONS"] {
        for origin in [
            "x%0d%0aSet-Cookie:%20injected=1",
            "x%0aSet-Cookie:%20injected=1",
            "x%0dSet-Cookie:%20injected=1",
            "x%0D%0ASet-Cookie:%20injected=1",
            "x%00injected",
        ] {
            let head = raw_head(
                n.port,
                &format!(
                    "{method} /cors/hi HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\nConnection: close\r\n\r\n"
                ),
            );
            assert!(head[0].starts_with("HTTP/1.1 "), "{head:?}");
            let bad: Vec<&String> = head
                .iter()
                .filter(|l| {
                    let k = l.split(':').next().unwrap_or("").trim();
                    k.eq_ignore_ascii_case("Set-Cookie")
                        || k.eq_ignore_ascii_case("Access-Control-Allow-Origin")
                        || l.contains("injected")
                })
                .collect();
            if !bad.is_empty() {
                failures.push(format!("{method} with Origin: {origin} -> {bad:?}"));
            }
        }
        let head = raw_head(
            n.port,
            &format!(
                "{method} /cors/hi HTTP/1.1\r\nHost: x\r\nOrigin: http://example.com\r\nConnection: close\r\n\r\n"
            ),
        );
        if !head
            .iter()
            .any(|l| l == "Access-Control-Allow-Origin: http://example.com")
        {
            failures.push(format!(
                "{method} with a normal origin, not reflected: {head:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    n.stop();
}

/// Attack: long-polling and polling requests with a JSONP callback that is not a name:
/// `?callback=alert(1)//`, `?callback=a%0d%0ab`, `?callback=%3Cscript%3E`,
/// `?callback=a;alert(1)` (the response body would start with it).
///
/// Expected: `400 Invalid JSONP callback name.`; `?callback=jQuery_123.cb$` works (200, body
/// starting `jQuery_123.cb$(`).
#[test]
fn a_jsonp_callback_that_is_not_a_name_is_refused() {
    let _g = shared();
    let n = start(1, "");
    publish(n.port, "jp", b"hello");
    let mut failures = vec![];
    for loc in ["/lp/jp.b1", "/poll/jp.b1"] {
        for cb in ["alert(1)//", "a%0d%0ab", "%3Cscript%3E", "a;alert(1)"] {
            let r = get(n.port, &format!("{loc}?callback={cb}"));
            if (r.status, explain(&r)) != (400, Some("Invalid JSONP callback name.")) {
                failures.push(format!(
                    "{loc}?callback={cb} -> {} {:?} {:?}",
                    r.status,
                    explain(&r),
                    r.text()
                ));
            }
        }
        let r = get(n.port, &format!("{loc}?callback=jQuery_123.cb$"));
        if r.status != 200 || !r.text().starts_with("jQuery_123.cb$(") {
            failures.push(format!(
                "{loc}?callback=jQuery_123.cb$ -> {} {:?}",
                r.status,
                r.text()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    n.stop();
}

// ---- 7. WebSocket resource bounds ---------------------------------------------------------------------

/// Attack: the upgrade request and a masked text frame in ONE `write` (so they arrive in one
/// packet), with `push_stream_websocket_allow_publish on`.
///
/// Expected: the frame is not lost with the handshake's read buffer: a streaming subscriber
/// of the channel receives the message.
#[test]
fn a_websocket_frame_sent_with_the_handshake_is_published() {
    let _g = shared();
    let n = start(1, "");
    let mut sub = Stream::open(n.port, "/sub/onepacket", &[]);
    let frame = ws_client_frame(true, 1, b"in the handshake packet", true);
    let ws = Ws::connect_with(n.port, "/ws/onepacket", &frame);
    assert_eq!(ws.status(), 101, "{}", ws.head);
    assert_eq!(
        line_within(&mut sub, Duration::from_secs(5)).as_deref(),
        Some("1|onepacket|in the handshake packet"),
        "the frame sent with the handshake"
    );
    drop(ws);
    n.stop();
}

/// Attack: `client_max_body_size 0` (nginx: unlimited) on a WebSocket location with
/// `push_stream_websocket_allow_publish on`, and text messages of 200 and 70 000 bytes.
///
/// Expected: both are published (another subscriber receives them), not closed as over a
/// limit.
#[test]
fn websocket_client_max_body_size_0_is_unlimited() {
    let _g = shared();
    let n = start(
        1,
        r#"location ~ /ws0/(.*) { push_stream_subscriber websocket; push_stream_channels_path $1; push_stream_websocket_allow_publish on; client_max_body_size 0; }"#,
    );
    let mut sub = Stream::open(n.port, "/sub/unl", &[]);
    let mut ws = Ws::connect(n.port, "/ws0/unl");
    assert_eq!(ws.status(), 101, "{}", ws.head);
    for (i, len) in [200usize, 70_000].into_iter().enumerate() {
        let text = "u".repeat(len);
        ws.send_text(&text);
        let line = line_within(&mut sub, Duration::from_secs(5));
        if line.is_none() {
            ws.stream
                .set_read_timeout(Some(Duration::from_secs(1)))
                .unwrap();
            panic!(
                "a {len}-byte message was not published (the WebSocket got close code {:?})",
                close_code(&mut ws)
            );
        }
        assert_eq!(
            line.unwrap(),
            format!("{}|unl|{text}", i + 1),
            "{len} bytes"
        );
    }
    n.stop();
}

/// Attack: with `client_body_timeout 2s` on the WebSocket location, a text frame with FIN=0
/// (a fragmented message begun) and then nothing.
///
/// Expected: the server sends a close frame with code 1008 once the timeout passes (not
/// before 1.5 s, within 10 s) and closes the connection.
#[test]
fn an_unfinished_fragmented_websocket_message_times_out_with_1008() {
    let _g = shared();
    let n = start(
        1,
        r#"location ~ /wst/(.*) { push_stream_subscriber websocket; push_stream_channels_path $1; push_stream_websocket_allow_publish on; client_body_timeout 2s; }"#,
    );
    let mut ws = Ws::connect(n.port, "/wst/unfinished");
    assert_eq!(ws.status(), 101, "{}", ws.head);
    ws.send_frame(false, 1, b"never finished", true);
    let t = Instant::now();
    ws.stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let code = close_code(&mut ws);
    let took = t.elapsed();
    assert_eq!(code, Some(1008), "after {took:?}");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(10),
        "closed after {took:?}"
    );
    assert!(
        ws.read_frame().is_none(),
        "the connection stays open after the close frame"
    );
    n.stop();
}

/// Attack: with `client_max_body_size 1k`, a fragmented text message that never ends: a
/// first fragment and 19 continuations (FIN=0) of 100 bytes each, one write each.
///
/// Expected: close code 1009 once the fragments pass 1 KiB.
#[test]
fn an_unfinished_fragmented_websocket_message_over_the_size_cap_is_1009() {
    let _g = shared();
    let n = start(1, "");
    let mut ws = Ws::connect(n.port, "/ws/fragcap");
    assert_eq!(ws.status(), 101, "{}", ws.head);
    for i in 0..20 {
        let f = ws_client_frame(false, if i == 0 { 1 } else { 0 }, &[b'f'; 100], true);
        if ws.stream.write_all(&f).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    ws.stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(close_code(&mut ws), Some(1009));
    n.stop();
}

/// Attack: with one worker, a WebSocket client (publishing not allowed) floods masked text
/// frames as fast as it can for 5 s; meanwhile, three times, a new streaming subscriber
/// connects and a message is published over HTTP.
///
/// Expected: each time the new subscriber's head, the publish's answer and the delivery to
/// both subscribers all come within 5 s: the flood does not monopolise the worker.
/// Skipped under memcheck (valgrind's slowdown is larger than the bound).
#[test]
fn a_websocket_frame_flood_does_not_monopolise_the_worker() {
    let _g = shared();
    if under_memcheck() {
        eprintln!("skipped under memcheck: the bound is on time");
        return;
    }
    let n = start(
        1,
        r#"location ~ /wsn/(.*) { push_stream_subscriber websocket; push_stream_channels_path $1; }"#,
    );
    let p = n.port;
    let mut early = Stream::open(p, "/sub/fl", &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let frame = ws_client_frame(true, 1, &[b'f'; 100], true);
    let frame_len = frame.len();
    let flooder = {
        let stop = stop.clone();
        let ws = Ws::connect(p, "/wsn/flood");
        assert_eq!(ws.status(), 101, "{}", ws.head);
        std::thread::spawn(move || {
            let f = flood(
                &ws.stream,
                &frame,
                usize::MAX,
                Duration::from_secs(8),
                &stop,
            );
            drop(ws);
            f
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let limit = Duration::from_secs(5);
    let mut worst = Duration::ZERO;
    for i in 1..=3 {
        let t = Instant::now();
        let mut late = open_within(p, "/sub/fl", limit).unwrap_or_else(|e| panic!("{i}: {e}"));
        assert_eq!(late.status, 200);
        let text = format!("during the flood {i}");
        let status = post_within(p, "/pub-nostore?id=fl", text.as_bytes(), limit)
            .unwrap_or_else(|e| panic!("{i}: {e}"));
        assert_eq!(status, 200);
        for (who, s) in [("early", &mut early), ("late", &mut late)] {
            let left = limit.saturating_sub(t.elapsed());
            let line = line_within(s, left);
            assert_eq!(
                line.as_deref(),
                Some(format!("{i}|fl|{text}").as_str()),
                "{i}: the {who} subscriber within {limit:?} of the publish"
            );
        }
        worst = worst.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(700));
    }
    stop.store(true, Ordering::Relaxed);
    let f = flooder.join().unwrap();
    eprintln!(
        "FIGURE ws flood: {} frames in {:?} (ended by {:?}); worst subscribe+publish+delivery {worst:?}",
        f.bytes / frame_len,
        f.elapsed,
        f.error
    );
    n.stop();
}

// ---- 8. Graceful shutdown ----------------------------------------------------------------------------

/// The old worker has begun its graceful shutdown (it logs this before it sets ngx_exiting
/// and closes its idle connections, all in one go; the short sleep covers the rest).
fn wait_shutting_down(n: &Nginx, pid: u32) {
    let needle = format!(" {pid}#");
    wait_for(
        &format!("worker {pid} to begin its shutdown"),
        Duration::from_secs(10),
        || {
            n.error_log()
                .lines()
                .any(|l| l.contains(&needle) && l.contains("gracefully shutting down"))
        },
    );
    std::thread::sleep(Duration::from_millis(300));
}

/// Attack: with `worker_shutdown_timeout 10s`, an HTTP/2 connection holds a streaming
/// subscriber (stream 1) and begins a second subscriber's request on stream 3: a HEADERS
/// frame (END_STREAM) without END_HEADERS. nginx reloads (SIGHUP); once the old worker is
/// shutting down, the client finishes the header block with a CONTINUATION frame, so the
/// request reaches the module in the exiting worker, on the same connection.
///
/// Expected: stream 3 is ended at once, never held until the shutdown timeout: the module
/// answers the subscriber as it ends the ones it held (`200`, its footer, END_STREAM within
/// 3 s), or nginx resets the stream or closes the connection. (Not `503`: a browser's
/// EventSource gives up on an error status, while an ended stream makes it reconnect, to a
/// new worker.)
///
/// Why a CONTINUATION: when the shutdown begins nginx sends GOAWAY on every HTTP/2
/// connection and skips the HEADERS of any later stream itself, so a new stream opened after
/// that never reaches the module; a stream whose HEADERS came before keeps the connection
/// open and is run once its header block is complete.
#[test]
fn a_new_http2_subscriber_on_a_worker_that_is_shutting_down_is_ended_at_once() {
    let _g = shared();
    let (mut n, h2port) = start_h2("worker_shutdown_timeout 10s;", "");
    let old = only_worker(&n);
    let mut h2 = H2::connect(h2port, &[]);
    h2.request(1, "GET", "/sub/gs", &[], true);
    let r = h2.response(1, Duration::from_secs(5), true);
    assert_eq!(r.status, Some(200), "{r:?}");
    let block = h2_header_block("GET", "/sub/gs-late", &[]);
    let (first, rest) = block.split_at(block.len() / 2);
    h2.send(H2_HEADERS, H2_END_STREAM, 3, first).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    n.reload();
    wait_shutting_down(&n, old);
    h2.send(H2_CONTINUATION, H2_END_HEADERS, 3, rest).unwrap();
    let r = h2.response(3, Duration::from_secs(3), false);
    eprintln!("FIGURE h2 subscriber during shutdown: {r:?}");
    assert!(
        (r.status == Some(200) && r.ended)
            || (r.status.is_none() && (r.reset.is_some() || r.closed)),
        "a new HTTP/2 subscriber on a worker that is shutting down: {r:?}"
    );
    drop(h2);
    n.stop();
}

/// Attack: with `worker_shutdown_timeout 10s`, a client sends a subscriber's request head
/// but the final CRLF; nginx reloads (SIGHUP); once the old worker is shutting down (the
/// connection is not idle, so nginx keeps it), the client sends the CRLF: the module gets a
/// new subscriber in a worker that is exiting.
///
/// Expected: the subscriber is ended at once (`200` and the end of its chunked response within
/// 3 s, as the subscribers the worker held were ended), or the connection closed with no
/// response; never a subscription held until the shutdown timeout.
#[test]
fn a_subscriber_request_finished_after_the_shutdown_began_is_ended_at_once() {
    let _g = shared();
    let mut n = Nginx::start_with(
        &conf("", "", ""),
        Options {
            workers: 1,
            main_extra: "worker_shutdown_timeout 10s;".into(),
            ..Default::default()
        },
    );
    let old = only_worker(&n);
    let mut c = connect(n.port);
    c.write_all(b"GET /sub/gs-late HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    n.reload();
    wait_shutting_down(&n, old);
    c.write_all(b"\r\n").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut got = vec![];
    let mut buf = [0u8; 4096];
    let closed = loop {
        if got.windows(4).any(|w| w == b"\r\n\r\n") {
            break false;
        }
        match read_some(&mut c, &mut buf) {
            Ok(0) => break true,
            Ok(k) => got.extend_from_slice(&buf[..k]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(e) => panic!(
                "no answer within 3 s ({e}); got {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    };
    let text = String::from_utf8_lossy(&got).into_owned();
    eprintln!("FIGURE http/1.1 subscriber during shutdown: closed={closed} {text:?}");
    if closed && got.is_empty() {
        n.stop();
        return;
    }
    let (status, _) = read_head(&mut BufReader::new(got.as_slice()));
    assert_eq!(status, 200, "{text:?}");
    // The end of the chunked response follows at once (not after worker_shutdown_timeout).
    let deadline = Instant::now() + Duration::from_secs(3);
    while !got.ends_with(b"0\r\n\r\n") {
        assert!(
            Instant::now() < deadline,
            "a new subscriber on a worker that is shutting down was held: {:?}",
            String::from_utf8_lossy(&got)
        );
        match read_some(&mut c, &mut buf) {
            Ok(0) => break,
            Ok(k) => got.extend_from_slice(&buf[..k]),
            Err(e) => panic!("{e} after {:?}", String::from_utf8_lossy(&got)),
        }
    }
    assert!(
        got.ends_with(b"0\r\n\r\n"),
        "the response did not end: {:?}",
        String::from_utf8_lossy(&got)
    );
    drop(c);
    n.stop();
}

/// Attack: request smuggling (CL.0). A request the module answers without reading its body
/// (statistics, a publisher's GET or OPTIONS, a non-admin publisher's DELETE (405), a polling
/// subscriber, an error answer) carries a body that is itself an HTTP request.
///
/// Expected: the body is discarded: the connection gives exactly one response per request
/// really sent (the smuggled `GET /pub?id=smuggled` is never answered and creates nothing).
#[test]
fn a_body_the_module_does_not_read_is_discarded_not_parsed_as_a_request() {
    let _g = shared();
    let n = start(1, "");
    let smuggled = "GET /pub?id=smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    for (method, path) in [
        ("GET", "/stats"),
        ("GET", "/pub?id=a"),
        ("OPTIONS", "/pub?id=a"),
        ("DELETE", "/pub-nostore?id=a"),
        ("GET", "/poll/a"),
        ("GET", "/sub/ALL"),
    ] {
        let mut s = connect(n.port);
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{smuggled}",
            smuggled.len()
        );
        let close = "GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        s.write_all(format!("{head}{close}").as_bytes()).unwrap();
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match read_some(&mut s, &mut buf) {
                Ok(0) => break,
                Ok(k) => all.extend_from_slice(&buf[..k]),
                Err(e) => panic!(
                    "{method} {path}: {e} after {:?}",
                    String::from_utf8_lossy(&all)
                ),
            }
        }
        let text = String::from_utf8_lossy(&all);
        assert_eq!(
            text.matches("HTTP/1.1 ").count(),
            2,
            "{method} {path}: one response per request sent, none for the body:\n{text}"
        );
    }
    assert_eq!(
        get(n.port, "/pub?id=smuggled").status,
        404,
        "the smuggled request ran"
    );
    n.stop();
}
