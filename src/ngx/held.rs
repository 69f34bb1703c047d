//! Requests held open past their handler (subscribers), and the rules that keep them safe:
//!
//! - A held request is named by a [`HeldRef`]: a generation unique in this worker. Every use
//!   looks it up in the worker's registry of held requests, so a `HeldRef` of a request that
//!   ended, or of an earlier request at the same address, can do nothing.
//! - A held request is ended only by [`HeldRef::close`] (or `finish`), which marks it closing
//!   (from then on every use is refused) and defers the `ngx_http_finalize_request` to a
//!   posted event that runs after the current handler returned. No code path can use a
//!   request after a call that ended it, whatever it writes or whoever asked for the end.
//! - The registry entry owns the request's output state ([`Out`]) and its timers; the
//!   request's cleanup deletes the timers, adds the directly written bytes to the connection's
//!   count, and moves the payloads nginx may still reference to a pool cleanup, which drops
//!   them only when the request's pool is destroyed (HTTP/2 queues DATA frames that point
//!   into them and may send them after the request's cleanup).
//! - A held subscriber may be **detached** ([`HeldRef::detach`], `push_stream_detached_subscribers`):
//!   once nothing of its response waits anywhere in nginx, the request is freed as nginx frees
//!   the request of an idle keep-alive connection (its cleanups and log line run, its pool and
//!   header buffers go) and the same `HeldRef` now names the bare connection, with the
//!   module's own read, write and timer handlers ([`Wire`] writes to it). From then on nothing
//!   of the request may be touched: `HeldRef::with` gives None, and every other use goes to
//!   the connection. A detached subscriber ends by the same deferred close, which writes what
//!   waits (under `send_timeout`) and then closes the connection.

use core::ptr::{self, NonNull};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use nginx_sys::{ngx_connection_t, ngx_event_t, ngx_http_request_t, ngx_int_t};
use push_stream_core::hash::PtrHash;

use super::detached::Wire;
use super::guard::guard;
use super::log::Log;
use super::output::Out;
use super::request::Request;
use super::{App, Status, Timer};

/// A held request of this worker (or, once detached, its connection). `Copy`: holding one
/// grants nothing; each use checks that it is still held and not closing.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct HeldRef {
    gen: u64,
}

/// The outcome of a write to a held request.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Sent {
    /// Written, or queued in nginx: `pending` bytes wait for the socket, of which the
    /// largest single payload still in flight is `largest` bytes.
    Ok { pending: usize, largest: usize },
    /// The write failed: the request must be closed.
    Failed,
    /// The client took nothing for `send_timeout` while output waited (logged at `info`).
    TimedOut,
    /// The request is no longer held (it ended or is closing): nothing was done.
    Gone,
}

/// What a read from a held request's connection gave.
pub enum Recv {
    Data(usize),
    /// Nothing more for now (the read event is re-armed).
    Again,
    /// The client closed the connection, or the read failed.
    Closed,
    /// The request is no longer held.
    Gone,
}

/// The module's entry points for one `App`, instantiated once per `App` (one `'static`
/// table, so an entry keeps one pointer to it).
struct Hooks {
    timer: unsafe extern "C" fn(*mut ngx_event_t),
    conn_read: unsafe extern "C" fn(*mut ngx_event_t),
    conn_write: unsafe extern "C" fn(*mut ngx_event_t),
    read: fn(HeldRef),
    ended: fn(usize, u64),
}

struct HooksOf<A>(core::marker::PhantomData<A>);

impl<A: App> HooksOf<A> {
    const HOOKS: &'static Hooks = &Hooks {
        timer: timer_handler::<A>,
        conn_read: conn_read_handler,
        conn_write: conn_write_handler,
        read: A::held_read,
        ended: A::held_ended,
    };
}

/// What a held entry is attached to.
enum Target {
    /// A live request nginx owns.
    Request {
        r: NonNull<ngx_http_request_t>,
        out: Out,
        /// The pool cleanup's slot for the payloads nginx may still reference at the end.
        graveyard: *mut *mut VecDeque<Rc<[u8]>>,
        /// The request cleanup that tells the module of the end (disarmed by a detach).
        cln: *mut nginx_sys::ngx_http_cleanup_t,
    },
    /// A detached subscriber: the request was freed, the connection is the module's.
    Conn(Wire),
}

struct Entry {
    target: Target,
    /// The request's timers (from its pool) or, detached, the module's own (boxed).
    timers: [*mut ngx_event_t; 3],
    hooks: &'static Hooks,
    read: ReadMode,
    /// Its end was asked for: refused for any further use.
    closing: bool,
    /// The module was told of its end (`Hooks::ended`).
    ended: bool,
    /// A detach was asked for and has not happened yet.
    detach: bool,
}

thread_local! {
    static HELD: RefCell<HashMap<usize, Entry, PtrHash>> = RefCell::new(HashMap::default());
    /// Held (attached) requests by address: how nginx's request handlers find their entry.
    static REQS: RefCell<HashMap<usize, u64, PtrHash>> = RefCell::new(HashMap::default());
    static NEXT_GEN: Cell<u64> = const { Cell::new(0) };
    static CLOSING: RefCell<VecDeque<(HeldRef, Status)>> = const { RefCell::new(VecDeque::new()) };
    static DETACHING: RefCell<VecDeque<HeldRef>> = const { RefCell::new(VecDeque::new()) };
    static CLOSER: Cell<*mut ngx_event_t> = const { Cell::new(ptr::null_mut()) };
    static DETACHED: Cell<u64> = const { Cell::new(0) };
    static DETACHED_NOW: Cell<usize> = const { Cell::new(0) };
    /// The reasons a subscriber could not be detached that this worker has logged.
    static REFUSALS: RefCell<std::collections::HashSet<&'static str>> = RefCell::new(Default::default());
}

