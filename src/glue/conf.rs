//! Configuration structures and the directive setters nginx calls.

use core::ffi::{c_char, c_void};
use core::ptr;

use nginx_sys::{ngx_command_t, ngx_conf_t, ngx_str_t, NGX_LOG_EMERG};
use ngx::core::{NGX_CONF_ERROR, NGX_CONF_OK};
use ngx::http::{HttpModuleLocationConf, Merge, MergeConfigError, NgxHttpCoreModule};

use super::guard::guard;

/// What a location does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocationRole {
    /// Test-only handlers (feature `test-hooks`).
    #[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
    TestHook(TestHook),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestHook {
    /// Answers 200 with the serving pid.
    Ok,
    /// Panics inside the content handler.
    Panic,
    /// Holds the request open until shutdown.
    Hold,
    /// Reports the inbox counters.
    Inbox,
}

/// `http{}`-level configuration.
#[derive(Debug)]
pub struct MainConf {
    /// Some location uses the module.
    pub used: bool,
    /// `push_stream_shared_memory_size`.
    pub shm_size: usize,
    pub shm_name: Vec<u8>,
    pub shm_zone: *mut nginx_sys::ngx_shm_zone_t,
    /// Where `push_stream_shared_memory_size` was given, for later messages.
    pub shm_set: bool,
    /// `push_stream_test_bridge_ticks` (test-hooks): start the thread skeleton with a ticker.
    pub test_ticks_ms: u64,
}

impl Default for MainConf {
    fn default() -> Self {
        MainConf {
            used: false,
            shm_size: 0,
            shm_name: b"push_stream_module".to_vec(),
            shm_zone: ptr::null_mut(),
            shm_set: false,
            test_ticks_ms: 0,
        }
    }
}

/// Location-level configuration.
#[derive(Debug, Default)]
pub struct LocConf {
    pub role: Option<LocationRole>,
}

impl Merge for LocConf {
    fn merge(&mut self, _prev: &LocConf) -> Result<(), MergeConfigError> {
        // The role is per location, never inherited (as nginx's own content handlers).
        Ok(())
    }
}

/// The arguments of the directive being parsed (without its name).
///
/// # Safety
/// `cf` must be the configuration nginx passed to a directive setter.
pub unsafe fn args<'a>(cf: *mut ngx_conf_t) -> &'a [ngx_str_t] {
    let all: &[ngx_str_t] = (*(*cf).args).as_slice();
    &all[1..]
}

/// Logs `msg` at `emerg` against the directive being parsed; nginx appends `in FILE:LINE`.
///
/// # Safety
/// `cf` must be a live configuration.
pub unsafe fn conf_error(cf: *mut ngx_conf_t, level: u32, msg: &str) {
    nginx_sys::ngx_conf_log_error(level as _, cf, 0, c"%*s".as_ptr(), msg.len(), msg.as_ptr());
}

/// Runs a directive setter body: `Err(message)` and panics become NGX_CONF_ERROR with the
/// message logged against the directive's file and line.
///
/// # Safety
/// Arguments are those nginx passes to a directive setter.
pub unsafe fn setter<T>(
    cf: *mut ngx_conf_t,
    conf: *mut c_void,
    f: impl FnOnce(&mut T, &[ngx_str_t]) -> Result<(), String>,
) -> *mut c_char {
    let log = (*cf).log;
    guard(log, "directive", NGX_CONF_ERROR, || {
        let conf = &mut *(conf as *mut T);
        match f(conf, args(cf)) {
            Ok(()) => NGX_CONF_OK,
            Err(msg) => {
                conf_error(cf, NGX_LOG_EMERG, &msg);
                NGX_CONF_ERROR
            }
        }
    })
}

/// Makes the current location's content handler ours.
///
/// # Safety
/// `cf` must be a live configuration inside a location.
pub unsafe fn set_content_handler(
    cf: *mut ngx_conf_t,
    h: unsafe extern "C" fn(*mut nginx_sys::ngx_http_request_t) -> nginx_sys::ngx_int_t,
) {
    if let Some(clcf) = NgxHttpCoreModule::location_conf_mut(&*cf) {
        clcf.handler = Some(h);
    }
}

/// Marks the module as used by this `http{}` block.
///
/// # Safety
/// `cf` must be a live configuration inside `http{}`.
pub unsafe fn mark_used(cf: *mut ngx_conf_t) {
    if let Some(mcf) = crate::Module::main_conf_mut_from_cf(cf) {
        mcf.used = true;
    }
}

#[allow(dead_code)]
pub type Setter =
    unsafe extern "C" fn(*mut ngx_conf_t, *mut ngx_command_t, *mut c_void) -> *mut c_char;
