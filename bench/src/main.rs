//! pushbench: load tool for ngx-push-stream (and Nchan, for comparison).
//!
//! `pushbench run ...` is the orchestrator: it spawns `--procs` copies of itself as
//! `pushbench sub ...` (each holds its share of the subscribers: the open-files limit is per
//! process), waits until every subscriber is connected, then for each rate of `--rates`
//! publishes over HTTP (or, with `--amqp-url` and `--amqp-stream`, straight to a RabbitMQ
//! stream with publisher confirms) for `--duration` seconds, waits `--drain` seconds and asks every
//! subscriber process for its figures (deliveries, duplicates, HDR latency histogram, CPU).
//! Each message body carries `PSB<channel>.<seq>.<unix-ns>;` so delivery, duplicates and
//! end-to-end latency are measured whatever the framing (EventSource, WebSocket, streaming,
//! long-polling). It also samples nginx's CPU time (/proc/<pid>/stat) and RSS/PSS
//! (/proc/<pid>/smaps_rollup) for the master and its workers.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

type Res<T> = Result<T, String>;

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

// ---------------------------------------------------------------- arguments

#[derive(Clone, Debug)]
struct Args {
    kv: HashMap<String, String>,
}

impl Args {
    fn parse(v: &[String]) -> Args {
        let mut kv = HashMap::new();
        let mut i = 0;
        while i < v.len() {
            let k = v[i].trim_start_matches("--").to_string();
            if i + 1 < v.len() && !v[i + 1].starts_with("--") {
                kv.insert(k, v[i + 1].clone());
                i += 2;
            } else {
                kv.insert(k, "1".into());
                i += 1;
            }
        }
        Args { kv }
    }
    fn s(&self, k: &str, d: &str) -> String {
        self.kv.get(k).cloned().unwrap_or_else(|| d.to_string())
    }
    fn n(&self, k: &str, d: u64) -> u64 {
        self.kv.get(k).map(|x| x.parse().expect(k)).unwrap_or(d)
    }
    fn f(&self, k: &str, d: f64) -> f64 {
        self.kv.get(k).map(|x| x.parse().expect(k)).unwrap_or(d)
    }
}

