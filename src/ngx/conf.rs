//! Configuration-time helpers: the arguments of the directive being parsed, errors reported
//! with nginx's `in FILE:LINE`, complex values and regexes compiled at configuration time,
//! and the command-table entry type.

use core::ffi::{c_char, c_void};
use core::ptr;

use nginx_sys::{
    ngx_command_t, ngx_conf_t, ngx_http_compile_complex_value, ngx_http_compile_complex_value_t,
    ngx_http_complex_value_t, ngx_pcalloc, ngx_str_t, NGX_LOG_EMERG, NGX_OK,
};
use ngx::core::{NGX_CONF_ERROR, NGX_CONF_OK};
use ngx::http::{HttpModuleMainConf, NgxHttpCoreModule};

use super::guard::guard;
use super::App;

/// The configuration being parsed, as nginx passes it to a directive setter or a
/// configuration callback.
#[derive(Clone, Copy)]
pub struct Conf(*mut ngx_conf_t);

/// Log levels for configuration messages.
#[derive(Clone, Copy)]
pub enum Level {
    Emerg,
    Warn,
}

impl Conf {
    /// # Safety
    /// `cf` is the live configuration nginx passed to the running callback.
    pub unsafe fn from_raw(cf: *mut ngx_conf_t) -> Conf {
        Conf(cf)
    }

    pub fn raw(self) -> *mut ngx_conf_t {
        self.0
    }

    pub fn log(self) -> super::log::Log {
        // SAFETY: the log of a live configuration, which outlives the running call.
        unsafe { super::log::Log::from_raw((*self.0).log) }
    }

    /// The arguments of the directive being parsed (without its name).
    pub fn args(self) -> Vec<Vec<u8>> {
        // SAFETY: the args array of a live configuration.
        let all: &[ngx_str_t] = unsafe { (*(*self.0).args).as_slice() };
        all[1..].iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    /// The name of the directive being parsed.
    pub fn directive_name(self) -> String {
        // SAFETY: the args array of a live configuration.
        let all: &[ngx_str_t] = unsafe { (*(*self.0).args).as_slice() };
        String::from_utf8_lossy(all[0].as_bytes()).into_owned()
    }

    /// Logs `msg` against the directive being parsed; nginx appends `in FILE:LINE`.
    pub fn error(self, level: Level, msg: &str) {
        let level = match level {
            Level::Emerg => NGX_LOG_EMERG,
            Level::Warn => nginx_sys::NGX_LOG_WARN,
        };
        // SAFETY: a live configuration; "%*s" reads exactly msg.len() bytes.
        unsafe {
            nginx_sys::ngx_conf_log_error(
                level as _,
                self.0,
                0,
                c"%*s".as_ptr(),
                msg.len(),
                msg.as_ptr(),
            )
        }
    }

    /// The `http{}` configuration of module `M` of the block being parsed.
    pub fn main_conf_mut<M: HttpModuleMainConf>(self) -> Option<&'static mut M::MainConf> {
        // SAFETY: the main configuration lives as long as the cycle being built.
        unsafe { M::main_conf_mut(&*self.0).map(|c| &mut *(c as *mut M::MainConf)) }
    }

    /// Makes the current location's content handler the module's and turns off nginx's own
    /// If-Modified-Since handling there (the module reads that header itself).
    pub fn set_content_handler<A: App>(self) {
        use ngx::http::HttpModuleLocationConf;
        // SAFETY: a live configuration inside a location.
        if let Some(clcf) = unsafe { NgxHttpCoreModule::location_conf_mut(&*self.0) } {
            clcf.handler = Some(super::request::content_handler::<A>);
            clcf.if_modified_since = nginx_sys::NGX_HTTP_IMS_OFF as _;
        }
    }

    /// Compiles a complex value (a string that may hold variables).
    pub fn compile_complex(self, value: &[u8]) -> Result<Complex, String> {
        // SAFETY: allocations from the configuration pool, which lives as long as the cycle.
        unsafe {
            let cv = ngx_pcalloc(
                (*self.0).pool,
                core::mem::size_of::<ngx_http_complex_value_t>(),
            ) as *mut ngx_http_complex_value_t;
            let data = nginx_sys::ngx_pnalloc((*self.0).pool, value.len().max(1)) as *mut u8;
            if cv.is_null() || data.is_null() {
                return Err("push stream module: out of memory".into());
            }
            ptr::copy_nonoverlapping(value.as_ptr(), data, value.len());
            let mut v = ngx_str_t {
                len: value.len(),
                data,
            };
            let mut ccv: ngx_http_compile_complex_value_t = core::mem::zeroed();
            ccv.cf = self.0;
            ccv.value = &mut v;
            ccv.complex_value = cv;
            if ngx_http_compile_complex_value(&mut ccv) != NGX_OK as nginx_sys::ngx_int_t {
                return Err(String::new());
            }
            Ok(Complex(cv))
        }
    }

