//! Per-worker state owned by the event loop: the eventfd connection (inbox wake-up and the
//! graceful-shutdown hook), the host wake-up socket, the background thread, the worker's
//! subscribers, and the delivery of what the host-wide store's log holds.
//!
//! Everything here runs on the worker's single event-loop thread.

use std::cell::RefCell;
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver};
use nginx_sys::{
    ngx_close_connection, ngx_connection_t, ngx_cycle_t, ngx_event_t, ngx_get_connection,
    ngx_handle_read_event, ngx_http_request_t, ngx_int_t, ngx_shm_zone_t, NGX_OK,
};
use push_stream_core::store::{Limits, Record};
use push_stream_core::template::{LocationTemplates, Message};

use super::guard::guard;
use super::http::Req;
use super::log;
use super::thread::{drain_eventfd, eventfd, Waker};
use super::zone;
use crate::bridge::{Bridge, InboxItem, INBOX_CAPACITY};

/// How long `exit_process` waits for the background thread.
const JOIN_TIMEOUT: Duration = Duration::from_secs(3);
/// The periodic timer: log catch-up, GC, subscriber census.
const TICK_MS: usize = 1000;
/// Bytes a subscriber may leave unsent (it stopped reading) before it is closed.
pub const MAX_PENDING_BYTES: usize = 1024 * 1024;

/// How a held subscriber gets its messages.
pub enum Mode {
    /// Streaming and EventSource: each message written as it comes (the templates' kind
    /// decides the framing).
    Stream,
    /// A waiting long-poll: the first message completes the response.
    LongPoll { jsonp: Option<Vec<u8>> },
    /// WebSocket: messages as text frames; client frames read by `ws_read_handler`.
    WebSocket(Box<crate::websocket::WsState>),
}

/// A request held open by the module (a subscriber).
pub struct Sub {
    pub req: Req,
    pub channels: Vec<Vec<u8>>,
    /// The location's templates (they live as long as the configuration cycle); None for the
    /// test hold hook.
    pub tpl: Option<&'static LocationTemplates>,
    pub footer: Vec<u8>,
    /// Records up to this sequence were already covered by the subscriber's old messages.
    pub since_seq: u64,
    /// Broker messages up to this stream offset were covered by the old messages.
    pub since_offset: u64,
    /// Reused output buffers and the unsent backlog.
    pub out: crate::glue::http::Out,
    /// Its end (footer, last buffer) was sent; waiting for nginx to finish the request.
    pub finishing: bool,
    pub mode: Mode,
    /// Keep-alive: what a ping writes, and how often (ms); re-armed after every message.
    pub ping: Option<(Vec<u8>, u64)>,
    /// `push_stream_subscriber_connection_ttl` / long-poll timeout (ms).
    pub ttl: Option<u64>,
    /// Padding after each message: (minimum, cap, EventSource style).
    pub padding: Option<(usize, usize, bool)>,
    /// The timer events, allocated in the request pool.
    pub ping_ev: *mut ngx_event_t,
    pub ttl_ev: *mut ngx_event_t,
    /// What a long-poll timeout or a shutdown answers (timeout_with_body).
    pub timeout_body: bool,
    /// Unique in this worker (a request's address, the key, may be reused by a later one).
    pub serial: u64,
}

impl Sub {
    pub fn new(
        req: Req,
        channels: Vec<Vec<u8>>,
        tpl: Option<&'static LocationTemplates>,
        footer: Vec<u8>,
        since_seq: u64,
        mode: Mode,
    ) -> Sub {
        Sub {
            req,
            channels,
            tpl,
            footer,
            since_seq,
            since_offset: 0,
            out: Default::default(),
            finishing: false,
            mode,
            ping: None,
            ttl: None,
            padding: None,
            ping_ev: std::ptr::null_mut(),
            ttl_ev: std::ptr::null_mut(),
            timeout_body: false,
            serial: 0,
        }
    }
}

#[derive(Default, Clone, Copy)]
pub struct Stats {
    /// Publish-to-write latency histogram (see core::metrics::LATENCY_BUCKETS) and sum (ms).
    pub latency: [u64; 13],
    pub latency_sum_ms: u64,
    pub delivered: u64,
    pub bytes: u64,
    pub slow_closed: u64,
    pub lost: u64,
}

pub struct Worker {
    conn: *mut ngx_connection_t,
    efd: RawFd,
    inbox: Receiver<InboxItem>,
    inbox_tx: crossbeam_channel::Sender<InboxItem>,
    bridge: Option<Bridge>,
    wake_conn: *mut ngx_connection_t,
    timer: Box<ngx_event_t>,
    pub zone: *mut ngx_shm_zone_t,
    pub limits: &'static Limits,
    pub slot: usize,
    pub pid: u32,
    cursor: u64,
    subs: HashMap<usize, Sub, PtrHash>,
    /// Subscribers (keys) of each channel: a set, so a subscriber leaving a channel of
    /// 100 000 is O(1), not a scan.
    by_channel: HashMap<Vec<u8>, std::collections::HashSet<usize, PtrHash>>,
    pub shutting_down: bool,
    pub ticks: u64,
    pub last_tick: u64,
    pub stats: Stats,
    next_serial: u64,
}

thread_local! {
    static WORKER: RefCell<Option<Worker>> = const { RefCell::new(None) };
}

/// Runs `f` with the worker state, if this process has one. `f` must not call back into
/// anything that finalizes a request (cleanups re-enter here).
pub fn with<R>(f: impl FnOnce(&mut Worker) -> R) -> Option<R> {
    WORKER.with(|w| w.borrow_mut().as_mut().map(f))
}

fn wake_name(pid: u32) -> Vec<u8> {
    format!("\0ngx_push_stream.{pid}").into_bytes()
}

