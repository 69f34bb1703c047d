//! The one wrapper every function nginx calls goes through: a panic never crosses FFI.
//!
//! A panic inside a handler is caught, logged to the error log (with the request's log context
//! when there is one) at `alert` level, and turned into the caller's error value (NGX_ERROR,
//! NGX_CONF_ERROR or a 500). The worker keeps serving.

use std::any::Any;
use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

use nginx_sys::NGX_LOG_ALERT;

use super::log;

thread_local! {
    /// Where the panic hook leaves the message and location of the last panic on this thread.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

/// Installs a panic hook that records the panic's message and location for [`guard`] instead
/// of printing it to stderr. Threads of our own (the bridge) report to stderr.
///
/// The hook captures nothing, so boxing it allocates nothing: nginx unloads the module at
/// exit, and a heap box only the module's copy of std points to would show as a leak.
pub fn install_panic_hook() {
    HOOK.call_once(|| {
        panic::set_hook(Box::new(|info| {
            let on_own_thread = std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with("push-stream"));
            if on_own_thread {
                eprintln!("push_stream: thread panicked: {info}");
                return;
            }
            let location = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let msg = format!("{}{}", payload_text(info.payload()), location);
            LAST_PANIC.with(|p| *p.borrow_mut() = Some(msg));
        }));
    });
}

fn payload_text(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}

/// Runs `f`; on a panic logs `push_stream: panic in <what>: <message>` to `log` (or the cycle
/// log when null) and returns `on_panic`.
pub fn guard<R>(log_ptr: log::Log, what: &str, on_panic: R, f: impl FnOnce() -> R) -> R {
    match panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let recorded = LAST_PANIC.with(|p| p.borrow_mut().take());
            let msg = recorded.unwrap_or_else(|| payload_text(&*payload));
            // Logging must not panic again: log::error formats into a fixed buffer.
            let _ = panic::catch_unwind(AssertUnwindSafe(|| {
                log::write(
                    NGX_LOG_ALERT as usize,
                    log_ptr,
                    &format!("push_stream: panic in {what}: {msg}"),
                )
            }));
            on_panic
        }
    }
}
