//! The output side of a detached subscriber: a connection whose request nginx has freed
//! (see `held::HeldRef::detach`). What it writes goes straight to the socket, framed as
//! nginx's chunked filter would frame it; what the socket does not take waits here (the only
//! buffer a detached subscriber has, and only while its socket is full) under nginx's
//! `send_timeout` on the connection's write event.

use core::ptr;
use std::collections::VecDeque;
use std::rc::Rc;

use nginx_sys::{ngx_connection_t, ngx_int_t, ngx_msec_t};
use push_stream_core::wire;

use super::output::{direct_write, writev_all, Wrote, MAX_IOV};

const NGX_OK: ngx_int_t = nginx_sys::NGX_OK as ngx_int_t;
const NGX_ERROR: ngx_int_t = nginx_sys::NGX_ERROR as ngx_int_t;
const NGX_AGAIN: ngx_int_t = nginx_sys::NGX_AGAIN as ngx_int_t;

/// What one queued piece costs besides its bytes (its slot and its `Rc` header), counted in
/// the pending output so that many tiny messages cannot hold far more than the bound.
const PIECE_OVERHEAD: usize = 32;

/// The last chunk of a chunked response.
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// A detached subscriber's connection and its unsent output.
pub(super) struct Wire {
    pub(super) c: *mut ngx_connection_t,
    fd: libc::c_int,
    chunked: bool,
    send_timeout: ngx_msec_t,
    /// Unsent pieces, already framed; the first from byte `at`.
    queue: VecDeque<Rc<[u8]>>,
    at: usize,
    /// Unsent bytes plus `PIECE_OVERHEAD` per piece.
    pub(super) pending: usize,
    /// The response's end was written (or queued): nothing more may follow it.
    pub(super) ended: bool,
    /// The location's `lingering_close`, `lingering_timeout` (ms) and `lingering_time` (s).
    pub(super) linger: (u8, u32, u32),
    /// The location's `reset_timedout_connection`.
    pub(super) reset_timedout: bool,
    /// The largest piece in the queue and how many pieces have that size (recounted only
    /// when the last of them left).
    max_piece: usize,
    max_count: usize,
}

impl Wire {
    /// # Safety
    /// `c` is a live HTTP/1.x connection without TLS whose request was freed; the `Wire`
    /// is dropped before `c` is closed.
    pub(super) unsafe fn new(
        c: *mut ngx_connection_t,
        chunked: bool,
        send_timeout: ngx_msec_t,
        linger: (u8, u32, u32),
        reset_timedout: bool,
    ) -> Wire {
        Wire {
            c,
            fd: (*c).fd,
            chunked,
            send_timeout,
            queue: VecDeque::new(),
            at: 0,
            pending: 0,
            ended: false,
            linger,
            reset_timedout,
            max_piece: 0,
            max_count: 0,
        }
    }

    /// The largest piece waiting for the socket.
    pub(super) fn largest(&mut self) -> usize {
        if self.max_count == 0 && !self.queue.is_empty() {
            self.max_piece = self.queue.iter().map(|p| p.len()).max().unwrap_or(0);
            self.max_count = self
                .queue
                .iter()
                .filter(|p| p.len() == self.max_piece)
                .count();
        }
        if self.queue.is_empty() {
            0
        } else {
            self.max_piece
        }
    }

    fn pop_front(&mut self) {
        if let Some(p) = self.queue.pop_front() {
            if p.len() == self.max_piece && self.max_count > 0 {
                self.max_count -= 1;
            }
        }
    }

    fn push(&mut self, piece: Rc<[u8]>, at: usize) {
        if at >= piece.len() {
            return;
        }
        if self.queue.is_empty() {
            self.at = at;
        } else if at > 0 {
            // Only the first piece may start inside: copy the unsent part.
            return self.push(Rc::from(&piece[at..]), 0);
        }
        self.pending += piece.len() - at + PIECE_OVERHEAD;
        if self.max_count > 0 || self.queue.is_empty() {
            if piece.len() > self.max_piece || self.queue.is_empty() {
                (self.max_piece, self.max_count) = (piece.len(), 1);
            } else if piece.len() == self.max_piece {
                self.max_count += 1;
            }
        }
        self.queue.push_back(piece);
    }