const USAGE: &str = "usage:
  pushbench run --server 127.0.0.1:9101 --mode eventsource|websocket|streaming|long-polling
      --sub-path /ev/ --pub-path /pub?id= --subs N --channels C --procs P
      --rates R1,R2,.. --duration T --drain D [--size BYTES] [--pub-conns K]
      [--nginx-pid PID] [--stop-p99-ms MS] [--idle-secs S] [--label L] [--json-out FILE]
      [--chan-prefix bench] [--connect-concurrency 256]
      [--amqp-url amqp://guest:guest@127.0.0.1:5672/%2f --amqp-stream NAME]
        (publish to the stream with a channel header instead of POSTing; latency is then
         AMQP publish -> subscriber)
  pushbench amqp-watch --amqp-url URL --amqp-stream NAME [--idle-secs 2] [--max-secs 300]
      [--json-out FILE] [--ready-file FILE]
        (a plain consumer of the stream, from its next message on, with no nginx in the path:
         AMQP publish -> consumer latency of whatever the run publishes; it ends once messages
         stop for --idle-secs after the first)
  (pushbench sub ... is the subscriber process the orchestrator spawns)";

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if argv.len() < 2 {
        eprintln!("{USAGE}");
        std::process::exit(2);
    }
    let args = Args::parse(&argv[2..]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let local = tokio::task::LocalSet::new();
    let r = match argv[1].as_str() {
        "run" => local.block_on(&rt, orchestrate(args)),
        "sub" => local.block_on(&rt, sub_process(args)),
        "amqp-watch" => local.block_on(&rt, amqp_watch(args)),
        _ => Err(USAGE.to_string()),
    };
    if let Err(e) = r {
        eprintln!("pushbench: {e}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------- HTTP helpers

/// Chunked transfer-encoding decoder (a state machine fed with whatever the socket gives).
#[derive(Default)]
struct Chunked {
    st: u8, // 0 size, 1 ext, 2 size-lf, 3 data, 4 data-cr, 5 data-lf, 6 done
    size: u64,
}

impl Chunked {
    fn feed(&mut self, mut inp: &[u8], out: &mut Vec<u8>) {
        while !inp.is_empty() {
            match self.st {
                0 | 1 => {
                    let c = inp[0];
                    inp = &inp[1..];
                    if c == b'\r' {
                        self.st = 2;
                    } else if c == b'\n' {
                        self.after_size();
                    } else if self.st == 0 {
                        match (c as char).to_digit(16) {
                            Some(d) => self.size = self.size * 16 + d as u64,
                            None => self.st = 1,
                        }
                    }
                }
                2 => {
                    inp = &inp[1..];
                    self.after_size();
                }
                3 => {
                    let n = (self.size as usize).min(inp.len());
                    out.extend_from_slice(&inp[..n]);
                    inp = &inp[n..];
                    self.size -= n as u64;
                    if self.size == 0 {
                        self.st = 4;
                    }
                }
                4 | 5 => {
                    let c = inp[0];
                    inp = &inp[1..];
                    if c == b'\n' || self.st == 5 {
                        self.st = 0;
                        self.size = 0;
                    } else {
                        self.st = 5;
                    }
                }
                _ => return,
            }
        }
    }
    fn after_size(&mut self) {
        self.st = if self.size == 0 { 6 } else { 3 };
    }
    fn done(&self) -> bool {
        self.st == 6
    }
}

struct Head {
    status: u16,
    chunked: bool,
    content_length: Option<usize>,
    headers: Vec<(String, String)>,
}

impl Head {
    fn get(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

thread_local! {
    /// The one read buffer of a process: every connection reads through it, so an idle
    /// subscriber holds no read buffer of its own (scenario 7 holds hundreds of thousands).
    static READ_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0u8; 64 * 1024]);
}

/// Appends what the socket has to `out` (through the shared read buffer). Ok(0): closed.
async fn read_some(s: &mut TcpStream, out: &mut Vec<u8>) -> std::io::Result<usize> {
    loop {
        s.readable().await?;
        let r = READ_BUF.with(|b| {
            let mut b = b.borrow_mut();
            let n = s.try_read(&mut b)?;
            out.extend_from_slice(&b[..n]);
            Ok::<usize, std::io::Error>(n)
        });
        match r {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            r => return r,
        }
    }
}

/// Reads a response head; what follows it stays in `buf`.
async fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> Res<Head> {
    loop {
        if let Some(p) = find(buf, b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&buf[..p]).to_string();
            buf.drain(..p + 4);
            let mut lines = text.split("\r\n");
            let status_line = lines.next().unwrap_or("");
            let status = status_line.split(' ').nth(1).and_then(|x| x.parse().ok()).ok_or("bad status line")?;
            let mut h = Head { status, chunked: false, content_length: None, headers: vec![] };
            for l in lines {
                if let Some((k, v)) = l.split_once(':') {
                    let (k, v) = (k.trim().to_string(), v.trim().to_string());
                    if k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked") {
                        h.chunked = true;
                    }
                    if k.eq_ignore_ascii_case("content-length") {
                        h.content_length = v.parse().ok();
                    }
                    h.headers.push((k, v));
                }
            }
            return Ok(h);
        }
        let n = read_some(s, buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before the response head".into());
        }
    }
}

/// Reads a whole (non-streaming) response body.
async fn read_body(s: &mut TcpStream, h: &Head, buf: &mut Vec<u8>) -> Res<Vec<u8>> {
    let mut out = Vec::new();
    if h.chunked {
        let mut d = Chunked::default();
        let mut pending = std::mem::take(buf);
        d.feed(&pending, &mut out);
        while !d.done() {
            pending.clear();
            let n = read_some(s, &mut pending).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("closed inside a chunked body".into());
            }
            d.feed(&pending, &mut out);
        }
        return Ok(out);
    }
    let want = h.content_length.unwrap_or(0);
    while buf.len() < want {
        let n = read_some(s, buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed inside a body".into());
        }
    }
    out.extend(buf.drain(..want));
    Ok(out)
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

async fn connect_from(src: Ipv4Addr, dst: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    {
        use std::os::fd::AsRawFd;
        let one: libc::c_int = 1;
        // IP_BIND_ADDRESS_NO_PORT: pick the port at connect() time (4-tuple unique).
        unsafe {
            libc::setsockopt(sock.as_raw_fd(), libc::IPPROTO_IP, 24, &one as *const _ as *const libc::c_void, 4);
        }
    }
    sock.bind(SocketAddr::V4(SocketAddrV4::new(src, 0)))?;
    let s = sock.connect(dst).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

// ---------------------------------------------------------------- subscriber process

struct Totals {
    unique: u64,
    dups: u64,
    hist: Histogram<u64>,
    connected: u64,
    failed: u64,
    /// Not tried: the machine's memory ran low first (`--min-free-mb`).
    skipped: u64,
    closed: u64,
    per_channel_connected: Vec<u64>,
    last_connect: Option<Instant>,
    errors: HashMap<String, u64>,
}

type Shared = Rc<RefCell<Totals>>;

struct Tracker {
    seen: Vec<u64>,
    /// Messages (seq < 64) of the channel every subscriber also listens to (`--also`).
    seen_also: u64,
    scan: Vec<u8>,
}

impl Tracker {
    /// Scans decoded payload bytes for `PSB<ch>.<seq>.<ns>;` markers.
    fn feed(&mut self, data: &[u8], t: &Shared, also: &str) {
        self.scan.extend_from_slice(data);
        let mut i = 0;
        let b = &self.scan;
        let mut keep_from = b.len().saturating_sub(2);
        while let Some(p) = find(&b[i..], b"PSB") {
            let start = i + p;
            let Some(end) = b[start..].iter().position(|&c| c == b';') else {
                keep_from = start;
                break;
            };
            let field = std::str::from_utf8(&b[start + 3..start + end]).unwrap_or("");
            let mut it = field.split('.');
            let (ch, seq, ns) = (it.next(), it.next(), it.next());
            if let (Some(seq), Some(ns)) = (seq.and_then(|x| x.parse::<u64>().ok()), ns.and_then(|x| x.parse::<u64>().ok())) {
                let now = now_ns();
                let (w, bit) = ((seq / 64) as usize, seq % 64);
                let word = if !also.is_empty() && ch == Some(also) && seq < 64 {
                    &mut self.seen_also
                } else {
                    if self.seen.len() <= w {
                        self.seen.resize(w + 1, 0);
                    }
                    &mut self.seen[w]
                };
                let mut t = t.borrow_mut();
                if *word & (1 << bit) != 0 {
                    t.dups += 1;
                } else {
                    *word |= 1 << bit;
                    t.unique += 1;
                    let us = now.saturating_sub(ns) / 1000;
                    t.hist.saturating_record(us.max(1));
                }
            }
            i = start + end + 1;
            keep_from = i;
        }
        self.scan.drain(..keep_from.min(self.scan.len()));
        if self.scan.len() > 1 << 16 {
            self.scan.clear();
        }
    }
}

struct SubCfg {
    server: SocketAddr,
    mode: String,
    sub_path: String,
    chan_prefix: String,
    /// A second channel on every subscriber's path (`<prefix><chan>/<prefix><also>`); empty:
    /// none.
    also: String,
    /// Set when the machine's available memory fell below `--min-free-mb`: subscribers not
    /// connected yet give up (counted as skipped).
    stop: Rc<std::cell::Cell<bool>>,
}

async fn subscriber(cfg: Rc<SubCfg>, src: Ipv4Addr, chan: usize, t: Shared, sem: Rc<tokio::sync::Semaphore>) {
    let permit = sem.acquire().await.unwrap();
    if cfg.stop.get() {
        t.borrow_mut().skipped += 1;
        return;
    }
    let r = subscribe(&cfg, src, chan, &t, Some(permit)).await;
    let mut tt = t.borrow_mut();
    match r {
        Ok(true) => tt.closed += 1,
        Ok(false) => {}
        Err((established, e)) => {
            if established {
                tt.closed += 1;
            } else {
                tt.failed += 1;
            }
            *tt.errors.entry(e).or_default() += 1;
        }
    }
}

/// Ok(true): established then closed by the server.
async fn subscribe(
    cfg: &SubCfg,
    src: Ipv4Addr,
    chan: usize,
    t: &Shared,
    mut permit: Option<tokio::sync::SemaphorePermit<'_>>,
) -> Result<bool, (bool, String)> {
    let path = if cfg.also.is_empty() {
        format!("{}{}{}", cfg.sub_path, cfg.chan_prefix, chan)
    } else {
        format!("{}{}{}/{}{}", cfg.sub_path, cfg.chan_prefix, chan, cfg.chan_prefix, cfg.also)
    };
    let mut s = connect_from(src, cfg.server).await.map_err(|e| (false, format!("connect: {e}")))?;
    let host = cfg.server;
    let req = match cfg.mode.as_str() {
        "websocket" => format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ),
        "eventsource" => format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n"),
        "long-polling" => return long_poll(cfg, s, path, chan, t, permit).await,
        _ => format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n"),
    };
    s.write_all(req.as_bytes()).await.map_err(|e| (false, format!("write: {e}")))?;
    let mut buf = Vec::new();
    let h = read_head(&mut s, &mut buf).await.map_err(|e| (false, e))?;
    let want = if cfg.mode == "websocket" { 101 } else { 200 };
    if h.status != want {
        return Err((false, format!("status {}", h.status)));
    }
    established(t, chan);
    drop(permit.take());
    let mut tr = Tracker { seen: Vec::new(), seen_also: 0, scan: Vec::new() };
    let mut ch = Chunked::default();
    let mut ws = Vec::new();
    let mut out = Vec::new();
    let chunked = h.chunked;
    drop(h);
    let mut pending = std::mem::take(&mut buf);
    loop {
        if !pending.is_empty() {
            out.clear();
            if cfg.mode == "websocket" {
                ws.extend_from_slice(&pending);
                if ws_deframe(&mut ws, &mut out) {
                    return Ok(true);
                }
            } else if chunked {
                ch.feed(&pending, &mut out);
            } else {
                out.extend_from_slice(&pending);
            }
            tr.feed(&out, t, &cfg.also);
            // An idle subscriber keeps little buffer capacity (not the head's).
            pending.clear();
            pending.shrink_to(256);
            out.shrink_to(256);
        }
        let n = read_some(&mut s, &mut pending).await.map_err(|e| (true, format!("read: {e}")))?;
        if n == 0 {
            return Ok(true);
        }
    }
}

fn established(t: &Shared, chan: usize) {
    let mut tt = t.borrow_mut();
    tt.connected += 1;
    tt.per_channel_connected[chan] += 1;
    tt.last_connect = Some(Instant::now());
}

/// Server-to-client frames are unmasked. Text/continuation payloads go to `out`.
/// Returns true on a close frame.
fn ws_deframe(buf: &mut Vec<u8>, out: &mut Vec<u8>) -> bool {
    loop {
        if buf.len() < 2 {
            return false;
        }
        let op = buf[0] & 0x0f;
        let masked = buf[1] & 0x80 != 0;
        let mut len = (buf[1] & 0x7f) as usize;
        let mut p = 2;
        if len == 126 {
            if buf.len() < 4 {
                return false;
            }
            len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
            p = 4;
        } else if len == 127 {
            if buf.len() < 10 {
                return false;
            }
            len = u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize;
            p = 10;
        }
        if masked {
            p += 4;
        }
        if buf.len() < p + len {
            return false;
        }
        if op == 0 || op == 1 || op == 2 {
            out.extend_from_slice(&buf[p..p + len]);
        }
        buf.drain(..p + len);
        if op == 8 {
            return true;
        }
    }
}

/// Long-polling: one request after the other on a keep-alive connection, each carrying the
/// `If-None-Match`/`If-Modified-Since` of the previous answer (both modules speak this).
async fn long_poll(
    cfg: &SubCfg,
    mut s: TcpStream,
    path: String,
    chan: usize,
    t: &Shared,
    mut permit: Option<tokio::sync::SemaphorePermit<'_>>,
) -> Result<bool, (bool, String)> {
    let host = cfg.server;
    let mut tr = Tracker { seen: Vec::new(), seen_also: 0, scan: Vec::new() };
    let mut etag: Option<String> = None;
    let mut lm: Option<String> = None;
    let mut buf = Vec::new();
    let mut first = true;
    loop {
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n");
        // The first request asks for what comes next (no old messages).
        let lm_v = lm.clone().unwrap_or_else(|| httpdate_now());
        req.push_str(&format!("If-Modified-Since: {lm_v}\r\n"));
        req.push_str(&format!("If-None-Match: {}\r\n\r\n", etag.clone().unwrap_or_else(|| "0".into())));
        s.write_all(req.as_bytes()).await.map_err(|e| (!first, format!("write: {e}")))?;
        if first {
            // A long-poll answers nothing until a message comes: count it as established
            // once the request is written.
            established(t, chan);
            drop(permit.take());
            first = false;
        }
        let h = read_head(&mut s, &mut buf).await.map_err(|e| (true, e))?;
        let body = read_body(&mut s, &h, &mut buf).await.map_err(|e| (true, e))?;
        match h.status {
            200 => {
                if let Some(e) = h.get("etag") {
                    etag = Some(e.trim_start_matches("W/").to_string());
                }
                if let Some(v) = h.get("last-modified") {
                    lm = Some(v.to_string());
                }
                tr.feed(&body, t, &cfg.also);
            }
            304 | 408 => {}
            x => return Err((true, format!("status {x}"))),
        }
        if h.get("connection").map(|v| v.eq_ignore_ascii_case("close")).unwrap_or(false) {
            return Ok(true);
        }
    }
}

fn httpdate_now() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let days = secs.div_euclid(86400);
    let sod = secs.rem_euclid(86400);
    // civil from days (Howard Hinnant)
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    let wd = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
    let mn = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"][(m - 1) as usize];
    format!("{wd}, {d:02} {mn} {y} {:02}:{:02}:{:02} GMT", sod / 3600, sod % 3600 / 60, sod % 60)
}

fn rusage_self() -> (f64, f64) {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (tv(ru.ru_utime), tv(ru.ru_stime))
}

fn hist_b64(h: &Histogram<u64>) -> String {
    use base64::Engine as _;
    let mut v = Vec::new();
    V2Serializer::new().serialize(h, &mut v).unwrap();
    base64::engine::general_purpose::STANDARD.encode(v)
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).unwrap()
}

