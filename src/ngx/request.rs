//! A request nginx handed to the current call: headers in, response headers out, bodies,
//! complete responses. Everything that touches an `ngx_http_request_t` lives in this layer.

use core::marker::PhantomData;
use core::ptr::{self, NonNull};

use nginx_sys::{
    ngx_alloc_chain_link, ngx_buf_t, ngx_chain_t, ngx_http_finalize_request,
    ngx_http_output_filter, ngx_http_request_t, ngx_http_run_posted_requests, ngx_http_send_header,
    ngx_http_set_content_type, ngx_int_t, ngx_list_push, ngx_pcalloc, ngx_pnalloc, ngx_str_t,
    ngx_table_elt_t, NGX_OK,
};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf};
use push_stream_core::escape::header_value_ok;

use super::conf::{Complex, Regex};
use super::{log, App, Status};

/// A request nginx passed to the running entry point, valid for that call. Not `Copy` or
/// `Clone`: only its owner may end it ([`Request::finalize`]) or hold it open
/// ([`Request::hold`](super::held)), and both consume it. Code that gets a `&Request` (a held
/// request, through `HeldRef::with`) can write to it but cannot end it.
pub struct Request<'a> {
    r: NonNull<ngx_http_request_t>,
    _life: PhantomData<&'a mut ngx_http_request_t>,
}

/// Why a request body could not be read.
#[derive(Debug)]
pub struct BodyError(std::io::Error);

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot read the request body's temp file: {}", self.0)
    }
}

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