/// `entry` also for an entry whose end is pending.
fn entry_any<R>(h: HeldRef, f: impl FnOnce(&mut Entry) -> R) -> Option<R> {
    HELD.with(|m| m.borrow_mut().get_mut(&(h.gen as usize)).map(f))
}

fn entry<R>(h: HeldRef, f: impl FnOnce(&mut Entry) -> R) -> Option<R> {
    HELD.with(|m| {
        m.borrow_mut()
            .get_mut(&(h.gen as usize))
            .filter(|e| !e.closing)
            .map(f)
    })
}

/// Asks for the end of `r` when it is held (a handler that handed it over panicked); false
/// when it is not held.
pub(super) fn close_if_held(r: *mut ngx_http_request_t, rc: Status) -> bool {
    match REQS.with(|m| m.borrow().get(&(r as usize)).copied()) {
        Some(gen) => {
            HeldRef { gen }.close(rc);
            true
        }
        None => false,
    }
}

/// How many requests (and detached subscribers) this worker holds.
pub fn count() -> usize {
    HELD.with(|m| m.borrow().len())
}

/// How many subscribers this worker has detached so far, and how many are detached now.
pub fn detached() -> (u64, usize) {
    (DETACHED.with(|d| d.get()), DETACHED_NOW.with(|d| d.get()))
}

/// What a held request's read events do.
#[derive(Clone, Copy)]
enum ReadMode {
    /// `A::held_read` (WebSocket frames).
    Module,
    /// nginx's check for a client that went away.
    TestClose,
    /// Left as nginx set it.
    Keep,
}

impl Request<'_> {
    /// Holds the request open after its content handler returns (which must then return
    /// [`Status::DONE`]). The returned `HeldRef` is how the module reaches it from then on:
    /// `A::held_write` when its socket is writable again, `A::held_read` for its read events
    /// when `read` is set (else nginx's own check for a client that went away), its timers,
    /// and `A::held_ended` at its end.
    pub fn hold<A: App>(self, read: bool) -> Result<HeldRef, Status> {
        let mode = if read {
            ReadMode::Module
        } else {
            ReadMode::TestClose
        };
        self.hold_inner::<A>(mode, true)
    }

    /// `hold` from a request body's handler (`App::body_read`): the reference nginx took
    /// for reading the body becomes the hold's, so the handler does not finalize. When the
    /// hold cannot be set up (out of memory) the request is finalized with 500 and None is
    /// returned.
    pub fn hold_after_body<A: App>(self) -> Option<HeldRef> {
        let r = self.raw();
        match self.hold_inner::<A>(ReadMode::Keep, false) {
            Ok(h) => Some(h),
            Err(rc) => {
                // SAFETY: not held: still the body handler's live request.
                if let Some(req) = unsafe { Request::from_raw(r) } {
                    req.finalize(rc);
                }
                None
            }
        }
    }

    fn hold_inner<A: App>(self, read: ReadMode, count: bool) -> Result<HeldRef, Status> {
        let r = self.raw();
        if REQS.with(|m| m.borrow().contains_key(&(r as usize))) {
            // Already held (e.g. error_page or post_action leading back to the module):
            // one owner only.
            return Err(Status::INTERNAL_SERVER_ERROR);
        }
        let gen = NEXT_GEN.with(|g| {
            g.set(g.get() + 1);
            g.get()
        });
        // SAFETY: a live request; the cleanup records are allocated from and owned by its
        // pool; the handlers are the layer's own entry points.
        unsafe {
            let pcln = nginx_sys::ngx_pool_cleanup_add(
                (*r).pool,
                core::mem::size_of::<*mut VecDeque<Rc<[u8]>>>(),
            );
            if pcln.is_null() {
                return Err(Status::INTERNAL_SERVER_ERROR);
            }
            let graveyard = (*pcln).data as *mut *mut VecDeque<Rc<[u8]>>;
            *graveyard = ptr::null_mut();
            (*pcln).handler = Some(drop_graveyard);
            let cln = nginx_sys::ngx_http_cleanup_add(r, 0);
            if cln.is_null() {
                return Err(Status::INTERNAL_SERVER_ERROR);
            }
            // A request cleanup, not a pool cleanup: nginx runs these when it frees or
            // terminates the request, before it writes the access log line (which reads the
            // byte count the cleanup settles).
            (*cln).handler = Some(cleanup::<A>);
            (*cln).data = gen as usize as *mut core::ffi::c_void;
            REQS.with(|m| m.borrow_mut().insert(r as usize, gen));
            HELD.with(|m| {
                m.borrow_mut().insert(
                    gen as usize,
                    Entry {
                        target: Target::Request {
                            r: NonNull::new_unchecked(r),
                            out: Out::default(),
                            graveyard,
                            cln,
                        },
                        timers: [ptr::null_mut(); 3],
                        hooks: HooksOf::<A>::HOOKS,
                        read,
                        closing: false,
                        ended: false,
                        detach: false,
                    },
                )
            });
            if count {
                (*(*r).main).set_count((*(*r).main).count() + 1);
            }
            match read {
                ReadMode::Module => (*r).read_event_handler = Some(read_handler::<A>),
                ReadMode::TestClose => {
                    (*r).read_event_handler = Some(nginx_sys::ngx_http_test_reading)
                }
                // After its body, nginx blocks reading (a publisher waits for its answer).
                ReadMode::Keep => {}
            }
            (*r).write_event_handler = Some(write_handler::<A>);
            self.nodelay();
            Ok(HeldRef { gen })
        }
    }
}

