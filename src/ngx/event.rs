//! The worker's own event-loop plumbing: fds of the module wrapped as nginx connections (the
//! inbox eventfd, the host wake-up socket), the periodic timer, and the process facts the
//! module reads from nginx (clock, worker number, process slot, shutdown).

use std::os::fd::RawFd;

use nginx_sys::{
    ngx_close_connection, ngx_connection_t, ngx_event_t, ngx_get_connection, ngx_handle_read_event,
    ngx_int_t, NGX_OK,
};

use super::guard::guard;
use super::log::Log;
use super::thread::drain_eventfd;
use super::App;

/// Why the module's `App::wakeup` runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Source {
    /// The background thread put something in the inbox.
    Inbox,
    /// nginx began a graceful shutdown (reload, QUIT): `ngx_close_idle_connections()` called
    /// the inbox connection's handler, which is marked idle for that purpose.
    Shutdown,
    /// Another worker of the host published (its datagram on the wake-up socket), or the
    /// module asked for a delivery pass on the next turn.
    Wake,
    /// The periodic timer.
    Tick,
}

/// An fd of the module registered with the event loop as an nginx connection.
pub struct Internal {
    c: *mut ngx_connection_t,
}

/// Why an internal connection could not be set up.
#[derive(Debug)]
pub enum EventError {
    NoConnection,
    Register,
    Socket(&'static str, std::io::Error),
}

impl std::fmt::Display for EventError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EventError::NoConnection => write!(f, "no free connection for an internal fd"),
            EventError::Register => write!(f, "cannot register an internal fd with the event loop"),
            EventError::Socket(what, e) => write!(f, "{what} failed: {e}"),
        }
    }
}

impl Internal {
    /// Wraps `fd` (closed on failure) as a connection whose read events call
    /// `A::wakeup(source)`. The inbox connection is marked idle: nginx then calls it with
    /// `c->close` set when a graceful shutdown begins (`Source::Shutdown`).
    pub fn open<A: App>(fd: RawFd, source: Source) -> Result<Internal, EventError> {
        // SAFETY: nginx's connection API on the worker thread, wrapping our own fd.
        unsafe {
            let log = (*nginx_sys::ngx_cycle).log;
            let c = ngx_get_connection(fd, log);
            if c.is_null() {
                libc::close(fd);
                return Err(EventError::NoConnection);
            }
            (*c).log = log;
            (*(*c).read).log = log;
            (*(*c).write).log = log;
            (*(*c).read).handler = Some(match source {
                Source::Inbox | Source::Shutdown => inbox_handler::<A>,
                _ => wake_handler::<A>,
            });
            if ngx_handle_read_event((*c).read, 0) != NGX_OK as ngx_int_t {
                ngx_close_connection(c);
                return Err(EventError::Register);
            }
            if matches!(source, Source::Inbox | Source::Shutdown) {
                (*c).set_idle(1);
            }
            Ok(Internal { c })
        }
    }

    pub fn fd(&self) -> RawFd {
        // SAFETY: our own live connection.
        unsafe { (*self.c).fd }
    }

    /// Runs its handler later in this turn of the event loop (after the running handler).
    pub fn post(&self) {
        // SAFETY: our own connection's read event.
        unsafe {
            post(
                (*self.c).read,
                core::ptr::addr_of_mut!(nginx_sys::ngx_posted_events),
            )
        }
    }

    /// Runs its handler on the next turn (after nginx has looked for I/O).
    pub fn post_next(&self) {
        // SAFETY: as above.
        unsafe {
            post(
                (*self.c).read,
                core::ptr::addr_of_mut!(nginx_sys::ngx_posted_next_events),
            )
        }
    }

    /// Leaves the connection and its fd open for the rest of the process (a thread that
    /// could not be stopped may still write to it).
    pub fn leak(self) {}

