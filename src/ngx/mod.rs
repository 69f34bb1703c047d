//! The thin nginx layer: the only `unsafe` code of the module, and the only code that calls
//! nginx. It imports nothing from the rest of the crate: what nginx calls reaches the module
//! through the [`App`] trait, whose implementation (in `lib.rs`) the layer's entry points are
//! instantiated with. Every entry point runs inside [`guard::guard`], so a panic never crosses
//! FFI.
//!
//! Lifetimes of nginx objects are encoded here:
//! - [`request::Request`] is a request nginx handed to the current call; it is neither `Copy`
//!   nor `Clone`, and only its owner can finalize it (`finalize(self)`).
//! - A request held open past its handler (a subscriber) is a [`held::HeldRef`]: every use
//!   checks that the request is still held, and its end is always deferred to one place that
//!   runs after the current handler returns ([`held::HeldRef::close`]), so no code can use a
//!   request after a call that ended it.
//! - Output buffers that nginx may still reference live until the request's pool is
//!   destroyed, not merely until the request's cleanup (HTTP/2 queues frames that point at
//!   them).

pub mod conf;
mod detached;
pub mod event;
pub mod guard;
pub mod held;
pub mod log;
pub mod output;
pub mod request;
pub mod thread;
pub mod zone;

use nginx_sys::ngx_int_t;

/// An nginx return code: `NGX_OK`, `NGX_ERROR`, `NGX_AGAIN`, `NGX_DONE`, or an HTTP status a
/// handler returns for nginx to answer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Status(pub ngx_int_t);

impl Status {
    pub const OK: Status = Status(nginx_sys::NGX_OK as ngx_int_t);
    pub const ERROR: Status = Status(nginx_sys::NGX_ERROR as ngx_int_t);
    pub const AGAIN: Status = Status(nginx_sys::NGX_AGAIN as ngx_int_t);
    pub const DONE: Status = Status(nginx_sys::NGX_DONE as ngx_int_t);
    pub const DECLINED: Status = Status(nginx_sys::NGX_DECLINED as ngx_int_t);
    pub const INTERNAL_SERVER_ERROR: Status =
        Status(nginx_sys::NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t);
    pub const REQUEST_TIME_OUT: Status = Status(nginx_sys::NGX_HTTP_REQUEST_TIME_OUT as ngx_int_t);
    pub const CLIENT_CLOSED_REQUEST: Status =
        Status(nginx_sys::NGX_HTTP_CLIENT_CLOSED_REQUEST as ngx_int_t);

    /// An HTTP status code for nginx to answer with.
    pub const fn http(code: u16) -> Status {
        Status(code as ngx_int_t)
    }

    pub fn is_error(self) -> bool {
        self == Status::ERROR
    }

    /// `NGX_ERROR`, or an HTTP status nginx will answer with itself (the response is over
    /// from the handler's point of view).
    pub fn failed(self) -> bool {
        self == Status::ERROR || self.0 > Status::OK.0
    }
}

/// Which timer of a held request fired.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Timer {
    /// Keep-alive (ping) timer.
    Ping = 0,
    /// Connection lifetime timer (ttl, long-poll timeout, a publish's confirm wait).
    Ttl = 1,
    /// An unfinished WebSocket message's time limit.
    Partial = 2,
}

/// What the module does when nginx calls it. Implemented once, in `lib.rs`; the layer's
/// entry points are instantiated with it, so the layer needs no import from above.
pub trait App: 'static {
    /// A request for a location whose content handler is the module's.
    fn content(r: request::Request<'_>) -> Status;
    /// The request body of `r` was read (`Request::read_body`). The handler owns `r`.
    fn body_read(r: request::Request<'_>);
    /// A held request's socket can be written again (or its `send_timeout` fired).
    fn held_write(h: held::HeldRef);
    /// A held request asked for its read events (WebSocket) has bytes to read.
    fn held_read(h: held::HeldRef);
    /// A held request's timer fired.
    fn held_timer(h: held::HeldRef, which: Timer);
    /// A held request ended (its cleanup): forget it. `key` is `HeldRef::key`.
    fn held_ended(key: usize, serial: u64);
    /// The worker's internal wake-ups (see `event`).
    fn wakeup(source: event::Source);
}