/// The outcome of a write to a detached subscriber, as `Sent`.
fn sent_of(rc: ngx_int_t, pending: usize, largest: usize) -> Sent {
    if rc == nginx_sys::NGX_ERROR as ngx_int_t {
        Sent::Failed
    } else {
        Sent::Ok { pending, largest }
    }
}

impl HeldRef {
    /// Unique in this worker for the held entry's life and after it (the key of the
    /// module's per-subscriber state; it stays the same when the entry is detached).
    pub fn key(self) -> usize {
        self.gen as usize
    }

    /// Unique in this worker: a later entry has another.
    pub fn serial(self) -> u64 {
        self.gen
    }

    /// Held, and not closing.
    pub fn alive(self) -> bool {
        entry(self, |_| ()).is_some()
    }

    /// Detached (its request was freed).
    pub fn is_detached(self) -> bool {
        entry_any(self, |e| matches!(e.target, Target::Conn(_))).unwrap_or(false)
    }

    /// The live request, while attached, held and not closing.
    fn request(self) -> Option<NonNull<ngx_http_request_t>> {
        entry(self, |e| match &e.target {
            Target::Request { r, .. } => Some(*r),
            Target::Conn(_) => None,
        })
        .flatten()
    }

    /// The connection (also while closing; also detached).
    fn connection(self) -> Option<*mut ngx_connection_t> {
        entry_any(self, |e| match &e.target {
            // SAFETY: a held request is live.
            Target::Request { r, .. } => unsafe { (*r.as_ptr()).connection },
            Target::Conn(w) => w.c,
        })
    }

