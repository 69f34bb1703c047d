//! Test harness: starts a real nginx with the module, talks to it as a client would, reloads
//! it, stops it by pid, and fails the test on `[alert]`, `[emerg]`, `[crit]` or a worker that
//! died on a signal.
//!
//! Which nginx and module: `PUSH_STREAM_NGINX` (default `/usr/sbin/nginx`) and
//! `PUSH_STREAM_MODULE` (default `target/module-test/ngx_http_push_stream_module.so`, built by
//! `ci/build --features test-hooks`). `ci/test` runs every test against Debian's nginx and
//! against the nginx 1.28 that the `vendored` feature builds.
#![allow(dead_code)]

use std::collections::HashSet;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// `Read::read`, retried when a signal interrupts it. With a receive timeout set on the socket,
/// Linux does not restart an interrupted read but fails it with EINTR (seen in CI, e.g. when
/// the test process is stopped and continued); that is no answer from nginx.
pub fn read_some(r: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn nginx_bin() -> PathBuf {
    std::env::var_os("PUSH_STREAM_NGINX")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/nginx"))
}

pub fn module_path() -> PathBuf {
    let p = std::env::var_os("PUSH_STREAM_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/module-test/ngx_http_push_stream_module.so"));
    assert!(
        p.exists(),
        "module {} not found: run ci/build --features test-hooks (or ci/test)",
        p.display()
    );
    fs::canonicalize(p).unwrap()
}

/// A loopback port nobody listens on right now.
/// A port on 127.0.0.1 that nothing listens on, for a server a test starts.
///
/// Taken below the kernel's ephemeral range: a port the kernel handed out (`bind` to port 0)
/// may be given again, between this probe and the server's own `bind`, as the local port of
/// one of the many client connections the tests make in parallel (nginx then logged `bind()
/// ... failed (98: Address already in use)`). Ports below the range are never handed out
/// that way; each test process walks its own sequence of them from a pid-dependent start, and
/// a probe `bind` skips any that something holds.
pub fn free_port() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<usize>().ok())
        .unwrap_or(32768);
    const FIRST: usize = 10_000;
    if low <= FIRST + 1000 {
        // No room below the range: the kernel's choice.
        return TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
    }
    let span = low - FIRST;
    let start = std::process::id() as usize * 7919;
    for _ in 0..span {
        let port = FIRST + (start + NEXT.fetch_add(1, Ordering::SeqCst)) % span;
        if TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return port as u16;
        }
    }
    panic!("no free port in {FIRST}..{low}");
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A fresh, empty prefix directory for one nginx instance.
pub fn temp_prefix(tag: &str) -> PathBuf {
    let base = std::env::var_os("PUSH_STREAM_TEST_TMP")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/test-tmp"));
    let dir = base.join(format!(
        "{tag}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = fs::remove_dir_all(&dir);
    for sub in ["logs", "conf", "tmp"] {
        fs::create_dir_all(dir.join(sub)).unwrap();
    }
    // Workers run as an unprivileged user when the master is root: let them write temp files.
    let _ = Command::new("chmod")
        .args(["-R", "a+rwX"])
        .arg(&dir)
        .status();
    dir
}

/// The whole nginx.conf around an `http{}` body. `{PORT}` in `http_body` is replaced.
pub fn full_config(
    prefix: &Path,
    workers: usize,
    main_extra: &str,
    http_body: &str,
    port: u16,
) -> String {
    full_config_with(prefix, workers, 1024, main_extra, http_body, port)
}

/// `full_config` with a `worker_connections` value.
pub fn full_config_with(
    prefix: &Path,
    workers: usize,
    worker_connections: usize,
    main_extra: &str,
    http_body: &str,
    port: u16,
) -> String {
    let p = prefix.display();
    format!(
        "load_module {module};\n\
         worker_processes {workers};\n\
         daemon off;\n\
         master_process on;\n\
         pid {p}/nginx.pid;\n\
         error_log {p}/logs/error.log info;\n\
         {main_extra}\n\
         events {{ worker_connections {worker_connections}; }}\n\
         http {{\n\
         access_log off;\n\
         {detached}\
         client_body_temp_path {p}/tmp/body;\n\
         proxy_temp_path {p}/tmp/proxy;\n\
         fastcgi_temp_path {p}/tmp/fastcgi;\n\
         uwsgi_temp_path {p}/tmp/uwsgi;\n\
         scgi_temp_path {p}/tmp/scgi;\n\
         add_header X-Worker-Pid $pid always;\n\
         {body}\n\
         }}\n",
        module = module_path().display(),
        body = http_body.replace("{PORT}", &port.to_string()),
        detached = if detached_everywhere() {
            "push_stream_detached_subscribers on;\n"
        } else {
            ""
        },
    )
}

pub struct Nginx {
    pub prefix: PathBuf,
    pub port: u16,
    pub workers: usize,
    child: Option<Child>,
    /// Log lines that are expected (e.g. the alert a test-hook panic writes).
    pub allowed: Vec<String>,
    checked: bool,
}

pub struct Options {
    pub workers: usize,
    pub main_extra: String,
    pub worker_connections: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            workers: 2,
            main_extra: String::new(),
            worker_connections: 1024,
        }
    }
}