    /// Compiles a PCRE regex with nginx's regex API (case-sensitive, as the C module).
    pub fn compile_regex(self, pattern: &str) -> Result<Regex, String> {
        // SAFETY: allocations from the configuration pool; nginx fills `rc`.
        unsafe {
            let mut errbuf = [0u8; 256];
            let mut rc: nginx_sys::ngx_regex_compile_t = core::mem::zeroed();
            let p = nginx_sys::ngx_pnalloc((*self.0).pool, pattern.len().max(1)) as *mut u8;
            if p.is_null() {
                return Err("out of memory".into());
            }
            ptr::copy_nonoverlapping(pattern.as_ptr(), p, pattern.len());
            rc.pattern = ngx_str_t {
                len: pattern.len(),
                data: p,
            };
            rc.pool = (*self.0).pool;
            rc.err = ngx_str_t {
                len: errbuf.len(),
                data: errbuf.as_mut_ptr(),
            };
            if nginx_sys::ngx_regex_compile(&mut rc) != NGX_OK as nginx_sys::ngx_int_t {
                return Err(String::from_utf8_lossy(rc.err.as_bytes()).into_owned());
            }
            Ok(Regex(rc.regex))
        }
    }

    /// A path relative to nginx's configuration prefix made absolute, as nginx does.
    pub fn full_path(self, s: &[u8]) -> Result<String, String> {
        // SAFETY: the name is copied into the configuration pool by ngx_conf_full_name.
        unsafe {
            let data = nginx_sys::ngx_pnalloc((*self.0).pool, s.len().max(1)) as *mut u8;
            if data.is_null() {
                return Err("push stream module: out of memory".into());
            }
            ptr::copy_nonoverlapping(s.as_ptr(), data, s.len());
            let mut name = ngx_str_t { len: s.len(), data };
            if nginx_sys::ngx_conf_full_name((*self.0).cycle, &mut name, 1)
                != NGX_OK as nginx_sys::ngx_int_t
            {
                return Err("push stream module: out of memory".into());
            }
            Ok(String::from_utf8_lossy(name.as_bytes()).into_owned())
        }
    }

    /// The system's page size (zone sizes are rounded to it).
    pub fn page_size(self) -> usize {
        #[allow(clippy::unnecessary_cast)] // ngx_uint_t: usize where nginx-sys binds it
        // SAFETY: set by nginx at start.
        unsafe {
            nginx_sys::ngx_pagesize as usize
        }
    }
}

/// Runs a directive setter body for configuration struct `T`: `Err(message)` and panics
/// become NGX_CONF_ERROR with the message logged against the directive's file and line (an
/// empty message: already logged).
///
/// # Safety
/// Arguments are those nginx passes to a directive setter; `conf` points at a `T`.
pub unsafe fn setter<T>(
    cf: *mut ngx_conf_t,
    conf: *mut c_void,
    f: impl FnOnce(&mut T, Conf) -> Result<(), String>,
) -> *mut c_char {
    let cf = Conf(cf);
    guard(cf.log(), "directive", NGX_CONF_ERROR, || {
        let conf = &mut *(conf as *mut T);
        match f(conf, cf) {
            Ok(()) => NGX_CONF_OK,
            Err(msg) => {
                if !msg.is_empty() {
                    cf.error(Level::Emerg, &msg);
                }
                NGX_CONF_ERROR
            }
        }
    })
}

/// A compiled nginx complex value (may contain variables), evaluated per request.
#[derive(Clone, Copy)]
pub struct Complex(pub(super) *mut ngx_http_complex_value_t);

/// A compiled PCRE regex.
#[derive(Clone, Copy)]
pub struct Regex(pub(super) *mut nginx_sys::ngx_regex_t);

/// The setter type of a command-table entry.
pub type Setter =
    unsafe extern "C" fn(*mut ngx_conf_t, *mut ngx_command_t, *mut c_void) -> *mut c_char;

/// A command-table entry; `field` goes to the command's `offset`.
pub const fn command(
    name: &'static core::ffi::CStr,
    type_: u32,
    set: Setter,
    conf: usize,
    field: usize,
) -> ngx_command_t {
    ngx_command_t {
        name: ngx_str_t {
            len: name.to_bytes().len(),
            data: name.as_ptr() as *mut u8,
        },
        type_: type_ as nginx_sys::ngx_uint_t,
        set: Some(set),
        conf,
        offset: field,
        post: ptr::null_mut(),
    }
}

/// The `offset` of the command nginx passed to a setter.
///
/// # Safety
/// `cmd` is the command nginx passed to the running setter.
unsafe fn command_field(cmd: *mut ngx_command_t) -> usize {
    (*cmd).offset
}

/// The module's directives: the setters nginx calls through the command table reach the
/// module here, with the command's `field`.
pub trait Directives: 'static {
    type Main;
    type Loc;
    fn set_main(conf: &mut Self::Main, field: usize, cf: Conf) -> Result<(), String>;
    fn set_loc(conf: &mut Self::Loc, field: usize, cf: Conf) -> Result<(), String>;
}

/// The setter of the `http{}`-level directives (`NGX_HTTP_MAIN_CONF_OFFSET`).
///
/// # Safety
/// Called by nginx with a directive of the module.
pub unsafe extern "C" fn set_main<D: Directives>(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    let field = command_field(cmd);
    setter(cf, conf, |m: &mut D::Main, c| D::set_main(m, field, c))
}

/// The setter of the location-level directives (`NGX_HTTP_LOC_CONF_OFFSET`).
///
/// # Safety
/// Called by nginx with a directive of the module.
pub unsafe extern "C" fn set_loc<D: Directives>(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    let field = command_field(cmd);
    setter(cf, conf, |l: &mut D::Loc, c| D::set_loc(l, field, c))
}
