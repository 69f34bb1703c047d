//! ngx-push-stream: realtime push for nginx, a drop-in for nginx-push-stream-module.
//!
//! This file is the wiring: the module nginx loads (its context, command table and process
//! hooks) and the [`ngx::App`] implementation through which the nginx layer reaches the rest.
//! The code map is in docs/architecture.md:
//! - `ngx/`: the thin nginx layer, the only `unsafe` code; imports nothing from the crate.
//! - `conf/`: the configuration model, its defaults and the directives.
//! - `delivery/`: the per-worker delivery engine (subscribers, fan-out, gathered writes).
//! - `rabbitmq/`: the background thread, the lapin client, consume and publish.
//! - `publish.rs`: the one publish path (broker or host store).
//! - `http/`: one file per HTTP role.
//!
//! All pure logic lives in the `push-stream-core` crate (unit-tested without nginx).

use core::ffi::{c_char, c_void};
use core::ptr;

use ::ngx::core::NGX_CONF_ERROR;
use ::ngx::http::{HttpModule, HttpModuleLocationConf, HttpModuleMainConf};
use nginx_sys::{
    ngx_command_t, ngx_conf_t, ngx_cycle_t, ngx_http_module_t, ngx_int_t, ngx_module_t,
    NGX_HTTP_MODULE,
};

mod conf;
mod delivery;
mod http;
pub mod ngx;
mod publish;
mod rabbitmq;

use crate::conf::{LocConf, MainConf};
use crate::ngx::conf::{Conf, Level};
use crate::ngx::event::Source;
use crate::ngx::guard::guard;
use crate::ngx::held::HeldRef;
use crate::ngx::log::Log;
use crate::ngx::request::Request;
use crate::ngx::{Status, Timer};

/// The module: its configuration types, and what it does when nginx calls it.
pub struct Module;

impl HttpModule for Module {
    fn module() -> &'static ngx_module_t {
        // SAFETY: the module static is only mutated by nginx while loading configuration.
        unsafe { &*ptr::addr_of!(ngx_http_push_stream_module) }
    }

    unsafe extern "C" fn preconfiguration(_cf: *mut ngx_conf_t) -> ngx_int_t {
        crate::ngx::guard::install_panic_hook();
        Status::OK.0
    }

    unsafe extern "C" fn init_main_conf(cf: *mut ngx_conf_t, conf: *mut c_void) -> *mut c_char {
        let cf = Conf::from_raw(cf);
        guard(cf.log(), "init_main_conf", NGX_CONF_ERROR, || {
            let mcf = &mut *(conf as *mut MainConf);
            match conf::finish_main(mcf) {
                Ok(()) => ptr::null_mut(),
                Err(e) => {
                    cf.error(Level::Emerg, &e);
                    NGX_CONF_ERROR
                }
            }
        })
    }
}

unsafe impl HttpModuleMainConf for Module {
    type MainConf = MainConf;
}

unsafe impl HttpModuleLocationConf for Module {
    type LocationConf = LocConf;
}

impl crate::ngx::App for Module {
    fn content(r: Request<'_>) -> Status {
        http::content(r)
    }

    fn body_read(r: Request<'_>) {
        http::body_read(r)
    }

    fn held_write(h: HeldRef) {
        delivery::on_write(h)
    }

    fn held_read(h: HeldRef) {
        http::websocket_read(h)
    }

    fn held_timer(h: HeldRef, which: Timer) {
        http::held_timer(h, which)
    }

    fn held_ended(key: usize, serial: u64) {
        if !delivery::forget(key, serial) {
            rabbitmq::forget(key, serial);
        }
    }

    fn wakeup(source: Source) {
        match source {
            Source::Inbox => rabbitmq::drain_inbox(),
            Source::Shutdown => delivery::shutdown(),
            Source::Wake => {
                delivery::process_log();
                rabbitmq::check_stored();
            }
            Source::Tick => {
                delivery::tick();
                // What the inbox holds is drained at least once a second (after a pause).
                rabbitmq::drain_inbox();
                if let Some(mcf) = main_conf_of_cycle() {
                    rabbitmq::publish_slot_stats(mcf);
                }
            }
        }
    }
}

/// The `http{}` configuration of the running cycle (None without an `http{}` block).
fn main_conf_of_cycle() -> Option<&'static MainConf> {
    // SAFETY: the running cycle, read on the worker's thread; its configuration outlives it.
    unsafe {
        if nginx_sys::ngx_cycle.is_null() {
            return None;
        }
        Module::main_conf(&*nginx_sys::ngx_cycle).map(|c| &*(c as *const MainConf))
    }
}

