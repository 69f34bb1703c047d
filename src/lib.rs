//! ngx-push-stream: realtime push for nginx, a drop-in for nginx-push-stream-module.
//!
//! Layout: `glue` is the thin unsafe layer over nginx (module and directive registration,
//! requests, the eventfd connection, the shared zone), `bridge` is the worker's background
//! thread, and all pure logic lives in the `push-stream-core` crate (unit-tested without nginx).

use core::ffi::{c_char, c_void};
use core::ptr;

use nginx_sys::{
    ngx_command_t, ngx_conf_t, ngx_cycle_t, ngx_http_module_t, ngx_int_t, ngx_module_t,
    NGX_CONF_2MORE, NGX_CONF_NOARGS, NGX_CONF_TAKE1, NGX_CONF_TAKE12, NGX_HTTP_LIF_CONF,
    NGX_HTTP_LOC_CONF, NGX_HTTP_LOC_CONF_OFFSET, NGX_HTTP_MAIN_CONF, NGX_HTTP_MAIN_CONF_OFFSET,
    NGX_HTTP_MODULE, NGX_HTTP_SRV_CONF, NGX_LOG_EMERG, NGX_LOG_WARN, NGX_OK,
};
use ngx::core::NGX_CONF_ERROR;
use ngx::http::{HttpModule, HttpModuleLocationConf, HttpModuleMainConf};

mod amqp;
mod bridge;
mod broker;
mod glue;
mod handlers;
mod websocket;

use glue::conf::{setter, LocConf, MainConf};
use glue::guard::guard;

pub struct Module;

impl HttpModule for Module {
    fn module() -> &'static ngx_module_t {
        // SAFETY: the module static is only mutated by nginx while loading configuration.
        unsafe { &*ptr::addr_of!(ngx_http_push_stream_module) }
    }

    unsafe extern "C" fn preconfiguration(_cf: *mut ngx_conf_t) -> ngx_int_t {
        glue::guard::install_panic_hook();
        NGX_OK as ngx_int_t
    }

    unsafe extern "C" fn init_main_conf(cf: *mut ngx_conf_t, conf: *mut c_void) -> *mut c_char {
        guard((*cf).log, "init_main_conf", NGX_CONF_ERROR, || {
            let mcf = &mut *(conf as *mut MainConf);
            mcf.finish();
            if let Err(e) = mcf.check_amqp() {
                glue::conf::conf_error(cf, NGX_LOG_EMERG, &e);
                return NGX_CONF_ERROR;
            }
            if mcf.used && !mcf.shm_set {
                glue::conf::conf_error(
                    cf,
                    NGX_LOG_EMERG,
                    "push stream module: push_stream_shared_memory_size must be set.",
                );
                return NGX_CONF_ERROR;
            }
            ptr::null_mut()
        })
    }
}

unsafe impl HttpModuleMainConf for Module {
    type MainConf = MainConf;
}

unsafe impl HttpModuleLocationConf for Module {
    type LocationConf = LocConf;
}

impl Module {
    /// The `http{}` configuration of the block being parsed.
    ///
    /// # Safety
    /// `cf` is a live configuration inside `http{}`.
    pub unsafe fn main_conf_mut_from_cf(cf: *mut ngx_conf_t) -> Option<&'static mut MainConf> {
        Self::main_conf_mut(&*cf)
    }

    /// The `http{}` configuration of a cycle (None without an `http{}` block).
    ///
    /// # Safety
    /// `cycle` is a live cycle.
    pub unsafe fn main_conf_of_cycle(cycle: *mut ngx_cycle_t) -> Option<&'static MainConf> {
        Self::main_conf(&*cycle)
    }
}

// ---- directives -------------------------------------------------------------------------

