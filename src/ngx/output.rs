//! The output side of a held request: shared payloads written without a copy per
//! subscriber, straight to the socket when no body filter needs them (framed as nginx's
//! chunked filter would frame them), else through nginx's filters with buffer and chain
//! structs reused through free and busy chains; and the `send_timeout` watch while output
//! waits.

use core::ptr;
use std::rc::Rc;

use nginx_sys::{ngx_buf_t, ngx_chain_t, ngx_http_output_filter, ngx_http_request_t, ngx_int_t};
use push_stream_core::wire;

use super::request::Request;

const NGX_OK: ngx_int_t = nginx_sys::NGX_OK as ngx_int_t;
const NGX_ERROR: ngx_int_t = nginx_sys::NGX_ERROR as ngx_int_t;
const NGX_AGAIN: ngx_int_t = nginx_sys::NGX_AGAIN as ngx_int_t;

/// What one queued payload costs besides its bytes (an `ngx_buf_t` and an `ngx_chain_t` from
/// the request pool), counted in the pending output.
const BUF_OVERHEAD: usize = core::mem::size_of::<ngx_buf_t>() + core::mem::size_of::<ngx_chain_t>();

/// One piece of a direct write: a shared payload, or framing bytes.
enum Piece<'a> {
    Shared(&'a Rc<[u8]>),
    Frame(&'a [u8]),
}

/// The pieces of the messages `parts[..ends[0]]`, `parts[ends[0]..ends[1]]`… in order, each
/// non-empty message framed as a chunk when `heads` (one per non-empty message, see
/// `wire::message_sizes`) are given; empty payloads left out.
fn framed<'a>(
    parts: &'a [Rc<[u8]>],
    ends: &[usize],
    heads: &'a [([u8; 18], usize)],
    mut f: impl FnMut(Piece<'a>),
) {
    let mut start = 0;
    let mut heads = heads.iter();
    let chunked = heads.len() > 0;
    for &end in ends {
        let msg = &parts[start..end];
        start = end;
        if msg.iter().all(|p| p.is_empty()) {
            continue;
        }
        if let Some((h, len)) = heads.next() {
            f(Piece::Frame(&h[..*len]));
        }
        for p in msg.iter().filter(|p| !p.is_empty()) {
            f(Piece::Shared(p));
        }
        if chunked {
            f(Piece::Frame(wire::CHUNK_TAIL));
        }
    }
}

/// Linux's IOV_MAX: a direct write of more pieces goes through nginx.
pub(super) const MAX_IOV: usize = 1024;

/// What a direct write did.
pub(super) enum Wrote {
    /// Everything went (this many bytes).
    All(usize),
    /// The socket took this many bytes; the rest (payload, offset of its first unsent byte)
    /// is already framed.
    Partial(usize, Vec<(Rc<[u8]>, usize)>),
    /// The write failed (the connection is broken).
    Error,
}

/// Writes the messages `parts[..ends[0]]`, `parts[ends[0]..ends[1]]`… to the socket `fd` in
/// one `writev`, each framed as an HTTP/1.1 chunk when `chunked` (as nginx's chunked filter
/// frames each output-filter call); empty messages are left out. The caller checked that
/// `parts.len() + 2 * ends.len() <= MAX_IOV`.
pub(super) fn direct_write(
    fd: libc::c_int,
    parts: &[Rc<[u8]>],
    ends: &[usize],
    chunked: bool,
) -> Wrote {
    // Iovecs on the stack for the usual write (one message, maybe with its padding); a
    // worker catching up (up to 256 messages a batch) takes them from the heap.
    const STACK_IOV: usize = 64;
    let size: usize = parts.iter().map(|p| p.len()).sum();
    let needed = parts.len() + 2 * ends.len();
    // Each message's chunk head (chunked responses; empty messages get no chunk).
    let (one, many);
    let heads: &[([u8; 18], usize)] = match (chunked, ends) {
        (false, _) => &[],
        (true, [_]) => {
            one = [wire::chunk_head(size)];
            &one
        }
        (true, _) => {
            many = wire::message_sizes(parts.iter().map(|p| p.len()), ends)
                .map(wire::chunk_head)
                .collect::<Vec<_>>();
            &many
        }
    };
    let empty = libc::iovec {
        iov_base: ptr::null_mut(),
        iov_len: 0,
    };
    let mut stack = [empty; STACK_IOV];
    let mut heap;
    let iov: &mut [libc::iovec] = if needed <= STACK_IOV {
        &mut stack
    } else {
        heap = vec![empty; needed];
        &mut heap
    };
    let mut n = 0;
    framed(parts, ends, heads, |piece| {
        let b: &[u8] = match piece {
            Piece::Shared(p) => p,
            Piece::Frame(b) => b,
        };
        iov[n] = libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        };
        n += 1;
    });
    let total: usize = iov[..n].iter().map(|v| v.iov_len).sum();
    let written = match writev_all(fd, &iov[..n]) {
        Some(w) => w,
        None => return Wrote::Error,
    };
    if written == total {
        return Wrote::All(written);
    }
    let mut segs: Vec<Rc<[u8]>> = Vec::with_capacity(n);
    framed(parts, ends, heads, |piece| match piece {
        // The payloads stay shared; the framing bytes are copied.
        Piece::Shared(p) => segs.push(p.clone()),
        Piece::Frame(b) => segs.push(Rc::from(b)),
    });
    let lens: Vec<usize> = segs.iter().map(|p| p.len()).collect();
    let rest = wire::unsent(&lens, written)
        .map(|(i, at)| (segs[i].clone(), at))
        .collect();
    Wrote::Partial(written, rest)
}

