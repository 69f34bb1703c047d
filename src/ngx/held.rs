//! Requests held open past their handler (subscribers), and the rules that keep them safe:
//!
//! - A held request is named by a [`HeldRef`]: its address plus a generation unique in this
//!   worker. Every use looks the pair up in the worker's registry of held requests, so a
//!   `HeldRef` of a request that ended, or of an earlier request at the same address, can do
//!   nothing.
//! - A held request is ended only by [`HeldRef::close`] (or `finish`), which marks it closing
//!   (from then on every use is refused) and defers the `ngx_http_finalize_request` to a
//!   posted event that runs after the current handler returned. No code path can use a
//!   request after a call that ended it, whatever it writes or whoever asked for the end.
//! - The registry entry owns the request's output state ([`Out`]) and its timers; the
//!   request's cleanup deletes the timers, adds the directly written bytes to the connection's
//!   count, and moves the payloads nginx may still reference to a pool cleanup, which drops
//!   them only when the request's pool is destroyed (HTTP/2 queues DATA frames that point
//!   into them and may send them after the request's cleanup).

use core::ptr::{self, NonNull};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use nginx_sys::{ngx_event_t, ngx_http_request_t, ngx_int_t};
use push_stream_core::hash::PtrHash;

use super::guard::guard;
use super::log::Log;
use super::output::Out;
use super::request::Request;
use super::{App, Status, Timer};

/// A held request of this worker. `Copy`: holding one grants nothing; each use checks that
/// the request is still held and not closing.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct HeldRef {
    r: NonNull<ngx_http_request_t>,
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

struct Entry {
    gen: u64,
    out: Out,
    timers: [*mut ngx_event_t; 3],
    /// The module's timer entry point (`timer_handler::<A>`).
    on_timer: unsafe extern "C" fn(*mut ngx_event_t),
    /// Its end was asked for: refused for any further use.
    closing: bool,
    /// The pool cleanup's slot for the payloads nginx may still reference at the end.
    graveyard: *mut *mut VecDeque<Rc<[u8]>>,
}

thread_local! {
    static HELD: RefCell<HashMap<usize, Entry, PtrHash>> = RefCell::new(HashMap::default());
    static NEXT_GEN: Cell<u64> = const { Cell::new(0) };
    static CLOSING: RefCell<VecDeque<(HeldRef, Status)>> = const { RefCell::new(VecDeque::new()) };
    static CLOSER: Cell<*mut ngx_event_t> = const { Cell::new(ptr::null_mut()) };
}

/// `entry` also for a request whose end is pending.
fn entry_any<R>(h: HeldRef, f: impl FnOnce(&mut Entry) -> R) -> Option<R> {
    HELD.with(|m| {
        m.borrow_mut()
            .get_mut(&(h.r.as_ptr() as usize))
            .filter(|e| e.gen == h.gen)
            .map(f)
    })
}

/// Asks for the end of `r` when it is held (a handler that handed it over panicked); false
/// when it is not held.
pub(super) fn close_if_held(r: *mut ngx_http_request_t, rc: Status) -> bool {
    let gen = HELD.with(|m| m.borrow().get(&(r as usize)).map(|e| e.gen));
    match (gen, NonNull::new(r)) {
        (Some(gen), Some(r)) => {
            HeldRef { r, gen }.close(rc);
            true
        }
        _ => false,
    }
}

fn entry<R>(h: HeldRef, f: impl FnOnce(&mut Entry) -> R) -> Option<R> {
    HELD.with(|m| {
        m.borrow_mut()
            .get_mut(&(h.r.as_ptr() as usize))
            .filter(|e| e.gen == h.gen && !e.closing)
            .map(f)
    })
}