unsafe extern "C" fn set_shared_memory_size(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    let tag = ptr::addr_of_mut!(ngx_http_push_stream_module) as *mut c_void;
    let mcf_ptr = conf as *mut MainConf;
    setter(cf, conf, |mcf: &mut MainConf, args| {
        if mcf.shm_set {
            return Err("\"push_stream_shared_memory_size\" directive is duplicate".into());
        }
        let value = args[0].as_bytes();
        let size = push_stream_core::conf_values::parse_size(&String::from_utf8_lossy(value))
            .map_err(|e| {
                format!("push stream module: invalid push_stream_shared_memory_size: {e}")
            })? as usize;
        #[allow(clippy::unnecessary_cast)] // ngx_uint_t: usize where nginx-sys binds it
        let page = nginx_sys::ngx_pagesize as usize;
        let size = size.div_ceil(page) * page;
        if size < 32 * page {
            // The C module's message and level (warn), with the real limit (32 pages: 128KiB
            // with 4 KiB pages), and loading fails.
            glue::conf::conf_error(
                cf,
                NGX_LOG_WARN,
                &format!(
                    "The push_stream_shared_memory_size value must be at least {}KiB",
                    (32 * page) >> 10
                ),
            );
            return Err(String::new());
        }
        if let Some(name) = args.get(1) {
            if name.is_empty() {
                return Err("push stream module: invalid push_stream_shared_memory_size: empty shared memory zone name".into());
            }
            mcf.shm_name = name.as_bytes().to_vec();
        }
        mcf.shm_zone = glue::zone::add(cf, mcf_ptr, size, tag)?;
        mcf.shm_set = true;
        Ok(())
    })
}

#[cfg(feature = "test-hooks")]
unsafe extern "C" fn set_test_hook(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    use glue::conf::{LocationRole, TestHook};
    setter(cf, conf, |lcf: &mut LocConf, args| {
        if lcf.role.is_some() {
            return Err("\"push_stream_test_hook\" directive is duplicate".into());
        }
        let hook = match args[0].as_bytes() {
            b"ok" => TestHook::Ok,
            b"panic" => TestHook::Panic,
            b"hold" => TestHook::Hold,
            b"inbox" => TestHook::Inbox,
            other => {
                return Err(format!(
                    "push stream module: invalid push_stream_test_hook value: {}, accepted values (ok, panic, hold, inbox)",
                    String::from_utf8_lossy(other)
                ))
            }
        };
        lcf.role = Some(LocationRole::TestHook(hook));
        glue::conf::set_content_handler(cf, handlers::content_handler);
        glue::conf::mark_used(cf);
        Ok(())
    })
}

#[cfg(feature = "test-hooks")]
unsafe extern "C" fn set_test_bridge_ticks(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    setter(cf, conf, |mcf: &mut MainConf, args| {
        let v = String::from_utf8_lossy(args[0].as_bytes()).into_owned();
        let ms = push_stream_core::conf_values::parse_time_ms(&v).map_err(|e| {
            format!("push stream module: invalid push_stream_test_bridge_ticks: {e}")
        })?;
        if ms == 0 {
            return Err(push_stream_core::conf_values::zero_error(
                "push_stream_test_bridge_ticks",
            ));
        }
        mcf.test_ticks_ms = ms;
        Ok(())
    })
}

use glue::conf::{command, set_loc, set_main, set_role, Field};

const MAIN: usize = NGX_HTTP_MAIN_CONF_OFFSET;
const LOC: usize = NGX_HTTP_LOC_CONF_OFFSET;
/// Location-level directives are valid in http, server and location blocks.
const ANY: u32 = NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF;
/// … and inside `if` in a location.
const ANY_IF: u32 = ANY | NGX_HTTP_LIF_CONF;

#[cfg(not(feature = "test-hooks"))]
const N_COMMANDS: usize = 48;
#[cfg(feature = "test-hooks")]
const N_COMMANDS: usize = 50;