    /// Closes the connection and its fd.
    pub fn close(self) {
        // SAFETY: our own connection, closed once (consumed).
        unsafe { ngx_close_connection(self.c) }
    }
}

unsafe fn post(ev: *mut ngx_event_t, q: *mut nginx_sys::ngx_queue_t) {
    if (*ev).posted() == 0 {
        nginx_sys::ngx_post_event(ev, q);
    }
}

unsafe extern "C" fn inbox_handler<A: App>(ev: *mut ngx_event_t) {
    let c = (*ev).data as *mut ngx_connection_t;
    guard(Log::from_raw((*c).log), "inbox handler", (), || {
        // SAFETY: c is our eventfd connection, alive until the module closes it.
        let closing = unsafe { (*c).close() } != 0;
        if closing {
            // Stay registered: the thread may still write until it is joined.
            unsafe {
                (*c).set_close(0);
                (*c).set_idle(0);
            }
            A::wakeup(Source::Shutdown);
            return;
        }
        drain_eventfd(unsafe { (*c).fd });
        A::wakeup(Source::Inbox);
    })
}

unsafe extern "C" fn wake_handler<A: App>(ev: *mut ngx_event_t) {
    let c = (*ev).data as *mut ngx_connection_t;
    guard(Log::from_raw((*c).log), "wake-up handler", (), || {
        let mut buf = [0u8; 64];
        // SAFETY: non-blocking recv on our own socket into a stack buffer.
        while unsafe { libc::recv((*c).fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) }
            > 0
        {}
        A::wakeup(Source::Wake);
    })
}

/// The worker's periodic timer (`A::wakeup(Source::Tick)`).
pub struct Ticker {
    ev: Box<ngx_event_t>,
}

impl Ticker {
    pub fn new<A: App>() -> Ticker {
        // SAFETY: an all-zero ngx_event_t is a valid idle event.
        let mut ev: Box<ngx_event_t> = Box::new(unsafe { core::mem::zeroed() });
        ev.handler = Some(tick_handler::<A>);
        // SAFETY: the cycle's log outlives the worker.
        ev.log = unsafe { (*nginx_sys::ngx_cycle).log };
        ev.set_cancelable(1);
        Ticker { ev }
    }

    pub fn arm(&mut self, ms: u64) {
        // SAFETY: the boxed event lives as long as the Ticker, which deletes it on drop.
        unsafe { nginx_sys::ngx_add_timer(&mut *self.ev, ms as _) }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        if self.ev.timer_set() != 0 {
            // SAFETY: our own timer, still in nginx's timer tree.
            unsafe { nginx_sys::ngx_del_timer(&mut *self.ev) }
        }
    }
}

unsafe extern "C" fn tick_handler<A: App>(ev: *mut ngx_event_t) {
    guard(Log::from_raw((*ev).log), "timer", (), || {
        A::wakeup(Source::Tick)
    })
}

/// nginx's cached wall clock in milliseconds.
pub fn now_ms() -> i64 {
    let t = nginx_sys::ngx_timeofday();
    t.sec as i64 * 1000 + t.msec as i64
}

/// nginx's cached wall clock (unix seconds).
pub fn now() -> i64 {
    nginx_sys::ngx_time() as i64
}

/// A graceful shutdown of this worker is under way.
pub fn exiting() -> bool {
    // SAFETY: nginx globals, read on the worker thread.
    unsafe {
        nginx_sys::ngx_exiting != 0 || nginx_sys::ngx_terminate != 0 || nginx_sys::ngx_quit != 0
    }
}

/// This worker's number (0 to worker_processes - 1; a respawned worker gets its
/// predecessor's).
pub fn worker_number() -> usize {
    // SAFETY: nginx sets ngx_worker before it calls the modules' init_process.
    unsafe { nginx_sys::ngx_worker }
}

/// This worker's nginx process slot.
pub fn process_slot() -> usize {
    // SAFETY: nginx global read on the worker thread.
    unsafe { nginx_sys::ngx_process_slot }.max(0) as usize
}