impl Nginx {
    /// Starts nginx with `http_body` inside `http{}` (use `listen 127.0.0.1:{PORT};`).
    pub fn start(http_body: &str) -> Nginx {
        Self::start_with(http_body, Options::default())
    }

    pub fn start_with(http_body: &str, opts: Options) -> Nginx {
        let prefix = temp_prefix("nginx");
        let port = free_port();
        let conf = prefix.join("conf/nginx.conf");
        fs::write(
            &conf,
            full_config_with(
                &prefix,
                opts.workers,
                opts.worker_connections,
                &opts.main_extra,
                http_body,
                port,
            ),
        )
        .unwrap();
        let child = Command::new(nginx_bin())
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(prefix.join("logs/stderr.log")).unwrap())
            .spawn()
            .expect("start nginx");
        let mut n = Nginx {
            prefix,
            port,
            workers: opts.workers,
            child: Some(child),
            allowed: vec![],
            checked: false,
        };
        n.wait_ready();
        n
    }

    pub fn conf_path(&self) -> PathBuf {
        self.prefix.join("conf/nginx.conf")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn error_log(&self) -> String {
        fs::read_to_string(self.prefix.join("logs/error.log")).unwrap_or_default()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                let stderr =
                    fs::read_to_string(self.prefix.join("logs/stderr.log")).unwrap_or_default();
                panic!(
                    "nginx exited at start ({status}); error log:\n{}\nstderr:\n{stderr}",
                    self.error_log()
                );
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && self.worker_pids().len() == self.workers
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not come up; error log:\n{}",
                self.error_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The master's current children that are worker processes.
    pub fn worker_pids(&self) -> HashSet<u32> {
        children_of(self.pid())
            .into_iter()
            .filter(|p| cmdline(*p).contains("worker process"))
            .collect()
    }

    fn signal(&self, sig: i32) {
        // SAFETY: signals the nginx master this harness started (its own child).
        let rc = unsafe { libc::kill(self.pid() as i32, sig) };
        assert_eq!(rc, 0, "kill({}) failed", self.pid());
    }

    /// Rewrites the configuration (same port) and reloads; waits until the new workers are up
    /// and returns the old workers' pids (which may still be exiting).
    pub fn reload_with(&mut self, http_body: &str, opts: &Options) -> HashSet<u32> {
        let conf = full_config_with(
            &self.prefix,
            opts.workers,
            opts.worker_connections,
            &opts.main_extra,
            http_body,
            self.port,
        );
        fs::write(self.conf_path(), conf).unwrap();
        self.workers = opts.workers;
        self.reload()
    }

    pub fn reload(&mut self) -> HashSet<u32> {
        let old = self.worker_pids();
        self.signal(libc::SIGHUP);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let now = self.worker_pids();
            if now.difference(&old).count() >= self.workers {
                return old;
            }
            assert!(
                Instant::now() < deadline,
                "reload did not start new workers; log:\n{}",
                self.error_log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until none of `pids` is alive; returns how long it took.
    pub fn wait_gone(&self, pids: &HashSet<u32>, limit: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let alive: Vec<_> = pids
                .iter()
                .filter(|p| Path::new(&format!("/proc/{p}")).exists() && !is_zombie(**p))
                .collect();
            if alive.is_empty() {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < limit,
                "old workers {alive:?} still alive after {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Graceful stop (QUIT), then the log check.
    pub fn stop(mut self) {
        self.shutdown(libc::SIGQUIT);
        self.check_log();
    }

    /// Fast stop (TERM, what `nginx -s stop` sends), then the log check.
    pub fn terminate(mut self) {
        self.shutdown(libc::SIGTERM);
        self.check_log();
    }

    fn shutdown(&mut self, sig: i32) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: our own child.
            unsafe { libc::kill(child.id() as i32, sig) };
            let deadline = Instant::now() + Duration::from_secs(15);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("nginx did not stop within 15 s");
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// Fails on `[alert]`, `[emerg]`, `[crit]` or a worker exit on a signal, except lines that
    /// contain one of `self.allowed`.
    pub fn check_log(&mut self) {
        self.checked = true;
        let log = self.error_log();
        let bad: Vec<&str> = log
            .lines()
            .filter(|l| {
                l.contains("[alert]")
                    || l.contains("[emerg]")
                    || l.contains("[crit]")
                    || l.contains("exited on signal")
            })
            .filter(|l| !self.allowed.iter().any(|a| l.contains(a.as_str())))
            .collect();
        assert!(
            bad.is_empty(),
            "error log has problems:\n{}",
            bad.join("\n")
        );
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.shutdown(libc::SIGTERM);
        if !self.checked && !std::thread::panicking() {
            self.check_log();
        }
    }
}

fn children_of(ppid: u32) -> Vec<u32> {
    let mut out = vec![];
    if let Ok(rd) = fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) {
                // pid (comm) state ppid ...
                if let Some(rest) = stat.rsplit_once(')').map(|x| x.1) {
                    let mut it = rest.split_whitespace();
                    let state = it.next().unwrap_or("");
                    if it.next().and_then(|p| p.parse::<u32>().ok()) == Some(ppid) && state != "Z" {
                        out.push(pid);
                    }
                }
            }
        }
    }
    out
}

fn is_zombie(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .map(|x| x.1.trim_start().starts_with('Z'))
                .unwrap_or(false)
        })
        .unwrap_or(false)
}