/// One `writev` of `iov` to `fd` (retried on EINTR): the bytes the socket took (0 when it is
/// full), None when the write failed.
pub(super) fn writev_all(fd: libc::c_int, iov: &[libc::iovec]) -> Option<usize> {
    loop {
        // SAFETY: the iovecs point into memory the caller keeps alive for the call.
        let rc = unsafe { libc::writev(fd, iov.as_ptr(), iov.len() as libc::c_int) };
        if rc >= 0 {
            return Some(rc as usize);
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) => return Some(0),
            _ => return None,
        }
    }
}

/// The tag of the module's buffers in nginx's free/busy chains: any address unique to the
/// module.
static BUF_TAG: u8 = 0;

fn module_tag() -> nginx_sys::ngx_buf_tag_t {
    ptr::addr_of!(BUF_TAG) as nginx_sys::ngx_buf_tag_t
}

/// The output side of a held request: buffer and chain structs reused through nginx's free
/// and busy chains (not taken from the request pool per message), and the shared payloads
/// that nginx has not written yet. Their total is the subscriber's unsent backlog.
///
/// Also what the direct path needs, kept here so that a delivery touches none of nginx's
/// per-request structures but the socket (they are cold in the cache with tens of thousands
/// of subscribers: three such loads were most of the module's time per delivery).
pub(super) struct Out {
    free: *mut ngx_chain_t,
    busy: *mut ngx_chain_t,
    inflight: std::collections::VecDeque<std::rc::Rc<[u8]>>,
    pub(super) pending: usize,
    direct: Direct,
    /// Bytes written directly and not yet added to the connection's count (`c->sent`, read
    /// by nginx for the access log's `$bytes_sent` after the request's cleanups): added by
    /// `settle`, before anything else of this request goes to nginx and at its cleanup, so
    /// that a delivery does not touch the connection structure at all.
    unsent: libc::off_t,
    /// The last write or flush left output pending in nginx (NGX_AGAIN): later writes queue
    /// behind it until the write handler's flush completes. Every write to a held request
    /// after its set-up goes through `send_shared` or `flush` (with a flush buffer), so this
    /// is exactly "nginx holds output for this request".
    blocked: bool,
}

/// Whether a request's writes may go around the body filters (`Req::direct_ok`).
#[derive(Clone, Copy, PartialEq)]
enum Direct {
    /// Not known yet (the header or the first bytes may still be queued in nginx).
    Unknown,
    /// Never: TLS, HTTP/2, a filter or limit that needs the body.
    Never,
    /// Yes: the connection (for its byte count), its socket and whether the body is chunked.
    Yes {
        c: *mut nginx_sys::ngx_connection_t,
        fd: libc::c_int,
        chunked: bool,
    },
}

impl Default for Out {
    fn default() -> Self {
        Out {
            free: ptr::null_mut(),
            busy: ptr::null_mut(),
            inflight: Default::default(),
            pending: 0,
            direct: Direct::Unknown,
            unsent: 0,
            blocked: false,
        }
    }
}