    /// Writes the messages `parts[..ends[0]]`, `parts[ends[0]..ends[1]]`…, each its own chunk
    /// on a chunked response. NGX_OK: all written; NGX_AGAIN: some wait for the socket;
    /// NGX_ERROR: the connection failed.
    pub(super) fn send(&mut self, parts: &[Rc<[u8]>], ends: &[usize]) -> ngx_int_t {
        if self.ended {
            return NGX_OK;
        }
        let size: usize = parts.iter().map(|p| p.len()).sum();
        if size == 0 {
            return NGX_OK;
        }
        if self.queue.is_empty() && parts.len() + 2 * ends.len() <= MAX_IOV {
            return self.write_now(parts, ends, self.chunked);
        }
        // Behind what waits (or too many pieces for one writev): framed into the queue.
        let mut start = 0;
        for &end in ends {
            let msg = &parts[start..end];
            start = end;
            let len: usize = msg.iter().map(|p| p.len()).sum();
            if len == 0 {
                continue;
            }
            if self.chunked {
                let (h, n) = wire::chunk_head(len);
                self.push(Rc::from(&h[..n]), 0);
            }
            for p in msg {
                self.push(p.clone(), 0);
            }
            if self.chunked {
                self.push(Rc::from(wire::CHUNK_TAIL), 0);
            }
        }
        // While the socket is known to be full, the write event (not another writev that can
        // only fail) says when it takes more.
        // SAFETY: the live connection's write event (the `new` contract).
        if unsafe { (*(*self.c).write).ready() } == 0 {
            return NGX_AGAIN;
        }
        self.flush()
    }

    /// Writes `tail` (a footer or a close frame) and the response's end (the last chunk of a
    /// chunked response); nothing is written after it.
    pub(super) fn send_last(&mut self, tail: &[u8]) -> ngx_int_t {
        if self.ended {
            return NGX_OK;
        }
        let mut rc = NGX_OK;
        if !tail.is_empty() {
            rc = self.send(&[Rc::from(tail)], &[1]);
        }
        if self.chunked && rc != NGX_ERROR {
            let last: Rc<[u8]> = Rc::from(LAST_CHUNK);
            rc = if self.queue.is_empty() {
                self.write_now(&[last], &[1], false)
            } else {
                self.push(last, 0);
                self.flush()
            };
        }
        self.ended = true;
        rc
    }

    /// One `writev` of the messages when nothing waits; the rest is queued.
    fn write_now(&mut self, parts: &[Rc<[u8]>], ends: &[usize], chunked: bool) -> ngx_int_t {
        match direct_write(self.fd, parts, ends, chunked) {
            Wrote::All(_) => NGX_OK,
            Wrote::Error => self.failed(),
            Wrote::Partial(_, rest) => {
                for (p, at) in rest {
                    self.push(p, at);
                }
                self.wait(true)
            }
        }
    }

    /// Writes what waits (the write event fired, or more was queued behind it).
    pub(super) fn flush(&mut self) -> ngx_int_t {
        let mut progress = false;
        while !self.queue.is_empty() {
            let empty = libc::iovec {
                iov_base: ptr::null_mut(),
                iov_len: 0,
            };
            let mut iov = [empty; 64];
            let mut n = 0;
            for (i, p) in self.queue.iter().take(iov.len()).enumerate() {
                let from = if i == 0 { self.at } else { 0 };
                iov[n] = libc::iovec {
                    iov_base: p[from..].as_ptr() as *mut libc::c_void,
                    iov_len: p.len() - from,
                };
                n += 1;
            }
            let total: usize = iov[..n].iter().map(|v| v.iov_len).sum();
            let Some(mut written) = writev_all(self.fd, &iov[..n]) else {
                return self.failed();
            };
            progress |= written > 0;
            let all = written == total;
            while written > 0 {
                let Some(first) = self.queue.front() else {
                    break;
                };
                let left = first.len() - self.at;
                if written >= left {
                    written -= left;
                    self.pending -= left + PIECE_OVERHEAD;
                    self.pop_front();
                    self.at = 0;
                } else {
                    self.at += written;
                    self.pending -= written;
                    written = 0;
                }
            }
            if !all {
                return self.wait(progress);
            }
        }
        self.pending = 0;
        // SAFETY: the live connection's write event (the `new` contract).
        unsafe {
            let wev = (*self.c).write;
            if (*wev).timer_set() != 0 {
                nginx_sys::ngx_del_timer(wev);
            }
        }
        NGX_OK
    }

    /// Output waits for the socket: watch its write event under `send_timeout`, restarted
    /// only when the socket took some (`progress`), so a client that takes nothing is closed
    /// even while new messages keep coming.
    fn wait(&mut self, progress: bool) -> ngx_int_t {
        // SAFETY: the live connection's write event (the `new` contract).
        unsafe {
            let wev = (*self.c).write;
            (*wev).set_ready(0);
            if progress || (*wev).timer_set() == 0 {
                nginx_sys::ngx_add_timer(wev, self.send_timeout);
            }
            if nginx_sys::ngx_handle_write_event(wev, 0) != NGX_OK {
                return self.failed();
            }
        }
        NGX_AGAIN
    }

    fn failed(&mut self) -> ngx_int_t {
        // SAFETY: the live connection (the `new` contract); nginx's own send functions mark
        // a failed connection the same way.
        unsafe { (*self.c).set_error(1) };
        self.queue.clear();
        (self.max_piece, self.max_count) = (0, 0);
        self.pending = 0;
        self.ended = true;
        NGX_ERROR
    }