/// Whether `pid` is a live process of this nginx: it exists (signal 0) and, where /proc
/// tells, its parent is this process's parent (the master), so a pid the kernel reused for
/// some other process does not look like a live worker.
pub fn pid_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks existence.
    let r = unsafe { libc::kill(pid as i32, 0) };
    let exists = r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    if !exists {
        return false;
    }
    match parent_of(pid) {
        // SAFETY: getppid cannot fail.
        Some(ppid) => ppid == unsafe { libc::getppid() } as u32,
        None => true,
    }
}

/// The parent pid of `pid` from /proc (None when it cannot be read).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid ...: the command may hold spaces and parentheses.
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// True in a process that serves requests: an nginx worker, or nginx without a master.
pub fn is_worker() -> bool {
    // SAFETY: nginx global, read on the process's main thread.
    let p = unsafe { nginx_sys::ngx_process };
    p == nginx_sys::NGX_PROCESS_WORKER as nginx_sys::ngx_uint_t
        || p == nginx_sys::NGX_PROCESS_SINGLE as nginx_sys::ngx_uint_t
}

/// The abstract UNIX socket address of a wake-up token: not guessable, and distinct between
/// nginx instances that share a network namespace but not a pid namespace.
fn wake_addr(token: u128) -> (libc::sockaddr_un, libc::socklen_t) {
    let name = format!("\0ngx_push_stream.{token:032x}");
    // SAFETY: zeroed sockaddr_un is valid; the name is shorter than sun_path.
    let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    a.sun_family = libc::AF_UNIX as _;
    for (i, b) in name.bytes().enumerate() {
        a.sun_path[i] = b as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + name.len();
    (a, len as libc::socklen_t)
}

/// A random 128-bit token from the kernel (never 0).
pub fn random_token() -> Result<u128, EventError> {
    let mut b = [0u8; 16];
    // SAFETY: getrandom fills our stack buffer.
    let n = unsafe { libc::getrandom(b.as_mut_ptr() as *mut libc::c_void, b.len(), 0) };
    if n != b.len() as isize {
        return Err(EventError::Socket(
            "getrandom",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(u128::from_ne_bytes(b).max(1))
}

/// The datagram socket other workers poke after they publish, bound to a fresh random name.
/// Returns the fd and its token (what other workers need to reach it).
pub fn wake_socket() -> Result<(RawFd, u128), EventError> {
    // SAFETY: plain socket syscalls on a new fd.
    unsafe {
        let fd = libc::socket(
            libc::AF_UNIX,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        if fd < 0 {
            return Err(EventError::Socket(
                "socket(AF_UNIX)",
                std::io::Error::last_os_error(),
            ));
        }
        let mut last = None;
        for _ in 0..4 {
            let token = match random_token() {
                Ok(t) => t,
                Err(e) => {
                    libc::close(fd);
                    return Err(e);
                }
            };
            let (a, len) = wake_addr(token);
            if libc::bind(fd, &a as *const _ as *const libc::sockaddr, len) == 0 {
                return Ok((fd, token));
            }
            last = Some(std::io::Error::last_os_error());
        }
        libc::close(fd);
        Err(EventError::Socket(
            "bind of the wake-up socket",
            last.unwrap_or_else(std::io::Error::last_os_error),
        ))
    }
}

/// Sends one wake-up datagram from `from` to the socket of `token`. A full queue or a missing
/// peer is fine: the periodic timer catches up.
pub fn send_wake(from: &Internal, token: u128) {
    let (a, len) = wake_addr(token);
    // SAFETY: a non-blocking sendto of one byte from our own socket.
    unsafe {
        libc::sendto(
            from.fd(),
            b"w".as_ptr() as *const libc::c_void,
            1,
            libc::MSG_DONTWAIT,
            &a as *const _ as *const libc::sockaddr,
            len,
        );
    }
}
