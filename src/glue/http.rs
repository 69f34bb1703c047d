//! Thin, unsafe wrappers over nginx's HTTP request API: headers, bodies, holding a request
//! open, finishing it. Everything that touches an `ngx_http_request_t` lives here.

use core::ptr;
use std::rc::Rc;

use push_stream_core::wire;

use nginx_sys::{
    ngx_alloc_chain_link, ngx_buf_t, ngx_chain_t, ngx_http_finalize_request,
    ngx_http_output_filter, ngx_http_request_t, ngx_http_run_posted_requests, ngx_http_send_header,
    ngx_http_set_content_type, ngx_int_t, ngx_list_push, ngx_pcalloc, ngx_pnalloc, ngx_str_t,
    ngx_table_elt_t, NGX_AGAIN, NGX_DONE, NGX_ERROR, NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_OK,
};

/// The output side of a held request: buffer and chain structs reused through nginx's free
/// and busy chains (not taken from the request pool per message), and the shared payloads
/// that nginx has not written yet. Their total is the subscriber's unsent backlog.
///
/// Also what the direct path needs, kept here so that a delivery touches none of nginx's
/// per-request structures but the socket (they are cold in the cache with tens of thousands
/// of subscribers: three such loads were most of the module's time per delivery).
pub struct Out {
    free: *mut ngx_chain_t,
    busy: *mut ngx_chain_t,
    inflight: std::collections::VecDeque<std::rc::Rc<[u8]>>,
    pub pending: usize,
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
    pub fn settle(&mut self) {
        if let (Direct::Yes { c, .. }, n @ 1..) = (self.direct, self.unsent) {
            // SAFETY: the connection of a live request (the caller's contract).
            unsafe { (*c).sent += n };
            self.unsent = 0;
        }
    }
}

fn module_tag() -> nginx_sys::ngx_buf_tag_t {
    // Only the address of the module static is taken.
    ptr::addr_of_mut!(crate::ngx_http_push_stream_module) as nginx_sys::ngx_buf_tag_t
}

/// A request pointer handed to us by nginx. Only used on the worker's event-loop thread.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Req(pub *mut ngx_http_request_t);

/// Copies `bytes` into the request pool as an `ngx_str_t`.
unsafe fn pool_str(r: *mut ngx_http_request_t, bytes: &[u8]) -> Option<ngx_str_t> {
    let data = if bytes.is_empty() {
        ptr::null_mut()
    } else {
        let p = ngx_pnalloc((*r).pool, bytes.len()) as *mut u8;
        if p.is_null() {
            return None;
        }
        ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len());
        p
    };
    Some(ngx_str_t {
        len: bytes.len(),
        data,
    })
}

impl Req {
    /// # Safety
    /// `r` must be a live request given to us by nginx.
    pub unsafe fn from_raw(r: *mut ngx_http_request_t) -> Req {
        Req(r)
    }