#[rustfmt::skip]
static mut COMMANDS: [ngx_command_t; N_COMMANDS] = [
    command(c"push_stream_shared_memory_size", NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE12, set_shared_memory_size, MAIN, 0),
    command(c"push_stream_channel_deleted_message_text", NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1, set_main, MAIN, Field::ChannelDeletedMessageText as usize),
    command(c"push_stream_channel_inactivity_time", NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1, set_main, MAIN, Field::ChannelInactivityTime as usize),
    command(c"push_stream_message_ttl", NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1, set_main, MAIN, Field::MessageTtl as usize),
    command(c"push_stream_max_subscribers_per_channel", NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1, set_main, MAIN, Field::MaxSubscribersPerChannel as usize),
    command(c"push_stream_max_messages_stored_per_channel", NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1, set_main, MAIN, Field::MaxMessagesStoredPerChannel as usize),
    command(c"push_stream_max_channel_id_length", NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1, set_main, MAIN, Field::MaxChannelIdLength as usize),
    command(c"push_stream_max_number_of_channels", NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1, set_main, MAIN, Field::MaxNumberOfChannels as usize),
    command(c"push_stream_max_number_of_wildcard_channels", NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1, set_main, MAIN, Field::MaxNumberOfWildcardChannels as usize),
    command(c"push_stream_wildcard_channel_prefix", NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1, set_main, MAIN, Field::WildcardChannelPrefix as usize),
    command(c"push_stream_events_channel_id", NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1, set_main, MAIN, Field::EventsChannelId as usize),
    command(c"push_stream_ping_message_text", NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1, set_main, MAIN, Field::PingMessageText as usize),
    command(c"push_stream_timeout_with_body", NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1, set_main, MAIN, Field::TimeoutWithBody as usize),
    command(c"push_stream_amqp_url", NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1, set_main, MAIN, Field::AmqpUrl as usize),
    command(c"push_stream_amqp_stream", NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1, set_main, MAIN, Field::AmqpStream as usize),
    command(c"push_stream_amqp_stream_max_age", NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1, set_main, MAIN, Field::AmqpStreamMaxAge as usize),
    command(c"push_stream_amqp_stream_max_bytes", NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1, set_main, MAIN, Field::AmqpStreamMaxBytes as usize),
    command(c"push_stream_amqp_prefetch", NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1, set_main, MAIN, Field::AmqpPrefetch as usize),
    command(c"push_stream_amqp_publish", NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1, set_main, MAIN, Field::AmqpPublish as usize),
    command(c"push_stream_amqp_store_messages", NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1, set_main, MAIN, Field::AmqpStoreMessages as usize),
    command(c"push_stream_amqp_confirm_timeout", NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1, set_main, MAIN, Field::AmqpConfirmTimeout as usize),
    command(c"push_stream_amqp_exchange", NGX_HTTP_MAIN_CONF | NGX_CONF_2MORE, set_main, MAIN, Field::AmqpExchange as usize),
    command(c"push_stream_amqp_consumer", NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1, set_main, MAIN, Field::AmqpConsumer as usize),
    command(c"push_stream_metrics", NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS, set_role, LOC, 0),
    command(c"push_stream_channels_statistics", NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS, set_role, LOC, 0),
    command(c"push_stream_publisher", NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS | NGX_CONF_TAKE1, set_role, LOC, 0),
    command(c"push_stream_subscriber", NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS | NGX_CONF_TAKE1, set_role, LOC, 0),
    command(c"push_stream_channels_path", ANY_IF | NGX_CONF_TAKE1, set_loc, LOC, Field::ChannelsPath as usize),
    command(c"push_stream_store_messages", ANY_IF | NGX_CONF_TAKE1, set_loc, LOC, Field::StoreMessages as usize),
    command(c"push_stream_channel_info_on_publish", ANY | NGX_CONF_TAKE1, set_loc, LOC, Field::ChannelInfoOnPublish as usize),
    command(c"push_stream_allowed_origins", ANY | NGX_CONF_TAKE1, set_loc, LOC, Field::AllowedOrigins as usize),
    command(c"push_stream_header_template", ANY | NGX_CONF_TAKE1, set_loc, LOC, Field::HeaderTemplate as usize),
    command(c"push_stream_header_template_file", ANY | NGX_CONF_TAKE1, set_loc, LOC, Field::HeaderTemplateFile as usize),
    command(c"push_stream_message_template", ANY | NGX_CONF_TAKE1, set_loc, LOC, Field::MessageTemplate as usize),
    command(c"push_stream_footer_template", ANY | NGX_CONF_TAKE1, set_loc, LOC, Field::FooterTemplate as usize),
    command(c"push_stream_authorized_channels_only", ANY_IF | NGX_CONF_TAKE1, set_loc, LOC, Field::AuthorizedChannelsOnly as usize),
    command(c"push_stream_allow_connections_to_events_channel", ANY_IF | NGX_CONF_TAKE1, set_loc, LOC, Field::AllowConnectionsToEventsChannel as usize),
    command(c"push_stream_wildcard_channel_max_qtd", ANY | NGX_CONF_TAKE1, set_loc, LOC, Field::WildcardChannelMaxQtd as usize),
    command(c"push_stream_ping_message_interval", ANY | NGX_CONF_TAKE1, set_loc, LOC, Field::PingMessageInterval as usize),
    command(c"push_stream_subscriber_connection_ttl", ANY | NGX_CONF_TAKE1, set_loc, LOC, Field::SubscriberConnectionTtl as usize),
    command(c"push_stream_longpolling_connection_ttl", ANY | NGX_CONF_TAKE1, set_loc, LOC, Field::LongpollingConnectionTtl as usize),
    command(c"push_stream_websocket_allow_publish", ANY | NGX_CONF_TAKE1, set_loc, LOC, Field::WebsocketAllowPublish as usize),
    command(c"push_stream_last_received_message_time", ANY_IF | NGX_CONF_TAKE1, set_loc, LOC, Field::LastReceivedMessageTime as usize),
    command(c"push_stream_last_received_message_tag", ANY_IF | NGX_CONF_TAKE1, set_loc, LOC, Field::LastReceivedMessageTag as usize),
    command(c"push_stream_last_event_id", ANY_IF | NGX_CONF_TAKE1, set_loc, LOC, Field::LastEventId as usize),
    command(c"push_stream_user_agent", ANY | NGX_CONF_TAKE1, set_loc, LOC, Field::UserAgent as usize),
    command(c"push_stream_padding_by_user_agent", ANY | NGX_CONF_TAKE1, set_loc, LOC, Field::PaddingByUserAgent as usize),
    #[cfg(feature = "test-hooks")]
    command(c"push_stream_test_hook", NGX_HTTP_LOC_CONF | NGX_CONF_TAKE1, set_test_hook, LOC, 0),
    #[cfg(feature = "test-hooks")]
    command(c"push_stream_test_bridge_ticks", NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1, set_test_bridge_ticks, MAIN, 0),
    ngx_command_t::empty(),
];