    /// Whether the connection failed.
    pub(super) fn broken(&self) -> bool {
        // SAFETY: the live connection (the `new` contract).
        unsafe { (*self.c).error() != 0 }
    }

    /// Nothing waits for the socket.
    pub(super) fn drained(&self) -> bool {
        self.queue.is_empty()
    }
}

/// Closes a detached subscriber's connection as nginx closes a request's: when the client may
/// still be sending (`lingering_close`), the write side is shut and what comes is read and
/// dropped for up to `lingering_time`, `lingering_timeout` at a time, so that the last bytes
/// (a footer, a close frame) are not lost to a reset; else at once.
///
/// # Safety
/// `c` is a live detached connection nothing of the module refers to any more.
pub(super) unsafe fn close_connection(
    c: *mut ngx_connection_t,
    linger: (u8, u32, u32),
    reset_timedout: bool,
) {
    let (mode, timeout, time) = linger;
    let rev = (*c).read;
    if (*c).timedout() != 0 && reset_timedout {
        // `reset_timedout_connection`, as nginx does when it frees a timed-out request: the
        // kernel drops what the client never took instead of retransmitting it.
        let l = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        libc::setsockopt(
            (*c).fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            core::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    let wanted = (*c).error() == 0
        && (*c).timedout() == 0
        && (*c).close() == 0
        && (mode as u32 == nginx_sys::NGX_HTTP_LINGERING_ALWAYS
            || (mode as u32 == nginx_sys::NGX_HTTP_LINGERING_ON
                && ((*rev).ready() != 0 || peek_data((*c).fd))));
    if !wanted || timeout == 0 {
        nginx_sys::ngx_http_close_connection(c);
        return;
    }
    let deadline = nginx_sys::ngx_time() as u64 + time as u64;
    (*c).data = ((deadline << 32) | timeout as u64) as usize as *mut core::ffi::c_void;
    (*rev).handler = Some(linger_handler);
    (*(*c).write).handler = Some(nginx_sys::ngx_http_empty_handler);
    nginx_sys::ngx_add_timer(rev, timeout as ngx_msec_t);
    if nginx_sys::ngx_handle_read_event(rev, 0) != NGX_OK
        || libc::shutdown((*c).fd, libc::SHUT_WR) == -1
    {
        nginx_sys::ngx_http_close_connection(c);
        return;
    }
    if (*rev).ready() != 0 {
        linger_read(rev, c);
    }
}

/// Bytes from the client wait to be read.
unsafe fn peek_data(fd: libc::c_int) -> bool {
    let mut b = [0u8; 1];
    libc::recv(fd, b.as_mut_ptr() as *mut libc::c_void, 1, libc::MSG_PEEK) > 0
}

/// A lingering close's read handler: drops what the client sends until it closes, the time is
/// up, or it is silent for `lingering_timeout`.
unsafe extern "C" fn linger_handler(rev: *mut nginx_sys::ngx_event_t) {
    let c = (*rev).data as *mut ngx_connection_t;
    // SAFETY: the live connection's log (an entry point nginx calls: never unwinds into it).
    let log = super::log::Log::from_raw((*c).log);
    // SAFETY: `rev` and `c` are the lingering connection's, live for the call.
    super::guard::guard(log, "lingering close", (), || unsafe {
        linger_read(rev, c)
    })
}

/// `linger_handler`'s body.
///
/// # Safety
/// `rev` is the read event of `c`, a live connection in a lingering close.
unsafe fn linger_read(rev: *mut nginx_sys::ngx_event_t, c: *mut ngx_connection_t) {
    let packed = (*c).data as usize as u64;
    let (deadline, timeout) = (packed >> 32, packed & 0xffff_ffff);
    let now = nginx_sys::ngx_time() as u64;
    if (*rev).timedout() != 0 || (*c).close() != 0 || now >= deadline {
        nginx_sys::ngx_http_close_connection(c);
        return;
    }
    let mut buf = [0u8; 4096];
    loop {
        let n = match (*c).recv {
            Some(f) => f(c, buf.as_mut_ptr(), buf.len()),
            None => nginx_sys::NGX_ERROR as isize,
        };
        if n == nginx_sys::NGX_ERROR as isize || n == 0 {
            nginx_sys::ngx_http_close_connection(c);
            return;
        }
        if n == NGX_AGAIN || (*rev).ready() == 0 {
            break;
        }
    }
    if nginx_sys::ngx_handle_read_event(rev, 0) != NGX_OK {
        nginx_sys::ngx_http_close_connection(c);
        return;
    }
    let left_ms = (deadline - now).saturating_mul(1000);
    nginx_sys::ngx_add_timer(rev, left_ms.min(timeout) as ngx_msec_t);
}