fn cmdline(pid: u32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// `nginx -t` on a whole configuration text; returns (ok, stderr) and the file it wrote.
pub fn nginx_t(conf_text: &str) -> (bool, String, PathBuf) {
    let prefix = temp_prefix("nginx-t");
    let conf = prefix.join("conf/nginx.conf");
    fs::write(&conf, conf_text).unwrap();
    let out = Command::new(nginx_bin())
        .arg("-t")
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&conf)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        conf,
    )
}

/// Asserts that `nginx -t` rejects `http_body` with a message containing `needle`, followed by
/// ` in FILE:LINE` where LINE is the line of the configuration that holds `at_line`.
pub fn assert_rejects(main_extra: &str, http_body: &str, needle: &str, at_line: &str) {
    let prefix = temp_prefix("nginx-t");
    let text = full_config(&prefix, 1, main_extra, http_body, free_port());
    let line = text
        .lines()
        .position(|l| l.contains(at_line))
        .expect("marker line in config")
        + 1;
    let (ok, stderr, conf) = nginx_t(&text);
    assert!(
        !ok,
        "nginx -t accepted a bad configuration:\n{text}\n{stderr}"
    );
    let place = format!(" in {}:{line}", conf.display());
    assert!(
        stderr
            .lines()
            .any(|l| l.contains(needle) && l.ends_with(&place)),
        "expected a line with `{needle}` ending in `{place}` in nginx -t output:\n{stderr}"
    );
}

// ---- HTTP client --------------------------------------------------------------------------

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One request on a fresh connection; `extra_headers` are raw `Name: value` lines.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    extra_headers: &[&str],
    body: &[u8],
) -> Response {
    let mut s = connect(port);
    send_request(&mut s, method, path, extra_headers, body, true);
    let mut r = BufReader::new(s);
    read_response(&mut r, method == "HEAD")
}

pub fn get(port: u16, path: &str) -> Response {
    request(port, "GET", path, &[], b"")
}

