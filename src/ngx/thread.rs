//! Starting the worker's background thread and waking the event loop from it.

use std::io;
use std::os::fd::RawFd;
use std::thread::{self, JoinHandle};

/// The write side of the worker's eventfd. The fd stays open until the thread that holds this
/// has been joined (see `worker::exit`), so a write can never reach a reused fd number.
#[derive(Clone, Copy, Debug)]
pub struct Waker {
    fd: RawFd,
}

impl Waker {
    pub(crate) fn new(fd: RawFd) -> Waker {
        Waker { fd }
    }

    /// Adds 1 to the eventfd counter, which makes the worker's event loop run its inbox handler.
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to an fd owned by the worker for the lifetime
        // of every thread holding a Waker. EAGAIN (counter saturated) still leaves it readable.
        unsafe {
            libc::write(self.fd, &one as *const u64 as *const libc::c_void, 8);
        }
    }
}

/// Creates the non-blocking, close-on-exec eventfd the worker listens on.
pub fn eventfd() -> io::Result<RawFd> {
    // SAFETY: plain syscall.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(fd)
    }
}

/// Reads (and so resets) the eventfd counter; returns how many wake-ups were pending.
pub fn drain_eventfd(fd: RawFd) -> u64 {
    let mut v: u64 = 0;
    // SAFETY: reads 8 bytes into a live u64 from a non-blocking eventfd.
    let n = unsafe { libc::read(fd, &mut v as *mut u64 as *mut libc::c_void, 8) };
    if n == 8 {
        v
    } else {
        0
    }
}

/// The host name as nginx has it (`ngx_cycle->hostname`, which nginx's `$hostname` also
/// shows): the C module's statistics `hostname`. nginx lower-cases what `gethostname` returns.
pub fn hostname() -> String {
    // SAFETY: called on the worker's main thread while serving a request, when ngx_cycle is
    // the running cycle; its hostname lives in the cycle's pool for the cycle's lifetime.
    unsafe {
        let cycle = nginx_sys::ngx_cycle;
        if cycle.is_null() {
            return String::new();
        }
        let h = (*cycle).hostname;
        if h.data.is_null() || h.len == 0 {
            return String::new();
        }
        String::from_utf8_lossy(std::slice::from_raw_parts(h.data, h.len)).into_owned()
    }
}

/// Spawns a thread with every signal blocked, so that process-directed signals (HUP, QUIT,
/// USR1…) keep going to nginx's own thread, where its `epoll_wait` sees them.
pub fn spawn_blocking_signals<F>(name: &str, f: F) -> io::Result<JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    // SAFETY: sigset manipulation on stack values; the old mask is restored right after spawn.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        let r = thread::Builder::new().name(name.to_string()).spawn(f);
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        r
    }
}