/// How many requests this worker holds.
pub fn count() -> usize {
    HELD.with(|m| m.borrow().len())
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
        if HELD.with(|m| m.borrow().contains_key(&(r as usize))) {
            // Already held (e.g. error_page or post_action leading back to the module):
            // one owner only.
            return Err(Status::INTERNAL_SERVER_ERROR);
        }
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
            (*cln).data = r as *mut core::ffi::c_void;
            let gen = NEXT_GEN.with(|g| {
                g.set(g.get() + 1);
                g.get()
            });
            HELD.with(|m| {
                m.borrow_mut().insert(
                    r as usize,
                    Entry {
                        gen,
                        out: Out::default(),
                        timers: [ptr::null_mut(); 3],
                        on_timer: timer_handler::<A>,
                        closing: false,
                        graveyard,
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
            Ok(HeldRef {
                r: NonNull::new_unchecked(r),
                gen,
            })
        }
    }
}

impl HeldRef {
    /// The held request of a raw pointer nginx passed to an entry point, if it is held.
    fn of_raw(r: *mut ngx_http_request_t) -> Option<HeldRef> {
        let r = NonNull::new(r)?;
        HELD.with(|m| {
            m.borrow()
                .get(&(r.as_ptr() as usize))
                .filter(|e| !e.closing)
                .map(|e| HeldRef { r, gen: e.gen })
        })
    }

    /// `of_raw` also for a request whose end is pending.
    fn of_raw_any(r: *mut ngx_http_request_t) -> Option<HeldRef> {
        let r = NonNull::new(r)?;
        HELD.with(|m| {
            m.borrow()
                .get(&(r.as_ptr() as usize))
                .map(|e| HeldRef { r, gen: e.gen })
        })
    }

    /// The request's address (the key of the module's per-request state).
    pub fn key(self) -> usize {
        self.r.as_ptr() as usize
    }

    /// Unique in this worker: a later request at the same address has another.
    pub fn serial(self) -> u64 {
        self.gen
    }

    /// Held, and not closing.
    pub fn alive(self) -> bool {
        entry(self, |_| ()).is_some()
    }

    /// Runs `f` with the request while it is held and not closing. `f` gets a `&Request`:
    /// it can write to the request but not end it.
    pub fn with<R>(self, f: impl FnOnce(&Request<'_>) -> R) -> Option<R> {
        if !self.alive() {
            return None;
        }
        // SAFETY: held (its cleanup has not run) and not closing: the request is live, and
        // nothing in this layer finalizes it before the deferred close.
        let req = unsafe { Request::from_raw(self.r.as_ptr()) }?;
        Some(f(&req))
    }

    pub fn log(self) -> Log {
        self.with(|r| r.log()).unwrap_or(Log::cycle())
    }

    /// Writes shared payloads without a copy per request, as one message (see
    /// `Request::send_shared`).
    pub fn send(self, parts: &[Rc<[u8]>]) -> Sent {
        self.send_messages(parts, &[parts.len()])
    }

    /// Writes the messages `parts[..ends[0]]`, `parts[ends[0]..ends[1]]`… in one go, each in a
    /// chunk of its own (see `Request::send_shared`).
    pub fn send_messages(self, parts: &[Rc<[u8]>], ends: &[usize]) -> Sent {
        self.write(|req, out| req.send_shared(out, parts, ends))
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
        self.write(|req, out| req.send_copies(out, pieces))
    }

    /// Runs a write with the request and its output state. The output state is taken out of
    /// the registry for the call (nginx's filters may run other requests' code, which must
    /// find the registry free) and put back after.
    fn write(self, f: impl FnOnce(&Request<'_>, &mut Out) -> ngx_int_t) -> Sent {
        let Some(mut out) = entry(self, |e| std::mem::take(&mut e.out)) else {
            return Sent::Gone;
        };
        // SAFETY: see `with`.
        let rc = unsafe { Request::from_raw(self.r.as_ptr()) }
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
        let mut back = HELD.with(|m| {
            match m
                .borrow_mut()
                .get_mut(&self.key())
                .filter(|e| e.gen == self.gen)
            {
                Some(e) => {
                    e.out = out;
                    None
                }
                None => Some(out),
            }
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
        let Some(mut out) = entry_any(self, |e| std::mem::take(&mut e.out)) else {
            return Sent::Gone;
        };
        // SAFETY: see `with` (a non-null pointer: always Some).
        let Some(req) = (unsafe { Request::from_raw(self.r.as_ptr()) }) else {
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
        let r = self.r.as_ptr();
        let Some(ev) = entry(self, |e| {
            let handler = e.on_timer;
            let slot = &mut e.timers[which as usize];
            if slot.is_null() {
                // SAFETY: allocated zeroed from the request pool; deleted at the cleanup.
                unsafe {
                    let ev = nginx_sys::ngx_pcalloc((*r).pool, core::mem::size_of::<ngx_event_t>())
                        as *mut ngx_event_t;
                    if !ev.is_null() {
                        (*ev).handler = Some(handler);
                        (*ev).data = r as *mut core::ffi::c_void;
                        (*ev).log = (*(*r).connection).log;
                        (*ev).set_cancelable(1);
                    }
                    *slot = ev;
                }
            }
            *slot
        }) else {
            return;
        };
        if !ev.is_null() {
            // SAFETY: a timer event of a live held request.
            unsafe {
                (*ev).set_cancelable(cancelable as u32);
                nginx_sys::ngx_add_timer(ev, ms as _)
            };
        }
    }

    /// Reads from the client connection into `buf`.
    pub fn recv(self, buf: &mut [u8]) -> Recv {
        self.with(|req| {
            // SAFETY: the connection's own recv function on a live connection.
            let n = unsafe {
                let c = (*req.raw()).connection;
                match (*c).recv {
                    Some(f) => f(c, buf.as_mut_ptr(), buf.len()),
                    None => nginx_sys::NGX_ERROR as isize,
                }
            };
            if n == nginx_sys::NGX_AGAIN as isize {
                // SAFETY: the live connection's read event.
                let armed = unsafe {
                    nginx_sys::ngx_handle_read_event((*(*req.raw()).connection).read, 0)
                        == nginx_sys::NGX_OK as ngx_int_t
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
        })
        .unwrap_or(Recv::Gone)
    }

    /// Runs the request's read handler again on the next turn of the event loop (after nginx
    /// has looked for I/O), so one client's reads take a bounded share of a turn.
    pub fn read_again_next_turn(self) {
        self.with(|req| {
            // SAFETY: the live connection's read event, posted to nginx's next-turn queue.
            unsafe {
                let rev = (*(*req.raw()).connection).read;
                if (*rev).posted() == 0 {
                    nginx_sys::ngx_post_event(
                        rev,
                        core::ptr::addr_of_mut!(nginx_sys::ngx_posted_next_events),
                    );
                }
            }
        });
    }
}

/// Runs the deferred ends now (the closer event; also `exit_process`, where no later turn
/// comes).
pub fn run_closes() {
    while let Some((h, rc)) = CLOSING.with(|q| q.borrow_mut().pop_front()) {
        let still = HELD.with(|m| {
            m.borrow()
                .get(&h.key())
                .is_some_and(|e| e.gen == h.gen && e.closing)
        });
        if still {
            // SAFETY: still held (its cleanup has not run): live. Finalizing runs its
            // cleanup, which removes it from the registry.
            if let Some(req) = unsafe { Request::from_raw(h.r.as_ptr()) } {
                req.finalize_outside(rc);
            }
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
    guard(Log::from_raw((*ev).log), "deferred close", (), run_closes)
}

unsafe extern "C" fn write_handler<A: App>(r: *mut ngx_http_request_t) {
    // Also while its end is pending: an edge of the write event must not be lost.
    let Some(h) = HeldRef::of_raw_any(r) else {
        return;
    };
    guard(h.log(), "write handler", (), || A::held_write(h))
}

unsafe extern "C" fn read_handler<A: App>(r: *mut ngx_http_request_t) {
    let Some(h) = HeldRef::of_raw(r) else {
        return;
    };
    guard(h.log(), "read handler", (), || A::held_read(h))
}

unsafe extern "C" fn timer_handler<A: App>(ev: *mut ngx_event_t) {
    let r = (*ev).data as *mut ngx_http_request_t;
    let Some(h) = HeldRef::of_raw(r) else {
        return;
    };
    let which = entry(h, |e| {
        [Timer::Ping, Timer::Ttl, Timer::Partial]
            .into_iter()
            .find(|t| e.timers[*t as usize] == ev)
    })
    .flatten();
    if let Some(which) = which {
        guard(Log::from_raw((*ev).log), "timer", (), || {
            A::held_timer(h, which)
        })
    }
}

/// The request's cleanup: forget it, delete its timers, settle its byte count, keep the
/// payloads nginx may still reference until its pool goes, then tell the module.
unsafe extern "C" fn cleanup<A: App>(data: *mut core::ffi::c_void) {
    guard(Log::cycle(), "request cleanup", (), || {
        let key = data as usize;
        let Some(mut e) = HELD.with(|m| m.borrow_mut().remove(&key)) else {
            return;
        };
        // Before nginx logs the request ($bytes_sent), which follows the cleanups.
        e.out.settle();
        for ev in e.timers {
            // SAFETY: events from the request pool, still allocated during its cleanups.
            unsafe {
                if !ev.is_null() && (*ev).timer_set() != 0 {
                    nginx_sys::ngx_del_timer(ev);
                }
                if !ev.is_null() && (*ev).posted() != 0 {
                    nginx_sys::ngx_delete_posted_event(ev);
                }
            }
        }
        let inflight = e.out.take_inflight();
        if !inflight.is_empty() {
            // SAFETY: the slot lives in the pool cleanup record, until the pool is destroyed.
            unsafe { *e.graveyard = Box::into_raw(Box::new(inflight)) };
        }
        A::held_ended(key, e.gen);
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