/// The commit the module was built from (build.rs), shown by the statistics location.
pub const COMMIT: &str = env!("PUSH_STREAM_COMMIT");

static mut COMMANDS: [ngx_command_t; conf::N_COMMANDS] = conf::commands::<Module>();

unsafe extern "C" fn merge_loc_conf(
    cf: *mut ngx_conf_t,
    prev: *mut c_void,
    conf: *mut c_void,
) -> *mut c_char {
    let cf = Conf::from_raw(cf);
    guard(cf.log(), "merge_loc_conf", NGX_CONF_ERROR, || {
        let prev = &*(prev as *const LocConf);
        let conf = &mut *(conf as *mut LocConf);
        match conf::merge::<Module>(conf, prev, cf) {
            Ok(()) => ptr::null_mut(),
            Err(e) => {
                cf.error(Level::Emerg, &e);
                NGX_CONF_ERROR
            }
        }
    })
}

static MODULE_CTX: ngx_http_module_t = ngx_http_module_t {
    preconfiguration: Some(Module::preconfiguration),
    postconfiguration: None,
    create_main_conf: Some(Module::create_main_conf),
    init_main_conf: Some(Module::init_main_conf),
    create_srv_conf: None,
    merge_srv_conf: None,
    create_loc_conf: Some(Module::create_loc_conf),
    merge_loc_conf: Some(merge_loc_conf),
};

/// `init_module` (master, every configuration): say so when the module is loaded but unused.
unsafe extern "C" fn init_module(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    guard(
        Log::from_raw((*cycle).log),
        "init_module",
        Status::OK.0,
        || {
            if !Module::main_conf(&*cycle).is_some_and(|m| m.used) {
                crate::ngx::log::notice(
                    Log::from_raw((*cycle).log),
                    "ngx_http_push_stream_module will not be used with this configuration.",
                );
            }
            Status::OK.0
        },
    )
}

/// `init_process` (each worker, after fork): the delivery state and, when configured, the
/// background thread. Never fails the worker (a failing worker would be respawned in a
/// loop): problems are logged, and a worker without its state refuses subscribers (503).
unsafe extern "C" fn init_process(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    guard(
        Log::from_raw((*cycle).log),
        "init_process",
        Status::OK.0,
        || {
            let Some(mcf) = main_conf_of_cycle() else {
                return Status::OK.0;
            };
            if !mcf.used {
                return Status::OK.0;
            }
            if let Err(e) = delivery::init::<Module>(mcf.zone(), &mcf.limits) {
                ngx_log!(error, Log::from_raw((*cycle).log),
                "push_stream: this worker cannot deliver ({e}): it refuses subscribers with 503"
            );
                return Status::OK.0;
            }
            if let Err(e) = rabbitmq::start(mcf) {
                ngx_log!(alert, Log::from_raw((*cycle).log), "push_stream: amqp: {e}");
            }
            #[cfg(feature = "test-hooks")]
            if mcf.test_ticks_ms > 0 {
                let every = std::time::Duration::from_millis(mcf.test_ticks_ms);
                let started = delivery::inbox_waker().map(|w| {
                    let ticker = rabbitmq::thread::ticker(every);
                    rabbitmq::thread::start(w, mcf.test_inbox_capacity, ticker)
                });
                if let Some(Err(e)) = started {
                    ngx_log!(alert, Log::from_raw((*cycle).log), "push_stream: {e}");
                }
            }
            Status::OK.0
        },
    )
}

/// `exit_process`: end the subscribers, stop and join the thread (bounded), then leave the
/// store and close the worker's connections, in that order (a closed fd number could be
/// reused by a client socket the thread would then write to).
unsafe extern "C" fn exit_process(cycle: *mut ngx_cycle_t) {
    guard(Log::from_raw((*cycle).log), "exit_process", (), || {
        delivery::shutdown();
        let joined = rabbitmq::stop();
        delivery::exit(joined);
    })
}

#[cfg(feature = "export-modules")]
::ngx::ngx_modules!(ngx_http_push_stream_module);

#[used]
#[allow(non_upper_case_globals)]
#[cfg_attr(not(feature = "export-modules"), no_mangle)]
pub static mut ngx_http_push_stream_module: ngx_module_t = ngx_module_t {
    ctx: ptr::addr_of!(MODULE_CTX) as _,
    // nginx reads the command table; it lives as long as the module.
    commands: ptr::addr_of_mut!(COMMANDS) as *mut ngx_command_t,
    type_: NGX_HTTP_MODULE as _,
    init_module: Some(init_module),
    init_process: Some(init_process),
    exit_process: Some(exit_process),
    ..ngx_module_t::default()
};