fn sockaddr(name: &[u8]) -> (libc::sockaddr_un, libc::socklen_t) {
    // SAFETY: zeroed sockaddr_un is valid; name is shorter than sun_path.
    let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    a.sun_family = libc::AF_UNIX as _;
    for (i, b) in name.iter().enumerate() {
        a.sun_path[i] = *b as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + name.len();
    (a, len as libc::socklen_t)
}

/// The datagram socket other workers poke after they publish.
fn wake_socket(pid: u32) -> Result<RawFd, String> {
    // SAFETY: plain socket syscalls on a new fd.
    unsafe {
        let fd = libc::socket(
            libc::AF_UNIX,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        if fd < 0 {
            return Err(format!(
                "socket(AF_UNIX) failed: {}",
                std::io::Error::last_os_error()
            ));
        }
        let (a, len) = sockaddr(&wake_name(pid));
        if libc::bind(fd, &a as *const _ as *const libc::sockaddr, len) != 0 {
            let e = std::io::Error::last_os_error();
            libc::close(fd);
            return Err(format!("bind of the wake-up socket failed: {e}"));
        }
        Ok(fd)
    }
}

/// Wraps `fd` in an nginx connection whose read events call `handler`.
unsafe fn connection(
    cycle: *mut ngx_cycle_t,
    fd: RawFd,
    handler: unsafe extern "C" fn(*mut ngx_event_t),
) -> Result<*mut ngx_connection_t, String> {
    let c = ngx_get_connection(fd, (*cycle).log);
    if c.is_null() {
        libc::close(fd);
        return Err("no free connection for an internal fd".into());
    }
    (*c).log = (*cycle).log;
    (*(*c).read).log = (*cycle).log;
    (*(*c).write).log = (*cycle).log;
    (*(*c).read).handler = Some(handler);
    if ngx_handle_read_event((*c).read, 0) != NGX_OK as ngx_int_t {
        ngx_close_connection(c);
        return Err("cannot register an internal fd with the event loop".into());
    }
    Ok(c)
}

/// Sets the worker up. Called from `init_process` when the configuration uses the module.
/// Starts no thread by itself (see [`start_bridge`]).
pub fn init(
    cycle: *mut ngx_cycle_t,
    zone: *mut ngx_shm_zone_t,
    limits: &'static Limits,
) -> Result<(), String> {
    let pid = std::process::id();
    // SAFETY: nginx globals read on the worker thread.
    let slot = unsafe { nginx_sys::ngx_process_slot }.max(0) as usize;
    let efd = eventfd().map_err(|e| format!("eventfd() failed: {e}"))?;
    // SAFETY: nginx's connection API on the worker thread, wrapping our own fds.
    let (conn, wake_conn) = unsafe {
        let c = connection(cycle, efd, inbox_handler)?;
        // Marked idle so that ngx_close_idle_connections() calls inbox_handler with c->close
        // set when a graceful shutdown (reload, QUIT) begins: our shutdown hook.
        (*c).set_idle(1);
        let w = if zone.is_null() {
            std::ptr::null_mut()
        } else {
            connection(cycle, wake_socket(pid)?, wake_handler)?
        };
        (c, w)
    };
    let mut timer: Box<ngx_event_t> = Box::new(unsafe { std::mem::zeroed() });
    timer.handler = Some(timer_handler);
    // SAFETY: the cycle's log outlives the worker.
    timer.log = unsafe { (*cycle).log };
    timer.set_cancelable(1);
    let cursor = zone::with_store(zone, |s| s.register_worker(slot, pid, now(), limits))
        .and_then(|r| r.ok())
        .unwrap_or(0);
    let (tx, rx) = bounded(INBOX_CAPACITY);
    WORKER.with(|w| {
        *w.borrow_mut() = Some(Worker {
            conn,
            efd,
            inbox: rx,
            inbox_tx: tx,
            bridge: None,
            wake_conn,
            timer,
            zone,
            limits,
            slot,
            pid,
            cursor,
            subs: HashMap::default(),
            by_channel: HashMap::new(),
            shutting_down: false,
            ticks: 0,
            last_tick: 0,
            stats: Stats::default(),
            next_serial: 0,
        })
    });
    arm_timer();
    publish_slot_stats();
    Ok(())
}

fn arm_timer() {
    with(|w| {
        // SAFETY: the boxed event lives in the worker state until exit.
        unsafe { nginx_sys::ngx_add_timer(&mut *w.timer, TICK_MS as _) }
    });
}

/// nginx's cached wall clock in milliseconds.
pub fn now_ms() -> i64 {
    let t = nginx_sys::ngx_timeofday();
    t.sec as i64 * 1000 + t.msec as i64
}

pub fn now() -> i64 {
    nginx_sys::ngx_time() as i64
}

/// Starts the background thread with `body`.
pub fn start_bridge<F>(body: F) -> Result<(), String>
where
    F: FnOnce(&crate::bridge::BridgeCtx) + Send + 'static,
{
    with(|w| {
        let b = Bridge::start(Waker::new(w.efd), w.inbox_tx.clone(), body)
            .map_err(|e| format!("cannot start the background thread: {e}"))?;
        w.bridge = Some(b);
        Ok(())
    })
    .unwrap_or_else(|| Err("worker state missing".into()))
}

#[cfg(feature = "test-hooks")]
pub fn bridge_running() -> bool {
    with(|w| w.bridge.is_some()).unwrap_or(false)
}

pub fn inbox_depth() -> usize {
    with(|w| w.bridge.as_ref().map(|b| b.inbox_depth()))
        .flatten()
        .unwrap_or(0)
}

#[cfg(feature = "test-hooks")]
pub fn inbox_dropped() -> u64 {
    with(|w| w.bridge.as_ref().map(|b| b.dropped()))
        .flatten()
        .unwrap_or(0)
}

/// The eventfd's read handler: drains the inbox, or, when nginx starts a graceful shutdown
/// (`c->close` set by ngx_close_idle_connections), ends every subscriber.
unsafe extern "C" fn inbox_handler(ev: *mut ngx_event_t) {
    let c = (*ev).data as *mut ngx_connection_t;
    guard((*c).log, "inbox handler", (), || {
        // SAFETY: c is our eventfd connection, alive until exit_process closes it.
        let closing = unsafe { (*c).close() } != 0;
        if closing {
            // Stay registered: the thread may still write until exit_process joins it.
            unsafe {
                (*c).set_close(0);
                (*c).set_idle(0);
            }
            shutdown();
            return;
        }
        drain_eventfd(unsafe { (*c).fd });
        // Writes left from an earlier batch go first; the inbox waits (it is bounded and the
        // thread holds back) until they are out, so a worker under load keeps its turns short.
        if !write_leftover() {
            // SAFETY: our own eventfd connection's read event.
            unsafe { post_next((*c).read) };
            return;
        }
        let items: Vec<InboxItem> =
            with(|w| w.inbox.try_iter().take(INBOX_CAPACITY).collect()).unwrap_or_default();
        // Broker messages of one drain reach each subscriber in one write.
        gathered(|| {
            for item in items {
                match item {
                    InboxItem::Tick(n) => {
                        with(|w| {
                            w.ticks += 1;
                            w.last_tick = n;
                        });
                    }
                    InboxItem::Log(msg) => log::warn(std::ptr::null_mut(), &msg),
                    InboxItem::AmqpState { connected, detail } => {
                        crate::broker::state(connected, &detail)
                    }
                    InboxItem::Broker(m) => crate::broker::consumed(*m),
                    InboxItem::PublishDone { token, result } => {
                        crate::broker::confirmed(token, result)
                    }
                }
            }
        });
    })
}

/// Another worker published: drain the wake-up datagrams, then the log.
unsafe extern "C" fn wake_handler(ev: *mut ngx_event_t) {
    let c = (*ev).data as *mut ngx_connection_t;
    guard((*c).log, "wake-up handler", (), || {
        let mut buf = [0u8; 64];
        // SAFETY: non-blocking recv on our own socket into a stack buffer.
        while unsafe { libc::recv((*c).fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) }
            > 0
        {}
        process_log();
    })
}

unsafe extern "C" fn timer_handler(ev: *mut ngx_event_t) {
    guard((*ev).log, "timer", (), || {
        process_log();
        let (zone, limits, slot, pid, n) =
            match with(|w| (w.zone, w.limits, w.slot, w.pid, w.subs.len() as u64)) {
                Some(x) => x,
                None => return,
            };
        let t = now();
        zone::with_store(zone, |s| s.set_worker_subscribers(slot, pid, n));
        publish_slot_stats();
        if zone::claim_gc(zone, t) {
            let report = zone::with_store(zone, |s| s.gc(t, limits, &pid_alive));
            if let Some(r) = report {
                if !r.dead_workers.is_empty() {
                    log::warn(std::ptr::null_mut(), &format!(
                        "push_stream: workers {:?} died without unregistering; their share of the store was released",
                        r.dead_workers
                    ));
                }
            }
        }
        // SAFETY: nginx global, read on the worker thread.
        if unsafe { nginx_sys::ngx_exiting } == 0 {
            arm_timer();
        }
    })
}

pub fn pid_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks existence.
    let r = unsafe { libc::kill(pid as i32, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Pokes every other registered worker after a publish.
pub fn wake_others(pids: &[u32]) {
    let me = std::process::id();
    let Some(c) = with(|w| w.wake_conn) else {
        return;
    };
    if c.is_null() {
        return;
    }
    for &pid in pids {
        if pid == me {
            continue;
        }
        let (a, len) = sockaddr(&wake_name(pid));
        // SAFETY: a non-blocking sendto of one byte from our own socket; a full queue or a
        // missing peer is fine (the periodic timer catches up).
        unsafe {
            libc::sendto(
                (*c).fd,
                b"w".as_ptr() as *const libc::c_void,
                1,
                libc::MSG_DONTWAIT,
                &a as *const _ as *const libc::sockaddr,
                len,
            );
        }
    }
}

/// Runs `process_log` on the next turn of the event loop (after the current request has been
/// answered), through the wake-up socket's read handler.
pub fn schedule_delivery() {
    let Some(c) = with(|w| w.wake_conn) else {
        return;
    };
    if c.is_null() {
        process_log();
        return;
    }
    // SAFETY: our own wake-up connection's read event, posted to nginx's posted-events queue.
    unsafe {
        let rev = (*c).read;
        if (*rev).posted() == 0 {
            nginx_sys::ngx_post_event(rev, core::ptr::addr_of_mut!(nginx_sys::ngx_posted_events));
        }
    }
}

/// Delivers what the host-wide log holds beyond this worker's cursor.
pub fn process_log() {
    // Writes left from an earlier batch go first; new records wait in the log meanwhile.
    if !write_leftover() {
        if let Some(c) = with(|w| w.wake_conn).filter(|c| !c.is_null()) {
            // SAFETY: our own wake-up connection's read event.
            unsafe { post_next((*c).read) };
        }
        return;
    }
    loop {
        let Some((zone, cursor, slot, pid)) = with(|w| (w.zone, w.cursor, w.slot, w.pid)) else {
            return;
        };
        if zone.is_null() {
            return;
        }
        let Some(batch) = zone::with_store(zone, |s| s.records_after(cursor, 256)) else {
            return;
        };
        if batch.lost > 0 {
            with(|w| w.stats.lost += batch.lost);
            log::error(std::ptr::null_mut(), &format!(
                "push_stream: worker {pid} missed {} message(s) that left the store before it could deliver them",
                batch.lost
            ));
        }
        let done = batch.records.is_empty();
        gathered(|| {
            for rec in &batch.records {
                deliver(rec);
            }
        });
        with(|w| w.cursor = batch.cursor);
        zone::with_store(zone, |s| s.ack(slot, pid, batch.cursor));
        // A batch wider than one turn continues on the next turn (the gathering posted it);
        // the records after it wait in the log until it is written, as above.
        if done || LEFTOVER.with(|l| !l.borrow().is_empty()) {
            return;
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Stream,
    LongPoll,
    WebSocket,
}

struct Target {
    key: usize,
    serial: u64,
    req: Req,
    tpl: Option<&'static LocationTemplates>,
    kind: Kind,
}

fn kind_of(m: &Mode) -> Kind {
    match m {
        Mode::Stream => Kind::Stream,
        Mode::LongPoll { .. } => Kind::LongPoll,
        Mode::WebSocket(_) => Kind::WebSocket,
    }
}

/// Which of a channel's subscribers a message is for: those that have not seen it yet.
#[derive(Clone, Copy)]
pub enum Since {
    /// A record of the host-wide log.
    Seq(u64),
    /// A message consumed from the broker's stream.
    Offset(u64),
}

fn targets(channel: &[u8], seq: u64) -> Vec<Target> {
    targets_since(channel, Since::Seq(seq))
}

fn targets_since(channel: &[u8], since: Since) -> Vec<Target> {
    with(|w| {
        w.by_channel
            .get(channel)
            .map(|keys| {
                keys.iter()
                    .filter_map(|k| {
                        w.subs
                            .get(k)
                            .filter(|s| {
                                !s.finishing
                                    && match since {
                                        Since::Seq(seq) => s.since_seq < seq,
                                        Since::Offset(o) => s.since_offset < o,
                                    }
                            })
                            .map(|s| Target {
                                key: *k,
                                serial: s.serial,
                                req: s.req,
                                tpl: s.tpl,
                                kind: kind_of(&s.mode),
                            })
                    })
                    .collect()
            })
            .unwrap_or_default()
    })
    .unwrap_or_default()
}

/// A message rendered once per template (and framed once for WebSocket locations).
struct Rendered<'m> {
    msg: Message<'m>,
    cache: Vec<(*const LocationTemplates, Rc<[u8]>)>,
}

impl<'m> Rendered<'m> {
    fn new(msg: Message<'m>) -> Self {
        Rendered {
            msg,
            cache: Vec::new(),
        }
    }

    fn get(&mut self, tpl: &LocationTemplates) -> Rc<[u8]> {
        let p = tpl as *const LocationTemplates;
        let i = match self.cache.iter().position(|(t, _)| *t == p) {
            Some(i) => i,
            None => {
                let mut bytes = tpl.render_message(&self.msg);
                if tpl.kind == push_stream_core::template::Kind::WebSocket {
                    bytes = push_stream_core::websocket::text_frame(&bytes);
                }
                self.cache.push((p, bytes.into()));
                self.cache.len() - 1
            }
        };
        self.cache[i].1.clone()
    }
}

fn deliver(rec: &Record) {
    match rec {
        Record::Message {
            seq,
            channel,
            id,
            time,
            tag,
            event_id,
            event_type,
            text,
            published_ms,
        } => {
            let m = Message {
                text,
                id: *id,
                channel,
                event_id,
                event_type,
                time: *time,
                tag: *tag,
            };
            if deliver_message(m, Since::Seq(*seq)) > 0 && *published_ms > 0 {
                let ms = (now_ms() - *published_ms).max(0);
                with(|w| {
                    w.stats.latency[push_stream_core::metrics::latency_bucket(ms)] += 1;
                    w.stats.latency_sum_ms += ms as u64;
                });
            }
        }
        Record::ChannelDeleted { seq, channel, text } => {
            // What was gathered before the notice is written before it.
            flush_gathered();
            let m = Message::channel_deleted(channel, text);
            let mut r = Rendered::new(m);
            for t in targets(channel, *seq) {
                // The subscriber leaves that channel; the store counts it out of the deleted one.
                let left = with(|w| {
                    if let Some(keys) = w.by_channel.get_mut(channel.as_slice()) {
                        keys.remove(&t.key);
                    }
                    w.subs.get_mut(&t.key).map(|s| {
                        s.channels.retain(|c| c != channel);
                        s.channels.is_empty()
                    })
                })
                .flatten();
                let (zone, limits) = with(|w| (w.zone, w.limits)).unwrap();
                zone::with_store(zone, |s| {
                    s.remove_subscriber(channel, slot(), now(), limits)
                });
                let Some(tpl) = t.tpl else { continue };
                if t.kind == Kind::LongPoll {
                    let bytes = tpl.render_message(&m);
                    longpoll_complete(t.key, t.req, tpl, 200, now(), 0, Some(bytes));
                    continue;
                }
                send_message(t.key, t.serial, t.req, r.get(tpl));
                if left == Some(true) {
                    end(t.key);
                }
            }
        }
    }
}

/// Delivers one message to this worker's subscribers of its channel that have not seen it,
/// rendered once per template.
pub fn deliver_message(m: Message, since: Since) -> usize {
    let mut r = Rendered::new(m);
    let targets = targets_since(m.channel, since);
    let n = targets.len();
    for t in targets {
        let Some(tpl) = t.tpl else { continue };
        if t.kind == Kind::LongPoll {
            let bytes = tpl.render_message(&m);
            longpoll_complete(t.key, t.req, tpl, 200, m.time, m.tag, Some(bytes));
        } else {
            send_message(t.key, t.serial, t.req, r.get(tpl));
        }
    }
    n
}

/// Streaming writes gathered over one batch of deliveries (the log records one wake-up finds,
/// or the broker messages one inbox drain holds): each subscriber then gets all its messages
/// of the batch in one write. A worker that fell behind catches up with one syscall per
/// subscriber instead of one per message.
#[derive(Default)]
struct Gather {
    order: Vec<usize>,
    by_key: HashMap<usize, Pending, PtrHash>,
}

/// One subscriber's gathered messages.
struct Pending {
    key: usize,
    serial: u64,
    req: Req,
    parts: Parts,
    messages: u64,
}

/// Hashing for maps keyed by a request's address (the module's own keys, not client input):
/// a multiply-fold instead of SipHash on the per-delivery path.
#[derive(Default, Clone, Copy)]
pub struct PtrHash;

pub struct PtrHasher(u64);

impl std::hash::BuildHasher for PtrHash {
    type Hasher = PtrHasher;
    fn build_hasher(&self) -> PtrHasher {
        PtrHasher(0)
    }
}

impl std::hash::Hasher for PtrHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ b as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_usize(&mut self, x: usize) {
        // Addresses are aligned: fold the high bits of the product down so that both the
        // bucket index (low bits) and the control byte (high bits) vary.
        let h = (x as u64 ^ (x as u64 >> 4)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = h ^ (h >> 32);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// Subscriber writes per event-loop turn: what a batch holds beyond this waits for the next
/// turn (FIFO, so each subscriber's order is kept), and the worker answers publishers and
/// accepts connections in between instead of being held by one long fan-out.
const WRITES_PER_TURN: usize = 400;

thread_local! {
    static GATHER: RefCell<Option<Gather>> = const { RefCell::new(None) };
    static LEFTOVER: RefCell<std::collections::VecDeque<Pending>> =
        const { RefCell::new(std::collections::VecDeque::new()) };
}

/// Ends a gathering: queues what it holds and writes up to a turn's worth, or (unwinding
/// from a panic) drops it.
struct GatherScope;

impl Drop for GatherScope {
    fn drop(&mut self) {
        let g = GATHER.with(|g| g.borrow_mut().take());
        if std::thread::panicking() {
            return;
        }
        if let Some(mut g) = g {
            LEFTOVER.with(|l| {
                let mut l = l.borrow_mut();
                for key in g.order {
                    if let Some(p) = g.by_key.remove(&key) {
                        l.push_back(p);
                    }
                }
            });
        }
        if !write_leftover() {
            if let Some(c) = with(|w| w.wake_conn).filter(|c| !c.is_null()) {
                // SAFETY: our own wake-up connection's read event; its handler runs
                // process_log, which writes the rest first.
                unsafe { post_next((*c).read) };
            }
        }
    }
}

/// Runs `f` with subscriber writes gathered, then writes them (one write per subscriber).
pub fn gathered<R>(f: impl FnOnce() -> R) -> R {
    if GATHER.with(|g| g.borrow().is_some()) {
        return f(); // nested: the outer scope writes
    }
    GATHER.with(|g| *g.borrow_mut() = Some(Gather::default()));
    let _scope = GatherScope;
    f()
}

/// Writes up to a turn's worth of what waits; true when nothing is left.
fn write_leftover() -> bool {
    for _ in 0..WRITES_PER_TURN {
        let Some(p) = LEFTOVER.with(|l| l.borrow_mut().pop_front()) else {
            return true;
        };
        write_pending(p);
    }
    LEFTOVER.with(|l| l.borrow().is_empty())
}

/// Writes everything gathered or waiting now (before what must follow it in order: a
/// channel's delete notice, a subscriber's footer).
fn flush_gathered() {
    if let Some(mut g) = GATHER.with(|g| g.borrow_mut().as_mut().map(std::mem::take)) {
        LEFTOVER.with(|l| {
            let mut l = l.borrow_mut();
            for key in g.order {
                if let Some(p) = g.by_key.remove(&key) {
                    l.push_back(p);
                }
            }
        });
    }
    while let Some(p) = LEFTOVER.with(|l| l.borrow_mut().pop_front()) {
        write_pending(p);
    }
}

/// One subscriber's gathered write, if it is still the subscriber it was gathered for.
fn write_pending(p: Pending) {
    let live = with(|w| {
        w.subs
            .get(&p.key)
            .is_some_and(|s| s.serial == p.serial && !s.finishing)
    })
    .unwrap_or(false);
    if live {
        send_n(p.key, p.req, p.parts.as_slice(), p.messages);
        rearm_ping(p.key);
    }
}

/// A subscriber's gathered parts. The usual batch holds one message (and maybe its padding):
/// kept inline, so gathering allocates nothing per subscriber then; later messages spill into
/// a vector.
enum Parts {
    One(Rc<[u8]>),
    Two([Rc<[u8]>; 2]),
    Many(Vec<Rc<[u8]>>),
}

impl Parts {
    fn new(p: &[Rc<[u8]>]) -> Parts {
        match p {
            [a] => Parts::One(a.clone()),
            [a, b] => Parts::Two([a.clone(), b.clone()]),
            _ => Parts::Many(p.to_vec()),
        }
    }

    fn push(&mut self, p: &[Rc<[u8]>]) {
        let mut v = match std::mem::replace(self, Parts::Many(Vec::new())) {
            Parts::One(a) => vec![a],
            Parts::Two([a, b]) => vec![a, b],
            Parts::Many(v) => v,
        };
        v.extend(p.iter().cloned());
        *self = Parts::Many(v);
    }

    fn as_slice(&self) -> &[Rc<[u8]>] {
        match self {
            Parts::One(a) => std::slice::from_ref(a),
            Parts::Two(a) => a,
            Parts::Many(v) => v,
        }
    }
}

/// Adds a message's parts to the gathering, when one is open. False: write now.
fn gather(key: usize, serial: u64, req: Req, parts: &[Rc<[u8]>]) -> bool {
    GATHER.with(|g| {
        let mut g = g.borrow_mut();
        let Some(g) = g.as_mut() else {
            return false;
        };
        match g.by_key.get_mut(&key) {
            Some(e) => {
                e.parts.push(parts);
                e.messages += 1;
            }
            None => {
                g.order.push(key);
                g.by_key.insert(
                    key,
                    Pending {
                        key,
                        serial,
                        req,
                        parts: Parts::new(parts),
                        messages: 1,
                    },
                );
            }
        }
        true
    })
}

/// Posts `ev` to run on the next turn of the event loop (after nginx has looked for I/O).
///
/// # Safety
/// `ev` must be a live event of this worker.
unsafe fn post_next(ev: *mut ngx_event_t) {
    if (*ev).posted() == 0 {
        nginx_sys::ngx_post_event(
            ev,
            core::ptr::addr_of_mut!(nginx_sys::ngx_posted_next_events),
        );
    }
}

/// Writes shared payloads to a subscriber (no copy per subscriber); closes it when the write
/// fails, or when it has stopped reading and more than MAX_PENDING_BYTES wait for it.
pub fn send(key: usize, req: Req, parts: &[Rc<[u8]>]) {
    send_n(key, req, parts, 1)
}

/// `send` for `messages` messages at once.
fn send_n(key: usize, req: Req, parts: &[Rc<[u8]>], messages: u64) {
    let Some(mut out) =
        with(|w| w.subs.get_mut(&key).map(|s| std::mem::take(&mut s.out))).flatten()
    else {
        return;
    };
    let rc = req.send_shared(&mut out, parts);
    let pending = out.pending;
    let bytes: usize = parts.iter().map(|p| p.len()).sum();
    with(|w| {
        w.stats.delivered += messages;
        w.stats.bytes += bytes as u64;
        if let Some(s) = w.subs.get_mut(&key) {
            s.out = out;
        }
    });
    if rc == nginx_sys::NGX_ERROR as ngx_int_t {
        req.finalize(rc);
        return;
    }
    if pending > MAX_PENDING_BYTES {
        with(|w| w.stats.slow_closed += 1);
        log::warn(req.log(), &format!(
            "push_stream: closing a subscriber that stopped reading ({pending} bytes unsent, limit {MAX_PENDING_BYTES})"
        ));
        req.finalize(nginx_sys::NGX_ERROR as ngx_int_t);
    }
}

/// Copies `bytes` once and sends them (pings, pongs, first answers).
pub fn send_bytes(key: usize, req: Req, bytes: &[u8]) {
    send(key, req, &[Rc::from(bytes)]);
}

/// A message for a streaming, EventSource or WebSocket subscriber: the shared bytes, its
/// padding, and the ping timer pushed back.
fn send_message(key: usize, serial: u64, req: Req, bytes: Rc<[u8]>) {
    let pad = with(|w| w.subs.get(&key).and_then(|s| s.padding)).flatten();
    let (one, two);
    let parts: &[Rc<[u8]>] = match pad {
        Some((min, cap, es)) if min > bytes.len() => {
            let n = push_stream_core::conf_values::padding_len((min - bytes.len()) as i64, cap);
            let padding: Rc<[u8]> = push_stream_core::conf_values::padding_bytes(n, es).into();
            two = [bytes, padding];
            &two
        }
        _ => {
            one = [bytes];
            &one
        }
    };
    if !gather(key, serial, req, parts) {
        send(key, req, parts);
        rearm_ping(key);
    }
}

fn rearm_ping(key: usize) {
    with(|w| {
        if let Some(s) = w.subs.get(&key) {
            if let (Some((_, ms)), false) = (&s.ping, s.ping_ev.is_null()) {
                // SAFETY: the event lives in the request pool; timers are removed in cleanup.
                unsafe { nginx_sys::ngx_add_timer(s.ping_ev, *ms as _) };
            }
        }
    });
}

/// Completes a waiting long-poll: status, `Last-Modified`/`Etag`, then header template, the
/// message (JSONP-wrapped when asked) and the footer; or a bodiless 304.
fn longpoll_complete(
    key: usize,
    req: Req,
    tpl: &LocationTemplates,
    status: usize,
    time: i64,
    tag: u64,
    msg: Option<Vec<u8>>,
) {
    let jsonp = with(|w| {
        w.subs.get_mut(&key).and_then(|s| {
            s.finishing = true;
            match &s.mode {
                Mode::LongPoll { jsonp } => jsonp.clone(),
                _ => None,
            }
        })
    })
    .flatten();
    let rc = reply_batch(
        req,
        tpl,
        status,
        time,
        tag,
        jsonp.as_deref(),
        msg.into_iter().collect(),
    );
    req.finalize(rc);
}

/// The polling / long-polling answer. `messages` empty with status 304: header only.
pub fn reply_batch(
    req: Req,
    tpl: &LocationTemplates,
    status: usize,
    time: i64,
    tag: u64,
    jsonp: Option<&[u8]>,
    messages: Vec<Vec<u8>>,
) -> ngx_int_t {
    req.set_status(status);
    if time > 0 || status != 304 {
        req.set_last_modified(time);
    }
    req.add_header("Etag", format!("W/{tag}").as_bytes());
    let ct: Option<&[u8]> = if jsonp.is_some() {
        Some(b"application/javascript")
    } else {
        None
    };
    if !req.set_content_type(ct) {
        return nginx_sys::NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    }
    if status == 304 {
        req.set_content_length(Some(0));
        req.set_header_only();
        return req.send_header();
    }
    let mut body = tpl.header.clone();
    match jsonp {
        Some(cb) => body.extend_from_slice(&push_stream_core::template::jsonp_wrap(cb, &messages)),
        None => messages.iter().for_each(|m| body.extend_from_slice(m)),
    }
    body.extend_from_slice(&tpl.footer);
    req.set_content_length(None);
    let rc = req.send_header();
    if rc == nginx_sys::NGX_ERROR as ngx_int_t || rc > nginx_sys::NGX_OK as ngx_int_t {
        return rc;
    }
    req.send_bytes(&body, true, true)
}

/// Ends a subscriber as a ttl, reload or stop does: footer (WebSocket: footer frame and close
/// frame); a waiting long-poll gets the timeout answer.
pub fn end(key: usize) {
    // Whatever was gathered for it is written before its footer.
    flush_gathered();
    let Some((req, kind, tpl, footer, timeout_body)) = with(|w| {
        w.subs.get_mut(&key).filter(|s| !s.finishing).map(|s| {
            (
                s.req,
                kind_of(&s.mode),
                s.tpl,
                s.footer.clone(),
                s.timeout_body,
            )
        })
    })
    .flatten() else {
        return;
    };
    match (kind, tpl) {
        (Kind::LongPoll, Some(tpl)) => {
            let t = now();
            if timeout_body {
                let m = Message::timeout();
                longpoll_complete(key, req, tpl, 200, t, 0, Some(tpl.render_message(&m)));
            } else {
                longpoll_complete(key, req, tpl, 304, t, 0, None);
            }
        }
        (Kind::WebSocket, _) => {
            let mut tail = Vec::new();
            if !footer.is_empty() {
                tail = push_stream_core::websocket::text_frame(&footer);
            }
            tail.extend_from_slice(push_stream_core::websocket::CLOSE_FRAME);
            with(|w| w.subs.get_mut(&key).map(|s| s.finishing = true));
            req.finish(&tail);
        }
        _ => {
            with(|w| w.subs.get_mut(&key).map(|s| s.finishing = true));
            req.finish(&footer);
        }
    }
}

/// Graceful shutdown began: each subscriber gets its footer and ends.
fn shutdown() {
    let keys: Vec<usize> = with(|w| {
        w.shutting_down = true;
        w.subs
            .iter()
            .filter(|(_, s)| !s.finishing)
            .map(|(k, _)| *k)
            .collect()
    })
    .unwrap_or_default();
    if !keys.is_empty() {
        log::info(
            std::ptr::null_mut(),
            &format!(
                "push_stream: shutting down, ending {} subscriber(s)",
                keys.len()
            ),
        );
    }
    for key in keys {
        end(key);
    }
}

/// Holds `sub.req` open as a subscriber until it ends. Returns NGX_DONE for the handler.
pub fn hold(mut sub: Sub) -> ngx_int_t {
    let req = sub.req;
    let key = req.0 as usize;
    if !req.on_cleanup(sub_cleanup, req.0 as *mut core::ffi::c_void) {
        return nginx_sys::NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    }
    if let Some((_, ms)) = &sub.ping {
        sub.ping_ev = req.timer(ping_handler);
        if !sub.ping_ev.is_null() {
            // SAFETY: a fresh event from the request pool.
            unsafe { nginx_sys::ngx_add_timer(sub.ping_ev, *ms as _) };
        }
    }
    if let Some(ms) = sub.ttl {
        sub.ttl_ev = req.timer(ttl_handler);
        if !sub.ttl_ev.is_null() {
            // SAFETY: as above.
            unsafe { nginx_sys::ngx_add_timer(sub.ttl_ev, ms as _) };
        }
    }
    let write: nginx_sys::ngx_http_event_handler_pt = Some(sub_write_handler);
    let ws = matches!(sub.mode, Mode::WebSocket(_));
    let rc = req.hold(write);
    if ws {
        req.set_read_handler(Some(crate::websocket::ws_read_handler));
    }
    with(|w| {
        for c in &sub.channels {
            w.by_channel.entry(c.clone()).or_default().insert(key);
        }
        w.next_serial += 1;
        let mut sub = sub;
        sub.serial = w.next_serial;
        w.subs.insert(key, sub);
    });
    rc
}

unsafe extern "C" fn ping_handler(ev: *mut ngx_event_t) {
    let r = (*ev).data as *mut ngx_http_request_t;
    let req = Req::from_raw(r);
    guard(req.log(), "ping timer", (), || {
        let key = r as usize;
        let ping = with(|w| {
            w.subs
                .get(&key)
                .filter(|s| !s.finishing)
                .and_then(|s| s.ping.as_ref().map(|p| p.0.clone()))
        })
        .flatten();
        if let Some(bytes) = ping {
            send_bytes(key, req, &bytes);
            rearm_ping(key);
        }
    })
}

unsafe extern "C" fn ttl_handler(ev: *mut ngx_event_t) {
    let r = (*ev).data as *mut ngx_http_request_t;
    let req = Req::from_raw(r);
    guard(req.log(), "ttl timer", (), || end(r as usize))
}

/// Pool cleanup of a subscriber request: timers off, and forget it here and in the store.
unsafe extern "C" fn sub_cleanup(data: *mut core::ffi::c_void) {
    guard(std::ptr::null_mut(), "request cleanup", (), || {
        let key = data as usize;
        let gone = with(|w| {
            let sub = w.subs.remove(&key)?;
            for c in &sub.channels {
                if let Some(keys) = w.by_channel.get_mut(c) {
                    keys.remove(&key);
                    if keys.is_empty() {
                        w.by_channel.remove(c);
                    }
                }
            }
            Some((sub, w.zone, w.limits, w.slot))
        })
        .flatten();
        if let Some((mut sub, zone, limits, slot)) = gone {
            // Before nginx logs the request ($bytes_sent), which follows the cleanups.
            sub.out.settle();
            for ev in [sub.ping_ev, sub.ttl_ev] {
                // SAFETY: events from the request pool, still allocated during its cleanups.
                unsafe {
                    if !ev.is_null() && (*ev).timer_set() != 0 {
                        nginx_sys::ngx_del_timer(ev);
                    }
                }
            }
            if !sub.channels.is_empty() {
                let t = now();
                zone::with_store(zone, |s| {
                    for c in &sub.channels {
                        s.remove_subscriber(c, slot, t, limits);
                    }
                });
            }
        }
    })
}

impl Worker {
    /// Feeds bytes a WebSocket client sent to its decoder.
    pub fn ws_feed(
        &mut self,
        key: usize,
        data: &[u8],
    ) -> Option<Vec<push_stream_core::websocket::Event>> {
        match self.subs.get_mut(&key).map(|s| &mut s.mode) {
            Some(Mode::WebSocket(state)) => Some(state.decoder.feed(data)),
            _ => None,
        }
    }

    /// The channels and configuration of a WebSocket subscriber.
    #[allow(clippy::type_complexity)]
    pub fn ws_context(
        &self,
        key: usize,
    ) -> Option<(
        Vec<Vec<u8>>,
        &'static crate::glue::conf::MainConf,
        &'static crate::glue::conf::LocConf,
    )> {
        match self.subs.get(&key) {
            Some(s) => match &s.mode {
                Mode::WebSocket(state) => Some((s.channels.clone(), state.mcf, state.lcf)),
                _ => None,
            },
            None => None,
        }
    }

    pub fn mark_finishing(&mut self, key: usize) {
        if let Some(s) = self.subs.get_mut(&key) {
            s.finishing = true;
        }
    }
}

/// Copies this worker's counters into its slot of the zone (read by the metrics location).
pub fn publish_slot_stats() {
    use std::sync::atomic::Ordering::Relaxed;
    let Some((zone, slot, pid, stats, modes)) = with(|w| {
        let mut modes = [0u64; 4];
        for s in w.subs.values() {
            let i = match (&s.mode, s.tpl.map(|t| t.kind)) {
                (Mode::LongPoll { .. }, _) => 2,
                (Mode::WebSocket(_), _) => 3,
                (_, Some(push_stream_core::template::Kind::EventSource)) => 1,
                _ => 0,
            };
            modes[i] += 1;
        }
        (w.zone, w.slot, w.pid, w.stats, modes)
    }) else {
        return;
    };
    let Some(st) = zone::slot_stats(zone, slot) else {
        return;
    };
    st.pid.store(pid as u64, Relaxed);
    for (i, n) in modes.iter().enumerate() {
        st.subscribers[i].store(*n, Relaxed);
    }
    st.delivered.store(stats.delivered, Relaxed);
    st.bytes.store(stats.bytes, Relaxed);
    st.slow_closed.store(stats.slow_closed, Relaxed);
    st.lost.store(stats.lost, Relaxed);
    for (i, n) in stats.latency.iter().enumerate() {
        st.latency[i].store(*n, Relaxed);
    }
    st.latency_sum_ms.store(stats.latency_sum_ms, Relaxed);
    for (name, v) in crate::broker::stats() {
        let target = match name.as_str() {
            "amqp_connected" => &st.amqp_connected,
            "amqp_messages_in" => &st.amqp_in,
            "amqp_messages_out" => &st.amqp_out,
            "amqp_reconnects" => &st.amqp_reconnects,
            "amqp_inbox_depth" => &st.inbox_depth,
            _ => continue,
        };
        target.store(v, Relaxed);
    }
}

/// This worker's number (0 to worker_processes - 1; a respawned worker gets its predecessor's).
pub fn number() -> usize {
    // SAFETY: nginx sets ngx_worker before it calls the modules' init_process; read on the
    // worker's own thread.
    unsafe { nginx_sys::ngx_worker }
}

/// This worker's nginx process slot (its key in the store's per-worker counts).
pub fn slot() -> usize {
    with(|w| w.slot).unwrap_or(0)
}

#[cfg(feature = "test-hooks")]
pub fn sub_count() -> usize {
    with(|w| w.subs.len()).unwrap_or(0)
}

/// The write handler of subscribers: flush what was pending.
unsafe extern "C" fn sub_write_handler(r: *mut ngx_http_request_t) {
    let req = Req::from_raw(r);
    guard(req.log(), "write handler", (), || {
        if req.write_timed_out() {
            log::info(
                req.log(),
                "push_stream: client timed out (send_timeout) with output pending",
            );
            req.finalize(nginx_sys::NGX_HTTP_REQUEST_TIME_OUT as ngx_int_t);
            return;
        }
        let key = r as usize;
        let mut out = with(|w| w.subs.get_mut(&key).map(|s| std::mem::take(&mut s.out))).flatten();
        let rc = req.flush(out.as_mut());
        if let Some(out) = out {
            with(|w| w.subs.get_mut(&key).map(|s| s.out = out));
        }
        if rc == nginx_sys::NGX_ERROR as ngx_int_t {
            req.finalize(rc);
        }
    })
}

/// `exit_process`: end subscribers, leave the store, stop and join the thread (bounded),
/// then close our connections, in that order (a closed fd number could be reused by a client
/// socket the thread would then write to).
pub fn exit() {
    shutdown();
    let Some(mut w) = WORKER.with(|w| w.borrow_mut().take()) else {
        return;
    };
    zone::with_store(w.zone, |s| {
        s.unregister_worker(w.slot, w.pid, now(), w.limits)
    });
    // SAFETY: our own timer event and connections, still registered with the event loop.
    unsafe {
        if w.timer.timer_set() != 0 {
            nginx_sys::ngx_del_timer(&mut *w.timer);
        }
        if !w.wake_conn.is_null() {
            ngx_close_connection(w.wake_conn);
        }
    }
    let mut joined = true;
    if let Some(b) = w.bridge.take() {
        joined = b.stop(JOIN_TIMEOUT);
    }
    // SAFETY: see above.
    unsafe {
        if joined {
            ngx_close_connection(w.conn);
        } else {
            log::alert(std::ptr::null_mut(), &format!(
                "push_stream: the background thread did not stop within {}s; leaving its eventfd open",
                JOIN_TIMEOUT.as_secs()
            ));
        }
    }
}