impl Out {
    /// Adds the bytes written directly to the connection's count. Call while the request is
    /// alive (in its cleanup at the latest).
    pub(super) fn settle(&mut self) {
        if let (Direct::Yes { c, .. }, n @ 1..) = (self.direct, self.unsent) {
            // SAFETY: the connection of a live request (the caller's contract).
            unsafe { (*c).sent += n };
            self.unsent = 0;
        }
    }
}

impl Out {
    /// Nothing of this request's output waits in the module's or nginx's chains.
    pub(super) fn idle(&self) -> bool {
        self.pending == 0 && self.busy.is_null() && !self.blocked && self.inflight.is_empty()
    }

    /// The payloads nginx may still reference, for the request's pool cleanup to release.
    pub(super) fn take_inflight(&mut self) -> std::collections::VecDeque<Rc<[u8]>> {
        std::mem::take(&mut self.inflight)
    }

    /// The largest single payload nginx still holds for this request.
    pub(super) fn largest_inflight(&self) -> usize {
        self.inflight.iter().map(|p| p.len()).max().unwrap_or(0)
    }
}

impl Request<'_> {
    /// Writes each non-empty piece copied into the request pool, one output-filter call each
    /// (so one chunk each), the last one flushed (a bare flush when there are none); output
    /// left pending is watched as for `send_shared`.
    pub(super) fn send_copies(&self, out: &mut Out, pieces: &[&[u8]]) -> ngx_int_t {
        out.settle();
        let pieces: Vec<&[u8]> = pieces.iter().copied().filter(|p| !p.is_empty()).collect();
        let mut rc = NGX_OK;
        if pieces.is_empty() {
            rc = self.send_bytes(b"", true, false).0;
        }
        for (i, p) in pieces.iter().enumerate() {
            rc = self.send_bytes(p, i + 1 == pieces.len(), false).0;
            if rc == NGX_ERROR {
                break;
            }
        }
        out.blocked = out.blocked || rc == NGX_AGAIN;
        self.watch_output(rc, false)
    }

    /// Sends shared payloads without copying them: the messages `parts[..ends[0]]`,
    /// `parts[ends[0]..ends[1]]`…, each its own HTTP/1.1 chunk on a chunked response (as the
    /// C module writes each message with its own output-filter call). When the request has
    /// nothing queued and no body filter needs to see its bytes (`direct_ok`), they go
    /// straight to the socket in one `writev`, framed as nginx's chunked filter would frame
    /// them; what the socket does not take, and everything on other requests, goes to nginx
    /// as buffers pointing into the payloads, kept alive in `out` until nginx has written
    /// them.
    pub(super) fn send_shared(
        &self,
        out: &mut Out,
        parts: &[Rc<[u8]>],
        ends: &[usize],
    ) -> ngx_int_t {
        let rc = match self.send_direct(out, parts, ends) {
            // All written: nothing was pending before (or it would not be direct), so no
            // send_timeout timer is set either.
            Some(rc) if rc == NGX_OK => return rc,
            Some(rc) => rc,
            // SAFETY: the chains go through the output filters, as any module's body.
            None if ends.len() > 1 && self.chunked() => unsafe {
                // One output-filter call per message: the chunked filter frames each call as
                // one chunk. Only the last flushes.
                let mut rc = NGX_OK;
                let mut start = 0;
                for (i, &end) in ends.iter().enumerate() {
                    let segs = parts[start..end].iter().map(|p| (p.clone(), 0));
                    let last = i + 1 == ends.len();
                    rc = self.queue(out, segs, ngx_http_output_filter, last);
                    if rc == NGX_ERROR {
                        break;
                    }
                    start = end;
                }
                rc
            },
            None => {
                let segs = parts.iter().map(|p| (p.clone(), 0));
                // SAFETY: the whole chain goes through the output filters, as any module's body.
                unsafe { self.queue(out, segs, ngx_http_output_filter, true) }
            }
        };
        out.blocked = rc == NGX_AGAIN;
        self.watch_output(rc, false)
    }

    /// After a write to a held request: when output is left pending (NGX_AGAIN), waits for
    /// the socket to become writable, under `send_timeout`, as nginx's own writer does for a
    /// response it finishes (nginx registers a connection's write event with epoll only on
    /// demand: without this, a subscriber whose socket once filled was never written to
    /// again). The timer starts when output is first left pending and restarts only after the
    /// socket took some (`progress`, the write handler), so a client that takes nothing is
    /// closed even while new messages keep coming. When nothing is pending, the timer goes.
    /// Returns `rc`, or NGX_ERROR when the event could not be registered.
    fn watch_output(&self, rc: ngx_int_t, progress: bool) -> ngx_int_t {
        use ngx::http::HttpModuleLocationConf;
        if rc == NGX_ERROR {
            return rc;
        }
        // SAFETY: a live request, its connection, write event and core location conf.
        unsafe {
            let r = self.raw();
            let wev = (*(*r).connection).write;
            if rc != NGX_AGAIN {
                if (*wev).timer_set() != 0 && (*wev).delayed() == 0 {
                    nginx_sys::ngx_del_timer(wev);
                }
                return rc;
            }
            let Some(clcf) = ngx::http::NgxHttpCoreModule::location_conf(&*r) else {
                return NGX_ERROR;
            };
            if (*wev).delayed() == 0 && (progress || (*wev).timer_set() == 0) {
                nginx_sys::ngx_add_timer(wev, clcf.send_timeout);
            }
            if nginx_sys::ngx_handle_write_event(wev, clcf.send_lowat) != NGX_OK {
                return NGX_ERROR;
            }
            rc
        }
    }

    /// Whether the write event that woke a held request is its `send_timeout` expiring (a
    /// client that took nothing for that long).
    pub(super) fn write_timed_out(&self) -> bool {
        // SAFETY: a live request's connection and write event.
        unsafe {
            let c = (*self.raw()).connection;
            let wev = (*c).write;
            if (*wev).timedout() == 0 {
                return false;
            }
            (*c).set_timedout(1);
            true
        }
    }

    /// Whether writes may go around nginx's body filters: Never for a request that is not a
    /// plain HTTP/1.x main request on the default send function (TLS, HTTP/2 or /3), or
    /// whose body a filter has asked to see or transform (gzip, gunzip, SSI, sub_filter,
    /// charset recoding, addition, xslt), or under a rate limit; Unknown while something of
    /// it is still queued anywhere (the write filter, a filter, the connection) or nginx has
    /// not yet written its first bytes (the rate limit is known from then on).
    fn direct_ok(&self) -> Direct {
        // SAFETY: fields of a live request, its connection and write event.
        unsafe {
            let r = self.raw();
            let c = (*r).connection;
            let w = (*c).write;
            let never = (*r).main != r
                || (*r).http_version >= nginx_sys::NGX_HTTP_VERSION_20 as usize
                || (*r).header_only() != 0
                || (*r).filter_need_in_memory() != 0
                || (*r).main_filter_need_in_memory() != 0
                || (*r).filter_need_temporary() != 0
                || (*r).preserve_body() != 0
                || !(*r).headers_out.content_encoding.is_null()
                || !(*c).ssl.is_null()
                || (*c).send_chain.map(|f| f as usize)
                    != nginx_sys::ngx_io.send_chain.map(|f| f as usize)
                || ((*r).limit_rate_set() != 0 && (*r).limit_rate != 0);
            if never {
                return Direct::Never;
            }
            let clean = (*r).header_sent() != 0
                && (*r).limit_rate_set() != 0
                && (*r).out.is_null()
                && (*r).postponed.is_null()
                && (*r).buffered() == 0
                && (*c).buffered() == 0
                && (*c).error() == 0
                && (*w).ready() != 0
                && (*w).delayed() == 0;
            if !clean {
                return Direct::Unknown;
            }
            Direct::Yes {
                c,
                fd: (*c).fd,
                chunked: (*r).chunked() != 0,
            }
        }
    }

    /// Whether the request can be freed now with its connection kept (see
    /// `held::HeldRef::detach`): its writes may go around the body filters and nothing of
    /// it is queued (`direct_ok`), it is the connection's only reference to it, nothing is
    /// posted or reading for it, no timer runs on its connection, and no other module has
    /// put a cleanup in its pool (`limit_conn` counts the connection there until the pool
    /// goes). The connection and whether the body is chunked.
    pub(super) fn detachable(&self) -> Option<(*mut nginx_sys::ngx_connection_t, bool)> {
        let Direct::Yes { c, chunked, .. } = self.direct_ok() else {
            return None;
        };
        // SAFETY: fields of a live request, its connection, events and pool.
        unsafe {
            let r = self.raw();
            let ok = (*r).count() == 1
                && (*r).blocked() == 0
                && (*r).posted_requests.is_null()
                && (*r).discard_body() == 0
                && (*r).reading_body() == 0
                && (*r).http_version >= nginx_sys::NGX_HTTP_VERSION_10 as usize
                && (*(*c).read).timer_set() == 0
                && (*(*c).write).timer_set() == 0
                && (*r).expect_trailers() == 0
                && (*r).headers_out.trailers.part.nelts == 0
                && self.detach_refusal().is_none();
            ok.then_some((c, chunked))
        }
    }

    /// Why the request can never be detached; None when `detachable` may become true later
    /// (once its output drained, its other references went).
    pub(super) fn detach_refusal(&self) -> Option<&'static str> {
        // SAFETY: nginx's event flags, set once at the worker's start.
        let edge = unsafe { nginx_sys::ngx_event_flags }
            & nginx_sys::NGX_USE_CLEAR_EVENT as nginx_sys::ngx_uint_t
            != 0;
        if !edge {
            // A level-triggered event method (poll, select) would report the idle socket
            // ready on every turn: the module's handlers are written for epoll and kqueue.
            Some("the event method is not edge-triggered (epoll, kqueue)")
        } else if self.direct_ok() == Direct::Never {
            Some("TLS, HTTP/2 or 3, a body filter (gzip, sub_filter…) or limit_rate")
        } else if !self.own_pool_cleanups_only() {
            Some("another module keeps state in the request's pool (limit_conn, realip, the PROXY protocol's address…)")
        } else if self.has_post_action() {
            Some("the location has a post_action")
        } else {
            None
        }
    }

    /// The location runs a `post_action` at the request's end (which a freed request never
    /// reaches).
    fn has_post_action(&self) -> bool {
        use ngx::http::HttpModuleLocationConf;
        // SAFETY: the core location configuration of a live request.
        unsafe {
            ngx::http::NgxHttpCoreModule::location_conf(&*self.raw())
                .is_none_or(|clcf| !clcf.post_action.data.is_null())
        }
    }

    fn own_pool_cleanups_only(&self) -> bool {
        // SAFETY: the cleanup list of a live request's pool.
        unsafe {
            let mut cl = (*(*self.raw()).pool).cleanup;
            while !cl.is_null() {
                if (*cl).handler.is_some() && !super::held::own_pool_cleanup((*cl).handler) {
                    return false;
                }
                cl = (*cl).next;
            }
        }
        true
    }

    /// Whether the response body is chunked (known once the header was sent).
    fn chunked(&self) -> bool {
        // SAFETY: a field of a live request.
        unsafe { (*self.raw()).chunked() != 0 }
    }

    /// The direct write of `send_shared`; None when it does not apply (nothing was written).
    fn send_direct(&self, out: &mut Out, parts: &[Rc<[u8]>], ends: &[usize]) -> Option<ngx_int_t> {
        let size: usize = parts.iter().map(|p| p.len()).sum();
        if size == 0 || parts.len() + 2 * ends.len() > MAX_IOV || out.blocked || !out.busy.is_null()
        {
            return None;
        }
        if out.direct == Direct::Unknown {
            out.direct = self.direct_ok();
        }
        let Direct::Yes { c, fd, chunked } = out.direct else {
            return None;
        };
        let rest = match direct_write(fd, parts, ends, chunked) {
            Wrote::All(n) => {
                out.unsent += n as libc::off_t;
                return Some(NGX_OK);
            }
            Wrote::Error => {
                // SAFETY: the request's live connection; nginx's own send functions mark
                // the error the same way.
                unsafe { (*c).set_error(1) };
                return Some(NGX_ERROR);
            }
            Wrote::Partial(n, rest) => {
                out.unsent += n as libc::off_t;
                rest
            }
        };
        out.settle();
        // The socket is full: nginx's write filter keeps the rest and writes it when the
        // socket is writable again (the write event handler flushes it).
        // SAFETY: as above.
        unsafe { (*(*c).write).set_ready(0) };
        // SAFETY: the rest is already framed: it goes to the write filter only, behind
        // nothing (direct_ok saw nothing queued).
        Some(unsafe {
            self.queue(
                out,
                rest.into_iter(),
                nginx_sys::ngx_http_write_filter,
                true,
            )
        })
    }

    /// Hands `segs` (payload, offset of its first unsent byte) to `filter` as buffers from the
    /// request's free chain (the last one flushed when `flush`), keeping each payload in `out`
    /// until nginx reports it written.
    ///
    /// # Safety
    /// `filter` must be nginx's output filter or its write filter, with what that implies
    /// for framing.
    unsafe fn queue(
        &self,
        out: &mut Out,
        segs: impl Iterator<Item = (Rc<[u8]>, usize)>,
        filter: unsafe extern "C" fn(*mut ngx_http_request_t, *mut ngx_chain_t) -> ngx_int_t,
        flush: bool,
    ) -> ngx_int_t {
        out.settle();
        let r = self.raw();
        let mut head: *mut ngx_chain_t = ptr::null_mut();
        let mut tail: *mut *mut ngx_chain_t = &mut head;
        let mut last: *mut ngx_buf_t = ptr::null_mut();
        for (p, at) in segs.filter(|(p, at)| *at < p.len()) {
            let cl = nginx_sys::ngx_chain_get_free_buf((*r).pool, &mut out.free);
            if cl.is_null() {
                return NGX_ERROR;
            }
            let b = (*cl).buf;
            ptr::write_bytes(b, 0, 1);
            let data = p.as_ptr() as *mut u8;
            (*b).start = data;
            (*b).pos = data.add(at);
            (*b).last = data.add(p.len());
            (*b).end = (*b).last;
            (*b).set_memory(1);
            (*b).tag = module_tag();
            (*cl).next = ptr::null_mut();
            *tail = cl;
            tail = &mut (*cl).next;
            last = b;
            out.inflight.push_back(p);
        }
        if head.is_null() {
            return NGX_OK;
        }
        if flush {
            (*last).set_flush(1);
        }
        let rc = filter(r, head);
        nginx_sys::ngx_chain_update_chains(
            (*r).pool,
            &mut out.free,
            &mut out.busy,
            &mut head,
            module_tag(),
        );
        self.account(out);
        rc
    }

    /// After a flush: drops the payloads nginx has written.
    fn release(&self, out: &mut Out) {
        // SAFETY: as in send_shared.
        unsafe {
            let mut none: *mut ngx_chain_t = ptr::null_mut();
            nginx_sys::ngx_chain_update_chains(
                (*self.raw()).pool,
                &mut out.free,
                &mut out.busy,
                &mut none,
                module_tag(),
            );
        }
        self.account(out);
    }

    fn account(&self, out: &mut Out) {
        let mut busy = 0usize;
        let mut cl = out.busy;
        // SAFETY: walking the busy chain nginx maintains for us.
        unsafe {
            while !cl.is_null() {
                busy += 1;
                cl = (*cl).next;
            }
        }
        while out.inflight.len() > busy {
            out.inflight.pop_front();
        }
        // Each queued payload also holds a buffer and a chain link from the request pool
        // (reused once written): count them, so that many tiny messages cannot hold ten
        // times the bound.
        out.pending = out.inflight.iter().map(|p| p.len() + BUF_OVERHEAD).sum();
    }

    /// TCP_NODELAY on a held HTTP/1.x connection when the location's `tcp_nodelay` is on
    /// (nginx's default), as nginx does for WebSocket proxying and keep-alive connections.
    /// Pushed messages are small writes that must leave at once; with Nagle's algorithm a
    /// message waits until the client acknowledges the previous one, which a client may delay
    /// by up to 40 ms (Linux's delayed ACK). A failure is logged by nginx and changes nothing
    /// else.
    pub(super) fn nodelay(&self) {
        use ngx::http::HttpModuleLocationConf;
        // SAFETY: a live request, its connection and core location configuration.
        unsafe {
            let r = self.raw();
            if (*r).http_version >= nginx_sys::NGX_HTTP_VERSION_20 as usize {
                return;
            }
            if ngx::http::NgxHttpCoreModule::location_conf(&*r).is_some_and(|c| c.tcp_nodelay != 0)
            {
                nginx_sys::ngx_tcp_nodelay((*r).connection);
            }
        }
    }

    /// Flushes output that was left pending (after NGX_AGAIN), then drops the payloads nginx
    /// has written (`out`: the subscriber's, when it still has one).
    pub(super) fn flush(&self, out: Option<&mut Out>) -> ngx_int_t {
        // SAFETY: a live request; a null chain only flushes.
        let rc = unsafe { ngx_http_output_filter(self.raw(), ptr::null_mut()) };
        if let Some(out) = out {
            out.settle();
            self.release(out);
            out.blocked = rc == NGX_AGAIN;
        }
        self.watch_output(rc, true)
    }
}