    /// The request, for a short access on the event-loop thread (a Req is a copyable
    /// pointer: callers never hold two of these borrows at once).
    fn r(self) -> &'static mut ngx_http_request_t {
        // SAFETY: a Req is only built from a live request pointer and used on its thread;
        // the borrow is used within one call and not kept.
        unsafe { &mut *self.0 }
    }

    pub fn log(&self) -> *mut nginx_sys::ngx_log_t {
        // SAFETY: see `r`.
        unsafe { (*self.r().connection).log }
    }

    pub fn method(&self) -> usize {
        // ngx_uint_t is usize on the platforms nginx-sys binds; the cast keeps it portable.
        #[allow(clippy::unnecessary_cast)]
        let m = self.r().method as usize;
        m
    }

    /// The value of the first request header named `name` (case-insensitive).
    pub fn header_in(&self, name: &str) -> Option<&[u8]> {
        // SAFETY: iterating nginx's own header list of a live request.
        unsafe {
            let mut part = &self.r().headers_in.headers.part as *const nginx_sys::ngx_list_part_t;
            while !part.is_null() {
                let elts = (*part).elts as *const ngx_table_elt_t;
                for i in 0..(*part).nelts {
                    let h = &*elts.add(i);
                    if h.key.as_bytes().eq_ignore_ascii_case(name.as_bytes()) {
                        return Some(h.value.as_bytes());
                    }
                }
                part = (*part).next;
            }
        }
        None
    }

    pub fn set_status(&self, status: usize) {
        self.r().headers_out.status = status as _;
    }

    /// Adds a response header (copied into the request pool).
    pub fn add_header(&self, key: &str, value: &[u8]) -> bool {
        // SAFETY: ngx_list_push returns a slot in the request's own header list; it is zeroed
        // (so fields added by newer nginx versions, e.g. `next`, are null) and then filled.
        unsafe {
            let r = self.0;
            let h = ngx_list_push(&mut (*r).headers_out.headers) as *mut ngx_table_elt_t;
            if h.is_null() {
                return false;
            }
            ptr::write_bytes(h, 0, 1);
            let (Some(k), Some(v)) = (pool_str(r, key.as_bytes()), pool_str(r, value)) else {
                (*h).hash = 0;
                return false;
            };
            (*h).key = k;
            (*h).value = v;
            (*h).hash = 1;
            true
        }
    }

    /// Sets the response content type; `None` picks nginx's `default_type`/extension type.
    pub fn set_content_type(&self, ct: Option<&[u8]>) -> bool {
        // SAFETY: fields of a live request; the string is copied into its pool.
        unsafe {
            match ct {
                Some(ct) => {
                    let Some(s) = pool_str(self.0, ct) else {
                        return false;
                    };
                    (*self.0).headers_out.content_type = s;
                    (*self.0).headers_out.content_type_len = ct.len();
                    true
                }
                None => ngx_http_set_content_type(self.0) == NGX_OK as ngx_int_t,
            }
        }
    }

    pub fn set_content_length(&self, n: Option<usize>) {
        self.r().headers_out.content_length_n = n.map(|n| n as _).unwrap_or(-1);
    }

    pub fn send_header(&self) -> ngx_int_t {
        // SAFETY: a live request.
        unsafe { ngx_http_send_header(self.0) }
    }

    /// Sends `data` (copied into a pool buffer) with the given flags. An empty `data` with
    /// `last` sends just the end of the response.
    pub fn send_bytes(&self, data: &[u8], flush: bool, last: bool) -> ngx_int_t {
        // SAFETY: buffers and chain links come from the request pool and live as long as it.
        unsafe {
            let r = self.0;
            let b = ngx_pcalloc((*r).pool, core::mem::size_of::<ngx_buf_t>()) as *mut ngx_buf_t;
            if b.is_null() {
                return NGX_ERROR as ngx_int_t;
            }
            if !data.is_empty() {
                let p = ngx_pnalloc((*r).pool, data.len()) as *mut u8;
                if p.is_null() {
                    return NGX_ERROR as ngx_int_t;
                }
                ptr::copy_nonoverlapping(data.as_ptr(), p, data.len());
                (*b).pos = p;
                (*b).last = p.add(data.len());
                (*b).start = p;
                (*b).end = (*b).last;
                (*b).set_memory(1);
            }
            (*b).set_flush(flush as u32);
            if last {
                (*b).set_last_buf(((*r).main == r) as u32);
                (*b).set_last_in_chain(1);
            }
            let cl = ngx_alloc_chain_link((*r).pool) as *mut ngx_chain_t;
            if cl.is_null() {
                return NGX_ERROR as ngx_int_t;
            }
            (*cl).buf = b;
            (*cl).next = ptr::null_mut();
            let rc = ngx_http_output_filter(r, cl);
            if last {
                // Finalizing sets nginx's own writer up for what is left.
                return rc;
            }
            self.watch_output(rc, false)
        }
    }

    /// Sends shared payloads without copying them. When the request has nothing queued and no
    /// body filter needs to see its bytes (`direct_ok`), they go straight to the socket in one
    /// `writev`, framed as nginx's chunked filter would frame them; what the socket does not
    /// take, and everything on other requests, goes to nginx as buffers pointing into the
    /// payloads, kept alive in `out` until nginx has written them.
    pub fn send_shared(&self, out: &mut Out, parts: &[Rc<[u8]>]) -> ngx_int_t {
        let rc = match self.send_direct(out, parts) {
            // All written: nothing was pending before (or it would not be direct), so no
            // send_timeout timer is set either.
            Some(rc) if rc == NGX_OK as ngx_int_t => return rc,
            Some(rc) => rc,
            None => {
                let segs = parts.iter().map(|p| (p.clone(), 0));
                // SAFETY: the whole chain goes through the output filters, as any module's body.
                unsafe { self.queue(out, segs, ngx_http_output_filter) }
            }
        };
        out.blocked = rc == NGX_AGAIN as ngx_int_t;
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
        if rc == NGX_ERROR as ngx_int_t {
            return rc;
        }
        // SAFETY: a live request, its connection, write event and core location conf.
        unsafe {
            let r = self.0;
            let wev = (*(*r).connection).write;
            if rc != NGX_AGAIN as ngx_int_t {
                if (*wev).timer_set() != 0 && (*wev).delayed() == 0 {
                    nginx_sys::ngx_del_timer(wev);
                }
                return rc;
            }
            let Some(clcf) = ngx::http::NgxHttpCoreModule::location_conf(&*r) else {
                return NGX_ERROR as ngx_int_t;
            };
            if (*wev).delayed() == 0 && (progress || (*wev).timer_set() == 0) {
                nginx_sys::ngx_add_timer(wev, clcf.send_timeout);
            }
            if nginx_sys::ngx_handle_write_event(wev, clcf.send_lowat) != NGX_OK as ngx_int_t {
                return NGX_ERROR as ngx_int_t;
            }
            rc
        }
    }

    /// Whether the write event that woke a held request is its `send_timeout` expiring (a
    /// client that took nothing for that long).
    pub fn write_timed_out(&self) -> bool {
        // SAFETY: a live request's connection and write event.
        unsafe {
            let c = (*self.0).connection;
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
            let r = self.0;
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

    /// The direct write of `send_shared`; None when it does not apply (nothing was written).
    fn send_direct(&self, out: &mut Out, parts: &[Rc<[u8]>]) -> Option<ngx_int_t> {
        const MAX_IOV: usize = 64;
        let size: usize = parts.iter().map(|p| p.len()).sum();
        if size == 0 || parts.len() > MAX_IOV - 2 || out.blocked || !out.busy.is_null() {
            return None;
        }
        if out.direct == Direct::Unknown {
            out.direct = self.direct_ok();
        }
        let Direct::Yes { c, fd, chunked } = out.direct else {
            return None;
        };
        let head = chunked.then(|| wire::chunk_head(size));
        let mut iov = [libc::iovec {
            iov_base: ptr::null_mut(),
            iov_len: 0,
        }; MAX_IOV];
        let mut n = 0;
        let mut push = |b: &[u8]| {
            if !b.is_empty() {
                iov[n] = libc::iovec {
                    iov_base: b.as_ptr() as *mut libc::c_void,
                    iov_len: b.len(),
                };
                n += 1;
            }
        };
        if let Some((h, len)) = &head {
            push(&h[..*len]);
        }
        for p in parts {
            push(p);
        }
        if chunked {
            push(wire::CHUNK_TAIL);
        }
        let total: usize = iov[..n].iter().map(|v| v.iov_len).sum();
        let written = loop {
            // SAFETY: the iovecs point into `parts`, `head` and a static, all alive for the
            // call; the fd is the request's own socket (the connection outlives the request).
            let rc = unsafe { libc::writev(fd, iov.as_ptr(), n as libc::c_int) };
            if rc >= 0 {
                break rc as usize;
            }
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => break 0,
                _ => {
                    // SAFETY: as above; nginx's own send functions mark the error the same way.
                    unsafe { (*c).set_error(1) };
                    return Some(NGX_ERROR as ngx_int_t);
                }
            }
        };
        out.unsent += written as libc::off_t;
        if written == total {
            return Some(NGX_OK as ngx_int_t);
        }
        out.settle();
        // The socket is full: nginx's write filter keeps the rest and writes it when the
        // socket is writable again (the write event handler flushes it).
        // SAFETY: as above.
        unsafe { (*(*c).write).set_ready(0) };
        let mut segs: Vec<Rc<[u8]>> = Vec::with_capacity(parts.len() + 2);
        if let Some((h, len)) = &head {
            segs.push(Rc::from(&h[..*len]));
        }
        segs.extend(parts.iter().cloned());
        if chunked {
            segs.push(Rc::from(wire::CHUNK_TAIL));
        }
        let lens: Vec<usize> = segs.iter().map(|p| p.len()).collect();
        let rest = wire::unsent(&lens, written).map(|(i, at)| (segs[i].clone(), at));
        // SAFETY: the rest is already framed: it goes to the write filter only, behind
        // nothing (direct_ok saw nothing queued).
        Some(unsafe { self.queue(out, rest, nginx_sys::ngx_http_write_filter) })
    }

    /// Hands `segs` (payload, offset of its first unsent byte) to `filter` as buffers from the
    /// request's free chain, keeping each payload in `out` until nginx reports it written.
    ///
    /// # Safety
    /// `filter` must be nginx's output filter or its write filter, with what that implies
    /// for framing.
    unsafe fn queue(
        &self,
        out: &mut Out,
        segs: impl Iterator<Item = (Rc<[u8]>, usize)>,
        filter: unsafe extern "C" fn(*mut ngx_http_request_t, *mut ngx_chain_t) -> ngx_int_t,
    ) -> ngx_int_t {
        out.settle();
        let r = self.0;
        let mut head: *mut ngx_chain_t = ptr::null_mut();
        let mut tail: *mut *mut ngx_chain_t = &mut head;
        let mut last: *mut ngx_buf_t = ptr::null_mut();
        for (p, at) in segs.filter(|(p, at)| *at < p.len()) {
            let cl = nginx_sys::ngx_chain_get_free_buf((*r).pool, &mut out.free);
            if cl.is_null() {
                return NGX_ERROR as ngx_int_t;
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
            return NGX_OK as ngx_int_t;
        }
        (*last).set_flush(1);
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
                (*self.0).pool,
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
        out.pending = out.inflight.iter().map(|p| p.len()).sum();
    }

    /// A complete response from a content handler: status, headers, body. Returns what the
    /// content handler should return.
    pub fn respond(
        &self,
        status: usize,
        content_type: Option<&[u8]>,
        headers: &[(&str, &[u8])],
        body: &[u8],
    ) -> ngx_int_t {
        self.set_status(status);
        for (k, v) in headers {
            if !self.add_header(k, v) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
            }
        }
        if !self.set_content_type(content_type) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
        }
        self.set_content_length(Some(body.len()));
        if body.is_empty() {
            self.r().set_header_only(1);
        }
        let rc = self.send_header();
        if rc == NGX_ERROR as ngx_int_t || rc > NGX_OK as ngx_int_t || self.r().header_only() != 0 {
            return rc;
        }
        self.send_bytes(body, false, true)
    }

    /// Keeps the request open after the content handler returns (which must then return the
    /// value this returns, NGX_DONE). `on_write` runs when the socket becomes writable again.
    pub fn hold(&self, on_write: nginx_sys::ngx_http_event_handler_pt) -> ngx_int_t {
        let r = self.r();
        // SAFETY: r.main is the main request of a live request.
        unsafe { (*r.main).set_count((*r.main).count() + 1) };
        r.read_event_handler = Some(nginx_sys::ngx_http_test_reading);
        r.write_event_handler = on_write;
        self.nodelay();
        NGX_DONE as ngx_int_t
    }

    /// TCP_NODELAY on a held HTTP/1.x connection when the location's `tcp_nodelay` is on
    /// (nginx's default), as nginx does for WebSocket proxying and keep-alive connections.
    /// Pushed messages are small writes that must leave at once; with Nagle's algorithm a
    /// message waits until the client acknowledges the previous one, which a client may delay
    /// by up to 40 ms (Linux's delayed ACK). A failure is logged by nginx and changes nothing
    /// else.
    fn nodelay(&self) {
        use ngx::http::HttpModuleLocationConf;
        // SAFETY: a live request, its connection and core location configuration.
        unsafe {
            let r = self.0;
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
    pub fn flush(&self, out: Option<&mut Out>) -> ngx_int_t {
        // SAFETY: a live request; a null chain only flushes.
        let rc = unsafe { ngx_http_output_filter(self.0, ptr::null_mut()) };
        if let Some(out) = out {
            out.settle();
            self.release(out);
            out.blocked = rc == NGX_AGAIN as ngx_int_t;
        }
        self.watch_output(rc, true)
    }

    /// Ends a held request: `tail` (e.g. a footer) and the last buffer, then finalize.
    pub fn finish(&self, tail: &[u8]) {
        let rc = self.send_bytes(tail, true, true);
        self.finalize(if rc == NGX_AGAIN as ngx_int_t {
            NGX_OK as ngx_int_t
        } else {
            rc
        });
    }

    /// `ngx_http_finalize_request` followed by running posted requests, as nginx expects from
    /// code that finalizes outside a request's own handler.
    pub fn finalize(&self, rc: ngx_int_t) {
        // SAFETY: a live request; the connection is read before finalizing may free the request.
        unsafe {
            let c = (*self.0).connection;
            ngx_http_finalize_request(self.0, rc);
            ngx_http_run_posted_requests(c);
        }
    }

    /// Evaluates a compiled complex value for this request.
    pub fn complex(&self, cv: crate::glue::conf::Complex) -> Option<Vec<u8>> {
        // SAFETY: cv was compiled at configuration time and lives as long as the cycle.
        unsafe {
            let mut out = ngx_str_t {
                len: 0,
                data: ptr::null_mut(),
            };
            if nginx_sys::ngx_http_complex_value(self.0, cv.0, &mut out) != NGX_OK as ngx_int_t {
                return None;
            }
            Some(out.as_bytes().to_vec())
        }
    }

    /// Starts reading the request body; `done` runs when it is complete. Returns what the
    /// content handler should return.
    pub fn read_body(&self, done: unsafe extern "C" fn(*mut ngx_http_request_t)) -> ngx_int_t {
        // SAFETY: a live request.
        let rc = unsafe { nginx_sys::ngx_http_read_client_request_body(self.0, Some(done)) };
        if rc >= nginx_sys::NGX_HTTP_SPECIAL_RESPONSE as ngx_int_t {
            return rc;
        }
        NGX_DONE as ngx_int_t
    }

    /// The whole request body, from memory buffers and/or the temp file nginx spooled it to.
    pub fn body(&self) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        // SAFETY: walking the request body chain nginx built; file reads use its own fd.
        unsafe {
            let rb = (*self.0).request_body;
            if rb.is_null() {
                return Ok(out);
            }
            let mut cl = (*rb).bufs;
            while !cl.is_null() {
                let b = (*cl).buf;
                if (*b).in_file() != 0 && !(*b).file.is_null() {
                    let fd = (*(*b).file).fd;
                    let mut pos = (*b).file_pos;
                    let end = (*b).file_last;
                    let mut chunk = vec![0u8; 64 * 1024];
                    while pos < end {
                        let want = ((end - pos) as usize).min(chunk.len());
                        let n = libc::pread(fd, chunk.as_mut_ptr() as *mut libc::c_void, want, pos);
                        if n <= 0 {
                            return Err(format!(
                                "cannot read the request body's temp file: {}",
                                std::io::Error::last_os_error()
                            ));
                        }
                        out.extend_from_slice(&chunk[..n as usize]);
                        pos += n as i64;
                    }
                } else if !(*b).pos.is_null() && (*b).last > (*b).pos {
                    let len = (*b).last.offset_from((*b).pos) as usize;
                    out.extend_from_slice(core::slice::from_raw_parts((*b).pos, len));
                }
                cl = (*cl).next;
            }
        }
        Ok(out)
    }

    /// The query string (without `?`).
    pub fn args(&self) -> &[u8] {
        self.r().args.as_bytes()
    }

    /// Sets keep-alive off (WebSocket).
    #[allow(dead_code)]
    pub fn no_keepalive(&self) {
        self.r().set_keepalive(0);
    }

    /// Reads from the client connection (WebSocket frames): bytes read, 0 at EOF, NGX_AGAIN
    /// or NGX_ERROR.
    pub fn recv(&self, buf: &mut [u8]) -> isize {
        // SAFETY: the connection's own recv function on a live connection into our buffer.
        unsafe {
            let c = self.r().connection;
            match (*c).recv {
                Some(f) => f(c, buf.as_mut_ptr(), buf.len()),
                None => nginx_sys::NGX_ERROR as isize,
            }
        }
    }

    /// Re-arms the connection's read event after NGX_AGAIN.
    pub fn arm_read(&self) -> bool {
        // SAFETY: the live connection's read event.
        unsafe {
            nginx_sys::ngx_handle_read_event((*self.r().connection).read, 0) == NGX_OK as ngx_int_t
        }
    }

    /// Runs the connection's read handler on the next turn of the event loop.
    pub fn post_read_event(&self) {
        // SAFETY: posting nginx's own read event of a live connection to its posted queue.
        unsafe {
            let rev = (*self.r().connection).read;
            nginx_sys::ngx_post_event(rev, core::ptr::addr_of_mut!(nginx_sys::ngx_posted_events));
        }
    }

    /// The location's client_max_body_size.
    pub fn client_max_body_size(&self) -> u64 {
        use ngx::http::HttpModuleLocationConf;
        // SAFETY: the core module's location configuration of a live request.
        unsafe {
            ngx::http::NgxHttpCoreModule::location_conf(&*self.0)
                .map(|c| c.client_max_body_size as u64)
                .unwrap_or(1 << 20)
        }
    }

    /// Whether a compiled PCRE regex matches `subject`.
    pub fn regex_matches(&self, re: *mut nginx_sys::ngx_regex_t, subject: &[u8]) -> bool {
        // SAFETY: re was compiled at configuration time; the subject is copied into the pool.
        unsafe {
            let Some(mut s) = pool_str(self.0, subject) else {
                return false;
            };
            if s.data.is_null() {
                s.data = c"".as_ptr() as *mut u8;
            }
            nginx_sys::ngx_regex_exec(re, &mut s, ptr::null_mut(), 0) >= 0
        }
    }

    /// `Last-Modified` (nginx formats it).
    pub fn set_last_modified(&self, t: i64) {
        self.r().headers_out.last_modified_time = t as _;
    }

    pub fn set_header_only(&self) {
        self.r().set_header_only(1);
    }

    /// A timer event in the request pool whose `data` is the request.
    pub fn timer(
        &self,
        handler: unsafe extern "C" fn(*mut nginx_sys::ngx_event_t),
    ) -> *mut nginx_sys::ngx_event_t {
        // SAFETY: allocated zeroed from the request pool; lives as long as the request.
        unsafe {
            let ev = ngx_pcalloc(
                (*self.0).pool,
                core::mem::size_of::<nginx_sys::ngx_event_t>(),
            ) as *mut nginx_sys::ngx_event_t;
            if ev.is_null() {
                return ev;
            }
            (*ev).handler = Some(handler);
            (*ev).data = self.0 as *mut core::ffi::c_void;
            (*ev).log = self.log();
            (*ev).set_cancelable(1);
            ev
        }
    }

    pub fn set_read_handler(&self, h: nginx_sys::ngx_http_event_handler_pt) {
        self.r().read_event_handler = h;
    }

    /// Marks the response header as sent (the WebSocket 101 is written by the module itself),
    /// so that what follows goes to the client as raw bytes.
    pub fn set_header_sent(&self) {
        self.r().set_header_sent(1);
        self.r().set_keepalive(0);
    }

    /// `ngx_http_finalize_request` alone, for a request body's post handler.
    pub fn finalize_in_handler(&self, rc: ngx_int_t) {
        // SAFETY: a live request.
        unsafe { ngx_http_finalize_request(self.0, rc) }
    }

    /// Registers `handler(data)` to run when the request's pool is destroyed.
    pub fn on_cleanup(
        &self,
        handler: unsafe extern "C" fn(*mut core::ffi::c_void),
        data: *mut core::ffi::c_void,
    ) -> bool {
        // A request cleanup, not a pool cleanup: nginx runs these when it frees or terminates
        // the request, before it writes the access log line (which reads what a subscriber's
        // cleanup settles), and before the pool goes.
        // SAFETY: the cleanup record is allocated from and owned by the request pool.
        unsafe {
            let cln = nginx_sys::ngx_http_cleanup_add(self.0, 0);
            if cln.is_null() {
                return false;
            }
            (*cln).handler = Some(handler);
            (*cln).data = data;
            true
        }
    }
}
