//! Per-worker state owned by the event loop: the eventfd connection (inbox wake-up and the
//! graceful-shutdown hook), the background thread, and the requests held open.
//!
//! Everything here runs on the worker's single event-loop thread.

use std::cell::RefCell;
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver};
use nginx_sys::{
    ngx_close_connection, ngx_connection_t, ngx_cycle_t, ngx_event_t, ngx_get_connection,
    ngx_handle_read_event, ngx_http_request_t, ngx_int_t, NGX_OK,
};

use super::guard::guard;
use super::http::Req;
use super::log;
use super::thread::{drain_eventfd, eventfd, Waker};
use crate::bridge::{Bridge, InboxItem, INBOX_CAPACITY};

/// How long `exit_process` waits for the background thread.
const JOIN_TIMEOUT: Duration = Duration::from_secs(3);

/// A request held open by the module (a subscriber), with what it gets when it is ended.
pub struct Held {
    pub req: Req,
    pub footer: Vec<u8>,
}

pub struct Worker {
    conn: *mut ngx_connection_t,
    efd: RawFd,
    inbox: Receiver<InboxItem>,
    inbox_tx: crossbeam_channel::Sender<InboxItem>,
    bridge: Option<Bridge>,
    held: HashMap<usize, Held>,
    pub shutting_down: bool,
    pub ticks: u64,
    pub last_tick: u64,
}

thread_local! {
    static WORKER: RefCell<Option<Worker>> = const { RefCell::new(None) };
}

/// Runs `f` with the worker state, if this process has one.
pub fn with<R>(f: impl FnOnce(&mut Worker) -> R) -> Option<R> {
    WORKER.with(|w| w.borrow_mut().as_mut().map(f))
}

/// Creates the eventfd connection. Called from `init_process` when the configuration uses the
/// module. Starts no thread by itself (see [`start_bridge`]).
pub fn init(cycle: *mut ngx_cycle_t) -> Result<(), String> {
    let efd = eventfd().map_err(|e| format!("eventfd() failed: {e}"))?;
    // SAFETY: nginx's connection API on the worker thread; the connection wraps our own fd.
    let conn = unsafe {
        let c = ngx_get_connection(efd, (*cycle).log);
        if c.is_null() {
            libc::close(efd);
            return Err("no free connection for the inbox eventfd".into());
        }
        (*c).log = (*cycle).log;
        (*(*c).read).log = (*cycle).log;
        (*(*c).write).log = (*cycle).log;
        (*(*c).read).handler = Some(inbox_handler);
        // Marked idle so that ngx_close_idle_connections() calls inbox_handler with c->close
        // set when a graceful shutdown (reload, QUIT) begins: our shutdown hook.
        (*c).set_idle(1);
        if ngx_handle_read_event((*c).read, 0) != NGX_OK as ngx_int_t {
            ngx_close_connection(c);
            return Err("cannot register the inbox eventfd with the event loop".into());
        }
        c
    };
    let (tx, rx) = bounded(INBOX_CAPACITY);
    WORKER.with(|w| {
        *w.borrow_mut() = Some(Worker {
            conn,
            efd,
            inbox: rx,
            inbox_tx: tx,
            bridge: None,
            held: HashMap::new(),
            shutting_down: false,
            ticks: 0,
            last_tick: 0,
        })
    });
    Ok(())
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

pub fn bridge_running() -> bool {
    with(|w| w.bridge.is_some()).unwrap_or(false)
}

pub fn inbox_dropped() -> u64 {
    with(|w| {
        w.bridge
            .as_ref()
            .map(|b| b.dropped.load(std::sync::atomic::Ordering::Relaxed))
    })
    .flatten()
    .unwrap_or(0)
}

/// The eventfd's read handler: drains the inbox, or, when nginx starts a graceful shutdown
/// (`c->close` set by ngx_close_idle_connections), ends every held request.
unsafe extern "C" fn inbox_handler(ev: *mut ngx_event_t) {
    let c = (*ev).data as *mut ngx_connection_t;
    let log_ptr = (*c).log;
    guard(log_ptr, "inbox handler", (), || {
        // SAFETY: c is our eventfd connection, alive until exit_process closes it.
        let closing = unsafe { (*c).close() } != 0;
        if closing {
            // Stay registered: the thread may still write until exit_process joins it.
            unsafe { (*c).set_close(0) };
            unsafe { (*c).set_idle(0) };
            shutdown();
            return;
        }
        let fd = unsafe { (*c).fd };
        drain_eventfd(fd);
        let items: Vec<InboxItem> =
            with(|w| w.inbox.try_iter().take(INBOX_CAPACITY).collect()).unwrap_or_default();
        for item in items {
            handle_item(item);
        }
    })
}

fn handle_item(item: InboxItem) {
    match item {
        InboxItem::Tick(n) => {
            with(|w| {
                w.ticks += 1;
                w.last_tick = n;
            });
        }
    }
}

/// Graceful shutdown began: each held request gets its footer and ends.
fn shutdown() {
    let held: Vec<Held> = with(|w| {
        w.shutting_down = true;
        w.held.drain().map(|(_, h)| h).collect()
    })
    .unwrap_or_default();
    if !held.is_empty() {
        log::info(
            std::ptr::null_mut(),
            &format!(
                "push_stream: shutting down, ending {} held request(s)",
                held.len()
            ),
        );
    }
    for h in held {
        h.req.finish(&h.footer);
    }
}

/// Holds `req` open until the client leaves or the worker shuts down.
pub fn hold(
    req: Req,
    footer: Vec<u8>,
    on_write: nginx_sys::ngx_http_event_handler_pt,
) -> ngx_int_t {
    if !req.on_cleanup(held_cleanup, req.0 as *mut core::ffi::c_void) {
        return nginx_sys::NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    }
    let rc = req.hold(on_write);
    with(|w| w.held.insert(req.0 as usize, Held { req, footer }));
    rc
}

unsafe extern "C" fn held_cleanup(data: *mut core::ffi::c_void) {
    guard(std::ptr::null_mut(), "request cleanup", (), || {
        with(|w| w.held.remove(&(data as usize)));
    })
}

pub fn held_count() -> usize {
    with(|w| w.held.len()).unwrap_or(0)
}

/// The write handler of held requests: flush what was pending.
pub unsafe extern "C" fn held_write_handler(r: *mut ngx_http_request_t) {
    let req = Req::from_raw(r);
    guard(req.log(), "write handler", (), || {
        let rc = req.flush_pending();
        if rc == nginx_sys::NGX_ERROR as ngx_int_t {
            req.finalize(rc);
        }
    })
}

/// `exit_process`: end what is still held, stop and join the thread (bounded), then close the
/// eventfd connection, in that order (a closed fd number could be reused by a client socket
/// the thread would then write to).
pub fn exit() {
    shutdown();
    let Some(mut w) = WORKER.with(|w| w.borrow_mut().take()) else {
        return;
    };
    let mut joined = true;
    if let Some(b) = w.bridge.take() {
        joined = b.stop(JOIN_TIMEOUT);
    }
    // SAFETY: our own eventfd connection, still registered with the event loop.
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