/// The commit the module was built from (build.rs), shown by the statistics location.
pub const COMMIT: &str = env!("PUSH_STREAM_COMMIT");

// ---- module -----------------------------------------------------------------------------

static MODULE_CTX: ngx_http_module_t = ngx_http_module_t {
    preconfiguration: Some(Module::preconfiguration),
    postconfiguration: None,
    create_main_conf: Some(Module::create_main_conf),
    init_main_conf: Some(Module::init_main_conf),
    create_srv_conf: None,
    merge_srv_conf: None,
    create_loc_conf: Some(Module::create_loc_conf),
    merge_loc_conf: Some(glue::conf::merge_loc_conf),
};

/// `init_module` (master, every configuration): say so when the module is loaded but unused.
unsafe extern "C" fn init_module(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    guard((*cycle).log, "init_module", NGX_OK as ngx_int_t, || {
        if !Module::main_conf_of_cycle(cycle).is_some_and(|m| m.used) {
            glue::log::notice(
                (*cycle).log,
                "ngx_http_push_stream_module will not be used with this configuration.",
            );
        }
        NGX_OK as ngx_int_t
    })
}

/// `init_process` (each worker, after fork): the eventfd connection and, when configured, the
/// background thread. Never fails the worker (a failing worker would be respawned in a loop):
/// problems are logged.
unsafe extern "C" fn init_process(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    guard((*cycle).log, "init_process", NGX_OK as ngx_int_t, || {
        let Some(mcf) = Module::main_conf_of_cycle(cycle) else {
            return NGX_OK as ngx_int_t;
        };
        if !mcf.used {
            return NGX_OK as ngx_int_t;
        }
        if let Err(e) = glue::worker::init(cycle, mcf.shm_zone, &mcf.limits) {
            glue::log::alert((*cycle).log, &format!("push_stream: {e}"));
            return NGX_OK as ngx_int_t;
        }
        if let Some(settings) = mcf.amqp_settings() {
            if let Err(e) = broker::start(mcf, settings) {
                glue::log::alert((*cycle).log, &format!("push_stream: amqp: {e}"));
            }
        }
        #[cfg(feature = "test-hooks")]
        if mcf.test_ticks_ms > 0 {
            let every = std::time::Duration::from_millis(mcf.test_ticks_ms);
            if let Err(e) = glue::worker::start_bridge(bridge::ticker(every)) {
                glue::log::alert((*cycle).log, &format!("push_stream: {e}"));
            }
        }
        NGX_OK as ngx_int_t
    })
}

unsafe extern "C" fn exit_process(cycle: *mut ngx_cycle_t) {
    guard((*cycle).log, "exit_process", (), glue::worker::exit)
}

#[cfg(feature = "export-modules")]
ngx::ngx_modules!(ngx_http_push_stream_module);

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
