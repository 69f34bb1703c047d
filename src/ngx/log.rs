//! Writing to nginx's error log. Every line the module writes starts with `push_stream:`.

use nginx_sys::{ngx_cycle, ngx_log_t};

/// Where a log line goes: the log of a request, connection or configuration (obtained from
/// the layer's wrappers, valid for the running call), or the cycle's.
#[derive(Clone, Copy, Debug)]
pub struct Log(*mut ngx_log_t);

impl Log {
    /// The running cycle's error log.
    pub const fn cycle() -> Log {
        Log(core::ptr::null_mut())
    }

    /// # Safety
    /// `log` is null (the cycle's log) or an nginx log that outlives every use of the result.
    pub unsafe fn from_raw(log: *mut ngx_log_t) -> Log {
        Log(log)
    }
}

/// Writes `msg` at `level` (NGX_LOG_*) to `log`.
pub fn write(level: usize, log: Log, msg: &str) {
    let log = log.0;
    // SAFETY: nginx's globals are only touched on the worker's (or master's) main thread, where
    // every caller of this function runs; the log pointer is nginx's own (Log's contract).
    unsafe {
        let log = if log.is_null() {
            if ngx_cycle.is_null() {
                return;
            }
            (*ngx_cycle).log
        } else {
            log
        };
        if log.is_null() || (*log).log_level < level {
            return;
        }
        ngx::log::log_error(level as _, log, 0, msg.as_bytes());
    }
}

macro_rules! log_at {
    ($name:ident, $level:ident) => {
        #[allow(dead_code)]
        pub fn $name(log: Log, msg: &str) {
            write(nginx_sys::$level as usize, log, msg)
        }
    };
}

log_at!(alert, NGX_LOG_ALERT);
log_at!(error, NGX_LOG_ERR);
log_at!(warn, NGX_LOG_WARN);
log_at!(notice, NGX_LOG_NOTICE);
log_at!(info, NGX_LOG_INFO);

/// Format-style logging: `ngx_log!(warn, log, "push_stream: {} …", x)` writes at that
/// level to `log` (a [`Log`]). Levels: alert, error, warn, notice, info.
#[macro_export]
macro_rules! ngx_log {
    ($level:ident, $log:expr, $($arg:tt)+) => {
        $crate::ngx::log::$level($log, &format!($($arg)+))
    };
}