async fn sub_process(a: Args) -> Res<()> {
    let server: SocketAddr = a.s("server", "127.0.0.1:9101").parse().map_err(|e| format!("server: {e}"))?;
    let first = a.n("first", 0) as usize; // global index of this process's first subscriber
    let count = a.n("count", 1) as usize;
    let channels = a.n("channels", 1) as usize;
    let ip_base = a.n("ip-block", 1) as u8; // 127.<ip-block>.x.y
    let cfg = Rc::new(SubCfg {
        server,
        mode: a.s("mode", "eventsource"),
        sub_path: a.s("sub-path", "/ev/"),
        chan_prefix: a.s("chan-prefix", "bench"),
        also: a.s("also", ""),
        stop: Rc::new(std::cell::Cell::new(false)),
    });
    // The memory guard: no new connection once the machine's available memory is below
    // --min-free-mb (0: off); checked every 100 ms while connecting.
    let min_free_kb = a.n("min-free-mb", 0) * 1024;
    let placed = Rc::new(std::cell::Cell::new(false));
    if min_free_kb > 0 {
        let stop = cfg.stop.clone();
        let placed = placed.clone();
        tokio::task::spawn_local(async move {
            while !placed.get() {
                if meminfo_kb("MemAvailable:").is_some_and(|m| m < min_free_kb) {
                    stop.set(true);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
    let t: Shared = Rc::new(RefCell::new(Totals {
        unique: 0,
        dups: 0,
        hist: new_hist(),
        connected: 0,
        failed: 0,
        skipped: 0,
        closed: 0,
        per_channel_connected: vec![0; channels],
        last_connect: None,
        errors: HashMap::new(),
    }));
    let sem = Rc::new(tokio::sync::Semaphore::new(a.n("connect-concurrency", 256) as usize));
    let start = Instant::now();
    for i in 0..count {
        let g = first + i;
        let chan = g % channels;
        // 250 source addresses per /16 block row; ports are per (source, destination) pair.
        let src = Ipv4Addr::new(127, ip_base, (1 + (i / 250) % 250) as u8, (1 + i % 250) as u8);
        let fut = subscriber(cfg.clone(), src, chan, t.clone(), sem.clone());
        if i == 0 && std::env::var_os("PUSHBENCH_FUTURE_SIZE").is_some() {
            eprintln!("subscriber future: {} bytes", std::mem::size_of_val(&fut));
        }
        tokio::task::spawn_local(fut);
    }
    // Wait for every subscriber to be established or failed.
    loop {
        {
            let tt = t.borrow();
            if (tt.connected + tt.failed + tt.skipped) as usize >= count {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    placed.set(true);
    let secs = t.borrow().last_connect.map(|l| (l - start).as_secs_f64()).unwrap_or(0.0);
    {
        let tt = t.borrow();
        let rss_kb = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|t| t.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse::<u64>().ok())
            .unwrap_or(0);
        let msg = json!({"ready": true, "connected": tt.connected, "failed": tt.failed, "skipped": tt.skipped, "connect_secs": secs, "rss_kb": rss_kb,
            "per_channel": tt.per_channel_connected, "errors": tt.errors});
        println!("{msg}");
        std::io::stdout().flush().ok();
    }
    // Commands on stdin: "report" (print and reset the step's figures), "quit".
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(l)) = lines.next_line().await {
        match l.trim() {
            "report" => {
                let mut tt = t.borrow_mut();
                let (u, s) = rusage_self();
                let msg = json!({"unique": tt.unique, "dups": tt.dups, "hist": hist_b64(&tt.hist),
                    "closed": tt.closed, "cpu_user": u, "cpu_sys": s, "errors": tt.errors});
                tt.unique = 0;
                tt.dups = 0;
                tt.hist.reset();
                drop(tt);
                println!("{msg}");
                std::io::stdout().flush().ok();
            }
            "peek" => {
                let tt = t.borrow();
                println!("{}", json!({"unique": tt.unique, "dups": tt.dups}));
                std::io::stdout().flush().ok();
            }
            "quit" => break,
            _ => {}
        }
    }
    std::process::exit(0);
}

// ---------------------------------------------------------------- nginx probes

fn clk_tck() -> f64 {
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

fn nginx_pids(master: u32) -> Vec<u32> {
    let mut v = vec![master];
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
            if let Ok(st) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                if let Some(r) = st.rfind(')') {
                    let f: Vec<&str> = st[r + 2..].split(' ').collect();
                    if f.get(1).and_then(|x| x.parse::<u32>().ok()) == Some(master) {
                        v.push(pid);
                    }
                }
            }
        }
    }
    v
}

/// (user s, kernel s) of the master and its workers.
fn nginx_cpu(master: u32) -> (f64, f64) {
    let (mut u, mut s) = (0.0, 0.0);
    for pid in nginx_pids(master) {
        if let Ok(st) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            if let Some(r) = st.rfind(')') {
                let f: Vec<&str> = st[r + 2..].split(' ').collect();
                // fields 14 and 15 of stat (utime, stime): index 11 and 12 after the comm
                u += f[11].parse::<f64>().unwrap_or(0.0) / clk_tck();
                s += f[12].parse::<f64>().unwrap_or(0.0) / clk_tck();
            }
        }
    }
    (u, s)
}

/// A field of /proc/meminfo, in kB (`key` with its colon, e.g. `"Slab:"`).
fn meminfo_kb(key: &str) -> Option<u64> {
    let t = std::fs::read_to_string("/proc/meminfo").ok()?;
    t.lines().find(|l| l.starts_with(key))?.split_whitespace().nth(1)?.parse().ok()
}

/// (RSS kB, PSS kB) summed over the master and its workers.
fn nginx_mem(master: u32) -> (u64, u64) {
    let (mut rss, mut pss) = (0, 0);
    for pid in nginx_pids(master) {
        if let Ok(t) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
            for l in t.lines() {
                let num = || l.split_whitespace().nth(1).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
                if l.starts_with("Rss:") {
                    rss += num();
                } else if l.starts_with("Pss:") {
                    pss += num();
                }
            }
        }
    }
    (rss, pss)
}

// ---------------------------------------------------------------- publisher

struct PubStats {
    ok: Vec<u64>, // per channel: messages accepted (2xx)
    failed: u64,
    hist: Histogram<u64>, // publish request round trip, µs
    errors: HashMap<String, u64>,
}

/// Where a publisher sends: nginx over HTTP, or a RabbitMQ stream (a channel with confirms).
#[derive(Clone)]
enum Via {
    Http,
    Amqp(lapin::Channel, Rc<String>),
}

/// A channel with publisher confirms on a new connection to `url`.
async fn amqp_channel(url: &str) -> Res<lapin::Channel> {
    let conn = lapin::Connection::connect_with_runtime(
        url,
        lapin::ConnectionProperties::default(),
        async_rs::Runtime::tokio_current(),
    )
    .await
    .map_err(|e| format!("amqp connect: {e}"))?;
    let ch = conn.create_channel().await.map_err(|e| format!("amqp channel: {e}"))?;
    ch.confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .map_err(|e| format!("amqp confirm.select: {e}"))?;
    std::mem::forget(conn); // lives for the run
    Ok(ch)
}

/// Publishes one message to the stream and waits for the broker's confirm.
async fn amqp_publish(ch: &lapin::Channel, stream: &str, channel: &str, body: &[u8]) -> Res<()> {
    let mut h = lapin::types::FieldTable::default();
    h.insert(
        "channel".into(),
        lapin::types::AMQPValue::LongString(lapin::types::LongString::from(channel.as_bytes().to_vec())),
    );
    let confirm = ch
        .basic_publish(
            "".into(),
            stream.into(),
            lapin::options::BasicPublishOptions::default(),
            body,
            lapin::BasicProperties::default().with_headers(h),
        )
        .await
        .map_err(|e| format!("amqp publish: {e}"))?
        .await
        .map_err(|e| format!("amqp confirm: {e}"))?;
    if confirm.is_ack() {
        Ok(())
    } else {
        Err("amqp nack".into())
    }
}

/// `amqp-watch`: the broker's own share of scenario 6's latency. Consumes the stream the way
/// the module does (stream offset "next", prefetch, acknowledgements in batches) and measures
/// the `PSB` timestamps of what arrives, so the report can put "RabbitMQ alone" beside
/// "AMQP publish -> subscriber" from the same run.
async fn amqp_watch(a: Args) -> Res<()> {
    use futures_lite::StreamExt;
    let url = a.s("amqp-url", "amqp://guest:guest@127.0.0.1:5672/%2f");
    let stream = a.s("amqp-stream", "");
    if stream.is_empty() {
        return Err("amqp-watch needs --amqp-stream".into());
    }
    let idle = Duration::from_secs_f64(a.f("idle-secs", 2.0));
    let max = Duration::from_secs_f64(a.f("max-secs", 300.0));
    let conn = lapin::Connection::connect_with_runtime(
        &url,
        lapin::ConnectionProperties::default(),
        async_rs::Runtime::tokio_current(),
    )
    .await
    .map_err(|e| format!("amqp connect: {e}"))?;
    let ch = conn.create_channel().await.map_err(|e| format!("amqp channel: {e}"))?;
    let prefetch: u16 = 1000;
    ch.basic_qos(prefetch, lapin::options::BasicQosOptions::default())
        .await
        .map_err(|e| format!("amqp basic.qos: {e}"))?;
    let mut args = lapin::types::FieldTable::default();
    args.insert("x-stream-offset".into(), lapin::types::AMQPValue::LongString("next".into()));
    let mut consumer = ch
        .basic_consume(
            stream.as_str().into(),
            "pushbench-watch".into(),
            lapin::options::BasicConsumeOptions::default(),
            args,
        )
        .await
        .map_err(|e| format!("amqp consume {stream}: {e}"))?;
    if let Some(f) = a.kv.get("ready-file") {
        std::fs::write(f, b"consuming\n").map_err(|e| format!("{f}: {e}"))?;
    }
    let mut hist = new_hist();
    let mut seen = std::collections::HashSet::new();
    let (mut dups, mut unmarked) = (0u64, 0u64);
    let started = Instant::now();
    let mut first: Option<Instant> = None;
    let mut unacked = 0u64;
    loop {
        let wait = if first.is_some() { idle } else { max.saturating_sub(started.elapsed()) };
        let d = match tokio::time::timeout(wait, consumer.next()).await {
            Err(_) => break,
            Ok(None) => return Err("the broker cancelled the consumer".into()),
            Ok(Some(Err(e))) => return Err(format!("amqp consumer: {e}")),
            Ok(Some(Ok(d))) => d,
        };
        let now = now_ns();
        first.get_or_insert_with(Instant::now);
        // The body starts with PSB<channel>.<seq>.<unix-ns>;
        let marker = d.data.strip_prefix(b"PSB").and_then(|b| {
            let end = b.iter().position(|&c| c == b';')?;
            let f: Vec<u64> = std::str::from_utf8(&b[..end]).ok()?.split('.').map(|x| x.parse().ok()).collect::<Option<_>>()?;
            (f.len() == 3).then(|| (f[0], f[1], f[2]))
        });
        match marker {
            Some((chan, seq, ns)) if seen.insert((chan, seq)) => {
                hist.saturating_record((now.saturating_sub(ns) / 1000).max(1));
            }
            Some(_) => dups += 1,
            None => unmarked += 1,
        }
        unacked += 1;
        if unacked >= (prefetch / 4) as u64 {
            ch.basic_ack(d.delivery_tag, lapin::options::BasicAckOptions { multiple: true })
                .await
                .map_err(|e| format!("amqp ack: {e}"))?;
            unacked = 0;
        }
        if started.elapsed() > max {
            break;
        }
    }
    let out = json!({"messages": hist.len(), "duplicates": dups, "unmarked": unmarked, "latency": lat_json(&hist)});
    if let Some(f) = a.kv.get("json-out") {
        std::fs::write(f, serde_json::to_vec_pretty(&out).unwrap()).map_err(|e| format!("{f}: {e}"))?;
    }
    println!("{out}");
    Ok(())
}

async fn publisher_conn(
    via: Via,
    server: SocketAddr,
    pub_path: Rc<String>,
    chan_prefix: Rc<String>,
    size: usize,
    channels: usize,
    next: Rc<RefCell<u64>>,
    seqs: Rc<RefCell<Vec<u64>>>,
    start: tokio::time::Instant,
    rate: f64,
    end: tokio::time::Instant,
    st: Rc<RefCell<PubStats>>,
) {
    let mut conn: Option<TcpStream> = None;
    let mut buf = Vec::new();
    loop {
        let k = {
            let mut n = next.borrow_mut();
            *n += 1;
            *n - 1
        };
        let due = start + Duration::from_secs_f64(k as f64 / rate);
        if due >= end || tokio::time::Instant::now() >= end {
            return;
        }
        tokio::time::sleep_until(due).await;
        let chan = (k as usize) % channels;
        let seq = {
            let mut s = seqs.borrow_mut();
            s[chan] += 1;
            s[chan]
        };
        let mut body = format!("PSB{chan}.{seq}.{};", now_ns());
        while body.len() < size {
            body.push('x');
        }
        let req = format!(
            "POST {pub_path}{chan_prefix}{chan} HTTP/1.1\r\nHost: {server}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let t0 = Instant::now();
        if let Via::Amqp(ch, stream) = &via {
            let r = amqp_publish(ch, stream, &format!("{chan_prefix}{chan}"), body.as_bytes()).await;
            let mut st = st.borrow_mut();
            match r {
                Ok(()) => {
                    st.ok[chan] += 1;
                    st.hist.saturating_record((t0.elapsed().as_micros() as u64).max(1));
                }
                Err(e) => {
                    st.failed += 1;
                    *st.errors.entry(e).or_default() += 1;
                }
            }
            continue;
        }
        let r: Res<u16> = async {
            if conn.is_none() {
                buf.clear();
                conn = Some(TcpStream::connect(server).await.map_err(|e| e.to_string())?);
                conn.as_ref().unwrap().set_nodelay(true).ok();
            }
            let s = conn.as_mut().unwrap();
            s.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
            let h = read_head(s, &mut buf).await?;
            read_body(s, &h, &mut buf).await?;
            if h.get("connection").map(|v| v.eq_ignore_ascii_case("close")).unwrap_or(false) {
                conn = None;
            }
            Ok(h.status)
        }
        .await;
        let mut st = st.borrow_mut();
        match r {
            Ok(c) if (200..300).contains(&c) => {
                st.ok[chan] += 1;
                st.hist.saturating_record((t0.elapsed().as_micros() as u64).max(1));
            }
            Ok(c) => {
                st.failed += 1;
                *st.errors.entry(format!("status {c}")).or_default() += 1;
            }
            Err(e) => {
                st.failed += 1;
                conn = None;
                *st.errors.entry(e).or_default() += 1;
            }
        }
    }
}

// ---------------------------------------------------------------- orchestrator

struct Child {
    proc_: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    out: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

async fn child_line(c: &mut Child) -> Res<Value> {
    let l = c.out.next_line().await.map_err(|e| e.to_string())?.ok_or("a subscriber process ended")?;
    serde_json::from_str(&l).map_err(|e| format!("{e}: {l}"))
}

fn pct(h: &Histogram<u64>, q: f64) -> f64 {
    if h.len() == 0 {
        return f64::NAN;
    }
    h.value_at_quantile(q) as f64 / 1000.0
}

fn lat_json(h: &Histogram<u64>) -> Value {
    json!({"count": h.len(), "p50_ms": pct(h, 0.5), "p90_ms": pct(h, 0.9), "p99_ms": pct(h, 0.99),
        "p999_ms": pct(h, 0.999), "max_ms": if h.len() == 0 { f64::NAN } else { h.max() as f64 / 1000.0 },
        "mean_ms": h.mean() / 1000.0})
}

/// `--oneshot`: one message (`PSB<ch>.1.<ns>;`) to each of `chans` (POSTed one after the
/// other on one keep-alive connection), then the time until the subscribers had `expected`
/// of them (the processes asked every 20 ms), at most `max_wait` seconds; what was lost.
async fn one_shot(
    children: &mut [Child],
    server: SocketAddr,
    pub_path: &str,
    prefix: &str,
    chans: &[String],
    expected: u64,
    max_wait: f64,
) -> Res<Value> {
    let t0 = Instant::now();
    // Every wait below is bounded: a stuck nginx or client process ends the run with an error.
    let limit = Duration::from_secs_f64(max_wait.max(1.0));
    let bounded = |what: &'static str| move |_| format!("{what}: no answer within {limit:?}");
    let mut conn = TcpStream::connect(server).await.map_err(|e| e.to_string())?;
    conn.set_nodelay(true).ok();
    let mut buf = Vec::new();
    let (mut ok, mut refused) = (0u64, 0u64);
    // A publish nginx does not answer within the limit ends the publishing (the connection's
    // state is unknown); the deliveries are still waited for and counted.
    let mut unanswered = false;
    for ch in chans {
        let body = format!("PSB{ch}.1.{};", now_ns());
        let req = format!(
            "POST {pub_path}{prefix}{ch} HTTP/1.1\r\nHost: {server}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        conn.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
        let Ok(h) = tokio::time::timeout(limit, read_head(&mut conn, &mut buf)).await else {
            unanswered = true;
            break;
        };
        let h = h?;
        let Ok(body) = tokio::time::timeout(limit, read_body(&mut conn, &h, &mut buf)).await else {
            unanswered = true;
            break;
        };
        body?;
        if (200..300).contains(&h.status) {
            ok += 1;
        } else {
            refused += 1;
        }
    }
    let publish_secs = t0.elapsed().as_secs_f64();
    let mut got = 0;
    while t0.elapsed().as_secs_f64() < max_wait {
        got = 0;
        for c in children.iter_mut() {
            c.stdin.write_all(b"peek\n").await.map_err(|e| e.to_string())?;
            got += tokio::time::timeout(limit, child_line(c)).await.map_err(bounded("a client process"))??["unique"]
                .as_u64()
                .unwrap_or(0);
        }
        if got >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let wall = t0.elapsed().as_secs_f64();
    let mut hist = new_hist();
    let (mut unique, mut dups) = (0u64, 0u64);
    for c in children.iter_mut() {
        c.stdin.write_all(b"report\n").await.map_err(|e| e.to_string())?;
        let v = tokio::time::timeout(limit, child_line(c)).await.map_err(bounded("a client process"))??;
        unique += v["unique"].as_u64().unwrap();
        dups += v["dups"].as_u64().unwrap();
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::STANDARD.decode(v["hist"].as_str().unwrap()).unwrap();
        let h: Histogram<u64> = Deserializer::new().deserialize(&mut &raw[..]).map_err(|e| format!("{e:?}"))?;
        hist.add(&h).unwrap();
    }
    Ok(json!({
        "published": ok, "publish_refused": refused, "publish_secs": publish_secs,
        "publish_unanswered": unanswered,
        "expected": expected, "delivered": unique, "lost": expected.saturating_sub(unique), "duplicates": dups,
        "all_delivered": got >= expected, "secs_until_last": if got >= expected { wall } else { f64::NAN },
        "latency": lat_json(&hist),
    }))
}

async fn orchestrate(a: Args) -> Res<()> {
    let server: SocketAddr = a.s("server", "127.0.0.1:9101").parse().map_err(|e| format!("server: {e}"))?;
    let subs = a.n("subs", 100) as usize;
    let channels = a.n("channels", 1) as usize;
    let procs = (a.n("procs", 1) as usize).max(1);
    let rates: Vec<f64> = a.s("rates", "10").split(',').filter(|x| !x.is_empty()).map(|x| x.parse().expect("rates")).collect();
    let duration = a.f("duration", 10.0);
    let drain = a.f("drain", 2.0);
    let max_drain = a.f("max-drain", 30.0);
    let size = a.n("size", 64) as usize;
    let pub_conns = a.n("pub-conns", 8) as usize;
    let nginx_pid = a.n("nginx-pid", 0) as u32;
    let stop_p99 = a.f("stop-p99-ms", f64::INFINITY);
    let idle_secs = a.f("idle-secs", 1.0);
    let label = a.s("label", "");
    let mode = a.s("mode", "eventsource");
    let chan_prefix = a.s("chan-prefix", "bench");
    let also = a.s("also", "");

    // The machine's lowest available memory over the run (the peak of what it all used).
    let avail0 = meminfo_kb("MemAvailable:").unwrap_or(0);
    let avail_min = Rc::new(std::cell::Cell::new(avail0));
    {
        let m = avail_min.clone();
        tokio::task::spawn_local(async move {
            loop {
                if let Some(v) = meminfo_kb("MemAvailable:") {
                    m.set(m.get().min(v));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
    let slab0 = meminfo_kb("Slab:").unwrap_or(0);
    let mem0 = if nginx_pid > 0 { nginx_mem(nginx_pid) } else { (0, 0) };
    let cpu0 = if nginx_pid > 0 { nginx_cpu(nginx_pid) } else { (0.0, 0.0) };
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut children = Vec::new();
    let t_conn = Instant::now();
    for p in 0..procs {
        let first = subs * p / procs;
        let count = subs * (p + 1) / procs - first;
        let mut cmd = tokio::process::Command::new(&me);
        cmd.arg("sub")
            .args(["--server", &server.to_string(), "--mode", &mode, "--sub-path", &a.s("sub-path", "/ev/")])
            .args(["--chan-prefix", &chan_prefix, "--first", &first.to_string(), "--count", &count.to_string()])
            .args(["--channels", &channels.to_string(), "--ip-block", &(p + 1).to_string()])
            .args(["--connect-concurrency", &a.s("connect-concurrency", "256")])
            .args(["--also", &also, "--min-free-mb", &a.s("min-free-mb", "0")])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut proc_ = cmd.spawn().map_err(|e| e.to_string())?;
        let stdin = proc_.stdin.take().unwrap();
        let out = BufReader::new(proc_.stdout.take().unwrap()).lines();
        children.push(Child { proc_, stdin, out });
    }
    let mut per_chan = vec![0u64; channels];
    let (mut connected, mut failed, mut skipped, mut tool_rss_kb) = (0u64, 0u64, 0u64, 0u64);
    let mut conn_errors: HashMap<String, u64> = HashMap::new();
    for c in children.iter_mut() {
        let v = child_line(c).await?;
        connected += v["connected"].as_u64().unwrap_or(0);
        failed += v["failed"].as_u64().unwrap_or(0);
        skipped += v["skipped"].as_u64().unwrap_or(0);
        tool_rss_kb += v["rss_kb"].as_u64().unwrap_or(0);
        for (i, x) in v["per_channel"].as_array().unwrap().iter().enumerate() {
            per_chan[i] += x.as_u64().unwrap();
        }
        for (k, n) in v["errors"].as_object().unwrap() {
            *conn_errors.entry(k.clone()).or_default() += n.as_u64().unwrap();
        }
    }
    let conn_secs = t_conn.elapsed().as_secs_f64();
    let cpu1 = if nginx_pid > 0 { nginx_cpu(nginx_pid) } else { (0.0, 0.0) };
    eprintln!(
        "[{label}] connected {connected}, failed {failed}, skipped {skipped} (memory) in {conn_secs:.2}s ({:.0} conn/s) errors {conn_errors:?}",
        connected as f64 / conn_secs
    );
    // Idle: let the server settle, then measure memory with every subscriber connected.
    tokio::time::sleep(Duration::from_secs_f64(idle_secs)).await;
    let mem1 = if nginx_pid > 0 { nginx_mem(nginx_pid) } else { (0, 0) };
    let slab1 = meminfo_kb("Slab:").unwrap_or(0);
    let per_conn = |a: u64, b: u64| if connected > 0 { (b as f64 - a as f64) * 1024.0 / connected as f64 } else { f64::NAN };
    let mut result = json!({
        "label": label, "mode": mode, "subs": subs, "channels": channels, "procs": procs,
        "connected": connected, "failed": failed, "connect_secs": conn_secs,
        "conn_per_s": connected as f64 / conn_secs, "connect_errors": conn_errors,
        "nginx_cpu_connect_user_s": cpu1.0 - cpu0.0, "nginx_cpu_connect_sys_s": cpu1.1 - cpu0.1,
        "nginx_rss_kb_before": mem0.0, "nginx_pss_kb_before": mem0.1,
        "nginx_rss_kb_idle": mem1.0, "nginx_pss_kb_idle": mem1.1,
        "rss_bytes_per_conn": per_conn(mem0.0, mem1.0), "pss_bytes_per_conn": per_conn(mem0.1, mem1.1),
        "skipped_for_memory": skipped, "min_free_mb": a.n("min-free-mb", 0),
        "tool_rss_kb_connected": tool_rss_kb,
        "tool_rss_bytes_per_conn": if connected > 0 { tool_rss_kb as f64 * 1024.0 / connected as f64 } else { f64::NAN },
        "slab_kb_before": slab0, "slab_kb_idle": slab1, "slab_bytes_per_conn": per_conn(slab0, slab1),
    });
    let mut steps = Vec::new();
    let mut prev_child_cpu = vec![(0.0f64, 0.0f64); children.len()];
    // the connect phase's CPU of the tool: first report resets nothing but CPU baselines
    for (i, c) in children.iter_mut().enumerate() {
        c.stdin.write_all(b"report\n").await.map_err(|e| e.to_string())?;
        let v = child_line(c).await?;
        prev_child_cpu[i] = (v["cpu_user"].as_f64().unwrap(), v["cpu_sys"].as_f64().unwrap());
    }
    let conn_tool_cpu: (f64, f64) = prev_child_cpu.iter().fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
    result["tool_cpu_connect_user_s"] = json!(conn_tool_cpu.0);
    result["tool_cpu_connect_sys_s"] = json!(conn_tool_cpu.1);
    if !also.is_empty() && a.n("oneshot", 0) == 1 {
        let pub_path = a.s("pub-path", "/pub?id=");
        let max_wait = a.f("max-drain", 30.0);
        let mut shots = Vec::new();
        let targets: Vec<String> = vec![also.clone()];
        let each: Vec<String> = (0..channels).map(|c| c.to_string()).collect();
        for (what, chans) in [("one channel every subscriber listens to", targets), ("one message to each channel", each)] {
            let cpu_a = if nginx_pid > 0 { nginx_cpu(nginx_pid) } else { (0.0, 0.0) };
            let shot = one_shot(&mut children, server, &pub_path, &chan_prefix, &chans, connected, max_wait).await?;
            let cpu_b = if nginx_pid > 0 { nginx_cpu(nginx_pid) } else { (0.0, 0.0) };
            eprintln!("[{label}] {what}: {shot}");
            let mut shot = shot;
            shot["what"] = json!(what);
            shot["nginx_cpu_user_s"] = json!(cpu_b.0 - cpu_a.0);
            shot["nginx_cpu_sys_s"] = json!(cpu_b.1 - cpu_a.1);
            shots.push(shot);
        }
        result["oneshot"] = Value::Array(shots);
    }
    result["mem_available_min_kb"] = json!(avail_min.get());
    result["mem_available_kb_before"] = json!(avail0);
    // What the whole machine (nginx, kernel, load tool) gave per subscriber at the peak:
    // comparable between runs that stopped at different points.
    result["machine_bytes_per_conn"] = json!(if connected > 0 {
        avail0.saturating_sub(avail_min.get()) as f64 * 1024.0 / connected as f64
    } else {
        f64::NAN
    });
    let mut seqs = Rc::new(RefCell::new(vec![0u64; channels]));
    for &rate in &rates {
        let st = Rc::new(RefCell::new(PubStats { ok: vec![0; channels], failed: 0, hist: new_hist(), errors: HashMap::new() }));
        let cpu_a = if nginx_pid > 0 { nginx_cpu(nginx_pid) } else { (0.0, 0.0) };
        let me_a = rusage_self();
        let start = tokio::time::Instant::now() + Duration::from_millis(50);
        let end = start + Duration::from_secs_f64(duration);
        let next = Rc::new(RefCell::new(0u64));
        let pub_path = Rc::new(a.s("pub-path", "/pub?id="));
        let cp = Rc::new(chan_prefix.clone());
        let mut hs = Vec::new();
        for _ in 0..pub_conns {
            let via = match (a.kv.get("amqp-url"), a.kv.get("amqp-stream")) {
                (Some(url), Some(stream)) => Via::Amqp(amqp_channel(url).await?, Rc::new(stream.clone())),
                _ => Via::Http,
            };
            hs.push(tokio::task::spawn_local(publisher_conn(
                via, server, pub_path.clone(), cp.clone(), size, channels, next.clone(), seqs.clone(), start, rate, end, st.clone(),
            )));
        }
        for h in hs {
            let _ = h.await;
        }
        let pub_secs = (tokio::time::Instant::now() - start).as_secs_f64();
        tokio::time::sleep(Duration::from_secs_f64(drain)).await;
        // Then wait while deliveries still come (a server that fell behind), up to --max-drain.
        let t_drain = Instant::now();
        let mut last = u64::MAX;
        loop {
            let mut sum = 0;
            for c in children.iter_mut() {
                c.stdin.write_all(b"peek\n").await.map_err(|e| e.to_string())?;
                sum += child_line(c).await?["unique"].as_u64().unwrap_or(0);
            }
            if sum == last || t_drain.elapsed().as_secs_f64() >= max_drain {
                break;
            }
            last = sum;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let drain_secs = drain + t_drain.elapsed().as_secs_f64();
        let cpu_b = if nginx_pid > 0 { nginx_cpu(nginx_pid) } else { (0.0, 0.0) };
        let me_b = rusage_self();
        let mut hist = new_hist();
        let (mut unique, mut dups, mut closed) = (0u64, 0u64, 0u64);
        let (mut tu, mut ts) = (me_b.0 - me_a.0, me_b.1 - me_a.1);
        let mut errs: HashMap<String, u64> = HashMap::new();
        for (i, c) in children.iter_mut().enumerate() {
            c.stdin.write_all(b"report\n").await.map_err(|e| e.to_string())?;
            let v = child_line(c).await?;
            unique += v["unique"].as_u64().unwrap();
            dups += v["dups"].as_u64().unwrap();
            closed += v["closed"].as_u64().unwrap();
            use base64::Engine as _;
            let raw = base64::engine::general_purpose::STANDARD.decode(v["hist"].as_str().unwrap()).unwrap();
            let h: Histogram<u64> = Deserializer::new().deserialize(&mut &raw[..]).map_err(|e| format!("{e:?}"))?;
            hist.add(&h).unwrap();
            let (u, s) = (v["cpu_user"].as_f64().unwrap(), v["cpu_sys"].as_f64().unwrap());
            tu += u - prev_child_cpu[i].0;
            ts += s - prev_child_cpu[i].1;
            prev_child_cpu[i] = (u, s);
            for (k, n) in v["errors"].as_object().unwrap() {
                *errs.entry(k.clone()).or_default() += n.as_u64().unwrap();
            }
        }
        let st = st.borrow();
        let published: u64 = st.ok.iter().sum();
        let expected: u64 = st.ok.iter().zip(&per_chan).map(|(m, s)| m * s).sum();
        let lost = expected.saturating_sub(unique);
        let step = json!({
            "rate": rate, "published": published, "publish_failed": st.failed, "publish_errors": st.errors,
            "publish_secs": pub_secs, "published_per_s": published as f64 / pub_secs,
            "publish_rtt": lat_json(&st.hist),
            "expected": expected, "delivered": unique, "lost": lost, "extra": unique.saturating_sub(expected), "duplicates": dups,
            "deliveries_per_s": unique as f64 / pub_secs,
            "latency": lat_json(&hist), "closed_subscribers": closed, "subscriber_errors": errs,
            "nginx_cpu_user_s": cpu_b.0 - cpu_a.0, "nginx_cpu_sys_s": cpu_b.1 - cpu_a.1,
            "tool_cpu_user_s": tu, "tool_cpu_sys_s": ts, "window_secs": pub_secs + drain_secs,
            "deliveries_per_s_window": unique as f64 / (pub_secs + drain_secs), "drain_secs": drain_secs,
        });
        eprintln!(
            "[{label}] rate {rate}/s: published {published} (failed {}), expected {expected}, delivered {unique}, lost {lost}, dups {dups}, {:.0} deliveries/s; latency ms p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}; nginx cpu u {:.2}s s {:.2}s; tool cpu u {tu:.2}s s {ts:.2}s",
            st.failed,
            unique as f64 / pub_secs,
            pct(&hist, 0.5), pct(&hist, 0.9), pct(&hist, 0.99), pct(&hist, 0.999), hist.max() as f64 / 1000.0,
            cpu_b.0 - cpu_a.0, cpu_b.1 - cpu_a.1
        );
        let p99 = pct(&hist, 0.99);
        steps.push(step);
        if lost > 0 || p99 > stop_p99 || hist.len() == 0 {
            if stop_p99.is_finite() {
                eprintln!("[{label}] stop: p99 {p99:.2} ms, lost {lost}");
                break;
            }
        }
        let _ = &mut seqs;
    }
    result["steps"] = Value::Array(steps);
    for c in children.iter_mut() {
        let _ = c.stdin.write_all(b"quit\n").await;
    }
    for c in children.iter_mut() {
        let _ = tokio::time::timeout(Duration::from_secs(5), c.proc_.wait()).await;
    }
    let text = serde_json::to_string_pretty(&result).unwrap();
    if let Some(p) = a.kv.get("json-out") {
        std::fs::write(p, &text).map_err(|e| e.to_string())?;
    }
    println!("{text}");
    Ok(())
}