    /// Runs `f` with the request while it is held, attached and not closing. `f` gets a
    /// `&Request`: it can write to the request but not end it. None for a detached
    /// subscriber: its request is gone.
    pub fn with<R>(self, f: impl FnOnce(&Request<'_>) -> R) -> Option<R> {
        let r = self.request()?;
        // SAFETY: held (its cleanup has not run), attached and not closing: the request is
        // live, and nothing in this layer finalizes it before the deferred close.
        let req = unsafe { Request::from_raw(r.as_ptr()) }?;
        Some(f(&req))
    }

    pub fn log(self) -> Log {
        match self.connection() {
            // SAFETY: the log of a live connection (held, or detached and not yet closed).
            Some(c) => unsafe { Log::from_raw((*c).log) },
            None => Log::cycle(),
        }
    }

    /// Runs `f` on a detached subscriber's wire (not while closing).
    fn wire<R>(self, f: impl FnOnce(&mut Wire) -> R) -> Option<R> {
        entry(self, |e| match &mut e.target {
            Target::Conn(w) => Some(f(w)),
            Target::Request { .. } => None,
        })
        .flatten()
    }

    /// Writes shared payloads without a copy per request, as one message (see
    /// `Request::send_shared`).
    pub fn send(self, parts: &[Rc<[u8]>]) -> Sent {
        self.send_messages(parts, &[parts.len()])
    }

    /// Writes the messages `parts[..ends[0]]`, `parts[ends[0]..ends[1]]`… in one go, each in a
    /// chunk of its own (see `Request::send_shared`).
    pub fn send_messages(self, parts: &[Rc<[u8]>], ends: &[usize]) -> Sent {
        self.write_either(
            |w| w.send(parts, ends),
            |req, out| req.send_shared(out, parts, ends),
        )
    }

    /// `send` of one payload copied once.
    pub fn send_bytes(self, bytes: &[u8]) -> Sent {
        self.send(&[Rc::from(bytes)])
    }

    /// The first bytes of a held response, right after its header: each piece copied into
    /// the request pool and handed to the filters on its own (one chunk each with chunked
    /// encoding, as the C module writes its header template and each old message), then all
    /// flushed together (with the header nginx may still hold), even when there are none.
    pub fn send_first(self, pieces: &[&[u8]]) -> Sent {
        if self.is_detached() {
            let parts: Vec<Rc<[u8]>> = pieces.iter().map(|p| Rc::from(*p)).collect();
            let ends: Vec<usize> = (1..=parts.len()).collect();
            return self.send_messages(&parts, &ends);
        }
        self.write(|req, out| req.send_copies(out, pieces))
    }

    /// One look-up for a write: `wire` on a detached subscriber (inside the registry: it only
    /// writes to the socket and arms its event), else `req` as `write` runs it.
    fn write_either(
        self,
        wire: impl FnOnce(&mut Wire) -> ngx_int_t,
        req: impl FnOnce(&Request<'_>, &mut Out) -> ngx_int_t,
    ) -> Sent {
        enum Got {
            Wire(Sent),
            Req(NonNull<ngx_http_request_t>, Out, bool),
        }
        let got = entry(self, |e| match &mut e.target {
            Target::Conn(w) => {
                let rc = wire(w);
                Got::Wire(sent_of(rc, w.pending, w.largest()))
            }
            Target::Request { r, out, .. } => Got::Req(*r, std::mem::take(out), e.detach),
        });
        match got {
            None => Sent::Gone,
            Some(Got::Wire(s)) => s,
            Some(Got::Req(r, mut out, detach)) => {
                // SAFETY: see `with`.
                let rc = unsafe { Request::from_raw(r.as_ptr()) }
                    .map_or(nginx_sys::NGX_ERROR as ngx_int_t, |rq| req(&rq, &mut out));
                let sent = self.put_back(out, rc);
                if detach && matches!(sent, Sent::Ok { pending: 0, .. }) {
                    // A detach that waited (its response was not idle yet): now it may be.
                    self.retry_detach();
                }
                sent
            }
        }
    }

    /// Runs a write with the request and its output state. The output state is taken out of
    /// the registry for the call (nginx's filters may run other requests' code, which must
    /// find the registry free) and put back after.
    fn write(self, f: impl FnOnce(&Request<'_>, &mut Out) -> ngx_int_t) -> Sent {
        let Some((r, mut out)) = entry(self, |e| match &mut e.target {
            Target::Request { r, out, .. } => Some((*r, std::mem::take(out))),
            Target::Conn(_) => None,
        })
        .flatten() else {
            return Sent::Gone;
        };
        // SAFETY: see `with`.
        let rc = unsafe { Request::from_raw(r.as_ptr()) }
            .map_or(nginx_sys::NGX_ERROR as ngx_int_t, |req| f(&req, &mut out));
        self.put_back(out, rc)
    }

    /// Puts the output state back after a write that returned `rc`, and says how it went.
    fn put_back(self, out: Out, rc: ngx_int_t) -> Sent {
        let (pending, largest) = (out.pending, out.largest_inflight());
        self.put_out(out);
        if rc == nginx_sys::NGX_ERROR as ngx_int_t {
            Sent::Failed
        } else {
            Sent::Ok { pending, largest }
        }
    }

    fn put_out(self, out: Out) {
        let mut back = HELD.with(|m| match m.borrow_mut().get_mut(&self.key()) {
            Some(e) => match &mut e.target {
                Target::Request { out: slot, .. } => {
                    *slot = out;
                    None
                }
                Target::Conn(_) => Some(out),
            },
            None => Some(out),
        });
        if let Some(out) = back.as_mut() {
            // The request ended inside the write (not something stock nginx does): its pool
            // cleanup already ran its course without these payloads, and nginx may still
            // point into them. Leak them rather than free memory nginx may read.
            std::mem::forget(out.take_inflight());
        }
    }

    /// The write event fired: flushes what waits in nginx (also while the request's end is
    /// pending: its last bytes must still go out).
    pub fn flush(self) -> Sent {
        let Some((r, mut out)) = entry_any(self, |e| match &mut e.target {
            Target::Request { r, out, .. } => Some((*r, std::mem::take(out))),
            Target::Conn(_) => None,
        })
        .flatten() else {
            return Sent::Gone;
        };
        // SAFETY: see `with` (a non-null pointer: always Some).
        let Some(req) = (unsafe { Request::from_raw(r.as_ptr()) }) else {
            self.put_out(out);
            return Sent::Gone;
        };
        if req.write_timed_out() {
            self.put_out(out);
            super::log::info(
                req.log(),
                "push_stream: client timed out (send_timeout) with output pending",
            );
            return Sent::TimedOut;
        }
        let rc = req.flush(Some(&mut out));
        self.put_back(out, rc)
    }

    /// Sends `tail` (e.g. a footer) and the end of the response, then closes the request.
    pub fn finish(self, tail: &[u8]) {
        if let Some(rc) = self.wire(|w| w.send_last(tail)) {
            let failed = rc == nginx_sys::NGX_ERROR as ngx_int_t;
            self.close(if failed { Status::ERROR } else { Status::OK });
            return;
        }
        let rc = self
            .with(|req| {
                // The payloads queued earlier go first: they are ahead in nginx's chain.
                req.send_bytes(tail, true, true)
            })
            .unwrap_or(Status::OK);
        self.close(if rc == Status::AGAIN { Status::OK } else { rc });
    }

    /// Ends the request with `rc`, after the running handler returned. From now on the
    /// request is refused for any use; the deferred end skips it if it ended meanwhile.
    pub fn close(self, rc: Status) {
        if entry(self, |e| e.closing = true).is_none() {
            return;
        }
        CLOSING.with(|q| q.borrow_mut().push_back((self, rc)));
        post_closer();
    }

    /// Asks for the subscriber to be detached from its request once nothing of its response
    /// waits in nginx (right after the running handler, or when its output drained): see
    /// the module's header. Only for HTTP/1.x main requests without TLS whose writes may go
    /// around the body filters, with no other module's pool cleanup (such as `limit_conn`'s,
    /// which must last as long as the connection); others stay attached.
    pub fn detach(self) {
        if entry(self, |e| {
            let attached = matches!(e.target, Target::Request { .. });
            e.detach = attached;
            attached
        }) != Some(true)
        {
            return;
        }
        DETACHING.with(|q| q.borrow_mut().push_back(self));
        post_closer();
    }

    /// Queues a detach that was asked for and has not happened yet.
    fn retry_detach(self) {
        if entry(self, |e| e.detach) == Some(true) {
            DETACHING.with(|q| q.borrow_mut().push_back(self));
            post_closer();
        }
    }

    /// Arms (or re-arms) one of the request's timers; `A::held_timer` runs when it fires. A
    /// graceful shutdown does not wait for it (see `set_deadline`).
    pub fn set_timer(self, which: Timer, ms: u64) {
        self.arm(which, ms, true)
    }

    /// `set_timer` for a timer a graceful shutdown waits for (nginx's worker exits only when
    /// no such timer is left): a request that must be answered, such as a publish waiting
    /// for the broker.
    pub fn set_deadline(self, which: Timer, ms: u64) {
        self.arm(which, ms, false)
    }

    fn arm(self, which: Timer, ms: u64, cancelable: bool) {
        let gen = self.gen;
        let Some(ev) = entry(self, |e| {
            let handler = e.hooks.timer;
            let slot = &mut e.timers[which as usize];
            if slot.is_null() {
                *slot = match &e.target {
                    // SAFETY: allocated zeroed from the request pool; deleted at the cleanup.
                    Target::Request { r, .. } => unsafe {
                        let r = r.as_ptr();
                        let ev =
                            nginx_sys::ngx_pcalloc((*r).pool, core::mem::size_of::<ngx_event_t>())
                                as *mut ngx_event_t;
                        if !ev.is_null() {
                            (*ev).log = (*(*r).connection).log;
                        }
                        ev
                    },
                    // SAFETY: the detached connection is live (its log too).
                    Target::Conn(w) => unsafe { new_event((*w.c).log) },
                };
                if !slot.is_null() {
                    // SAFETY: the event just allocated.
                    unsafe {
                        (**slot).handler = Some(handler);
                        (**slot).data = gen as usize as *mut core::ffi::c_void;
                        (**slot).set_cancelable(1);
                    }
                }
            }
            *slot
        }) else {
            return;
        };
        if !ev.is_null() {
            // SAFETY: a timer event of a live held entry.
            unsafe {
                (*ev).set_cancelable(cancelable as u32);
                nginx_sys::ngx_add_timer(ev, ms as _)
            };
        }
    }

    /// Reads from the client connection into `buf`.
    pub fn recv(self, buf: &mut [u8]) -> Recv {
        if !self.alive() {
            return Recv::Gone;
        }
        let Some(c) = self.connection() else {
            return Recv::Gone;
        };
        // SAFETY: the connection's own recv function on a live connection.
        let n = unsafe {
            match (*c).recv {
                Some(f) => f(c, buf.as_mut_ptr(), buf.len()),
                None => nginx_sys::NGX_ERROR as isize,
            }
        };
        if n == nginx_sys::NGX_AGAIN as isize {
            // SAFETY: the live connection's read event.
            let armed = unsafe {
                nginx_sys::ngx_handle_read_event((*c).read, 0) == nginx_sys::NGX_OK as ngx_int_t
            };
            if armed {
                Recv::Again
            } else {
                Recv::Closed
            }
        } else if n <= 0 {
            Recv::Closed
        } else {
            Recv::Data(n as usize)
        }
    }

    /// Runs the request's read handler again on the next turn of the event loop (after nginx
    /// has looked for I/O), so one client's reads take a bounded share of a turn.
    pub fn read_again_next_turn(self) {
        if !self.alive() {
            return;
        }
        if let Some(c) = self.connection() {
            // SAFETY: the live connection's read event, posted to nginx's next-turn queue.
            unsafe {
                let rev = (*c).read;
                if (*rev).posted() == 0 {
                    nginx_sys::ngx_post_event(
                        rev,
                        core::ptr::addr_of_mut!(nginx_sys::ngx_posted_next_events),
                    );
                }
            }
        }
    }
}

/// A zeroed event of the module's own (a detached subscriber's timer), freed by `free_event`.
///
/// # Safety
/// `log` outlives the event's use.
unsafe fn new_event(log: *mut nginx_sys::ngx_log_t) -> *mut ngx_event_t {
    // SAFETY: an all-zero ngx_event_t is a valid idle event.
    let mut ev: Box<ngx_event_t> = Box::new(core::mem::zeroed());
    ev.log = log;
    Box::into_raw(ev)
}

/// Deletes an event's timer and posting; frees it when it is the module's own.
///
/// # Safety
/// `ev` is null or a live event; `own`: it came from `new_event`.
unsafe fn drop_event(ev: *mut ngx_event_t, own: bool) {
    if ev.is_null() {
        return;
    }
    if (*ev).timer_set() != 0 {
        nginx_sys::ngx_del_timer(ev);
    }
    if (*ev).posted() != 0 {
        nginx_sys::ngx_delete_posted_event(ev);
    }
    if own {
        drop(Box::from_raw(ev));
    }
}

fn post_closer() {
    let ev = closer_event();
    if !ev.is_null() {
        // SAFETY: the worker's own closer event, alive for the worker's life.
        unsafe {
            if (*ev).posted() == 0 {
                nginx_sys::ngx_post_event(
                    ev,
                    core::ptr::addr_of_mut!(nginx_sys::ngx_posted_events),
                );
            }
        }
    }
}

/// Runs the deferred ends now (the closer event; also `exit_process`, where no later turn
/// comes).
pub fn run_closes() {
    while let Some((h, rc)) = CLOSING.with(|q| q.borrow_mut().pop_front()) {
        enum Then {
            Finalize(NonNull<ngx_http_request_t>),
            Conn,
        }
        let then = HELD.with(|m| {
            m.borrow()
                .get(&h.key())
                .filter(|e| e.closing)
                .map(|e| match &e.target {
                    Target::Request { r, .. } => Then::Finalize(*r),
                    Target::Conn(_) => Then::Conn,
                })
        });
        match then {
            Some(Then::Finalize(r)) => {
                // SAFETY: still held (its cleanup has not run): live. Finalizing runs its
                // cleanup, which removes it from the registry.
                if let Some(req) = unsafe { Request::from_raw(r.as_ptr()) } {
                    req.finalize_outside(rc);
                }
            }
            Some(Then::Conn) => end_detached(h, rc),
            None => {}
        }
    }
}

/// The deferred end of a detached subscriber: the module forgets it now; after a normal end
/// (`rc` OK) the connection closes once what waits for its socket went out (or
/// `send_timeout` passed, or it failed); after a failure (an error, a client that stopped
/// reading or left) at once, as nginx terminates such a request.
fn end_detached(h: HeldRef, rc: Status) {
    let Some((hooks, told, done)) = entry_any(h, |e| {
        let told = std::mem::replace(&mut e.ended, true);
        let done = match &e.target {
            Target::Conn(w) => rc != Status::OK || w.drained() || w.broken(),
            Target::Request { .. } => true,
        };
        (e.hooks, told, done)
    }) else {
        return;
    };
    if !told {
        (hooks.ended)(h.key(), h.gen);
    }
    if done {
        // A lingering close only after a normal end: a failure closes at once, as nginx
        // terminates such a request (a client flooding a connection it never reads must not
        // keep a worker reading for lingering_time).
        close_detached_as(h, rc == Status::OK);
    }
}

/// Closes a detached subscriber's connection now (telling the module first when it has not
/// been told), lingering when the client may still be sending (see `close_connection`).
fn close_detached(h: HeldRef) {
    close_detached_as(h, true)
}

/// `close_detached`; `linger` false: never a lingering close (a failure, the worker's exit).
fn close_detached_as(h: HeldRef, linger_ok: bool) {
    let Some(e) = HELD.with(|m| m.borrow_mut().remove(&h.key())) else {
        return;
    };
    let Target::Conn(w) = &e.target else {
        // Not detached: put it back untouched (a request ends by its own finalize).
        HELD.with(|m| m.borrow_mut().insert(h.key(), e));
        return;
    };
    let (c, linger, reset) = (w.c, w.linger, w.reset_timedout);
    DETACHED_NOW.with(|d| d.set(d.get().saturating_sub(1)));
    for ev in e.timers {
        // SAFETY: the module's own events of this entry (`new_event`).
        unsafe { drop_event(ev, true) };
    }
    let (hooks, told) = (e.hooks, e.ended);
    drop(e);
    // The connection first: whatever the module does when told, it is closed.
    // SAFETY: the detached connection is live and nothing of the module refers to it any
    // more; nginx closes its socket, deletes its events' timers and postings, and destroys
    // its pool (after a lingering close, when the client may still be sending).
    unsafe {
        super::detached::close_connection(c, if linger_ok { linger } else { (0, 0, 0) }, reset)
    };
    if !told {
        (hooks.ended)(h.key(), h.gen);
    }
}

/// `exit_process`: closes the detached subscribers still open (a graceful exit that waited
/// for them found them gone; a fast one closes them here, before nginx counts open sockets).
pub fn close_all_detached() {
    let all: Vec<HeldRef> = HELD.with(|m| {
        m.borrow()
            .iter()
            .filter(|(_, e)| matches!(e.target, Target::Conn(_)))
            .map(|(k, _)| HeldRef { gen: *k as u64 })
            .collect()
    });
    for h in all {
        close_detached_as(h, false);
    }
}

/// Runs the asked-for detaches (the closer event, after the deferred ends).
fn run_detaches() {
    while let Some(h) = DETACHING.with(|q| q.borrow_mut().pop_front()) {
        try_detach(h);
    }
}

static DETACHED_ACTION: &core::ffi::CStr = c"pushing to a detached subscriber";

/// Detaches `h` when it still qualifies and nothing of its response waits in nginx; else it
/// stays attached (its write handler asks again once its output drained).
fn try_detach(h: HeldRef) {
    let Some((r, hooks)) = entry(h, |e| match &e.target {
        Target::Request { r, out, .. } if e.detach && out.idle() => Some((*r, e.hooks)),
        _ => None,
    })
    .flatten() else {
        return;
    };
    // SAFETY: a held, attached, not closing request: live. Every field read is nginx's.
    unsafe {
        let r = r.as_ptr();
        let Some(req) = Request::from_raw(r) else {
            return;
        };
        let Some((c, chunked)) = req.detachable() else {
            // Not now (retried when its output drained, after a write that left nothing
            // pending, or on its timers), or never: then said once per worker and reason.
            if let Some(why) = req.detach_refusal() {
                entry(h, |e| e.detach = false);
                let first = REFUSALS.with(|r| r.borrow_mut().insert(why));
                if first {
                    super::log::info(
                        req.log(),
                        &format!("push_stream: a subscriber stays attached to its request: {why} (said once per worker)"),
                    );
                }
            }
            return;
        };
        use ngx::http::HttpModuleLocationConf;
        let Some((send_timeout, linger, reset)) = ngx::http::NgxHttpCoreModule::location_conf(&*r)
            .map(|clcf| {
                (
                    clcf.send_timeout,
                    (
                        clcf.lingering_close as u8,
                        clcf.lingering_timeout as u32,
                        (clcf.lingering_time / 1000) as u32,
                    ),
                    clcf.reset_timedout_connection != 0,
                )
            })
        else {
            return;
        };
        // Take the entry's request state: from here on it names the connection.
        let Some(timers) = entry(h, |e| {
            let Target::Request { out, cln, .. } = &mut e.target else {
                return None;
            };
            // The bytes written directly so far go into the log line nginx writes now.
            out.settle();
            // The request's cleanup must not end the subscriber.
            (**cln).handler = None;
            let mut left = [None; 3];
            for (i, ev) in e.timers.iter_mut().enumerate() {
                if !ev.is_null() && (**ev).timer_set() != 0 {
                    let key = (**ev).timer.key;
                    let now = nginx_sys::ngx_current_msec;
                    left[i] = Some((key.saturating_sub(now)).max(1) as u64);
                }
                // From the request pool: it goes with the request.
                drop_event(*ev, false);
                *ev = ptr::null_mut();
            }
            e.target = Target::Conn(Wire::new(c, chunked, send_timeout, linger, reset));
            e.detach = false;
            Some(left)
        })
        .flatten() else {
            return;
        };
        REQS.with(|m| m.borrow_mut().remove(&(r as usize)));
        let hc = (*r).http_connection;
        // As `ngx_http_close_request` after the last reference: cleanups, log line, pool.
        // (`c->data` is still the request for the cleanups and log handlers that look.)
        (*r).set_count(0);
        nginx_sys::ngx_http_free_request(r, 0);
        // Nothing can fire between the two: the connection is the module's from here.
        (*c).data = h.gen as usize as *mut core::ffi::c_void;
        (*(*c).read).handler = Some(hooks.conn_read);
        (*(*c).write).handler = Some(hooks.conn_write);
        // The connection stays: `destroyed` (set by freeing the request) is left set so that
        // nginx code looking for a request of this connection stops there.
        // The header buffers, as for an idle keep-alive connection.
        let b = (*c).buffer;
        if !b.is_null()
            && !(*b).start.is_null()
            && nginx_sys::ngx_pfree((*c).pool, (*b).start as *mut _)
                == nginx_sys::NGX_OK as ngx_int_t
        {
            (*b).pos = ptr::null_mut();
        }
        if !hc.is_null() {
            for chain in [&mut (*hc).free, &mut (*hc).busy] {
                let mut cl = *chain;
                while !cl.is_null() {
                    if !(*cl).buf.is_null() {
                        nginx_sys::ngx_pfree((*c).pool, (*(*cl).buf).start as *mut _);
                    }
                    cl = (*cl).next;
                }
                *chain = ptr::null_mut();
            }
            (*hc).nbusy = 0;
        }
        (*(*c).log).action = DETACHED_ACTION.as_ptr() as *mut _;
        DETACHED.with(|d| d.set(d.get() + 1));
        DETACHED_NOW.with(|d| d.set(d.get() + 1));
        for (i, ms) in timers.iter().enumerate() {
            if let Some(ms) = ms {
                let which = [Timer::Ping, Timer::Ttl, Timer::Partial][i];
                h.set_timer(which, *ms);
            }
        }
        // A close or bytes that came while attached are looked at now.
        if (*(*c).read).ready() != 0 {
            nginx_sys::ngx_post_event(
                (*c).read,
                core::ptr::addr_of_mut!(nginx_sys::ngx_posted_events),
            );
        }
    }
}

fn closer_event() -> *mut ngx_event_t {
    CLOSER.with(|c| {
        if c.get().is_null() {
            // Lives as long as the worker (leaked on purpose: nginx may hold it posted).
            // SAFETY: an all-zero ngx_event_t is a valid idle event.
            let mut ev: Box<ngx_event_t> = Box::new(unsafe { core::mem::zeroed() });
            ev.handler = Some(closer_handler);
            // SAFETY: nginx's cycle and its log outlive the worker's events.
            ev.log = unsafe {
                if nginx_sys::ngx_cycle.is_null() {
                    ptr::null_mut()
                } else {
                    (*nginx_sys::ngx_cycle).log
                }
            };
            c.set(Box::into_raw(ev));
        }
        c.get()
    })
}

unsafe extern "C" fn closer_handler(ev: *mut ngx_event_t) {
    guard(Log::from_raw((*ev).log), "deferred close", (), || {
        run_closes();
        run_detaches();
    })
}

/// The held entry of a request nginx passed to a request handler.
fn of_request(r: *mut ngx_http_request_t) -> Option<HeldRef> {
    REQS.with(|m| m.borrow().get(&(r as usize)).map(|&gen| HeldRef { gen }))
}

unsafe extern "C" fn write_handler<A: App>(r: *mut ngx_http_request_t) {
    // Also while its end is pending: an edge of the write event must not be lost.
    let Some(h) = of_request(r) else {
        return;
    };
    guard(h.log(), "write handler", (), || {
        A::held_write(h);
        // A detach that waited for the output to drain.
        h.retry_detach();
    })
}

unsafe extern "C" fn read_handler<A: App>(r: *mut ngx_http_request_t) {
    let Some(h) = of_request(r).filter(|h| h.alive()) else {
        return;
    };
    guard(h.log(), "read handler", (), || A::held_read(h))
}

unsafe extern "C" fn timer_handler<A: App>(ev: *mut ngx_event_t) {
    let h = HeldRef {
        gen: (*ev).data as usize as u64,
    };
    let which = entry(h, |e| {
        [Timer::Ping, Timer::Ttl, Timer::Partial]
            .into_iter()
            .find(|t| e.timers[*t as usize] == ev)
    })
    .flatten();
    if let Some(which) = which {
        guard(Log::from_raw((*ev).log), "timer", (), || {
            A::held_timer(h, which);
            h.retry_detach();
        })
    }
}

/// The detached entry of a connection nginx passed to an event handler (its `data` is the
/// entry's generation; checked against the entry's connection).
unsafe fn of_conn(c: *mut ngx_connection_t) -> Option<HeldRef> {
    let h = HeldRef {
        gen: (*c).data as usize as u64,
    };
    entry_any(h, |e| matches!(&e.target, Target::Conn(w) if w.c == c))
        .filter(|ok| *ok)
        .map(|_| h)
}

/// Whether the client closed a detached subscriber's connection (as `ngx_http_test_reading`
/// finds it: epoll's EPOLLRDHUP, else a peek; bytes it sent are left unread).
unsafe fn peer_closed(c: *mut ngx_connection_t) -> bool {
    if (*(*c).read).pending_eof() != 0 {
        return true;
    }
    let mut b = [0u8; 1];
    let n = libc::recv(
        (*c).fd,
        b.as_mut_ptr() as *mut libc::c_void,
        1,
        libc::MSG_PEEK,
    );
    if n == 0 {
        return true;
    }
    n < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EAGAIN)
}

unsafe extern "C" fn conn_read_handler(ev: *mut ngx_event_t) {
    let c = (*ev).data as *mut ngx_connection_t;
    let Some(h) = of_conn(c) else {
        return;
    };
    guard(Log::from_raw((*c).log), "read handler", (), || {
        // SAFETY: the live detached connection.
        unsafe {
            if (*c).close() != 0 {
                // nginx reclaims it (worker_shutdown_timeout).
                close_detached(h);
                return;
            }
            let Some((closing, mode, hooks)) = entry_any(h, |e| (e.closing, e.read, e.hooks))
            else {
                return;
            };
            match mode {
                ReadMode::Module if !closing => (hooks.read)(h),
                _ => {
                    if peer_closed(c) {
                        (*(*c).read).set_eof(1);
                        (*c).set_error(1);
                        super::log::info(
                            Log::from_raw((*c).log),
                            "push_stream: client closed the connection of a detached subscriber",
                        );
                        if closing {
                            close_detached(h);
                        } else {
                            h.close(Status::CLIENT_CLOSED_REQUEST);
                        }
                    }
                }
            }
        }
    })
}

unsafe extern "C" fn conn_write_handler(ev: *mut ngx_event_t) {
    let c = (*ev).data as *mut ngx_connection_t;
    let Some(h) = of_conn(c) else {
        return;
    };
    guard(Log::from_raw((*c).log), "write handler", (), || {
        // SAFETY: the live detached connection and its write event.
        unsafe {
            let wev = (*c).write;
            if (*wev).timedout() != 0 {
                (*wev).set_timedout(0);
                (*c).set_timedout(1);
                super::log::info(
                    Log::from_raw((*c).log),
                    "push_stream: client timed out (send_timeout) with output pending",
                );
                close_detached(h);
                return;
            }
        }
        let Some((rc, closing)) = entry_any(h, |e| match &mut e.target {
            Target::Conn(w) => Some((w.flush(), e.closing)),
            Target::Request { .. } => None,
        })
        .flatten() else {
            return;
        };
        if rc == nginx_sys::NGX_ERROR as ngx_int_t
            || (closing && rc == nginx_sys::NGX_OK as ngx_int_t)
        {
            close_detached(h);
        }
    })
}

/// The request's cleanup: forget it, delete its timers, settle its byte count, keep the
/// payloads nginx may still reference until its pool goes, then tell the module.
unsafe extern "C" fn cleanup<A: App>(data: *mut core::ffi::c_void) {
    guard(Log::cycle(), "request cleanup", (), || {
        let key = data as usize;
        let Some(mut e) = HELD.with(|m| m.borrow_mut().remove(&key)) else {
            return;
        };
        let Target::Request {
            r, out, graveyard, ..
        } = &mut e.target
        else {
            return;
        };
        REQS.with(|m| m.borrow_mut().remove(&(r.as_ptr() as usize)));
        // Before nginx logs the request ($bytes_sent), which follows the cleanups.
        out.settle();
        for ev in e.timers {
            // SAFETY: events from the request pool, still allocated during its cleanups.
            unsafe { drop_event(ev, false) };
        }
        let inflight = out.take_inflight();
        if !inflight.is_empty() {
            // SAFETY: the slot lives in the pool cleanup record, until the pool is destroyed.
            unsafe { **graveyard = Box::into_raw(Box::new(inflight)) };
        }
        A::held_ended(key, key as u64);
    })
}

/// The pool cleanup: nginx is done with every buffer of the request.
unsafe extern "C" fn drop_graveyard(data: *mut core::ffi::c_void) {
    let slot = data as *mut *mut VecDeque<Rc<[u8]>>;
    if !(*slot).is_null() {
        drop(Box::from_raw(*slot));
        *slot = ptr::null_mut();
    }
}

/// Whether a pool cleanup handler is the layer's own (the request's graveyard).
pub(super) fn own_pool_cleanup(h: nginx_sys::ngx_pool_cleanup_pt) -> bool {
    h.map(|f| f as usize) == Some(drop_graveyard as *const () as usize)
}