impl<'a> Request<'a> {
    /// # Safety
    /// `r` is a live request nginx passed to the running call; the result is not kept
    /// beyond it.
    pub unsafe fn from_raw(r: *mut ngx_http_request_t) -> Option<Request<'a>> {
        NonNull::new(r).map(|r| Request {
            r,
            _life: PhantomData,
        })
    }

    pub(super) fn raw(&self) -> *mut ngx_http_request_t {
        self.r.as_ptr()
    }

    fn r(&self) -> &ngx_http_request_t {
        // SAFETY: a Request is only built from a live request for the running call.
        unsafe { self.r.as_ref() }
    }

    fn r_mut(&self) -> *mut ngx_http_request_t {
        self.r.as_ptr()
    }

    /// The request's address: unique among live requests of this worker.
    pub fn key(&self) -> usize {
        self.r.as_ptr() as usize
    }

    pub fn log(&self) -> log::Log {
        // SAFETY: the log of a live request's connection, used within the running call.
        unsafe { log::Log::from_raw((*self.r().connection).log) }
    }

    pub fn method(&self) -> usize {
        // ngx_uint_t is usize on the platforms nginx-sys binds; the cast keeps it portable.
        #[allow(clippy::unnecessary_cast)]
        let m = self.r().method as usize;
        m
    }

    /// HTTP/2 or HTTP/3: a stream multiplexed on a shared connection.
    pub fn multiplexed(&self) -> bool {
        self.r().http_version >= nginx_sys::NGX_HTTP_VERSION_20 as usize
    }

    /// The location configuration of module `M` for this request.
    pub fn loc_conf<M: HttpModuleLocationConf>(&self) -> Option<&'static M::LocationConf> {
        // SAFETY: location configurations live as long as the cycle, longer than requests.
        unsafe { M::location_conf(&*self.r_mut()).map(|c| &*(c as *const M::LocationConf)) }
    }

    /// The `http{}` configuration of module `M` for this request.
    pub fn main_conf<M: HttpModuleMainConf>(&self) -> Option<&'static M::MainConf> {
        // SAFETY: as above.
        unsafe { M::main_conf(&*self.r_mut()).map(|c| &*(c as *const M::MainConf)) }
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

    /// The query string (without `?`).
    pub fn args(&self) -> &[u8] {
        self.r().args.as_bytes()
    }

    pub fn set_status(&self, status: usize) {
        // SAFETY: a field of a live request.
        unsafe { (*self.r_mut()).headers_out.status = status as _ };
    }

    /// Adds a response header (copied into the request pool). A value holding CR, LF or NUL
    /// is refused (header injection) and logged at `info`; false then, or when out of memory.
    pub fn add_header(&self, key: &str, value: &[u8]) -> bool {
        if !header_value_ok(value) || !header_value_ok(key.as_bytes()) {
            log::info(
                self.log(),
                &format!("push_stream: a value for the response header \"{key}\" holds CR, LF or NUL: header left out"),
            );
            return false;
        }
        // SAFETY: ngx_list_push returns a slot in the request's own header list; it is zeroed
        // (so fields added by newer nginx versions, e.g. `next`, are null) and then filled.
        unsafe {
            let r = self.r_mut();
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
            let r = self.r_mut();
            match ct {
                Some(ct) => {
                    let Some(s) = pool_str(r, ct) else {
                        return false;
                    };
                    (*r).headers_out.content_type = s;
                    (*r).headers_out.content_type_len = ct.len();
                    true
                }
                None => ngx_http_set_content_type(r) == NGX_OK as ngx_int_t,
            }
        }
    }

    pub fn set_content_length(&self, n: Option<usize>) {
        // SAFETY: a field of a live request.
        unsafe { (*self.r_mut()).headers_out.content_length_n = n.map(|n| n as _).unwrap_or(-1) };
    }

    /// `Last-Modified` (nginx formats it).
    pub fn set_last_modified(&self, t: i64) {
        // SAFETY: a field of a live request.
        unsafe { (*self.r_mut()).headers_out.last_modified_time = t as _ };
    }

    pub fn set_header_only(&self) {
        // SAFETY: a flag of a live request.
        unsafe { (*self.r_mut()).set_header_only(1) };
    }

    pub fn send_header(&self) -> Status {
        // SAFETY: a live request.
        Status(unsafe { ngx_http_send_header(self.r_mut()) })
    }

    /// Sends `data` (copied into a pool buffer) with the given flags. An empty `data` with
    /// `last` sends just the end of the response. For a response's own bytes: a held request
    /// writes through `HeldRef`, whose buffers are reused.
    pub fn send_bytes(&self, data: &[u8], flush: bool, last: bool) -> Status {
        // SAFETY: buffers and chain links come from the request pool and live as long as it.
        unsafe {
            let r = self.r_mut();
            let b = ngx_pcalloc((*r).pool, core::mem::size_of::<ngx_buf_t>()) as *mut ngx_buf_t;
            if b.is_null() {
                return Status::ERROR;
            }
            if !data.is_empty() {
                let p = ngx_pnalloc((*r).pool, data.len()) as *mut u8;
                if p.is_null() {
                    return Status::ERROR;
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
                return Status::ERROR;
            }
            (*cl).buf = b;
            (*cl).next = ptr::null_mut();
            Status(ngx_http_output_filter(r, cl))
        }
    }

    /// A complete response from a content handler: status, headers, body. Returns what the
    /// content handler should return.
    pub fn respond(
        &self,
        status: usize,
        content_type: Option<&[u8]>,
        headers: &[(&str, &[u8])],
        body: &[u8],
    ) -> Status {
        self.set_status(status);
        for (k, v) in headers {
            if !self.add_header(k, v) {
                return Status::INTERNAL_SERVER_ERROR;
            }
        }
        if !self.set_content_type(content_type) {
            return Status::INTERNAL_SERVER_ERROR;
        }
        self.set_content_length(Some(body.len()));
        if body.is_empty() {
            self.set_header_only();
        }
        let rc = self.send_header();
        if rc.failed() || self.r().header_only() != 0 {
            return rc;
        }
        self.send_bytes(body, false, true)
    }

    /// Evaluates a compiled complex value for this request.
    pub fn complex(&self, cv: Complex) -> Option<Vec<u8>> {
        // SAFETY: cv was compiled at configuration time and lives as long as the cycle.
        unsafe {
            let mut out = ngx_str_t {
                len: 0,
                data: ptr::null_mut(),
            };
            if nginx_sys::ngx_http_complex_value(self.r_mut(), cv.0, &mut out)
                != NGX_OK as ngx_int_t
            {
                return None;
            }
            Some(out.as_bytes().to_vec())
        }
    }

    /// Whether a compiled PCRE regex matches `subject`.
    pub fn regex_matches(&self, re: Regex, subject: &[u8]) -> bool {
        // SAFETY: re was compiled at configuration time; the subject is copied into the pool.
        unsafe {
            let Some(mut s) = pool_str(self.r_mut(), subject) else {
                return false;
            };
            if s.data.is_null() {
                s.data = c"".as_ptr() as *mut u8;
            }
            nginx_sys::ngx_regex_exec(re.0, &mut s, ptr::null_mut(), 0) >= 0
        }
    }

    /// Discards the request body (a handler that does not read it must, or nginx would parse
    /// the body as the next pipelined request: request smuggling). `Err` with the status to
    /// answer when nginx cannot; `Ok(true)` when the body is still arriving and being
    /// discarded (the request must then not be held: nginx owns its read events until the
    /// discard ends).
    pub fn discard_body(&self) -> Result<bool, Status> {
        // SAFETY: a live request.
        let rc = unsafe { nginx_sys::ngx_http_discard_request_body(self.r_mut()) };
        if rc != NGX_OK as ngx_int_t {
            return Err(Status(rc));
        }
        Ok(self.discarding_body())
    }

    /// Its body is still arriving and being discarded.
    pub fn discarding_body(&self) -> bool {
        self.r().discard_body() != 0
    }

    /// Starts reading the request body; `A::body_read` gets the request when it is complete.
    /// Returns what the content handler should return.
    pub fn read_body<A: App>(self) -> Status {
        // SAFETY: a live request; the handler is the layer's own entry point.
        let rc = unsafe {
            nginx_sys::ngx_http_read_client_request_body(self.r_mut(), Some(body_read::<A>))
        };
        if rc >= nginx_sys::NGX_HTTP_SPECIAL_RESPONSE as ngx_int_t {
            return Status(rc);
        }
        Status::DONE
    }

    /// The whole request body, from memory buffers and/or the temp file nginx spooled it to.
    pub fn body(&self) -> Result<Vec<u8>, BodyError> {
        let mut out = Vec::new();
        // SAFETY: walking the request body chain nginx built; file reads use its own fd.
        unsafe {
            let rb = self.r().request_body;
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
                            return Err(BodyError(std::io::Error::last_os_error()));
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

    /// The location's `client_max_body_size`; 0 means unlimited, as in nginx.
    pub fn client_max_body_size(&self) -> u64 {
        self.loc_conf::<ngx::http::NgxHttpCoreModule>()
            .map(|c| c.client_max_body_size as u64)
            .unwrap_or(1 << 20)
    }

    /// The location's `client_body_timeout` (ms).
    pub fn client_body_timeout(&self) -> u64 {
        self.loc_conf::<ngx::http::NgxHttpCoreModule>()
            .map(|c| c.client_body_timeout as u64)
            .unwrap_or(60_000)
    }

    /// Marks the response header as sent (the WebSocket 101 is written by the module itself),
    /// so that what follows goes to the client as raw bytes; keep-alive off.
    pub fn set_header_sent(&self) {
        // SAFETY: flags of a live request.
        unsafe {
            (*self.r_mut()).set_header_sent(1);
            (*self.r_mut()).set_keepalive(0);
        }
    }

    /// Sets keep-alive off (WebSocket).
    pub fn no_keepalive(&self) {
        // SAFETY: a flag of a live request.
        unsafe { (*self.r_mut()).set_keepalive(0) };
    }

    /// Bytes the client sent after the request's header that nginx already read (e.g.
    /// WebSocket frames in the same packet as the handshake), taken so that nginx does not
    /// read them as a pipelined request.
    pub fn take_preread(&self) -> Vec<u8> {
        // SAFETY: the header buffer of a live HTTP/1.x request; pos..last is unread data.
        unsafe {
            let r = self.r_mut();
            let b = (*r).header_in;
            if b.is_null() || (*b).pos.is_null() || (*b).last <= (*b).pos {
                return Vec::new();
            }
            let len = (*b).last.offset_from((*b).pos) as usize;
            let v = core::slice::from_raw_parts((*b).pos, len).to_vec();
            (*b).pos = (*b).last;
            v
        }
    }

    /// Ends the request (`ngx_http_finalize_request`). Consumes it: nothing can use it after.
    pub fn finalize(self, rc: Status) {
        // SAFETY: a live request owned by this call.
        unsafe { ngx_http_finalize_request(self.r_mut(), rc.0) }
    }

    /// `ngx_http_finalize_request` followed by running posted requests, as nginx expects from
    /// code that finalizes outside a request's own handler (timers, other requests' events).
    pub(super) fn finalize_outside(self, rc: Status) {
        // SAFETY: a live request; the connection is read before finalizing may free it.
        unsafe {
            let c = (*self.r_mut()).connection;
            ngx_http_finalize_request(self.r_mut(), rc.0);
            ngx_http_run_posted_requests(c);
        }
    }
}

/// The request body was read: the module's handler gets the request.
unsafe extern "C" fn body_read<A: App>(r: *mut ngx_http_request_t) {
    let Some(req) = Request::from_raw(r) else {
        return;
    };
    let log = req.log();
    let panicked = super::guard::guard(log, "publisher", true, || {
        A::body_read(req);
        false
    });
    if panicked {
        // The handler did not get to answer (a panic before its end): 500, by whoever owns
        // the request now (the held registry, when the handler had handed it over).
        if !super::held::close_if_held(r, Status::INTERNAL_SERVER_ERROR) {
            if let Some(req) = Request::from_raw(r) {
                req.finalize(Status::INTERNAL_SERVER_ERROR);
            }
        }
    }
}

/// The content handler nginx calls for the module's locations.
///
/// # Safety
/// Called by nginx with a live request.
pub unsafe extern "C" fn content_handler<A: App>(r: *mut ngx_http_request_t) -> ngx_int_t {
    let Some(req) = Request::from_raw(r) else {
        return nginx_sys::NGX_ERROR as ngx_int_t;
    };
    let log = req.log();
    super::guard::guard(
        log,
        "content handler",
        Status::INTERNAL_SERVER_ERROR,
        || A::content(req),
    )
    .0
}