pub fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// `connect` with a receive buffer of `rcvbuf` bytes set before connecting, so that the
/// window the client advertises is small from the start (shrinking it afterwards makes the
/// kernel drop what the larger window let in, and the sender waits for retransmissions).
pub fn connect_small(port: u16, rcvbuf: libc::c_int) -> TcpStream {
    use std::os::fd::FromRawFd;
    // SAFETY: a new socket, owned by the TcpStream once connected; the option and address
    // are stack values of the right sizes.
    let s = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let s = TcpStream::from_raw_fd(fd);
        set_socket_option(fd, libc::SO_RCVBUF, &rcvbuf);
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_be_bytes([127, 0, 0, 1]).to_be(),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            &addr as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
        s
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

pub fn send_request(
    s: &mut TcpStream,
    method: &str,
    path: &str,
    extra_headers: &[&str],
    body: &[u8],
    close: bool,
) {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for h in extra_headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    if close {
        req.push_str("Connection: close\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
}

/// Reads the status line and headers.
pub fn read_head<R: BufRead>(r: &mut R) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    r.read_line(&mut line).expect("status line");
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = vec![];
    loop {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    (status, headers)
}

pub fn read_response<R: BufRead>(r: &mut R, head_only: bool) -> Response {
    let (status, headers) = read_head(r);
    let find = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    let mut body = vec![];
    if !head_only && status != 304 && status != 204 {
        if find("Transfer-Encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            while let Some(chunk) = read_chunk(r) {
                body.extend_from_slice(&chunk);
            }
        } else if let Some(len) = find("Content-Length").and_then(|v| v.parse::<usize>().ok()) {
            body.resize(len, 0);
            r.read_exact(&mut body).unwrap();
        } else {
            r.read_to_end(&mut body).unwrap();
        }
    }
    Response {
        status,
        headers,
        body,
    }
}

/// Reads one chunk of a chunked body; None at the terminating zero-size chunk.
pub fn read_chunk<R: BufRead>(r: &mut R) -> Option<Vec<u8>> {
    let mut line = String::new();
    r.read_line(&mut line).expect("chunk size line");
    let size = usize::from_str_radix(line.trim().split(';').next().unwrap(), 16)
        .unwrap_or_else(|_| panic!("bad chunk size {line:?}"));
    let mut data = vec![0; size];
    r.read_exact(&mut data).unwrap();
    let mut crlf = [0u8; 2];
    r.read_exact(&mut crlf).unwrap();
    assert_eq!(&crlf, b"\r\n", "chunk of {size} bytes not followed by CRLF");
    if size == 0 {
        None
    } else {
        Some(data)
    }
}

/// A response read incrementally (a held/streaming subscriber).
pub struct Stream {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub reader: BufReader<TcpStream>,
}

impl Stream {
    pub fn open(port: u16, path: &str, extra_headers: &[&str]) -> Stream {
        let mut s = connect(port);
        send_request(&mut s, "GET", path, extra_headers, b"", false);
        let mut reader = BufReader::new(s);
        let (status, headers) = read_head(&mut reader);
        Stream {
            status,
            headers,
            reader,
        }
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// The next chunk, or None at the end of the response.
    pub fn next_chunk(&mut self) -> Option<Vec<u8>> {
        read_chunk(&mut self.reader)
    }
    /// The next chunk; None at the end of the response, at EOF or on a reset connection.
    pub fn try_next_chunk(&mut self) -> Option<Vec<u8>> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        let size = usize::from_str_radix(line.trim().split(';').next()?, 16).ok()?;
        let mut data = vec![0; size];
        self.reader.read_exact(&mut data).ok()?;
        let mut crlf = [0u8; 2];
        self.reader.read_exact(&mut crlf).ok()?;
        if size == 0 {
            None
        } else {
            Some(data)
        }
    }

    /// Everything until the end of the response.
    pub fn rest(&mut self) -> Vec<u8> {
        let mut out = vec![];
        while let Some(c) = self.next_chunk() {
            out.extend_from_slice(&c);
        }
        out
    }
}

// ---- WebSocket client ---------------------------------------------------------------------

/// A minimal RFC 6455 client: masks what it sends, reads the server's unmasked frames.
pub struct Ws {
    pub stream: TcpStream,
    buf: Vec<u8>,
    /// The raw 101 response head.
    pub head: String,
}

pub const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

impl Ws {
    /// Connects and performs the handshake; returns the client even when the server refused
    /// (check `head`).
    pub fn connect(port: u16, path: &str) -> Ws {
        Ws::handshake(connect(port), path, b"")
    }

    /// `connect` that sends `after` (e.g. a first frame) in the same `write` as the handshake.
    pub fn connect_with(port: u16, path: &str, after: &[u8]) -> Ws {
        Ws::handshake(connect(port), path, after)
    }

    /// The handshake on a socket the caller connected (e.g. with `connect_small`), with
    /// `after` written together with the request, in one `write`.
    pub fn handshake(mut stream: TcpStream, path: &str, after: &[u8]) -> Ws {
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .into_bytes();
        req.extend_from_slice(after);
        stream.write_all(&req).unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = read_some(&mut stream, &mut chunk).unwrap();
            assert!(
                n > 0,
                "connection closed during the handshake: {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let rest = buf[end..].to_vec();
        Ws {
            stream,
            buf: rest,
            head,
        }
    }

    pub fn status(&self) -> u16 {
        self.head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    /// Sends one frame; `masked` false sends an (invalid) unmasked client frame.
    pub fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8], masked: bool) {
        self.stream
            .write_all(&ws_client_frame(fin, opcode, payload, masked))
            .unwrap();
    }

    pub fn send_text(&mut self, text: &str) {
        self.send_frame(true, 1, text.as_bytes(), true);
    }

    /// The next frame: (fin, opcode, payload); None when the server closed the connection.
    pub fn read_frame(&mut self) -> Option<(bool, u8, Vec<u8>)> {
        loop {
            if let Some((frame, used)) = parse_server_frame(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            let mut chunk = [0u8; 65536];
            let n = read_some(&mut self.stream, &mut chunk).ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next text frame's payload, skipping pings.
    pub fn read_text(&mut self) -> Option<Vec<u8>> {
        loop {
            let (_, op, p) = self.read_frame()?;
            match op {
                1 => return Some(p),
                9 => continue,
                _ => panic!("expected a text frame, got opcode {op} {p:?}"),
            }
        }
    }
}

/// The bytes of one client frame (FIN, opcode, payload; masked unless `masked` is false).
pub fn ws_client_frame(fin: bool, opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut f = vec![(if fin { 0x80 } else { 0 }) | opcode];
    let m = if masked { 0x80 } else { 0 };
    if payload.len() < 126 {
        f.push(m | payload.len() as u8);
    } else if payload.len() < 65536 {
        f.push(m | 126);
        f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    } else {
        f.push(m | 127);
        f.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    }
    if masked {
        let key = [0x37u8, 0xfa, 0x21, 0x3d];
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        f.extend_from_slice(payload);
    }
    f
}

/// (fin, opcode, payload) of a frame, and the bytes it took.
type Frame = ((bool, u8, Vec<u8>), usize);

fn parse_server_frame(b: &[u8]) -> Option<Frame> {
    if b.len() < 2 {
        return None;
    }
    assert_eq!(b[1] & 0x80, 0, "server frames are never masked");
    let (len, mut at) = match b[1] & 0x7f {
        126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
        127 if b.len() >= 10 => (
            u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
            10,
        ),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    if b.len() < at + len {
        return None;
    }
    let payload = b[at..at + len].to_vec();
    at += len;
    Some(((b[0] & 0x80 != 0, b[0] & 0x0f, payload), at))
}

/// Private (heap) resident memory of a process, in bytes: /proc's RssAnon, which leaves out
/// the shared zone's pages a worker touches while reading messages.
pub fn rss_bytes(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("RssAnon:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// Raises this process's open-files soft limit to its hard limit (many client sockets).
pub fn raise_fd_limit() -> u64 {
    // SAFETY: plain getrlimit/setrlimit on a stack value.
    unsafe {
        let mut l: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
        l.rlim_cur = l.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        l.rlim_cur
    }
}

// ---- a TCP proxy that can play "the broker went away" ---------------------------------------

/// Forwards a loopback port to `target`; `down()` closes every connection and stops
/// accepting (clients see the broker vanish), `up()` accepts again.
pub struct Proxy {
    pub port: u16,
    state: std::sync::Arc<std::sync::Mutex<ProxyState>>,
}

struct ProxyState {
    up: bool,
    conns: Vec<TcpStream>,
    listener: Option<TcpListener>,
}

impl Proxy {
    /// A proxy on a free port, initially down when `up` is false.
    pub fn start(target: u16, up: bool) -> Proxy {
        let port = free_port();
        let state = std::sync::Arc::new(std::sync::Mutex::new(ProxyState {
            up: false,
            conns: vec![],
            listener: None,
        }));
        let p = Proxy {
            port,
            state: state.clone(),
        };
        std::thread::spawn(move || loop {
            let listener = state
                .lock()
                .unwrap()
                .listener
                .as_ref()
                .and_then(|l| l.try_clone().ok());
            let Some(listener) = listener else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            match listener.accept() {
                Ok((client, _)) => {
                    let mut st = state.lock().unwrap();
                    if !st.up {
                        continue;
                    }
                    let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                        continue;
                    };
                    for (a, b) in [
                        (client.try_clone().unwrap(), server.try_clone().unwrap()),
                        (server.try_clone().unwrap(), client.try_clone().unwrap()),
                    ] {
                        std::thread::spawn(move || {
                            let (mut a, mut b) = (a, b);
                            let _ = std::io::copy(&mut a, &mut b);
                            let _ = b.shutdown(std::net::Shutdown::Both);
                        });
                    }
                    st.conns.push(client);
                    st.conns.push(server);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        });
        if up {
            p.up();
        }
        p
    }

    pub fn up(&self) {
        let l = TcpListener::bind(("127.0.0.1", self.port)).expect("proxy port");
        l.set_nonblocking(true).unwrap();
        let mut st = self.state.lock().unwrap();
        st.listener = Some(l);
        st.up = true;
    }

    pub fn down(&self) {
        let mut st = self.state.lock().unwrap();
        st.up = false;
        st.listener = None;
        for c in st.conns.drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Whether something answers on 127.0.0.1:5672 (RabbitMQ; ci/test starts it).
pub fn rabbitmq_up() -> bool {
    TcpStream::connect_timeout(&"127.0.0.1:5672".parse().unwrap(), Duration::from_secs(2)).is_ok()
}

/// A SOL_SOCKET option with a plain value (`c_int`, `linger`…) on an open socket.
pub fn set_socket_option<T>(fd: std::os::fd::RawFd, name: libc::c_int, value: &T) {
    // SAFETY: setsockopt reads size_of::<T>() bytes from a live reference.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            name,
            value as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "setsockopt {name}: {}",
        std::io::Error::last_os_error()
    );
}

/// Shrinks a socket's receive buffer (the kernel's autotuning would otherwise soak up
/// megabytes a test wants to see queued in nginx).
pub fn set_rcvbuf(s: &TcpStream, bytes: libc::c_int) {
    use std::os::fd::AsRawFd;
    set_socket_option(s.as_raw_fd(), libc::SO_RCVBUF, &bytes);
}

/// Closing `s` then resets the connection (RST) instead of the orderly FIN.
pub fn set_linger_zero(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    set_socket_option(s.as_raw_fd(), libc::SO_LINGER, &l);
}

// ---- helpers shared by the publisher, subscriber and reliability tests --------------------

pub fn post(port: u16, path: &str, body: &[u8]) -> Response {
    request(port, "POST", path, &[], body)
}

pub fn json(r: &Response) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", r.text()))
}

pub fn explain(r: &Response) -> Option<&str> {
    r.header("X-Nginx-PushStream-Explain")
}

/// Subscribers of a channel, from a publisher location at `/pub` (0 when it does not exist).
pub fn subscribers(port: u16, ch: &str) -> u64 {
    let r = get(port, &format!("/pub?id={ch}"));
    match r.status {
        404 => 0,
        _ => json(&r)["subscribers"].as_u64().unwrap(),
    }
}

pub fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Opens streaming subscribers until every worker serves at least one (the location sends
/// `X-Worker-Pid`); returns one per worker.
pub fn subscriber_per_worker(n: &Nginx, path: &str) -> Vec<(u32, Stream)> {
    let mut by_pid: std::collections::HashMap<u32, Stream> = Default::default();
    let deadline = Instant::now() + Duration::from_secs(20);
    while by_pid.len() < n.workers {
        assert!(Instant::now() < deadline, "could not reach every worker");
        let s = Stream::open(n.port, path, &[]);
        assert_eq!(s.status, 200);
        let pid: u32 = s.header("X-Worker-Pid").unwrap().parse().unwrap();
        by_pid.entry(pid).or_insert(s);
    }
    by_pid.into_iter().collect()
}

/// Reads lines from a streaming subscriber until `count` lines arrived.
pub fn read_lines(s: &mut Stream, count: usize) -> Vec<String> {
    let mut out = vec![];
    let mut buf = String::new();
    while out.len() < count {
        let chunk = s.next_chunk().expect("stream ended early");
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(i) = buf.find('\n') {
            out.push(buf[..i].to_string());
            buf.drain(..=i);
        }
    }
    out
}

/// Peak resident memory of a process so far (/proc's VmHWM), in bytes: what a short-lived
/// allocation (a response built in memory and freed) leaves behind when RssAnon is back down.
pub fn peak_rss_bytes(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// Whether every configuration turns `push_stream_detached_subscribers` on at the `http`
/// level (`PUSH_STREAM_TEST_DETACHED=1`: `ci/test` runs the subscriber suites once more so).
pub fn detached_everywhere() -> bool {
    std::env::var_os("PUSH_STREAM_TEST_DETACHED").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Whether nginx runs under valgrind (`ci/memcheck` sets `PUSH_STREAM_UNDER_MEMCHECK=1`):
/// tests whose point is a time or memory bound that valgrind makes meaningless skip that part.
pub fn under_memcheck() -> bool {
    std::env::var_os("PUSH_STREAM_UNDER_MEMCHECK").is_some_and(|v| !v.is_empty() && v != "0")
}

// ---- a minimal HTTP/2 client (cleartext, prior knowledge) -----------------------------------

pub const H2_DATA: u8 = 0x0;
pub const H2_HEADERS: u8 = 0x1;
pub const H2_RST_STREAM: u8 = 0x3;
pub const H2_SETTINGS: u8 = 0x4;
pub const H2_PING: u8 = 0x6;
pub const H2_GOAWAY: u8 = 0x7;
pub const H2_WINDOW_UPDATE: u8 = 0x8;
pub const H2_CONTINUATION: u8 = 0x9;
pub const H2_END_STREAM: u8 = 0x1;
pub const H2_ACK: u8 = 0x1;
pub const H2_END_HEADERS: u8 = 0x4;
pub const H2_SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;

#[derive(Debug, Clone)]
pub struct H2Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

/// The bytes of one HTTP/2 frame.
pub fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK integer with an `n`-bit prefix, the prefix's other bits taken from `first`.
fn hpack_int(out: &mut Vec<u8>, first: u8, n: u32, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// One header as "literal header field without indexing, new name" (0x00), no Huffman: what
/// any header, connection-specific ones included, looks like on the wire without a library
/// in the way.
pub fn hpack_literal(name: &str, value: &str) -> Vec<u8> {
    let mut out = vec![0x00];
    hpack_int(&mut out, 0, 7, name.len());
    out.extend_from_slice(name.as_bytes());
    hpack_int(&mut out, 0, 7, value.len());
    out.extend_from_slice(value.as_bytes());
    out
}

/// `:status` of a response header block. nginx sends it first: an indexed static-table entry
/// (200, 204, 206, 304, 400, 404, 500) or a literal with the static name 8 and a raw value.
pub fn hpack_status(block: &[u8]) -> Option<u16> {
    let mut i = 0;
    // Dynamic table size updates (001xxxxx) may come first.
    while i < block.len() && block[i] & 0xe0 == 0x20 {
        i += 1;
        if block[i - 1] & 0x1f == 0x1f {
            while i < block.len() && block[i] & 0x80 != 0 {
                i += 1;
            }
            i += 1;
        }
    }
    let b = *block.get(i)?;
    if b & 0x80 != 0 {
        return match b & 0x7f {
            8 => Some(200),
            9 => Some(204),
            10 => Some(206),
            11 => Some(304),
            12 => Some(400),
            13 => Some(404),
            14 => Some(500),
            _ => None,
        };
    }
    // Literal with incremental indexing (01), without indexing (0000) or never indexed (0001),
    // with the static name 8 (`:status`).
    let name = if b & 0xc0 == 0x40 { b & 0x3f } else { b & 0x0f };
    if name != 8 || (b & 0xc0 != 0x40 && b & 0xe0 != 0x00) {
        return None;
    }
    let h = *block.get(i + 1)?;
    assert_eq!(h & 0x80, 0, "Huffman-coded :status value: {block:?}");
    let len = (h & 0x7f) as usize;
    let v = block.get(i + 2..i + 2 + len)?;
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// A request's header block: `:method`, `:scheme http`, `:path`, `:authority 127.0.0.1`,
/// then `headers`, each as a literal (`hpack_literal`).
pub fn h2_header_block(method: &str, path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut block = vec![];
    for (k, v) in [
        (":method", method),
        (":scheme", "http"),
        (":path", path),
        (":authority", "127.0.0.1"),
    ]
    .into_iter()
    .chain(headers.iter().copied())
    {
        block.extend(hpack_literal(k, v));
    }
    block
}

/// What came back on one stream (see `H2::response`).
#[derive(Debug, Default)]
pub struct H2Response {
    pub status: Option<u16>,
    pub data: Vec<u8>,
    /// A frame with END_STREAM arrived.
    pub ended: bool,
    /// The RST_STREAM error code, when the server reset the stream.
    pub reset: Option<u32>,
    /// (last stream id, error code) of a GOAWAY that arrived meanwhile.
    pub goaway: Option<(u32, u32)>,
    /// The connection ended (EOF or reset) before the stream did.
    pub closed: bool,
}

/// A raw HTTP/2 client (cleartext, prior knowledge). It speaks just enough of the protocol to
/// send what a library would refuse to (connection-specific headers, a tiny window that it
/// never opens) and checks that everything the server sends is a well-formed frame.
pub struct H2 {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl H2 {
    /// Connects and sends the preface and a SETTINGS frame with `settings` (id, value).
    pub fn connect(port: u16, settings: &[(u16, u32)]) -> H2 {
        let mut h = H2 {
            stream: connect(port),
            buf: vec![],
        };
        let mut p = vec![];
        for (id, v) in settings {
            p.extend_from_slice(&id.to_be_bytes());
            p.extend_from_slice(&v.to_be_bytes());
        }
        let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        out.extend(h2_frame(H2_SETTINGS, 0, 0, &p));
        h.stream.write_all(&out).unwrap();
        h
    }

    pub fn send(
        &mut self,
        kind: u8,
        flags: u8,
        stream: u32,
        payload: &[u8],
    ) -> std::io::Result<()> {
        self.stream
            .write_all(&h2_frame(kind, flags, stream, payload))
    }

    /// A request on `stream`: one HEADERS frame (END_HEADERS, and END_STREAM when `end`)
    /// with the pseudo-headers and `headers`, all as literals.
    pub fn request(
        &mut self,
        stream: u32,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        end: bool,
    ) {
        let block = h2_header_block(method, path, headers);
        let flags = H2_END_HEADERS | if end { H2_END_STREAM } else { 0 };
        self.send(H2_HEADERS, flags, stream, &block).unwrap();
    }

    /// The next frame. SETTINGS are acknowledged and PINGs answered (and returned too).
    /// Errors: `UnexpectedEof` when the connection ended between frames, `InvalidData` when
    /// the bytes are not an HTTP/2 frame (a length over the 16 KiB maximum frame size, an
    /// unknown type, the reserved bit, a frame cut by the end of the connection), and the
    /// socket's own errors (`WouldBlock`/`TimedOut` at the read timeout, `ConnectionReset`).
    pub fn read_frame(&mut self) -> std::io::Result<H2Frame> {
        use std::io::{Error, ErrorKind};
        loop {
            if self.buf.len() >= 9 {
                let b = &self.buf;
                let len = u32::from_be_bytes([0, b[0], b[1], b[2]]) as usize;
                let (kind, flags) = (b[3], b[4]);
                let sid = u32::from_be_bytes([b[5], b[6], b[7], b[8]]);
                let bad = if len > 16384 {
                    Some(format!("frame length {len} over the maximum frame size"))
                } else if kind > H2_CONTINUATION {
                    Some(format!("unknown frame type {kind}"))
                } else if sid & 0x8000_0000 != 0 {
                    Some("reserved stream id bit set".to_string())
                } else if (kind == H2_DATA || kind == H2_HEADERS || kind == H2_RST_STREAM)
                    && sid == 0
                {
                    Some(format!("frame type {kind} on stream 0"))
                } else if (kind == H2_SETTINGS || kind == H2_PING || kind == H2_GOAWAY) && sid != 0
                {
                    Some(format!("frame type {kind} on stream {sid}"))
                } else {
                    None
                };
                if let Some(why) = bad {
                    let show = &self.buf[..self.buf.len().min(64)];
                    return Err(Error::new(
                        ErrorKind::InvalidData,
                        format!(
                            "not an HTTP/2 frame ({why}): {:?}",
                            String::from_utf8_lossy(show)
                        ),
                    ));
                }
                if self.buf.len() >= 9 + len {
                    let payload = self.buf[9..9 + len].to_vec();
                    self.buf.drain(..9 + len);
                    let f = H2Frame {
                        kind,
                        flags,
                        stream: sid,
                        payload,
                    };
                    if kind == H2_SETTINGS && flags & H2_ACK == 0 {
                        let _ = self.send(H2_SETTINGS, H2_ACK, 0, b"");
                    }
                    if kind == H2_PING && flags & H2_ACK == 0 {
                        let _ = self.send(H2_PING, H2_ACK, 0, &f.payload);
                    }
                    return Ok(f);
                }
            }
            let mut chunk = [0u8; 65536];
            let n = read_some(&mut self.stream, &mut chunk)?;
            if n == 0 {
                return Err(if self.buf.is_empty() {
                    Error::new(ErrorKind::UnexpectedEof, "connection closed")
                } else {
                    Error::new(
                        ErrorKind::InvalidData,
                        format!(
                            "connection closed inside a frame: {:?}",
                            String::from_utf8_lossy(&self.buf[..self.buf.len().min(64)])
                        ),
                    )
                });
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads frames until `stream` is over (END_STREAM or RST_STREAM), the connection ends,
    /// or `limit` passes (then neither `ended`, `reset` nor `closed` is set); with
    /// `head_only`, also stops once the response's HEADERS arrived. Panics on bytes that are
    /// not HTTP/2 frames.
    pub fn response(&mut self, stream: u32, limit: Duration, head_only: bool) -> H2Response {
        let deadline = Instant::now() + limit;
        let mut r = H2Response::default();
        let mut block = vec![];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return r;
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            let f = match self.read_frame() {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => panic!("{e}"),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return r
                }
                Err(_) => {
                    r.closed = true;
                    return r;
                }
            };
            match f.kind {
                H2_GOAWAY if f.payload.len() >= 8 => {
                    let last = u32::from_be_bytes(f.payload[..4].try_into().unwrap()) & 0x7fff_ffff;
                    let code = u32::from_be_bytes(f.payload[4..8].try_into().unwrap());
                    r.goaway = Some((last, code));
                }
                _ if f.stream != stream => {}
                H2_HEADERS | H2_CONTINUATION => {
                    let mut p = &f.payload[..];
                    if f.kind == H2_HEADERS {
                        if f.flags & 0x8 != 0 {
                            let pad = p[0] as usize;
                            p = &p[1..p.len() - pad];
                        }
                        if f.flags & 0x20 != 0 {
                            p = &p[5..];
                        }
                    }
                    block.extend_from_slice(p);
                    if f.flags & H2_END_HEADERS != 0 && r.status.is_none() {
                        r.status = hpack_status(&block);
                        assert!(r.status.is_some(), "no :status in {block:?}");
                    }
                }
                H2_DATA => {
                    let mut p = &f.payload[..];
                    if f.flags & 0x8 != 0 {
                        let pad = p[0] as usize;
                        p = &p[1..p.len() - pad];
                    }
                    r.data.extend_from_slice(p);
                }
                H2_RST_STREAM => {
                    r.reset = Some(u32::from_be_bytes(f.payload[..4].try_into().unwrap()));
                    return r;
                }
                _ => {}
            }
            if f.stream == stream && f.flags & H2_END_STREAM != 0 && f.kind != H2_CONTINUATION {
                r.ended = true;
                return r;
            }
            if head_only && r.status.is_some() {
                return r;
            }
        }
    }
}
