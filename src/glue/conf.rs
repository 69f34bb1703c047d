//! Configuration structures and the directive setters nginx calls.
//!
//! Values are parsed with `push_stream_core::conf_values` (unit-tested); this file only moves
//! them between nginx and the structs, and reports errors with nginx's `in FILE:LINE`.

use core::ffi::{c_char, c_void};
use core::ptr;

use nginx_sys::{
    ngx_command_t, ngx_conf_t, ngx_http_compile_complex_value, ngx_http_compile_complex_value_t,
    ngx_http_complex_value_t, ngx_pcalloc, ngx_str_t, NGX_LOG_EMERG, NGX_OK,
};
use ngx::core::{NGX_CONF_ERROR, NGX_CONF_OK};
use ngx::http::{HttpModuleLocationConf, NgxHttpCoreModule};
use push_stream_core::conf_values as cv;
use push_stream_core::store::Limits;
use push_stream_core::template::{Kind, LocationTemplates};

use super::guard::guard;

/// What a location does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocationRole {
    Publisher(cv::PublisherMode),
    Statistics,
    /// `push_stream_metrics`: Prometheus text exposition.
    Metrics,
    Subscriber(cv::SubscriberMode),
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
pub struct MainConf {
    /// Some location uses the module.
    pub used: bool,
    /// `push_stream_shared_memory_size`.
    pub shm_size: usize,
    pub shm_name: Vec<u8>,
    pub shm_zone: *mut nginx_sys::ngx_shm_zone_t,
    pub shm_set: bool,
    pub channel_deleted_message_text: Option<Vec<u8>>,
    pub channel_inactivity_time: Option<u64>,
    pub message_ttl: Option<u64>,
    pub max_subscribers_per_channel: Option<u64>,
    pub max_messages_stored_per_channel: Option<u64>,
    pub max_channel_id_length: Option<u64>,
    pub max_number_of_channels: Option<u64>,
    pub max_number_of_wildcard_channels: Option<u64>,
    pub wildcard_channel_prefix: Option<Vec<u8>>,
    pub events_channel_id: Option<Vec<u8>>,
    pub ping_message_text: Option<Vec<u8>>,
    pub timeout_with_body: Option<bool>,
    /// `push_stream_amqp_*`: the RabbitMQ bridge.
    pub amqp_url: Option<String>,
    pub amqp_stream: Option<String>,
    pub amqp_stream_max_age: Option<String>,
    pub amqp_stream_max_bytes: Option<u64>,
    pub amqp_prefetch: Option<u64>,
    pub amqp_publish: Option<bool>,
    pub amqp_store_messages: Option<bool>,
    pub amqp_confirm_timeout: Option<u64>,
    /// `push_stream_amqp_exchange name type [binding_key...]`.
    pub amqp_exchange: Option<crate::amqp::ExchangeSource>,
    /// `push_stream_amqp_consumer worker|host`: true for `host` (one worker consumes the
    /// stream for the host; the others deliver from the shared zone's log).
    pub amqp_consumer_host: Option<bool>,
    /// The largest header/message minimum of every padding rule (the padding cap, as in C).
    pub max_padding: usize,
    /// Built in init_main_conf from the fields above.
    pub limits: Limits,
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
            channel_deleted_message_text: None,
            channel_inactivity_time: None,
            message_ttl: None,
            max_subscribers_per_channel: None,
            max_messages_stored_per_channel: None,
            max_channel_id_length: None,
            max_number_of_channels: None,
            max_number_of_wildcard_channels: None,
            wildcard_channel_prefix: None,
            events_channel_id: None,
            ping_message_text: None,
            timeout_with_body: None,
            max_padding: 0,
            amqp_url: None,
            amqp_stream: None,
            amqp_stream_max_age: None,
            amqp_stream_max_bytes: None,
            amqp_prefetch: None,
            amqp_publish: None,
            amqp_store_messages: None,
            amqp_confirm_timeout: None,
            amqp_exchange: None,
            amqp_consumer_host: None,
            limits: Limits::default(),
            test_ticks_ms: 0,
        }
    }
}

impl MainConf {
    pub fn ping_text(&self) -> &[u8] {
        self.ping_message_text.as_deref().unwrap_or(b" ")
    }

    /// The bridge's settings when an AMQP source is configured.
    pub fn amqp_settings(&self) -> Option<crate::amqp::Settings> {
        let source = match (&self.amqp_stream, &self.amqp_exchange) {
            (Some(name), None) => crate::amqp::Source::Stream {
                name: name.clone(),
                max_age: self.amqp_stream_max_age.clone(),
                max_bytes: self.amqp_stream_max_bytes,
            },
            (None, Some(x)) => crate::amqp::Source::Exchange(x.clone()),
            _ => return None,
        };
        Some(crate::amqp::Settings {
            url: self.amqp_url.clone()?,
            source,
            prefetch: self.amqp_prefetch.unwrap_or(1000).min(u16::MAX as u64) as u16,
            confirm_timeout: std::time::Duration::from_millis(
                self.amqp_confirm_timeout.unwrap_or(5000),
            ),
            consume: true,
        })
    }

    /// HTTP publishers publish through RabbitMQ (default on when a source is set).
    pub fn amqp_publish(&self) -> bool {
        (self.amqp_stream.is_some() || self.amqp_exchange.is_some())
            && self.amqp_publish.unwrap_or(true)
    }

    pub fn amqp_store_messages(&self) -> bool {
        self.amqp_store_messages.unwrap_or(true)
    }

    /// One worker consumes the stream for the host (`push_stream_amqp_consumer host`).
    pub fn amqp_consumer_host(&self) -> bool {
        self.amqp_consumer_host.unwrap_or(false)
    }

    /// Checks the `push_stream_amqp_*` directives together (init_main_conf).
    pub fn check_amqp(&self) -> Result<(), String> {
        const PREFIX: &str = "push stream module:";
        let source = self.amqp_stream.is_some() || self.amqp_exchange.is_some();
        if self.amqp_stream.is_some() && self.amqp_exchange.is_some() {
            return Err(format!("{PREFIX} push_stream_amqp_stream and push_stream_amqp_exchange cannot be used together: choose one source."));
        }
        if self.amqp_exchange.is_some()
            && (self.amqp_stream_max_age.is_some() || self.amqp_stream_max_bytes.is_some())
        {
            return Err(format!("{PREFIX} push_stream_amqp_stream_max_age and push_stream_amqp_stream_max_bytes need push_stream_amqp_stream (they are a stream's retention)."));
        }
        if self.amqp_exchange.is_some() && self.amqp_consumer_host == Some(true) {
            return Err(format!("{PREFIX} push_stream_amqp_consumer host needs push_stream_amqp_stream: with push_stream_amqp_exchange every worker consumes its own queue."));
        }
        match (&self.amqp_url, source) {
            (None, false) => {
                let set = self.amqp_stream_max_age.is_some()
                    || self.amqp_stream_max_bytes.is_some()
                    || self.amqp_prefetch.is_some()
                    || self.amqp_publish.is_some()
                    || self.amqp_store_messages.is_some()
                    || self.amqp_confirm_timeout.is_some()
                    || self.amqp_consumer_host.is_some();
                if set {
                    return Err(format!("{PREFIX} push_stream_amqp_* directives need push_stream_amqp_url and a source (push_stream_amqp_stream or push_stream_amqp_exchange)."));
                }
                Ok(())
            }
            (Some(_), false) => Err(format!("{PREFIX} push_stream_amqp_url needs a source: push_stream_amqp_stream or push_stream_amqp_exchange.")),
            (None, true) => Err(format!(
                "{PREFIX} push_stream_amqp_{} needs push_stream_amqp_url.",
                if self.amqp_stream.is_some() { "stream" } else { "exchange" }
            )),
            (Some(_), true) => Ok(()),
        }
    }

    pub fn timeout_with_body(&self) -> bool {
        self.timeout_with_body.unwrap_or(false)
    }

    pub fn deleted_text(&self) -> &[u8] {
        self.channel_deleted_message_text
            .as_deref()
            .unwrap_or(b"Channel deleted")
    }

    /// Defaults applied after the whole `http{}` block was read.
    pub fn finish(&mut self) {
        self.limits = Limits {
            message_ttl: self.message_ttl.unwrap_or(30 * 60) as i64,
            max_messages_stored_per_channel: self.max_messages_stored_per_channel,
            max_number_of_channels: self.max_number_of_channels,
            max_number_of_wildcard_channels: self.max_number_of_wildcard_channels,
            max_subscribers_per_channel: self.max_subscribers_per_channel,
            channel_inactivity_time: self.channel_inactivity_time.unwrap_or(30) as i64,
            wildcard_prefix: self
                .wildcard_channel_prefix
                .clone()
                .filter(|p| !p.is_empty()),
            events_channel_id: self.events_channel_id.clone().filter(|p| !p.is_empty()),
        };
    }
}

/// A compiled nginx complex value (may contain variables), evaluated per request.
#[derive(Clone, Copy)]
pub struct Complex(pub *mut ngx_http_complex_value_t);

/// A compiled `push_stream_padding_by_user_agent` rule.
pub struct Padding {
    pub regex: *mut nginx_sys::ngx_regex_t,
    pub header_min: usize,
    pub message_min: usize,
}

/// Location-level configuration (merged from http and server levels).
#[derive(Default)]
pub struct LocConf {
    pub role: Option<LocationRole>,
    pub channels_path: Option<Complex>,
    pub store_messages: Option<bool>,
    pub channel_info_on_publish: Option<bool>,
    pub allowed_origins: Option<Complex>,
    pub header_template: Option<Vec<u8>>,
    /// Set by push_stream_header_template_file (for the duplicate check).
    pub header_from_file: bool,
    pub message_template: Option<Vec<u8>>,
    pub footer_template: Option<Vec<u8>>,
    pub authorized_channels_only: Option<bool>,
    pub allow_connections_to_events_channel: Option<bool>,
    pub wildcard_channel_max_qtd: Option<u64>,
    pub ping_message_interval: Option<u64>,
    pub subscriber_connection_ttl: Option<u64>,
    pub longpolling_connection_ttl: Option<u64>,
    pub websocket_allow_publish: Option<bool>,
    pub last_received_message_time: Option<Complex>,
    pub last_received_message_tag: Option<Complex>,
    pub last_event_id: Option<Complex>,
    pub user_agent: Option<Complex>,
    pub padding: Option<std::rc::Rc<Vec<Padding>>>,
    /// Built at merge time for subscriber locations.
    pub templates: Option<LocationTemplates>,
}

impl LocConf {
    pub fn store_messages(&self) -> bool {
        self.store_messages.unwrap_or(false)
    }
    pub fn channel_info_on_publish(&self) -> bool {
        self.channel_info_on_publish.unwrap_or(true)
    }
    pub fn authorized_channels_only(&self) -> bool {
        self.authorized_channels_only.unwrap_or(false)
    }
    pub fn allow_connections_to_events_channel(&self) -> bool {
        self.allow_connections_to_events_channel.unwrap_or(false)
    }
    pub fn websocket_allow_publish(&self) -> bool {
        self.websocket_allow_publish.unwrap_or(false)
    }
    /// How long a waiting long-poll waits (ms); None: forever.
    pub fn longpolling_ttl(&self) -> Option<u64> {
        self.longpolling_connection_ttl
            .or(self.subscriber_connection_ttl)
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

/// The name of the directive being parsed.
///
/// # Safety
/// `cf` must be the configuration nginx passed to a directive setter.
pub unsafe fn directive_name(cf: *mut ngx_conf_t) -> String {
    let all: &[ngx_str_t] = (*(*cf).args).as_slice();
    String::from_utf8_lossy(all[0].as_bytes()).into_owned()
}

/// Logs `msg` against the directive being parsed; nginx appends `in FILE:LINE`.
///
/// # Safety
/// `cf` must be a live configuration.
pub unsafe fn conf_error(cf: *mut ngx_conf_t, level: u32, msg: &str) {
    nginx_sys::ngx_conf_log_error(level as _, cf, 0, c"%*s".as_ptr(), msg.len(), msg.as_ptr());
}

/// Runs a directive setter body: `Err(message)` and panics become NGX_CONF_ERROR with the
/// message logged against the directive's file and line (an empty message: already logged).
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
                if !msg.is_empty() {
                    conf_error(cf, NGX_LOG_EMERG, &msg);
                }
                NGX_CONF_ERROR
            }
        }
    })
}

/// Makes the current location's content handler ours and turns off nginx's own
/// If-Modified-Since handling there (the module reads that header itself).
///
/// # Safety
/// `cf` must be a live configuration inside a location.
pub unsafe fn set_content_handler(
    cf: *mut ngx_conf_t,
    h: unsafe extern "C" fn(*mut nginx_sys::ngx_http_request_t) -> nginx_sys::ngx_int_t,
) {
    if let Some(clcf) = NgxHttpCoreModule::location_conf_mut(&*cf) {
        clcf.handler = Some(h);
        clcf.if_modified_since = nginx_sys::NGX_HTTP_IMS_OFF as _;
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

/// Compiles a complex value (a string that may hold variables).
///
/// # Safety
/// `cf` must be a live configuration.
pub unsafe fn compile_complex(cf: *mut ngx_conf_t, value: &ngx_str_t) -> Result<Complex, String> {
    let cv = ngx_pcalloc((*cf).pool, core::mem::size_of::<ngx_http_complex_value_t>())
        as *mut ngx_http_complex_value_t;
    if cv.is_null() {
        return Err("push stream module: out of memory".into());
    }
    let mut v = *value;
    let mut ccv: ngx_http_compile_complex_value_t = core::mem::zeroed();
    ccv.cf = cf;
    ccv.value = &mut v;
    ccv.complex_value = cv;
    if ngx_http_compile_complex_value(&mut ccv) != NGX_OK as nginx_sys::ngx_int_t {
        return Err(String::new());
    }
    Ok(Complex(cv))
}

pub fn text(s: &ngx_str_t) -> String {
    String::from_utf8_lossy(s.as_bytes()).into_owned()
}

/// Which field a `push_stream_*` directive sets (stored in the command's `offset`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(usize)]
pub enum Field {
    ChannelDeletedMessageText,
    ChannelInactivityTime,
    MessageTtl,
    MaxSubscribersPerChannel,
    MaxMessagesStoredPerChannel,
    MaxChannelIdLength,
    MaxNumberOfChannels,
    MaxNumberOfWildcardChannels,
    WildcardChannelPrefix,
    EventsChannelId,
    PingMessageText,
    TimeoutWithBody,
    AmqpUrl,
    AmqpStream,
    AmqpStreamMaxAge,
    AmqpStreamMaxBytes,
    AmqpPrefetch,
    AmqpPublish,
    AmqpStoreMessages,
    AmqpConfirmTimeout,
    AmqpExchange,
    AmqpConsumer,
    ChannelsPath,
    StoreMessages,
    ChannelInfoOnPublish,
    AllowedOrigins,
    HeaderTemplate,
    HeaderTemplateFile,
    MessageTemplate,
    FooterTemplate,
    AuthorizedChannelsOnly,
    AllowConnectionsToEventsChannel,
    WildcardChannelMaxQtd,
    PingMessageInterval,
    SubscriberConnectionTtl,
    LongpollingConnectionTtl,
    WebsocketAllowPublish,
    LastReceivedMessageTime,
    LastReceivedMessageTag,
    LastEventId,
    UserAgent,
    PaddingByUserAgent,
}

const MAIN_FIELDS: [Field; 22] = [
    Field::ChannelDeletedMessageText,
    Field::ChannelInactivityTime,
    Field::MessageTtl,
    Field::MaxSubscribersPerChannel,
    Field::MaxMessagesStoredPerChannel,
    Field::MaxChannelIdLength,
    Field::MaxNumberOfChannels,
    Field::MaxNumberOfWildcardChannels,
    Field::WildcardChannelPrefix,
    Field::EventsChannelId,
    Field::PingMessageText,
    Field::TimeoutWithBody,
    Field::AmqpUrl,
    Field::AmqpStream,
    Field::AmqpStreamMaxAge,
    Field::AmqpStreamMaxBytes,
    Field::AmqpPrefetch,
    Field::AmqpPublish,
    Field::AmqpStoreMessages,
    Field::AmqpConfirmTimeout,
    Field::AmqpExchange,
    Field::AmqpConsumer,
];

const LOC_FIELDS: [Field; 20] = [
    Field::ChannelsPath,
    Field::StoreMessages,
    Field::ChannelInfoOnPublish,
    Field::AllowedOrigins,
    Field::HeaderTemplate,
    Field::HeaderTemplateFile,
    Field::MessageTemplate,
    Field::FooterTemplate,
    Field::AuthorizedChannelsOnly,
    Field::AllowConnectionsToEventsChannel,
    Field::WildcardChannelMaxQtd,
    Field::PingMessageInterval,
    Field::SubscriberConnectionTtl,
    Field::LongpollingConnectionTtl,
    Field::WebsocketAllowPublish,
    Field::LastReceivedMessageTime,
    Field::LastReceivedMessageTag,
    Field::LastEventId,
    Field::UserAgent,
    Field::PaddingByUserAgent,
];

fn field_of(cmd: *mut ngx_command_t, table: &[Field]) -> Field {
    // SAFETY: cmd is one of our command entries; its offset holds a Field discriminant.
    let i = unsafe { (*cmd).offset };
    *table
        .iter()
        .find(|f| **f as usize == i)
        .expect("directive field")
}

fn set_once<T>(slot: &mut Option<T>, v: T, name: &str) -> Result<(), String> {
    if slot.is_some() {
        return Err(format!("\"{name}\" directive is duplicate"));
    }
    *slot = Some(v);
    Ok(())
}

fn nonzero(v: u64, name: &str) -> Result<u64, String> {
    if v == 0 {
        Err(cv::zero_error(name))
    } else {
        Ok(v)
    }
}

fn invalid(name: &str, e: String) -> String {
    format!("push stream module: invalid value for {name}: {e}")
}

/// Setter for the `http{}`-level directives.
///
/// # Safety
/// Called by nginx with a directive of ours.
pub unsafe extern "C" fn set_main(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    let name = directive_name(cf);
    let field = field_of(cmd, &MAIN_FIELDS);
    setter(cf, conf, |m: &mut MainConf, args| {
        let a = text(&args[0]);
        let num = || cv::parse_number(&a).map_err(|e| invalid(&name, e));
        let secs = || cv::parse_time_s(&a).map_err(|e| invalid(&name, e));
        match field {
            Field::ChannelDeletedMessageText => set_once(
                &mut m.channel_deleted_message_text,
                args[0].as_bytes().to_vec(),
                &name,
            ),
            Field::ChannelInactivityTime => {
                set_once(&mut m.channel_inactivity_time, secs()?, &name)
            }
            Field::MessageTtl => set_once(&mut m.message_ttl, nonzero(secs()?, &name)?, &name),
            Field::MaxSubscribersPerChannel => set_once(
                &mut m.max_subscribers_per_channel,
                nonzero(num()?, &name)?,
                &name,
            ),
            Field::MaxMessagesStoredPerChannel => set_once(
                &mut m.max_messages_stored_per_channel,
                nonzero(num()?, &name)?,
                &name,
            ),
            Field::MaxChannelIdLength => {
                set_once(&mut m.max_channel_id_length, nonzero(num()?, &name)?, &name)
            }
            Field::MaxNumberOfChannels => set_once(
                &mut m.max_number_of_channels,
                nonzero(num()?, &name)?,
                &name,
            ),
            Field::MaxNumberOfWildcardChannels => set_once(
                &mut m.max_number_of_wildcard_channels,
                nonzero(num()?, &name)?,
                &name,
            ),
            Field::WildcardChannelPrefix => set_once(
                &mut m.wildcard_channel_prefix,
                args[0].as_bytes().to_vec(),
                &name,
            ),
            Field::EventsChannelId => {
                let id = args[0].as_bytes();
                if id.is_empty() {
                    return Err(format!("push stream module: {name} cannot be empty."));
                }
                if push_stream_core::channel_path::is_reserved_id(id) {
                    return Err(format!(
                        "push stream module: {name} cannot be ALL or contain '*'."
                    ));
                }
                set_once(&mut m.events_channel_id, id.to_vec(), &name)
            }
            Field::PingMessageText => {
                set_once(&mut m.ping_message_text, args[0].as_bytes().to_vec(), &name)
            }
            Field::AmqpUrl => {
                // The URL itself, or `file:PATH` naming a file that holds it (credentials kept
                // out of nginx.conf). Checked without connecting.
                let url = match a.strip_prefix("file:") {
                    Some(path) => {
                        let full = full_path(
                            cf,
                            &ngx_str_t {
                                len: path.len(),
                                data: path.as_ptr() as *mut u8,
                            },
                        )?;
                        std::fs::read_to_string(&full)
                            .map_err(|e| {
                                format!(
                                    "push stream module: cannot read {name} file \"{full}\": {e}"
                                )
                            })?
                            .trim()
                            .to_string()
                    }
                    None => a.clone(),
                };
                push_stream_core::amqp::check_url(&url)
                    .map_err(|e| format!("push stream module: invalid {name}: {e}"))?;
                set_once(&mut m.amqp_url, url, &name)
            }
            Field::AmqpStream => {
                if a.is_empty() || a.len() > 255 {
                    return Err(format!(
                        "push stream module: {name} must be a queue name of 1 to 255 bytes."
                    ));
                }
                set_once(&mut m.amqp_stream, a.clone(), &name)
            }
            Field::AmqpStreamMaxAge => {
                let ok = a.len() >= 2
                    && a[..a.len() - 1].bytes().all(|b| b.is_ascii_digit())
                    && matches!(
                        a.as_bytes()[a.len() - 1],
                        b'Y' | b'M' | b'D' | b'h' | b'm' | b's'
                    );
                if !ok {
                    return Err(format!("push stream module: invalid value for {name}: \"{a}\" (RabbitMQ's x-max-age: a number and one of Y M D h m s, e.g. 7D)"));
                }
                set_once(&mut m.amqp_stream_max_age, a.clone(), &name)
            }
            Field::AmqpStreamMaxBytes => {
                let v = nonzero(cv::parse_size(&a).map_err(|e| invalid(&name, e))?, &name)?;
                set_once(&mut m.amqp_stream_max_bytes, v, &name)
            }
            Field::AmqpPrefetch => {
                let v = nonzero(cv::parse_number(&a).map_err(|e| invalid(&name, e))?, &name)?;
                if v > u16::MAX as u64 {
                    return Err(format!(
                        "push stream module: {name} cannot be more than 65535."
                    ));
                }
                set_once(&mut m.amqp_prefetch, v, &name)
            }
            Field::AmqpPublish => set_once(
                &mut m.amqp_publish,
                cv::parse_flag(&a).map_err(|e| invalid(&name, e))?,
                &name,
            ),
            Field::AmqpStoreMessages => set_once(
                &mut m.amqp_store_messages,
                cv::parse_flag(&a).map_err(|e| invalid(&name, e))?,
                &name,
            ),
            Field::AmqpConfirmTimeout => {
                let v = nonzero(cv::parse_time_ms(&a).map_err(|e| invalid(&name, e))?, &name)?;
                set_once(&mut m.amqp_confirm_timeout, v, &name)
            }
            Field::AmqpExchange => {
                let words: Vec<String> = args.iter().map(text).collect();
                let x = crate::amqp::ExchangeSource::parse(&words)
                    .map_err(|e| format!("push stream module: invalid {name}: {e}"))?;
                set_once(&mut m.amqp_exchange, x, &name)
            }
            Field::AmqpConsumer => {
                let host = match a.as_str() {
                    "worker" => false,
                    "host" => true,
                    _ => {
                        return Err(format!(
                            "push stream module: invalid value for {name}: \"{a}\" (worker: every worker consumes the stream; host: one worker consumes it for the host)"
                        ))
                    }
                };
                set_once(&mut m.amqp_consumer_host, host, &name)
            }
            Field::TimeoutWithBody => set_once(
                &mut m.timeout_with_body,
                cv::parse_flag(&a).map_err(|e| invalid(&name, e))?,
                &name,
            ),
            _ => unreachable!(),
        }
    })
}

/// Setter for the location-level (http, server, location) directives.
///
/// # Safety
/// Called by nginx with a directive of ours.
pub unsafe extern "C" fn set_loc(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    let name = directive_name(cf);
    let field = field_of(cmd, &LOC_FIELDS);
    setter(cf, conf, |l: &mut LocConf, args| {
        let a = text(&args[0]);
        let flag = || cv::parse_flag(&a).map_err(|e| invalid(&name, e));
        match field {
            Field::ChannelsPath => {
                set_once(&mut l.channels_path, compile_complex(cf, &args[0])?, &name)
            }
            Field::AllowedOrigins => set_once(
                &mut l.allowed_origins,
                compile_complex(cf, &args[0])?,
                &name,
            ),
            Field::StoreMessages => set_once(&mut l.store_messages, flag()?, &name),
            Field::ChannelInfoOnPublish => set_once(&mut l.channel_info_on_publish, flag()?, &name),
            Field::HeaderTemplate => {
                set_once(&mut l.header_template, args[0].as_bytes().to_vec(), &name)
            }
            Field::HeaderTemplateFile => {
                if l.header_template.is_some() {
                    return Err(
                        "\"push_stream_header_template_file\" directive is duplicate or template set by 'push_stream_header_template'"
                            .into(),
                    );
                }
                let path = full_path(cf, &args[0])?;
                let bytes = std::fs::read(&path).map_err(|_| {
                    format!(
                        "push stream module: unable to open file \"{path}\" for header template"
                    )
                })?;
                l.header_template = Some(bytes);
                l.header_from_file = true;
                Ok(())
            }
            Field::MessageTemplate => {
                if args[0].as_bytes().is_empty() {
                    return Err(
                        "push stream module: push_stream_message_template cannot be blank.".into(),
                    );
                }
                set_once(&mut l.message_template, args[0].as_bytes().to_vec(), &name)
            }
            Field::FooterTemplate => {
                set_once(&mut l.footer_template, args[0].as_bytes().to_vec(), &name)
            }
            Field::AuthorizedChannelsOnly => {
                set_once(&mut l.authorized_channels_only, flag()?, &name)
            }
            Field::AllowConnectionsToEventsChannel => {
                set_once(&mut l.allow_connections_to_events_channel, flag()?, &name)
            }
            Field::WebsocketAllowPublish => {
                set_once(&mut l.websocket_allow_publish, flag()?, &name)
            }
            Field::WildcardChannelMaxQtd => {
                let n = cv::parse_number(&a).map_err(|e| invalid(&name, e))?;
                set_once(&mut l.wildcard_channel_max_qtd, nonzero(n, &name)?, &name)
            }
            Field::PingMessageInterval
            | Field::SubscriberConnectionTtl
            | Field::LongpollingConnectionTtl => {
                let ms = nonzero(cv::parse_time_ms(&a).map_err(|e| invalid(&name, e))?, &name)?;
                let slot = match field {
                    Field::PingMessageInterval => &mut l.ping_message_interval,
                    Field::SubscriberConnectionTtl => &mut l.subscriber_connection_ttl,
                    _ => &mut l.longpolling_connection_ttl,
                };
                set_once(slot, ms, &name)
            }
            Field::LastReceivedMessageTime => set_once(
                &mut l.last_received_message_time,
                compile_complex(cf, &args[0])?,
                &name,
            ),
            Field::LastReceivedMessageTag => set_once(
                &mut l.last_received_message_tag,
                compile_complex(cf, &args[0])?,
                &name,
            ),
            Field::LastEventId => {
                set_once(&mut l.last_event_id, compile_complex(cf, &args[0])?, &name)
            }
            Field::UserAgent => set_once(&mut l.user_agent, compile_complex(cf, &args[0])?, &name),
            Field::PaddingByUserAgent => {
                let rules = cv::parse_padding(&a)?;
                let mut compiled = Vec::with_capacity(rules.len());
                for rule in rules {
                    let regex = compile_regex(cf, &rule.regex).map_err(|e| {
                        format!(
                            "push stream module: error applying padding pattern to {}: {e}",
                            rule.regex
                        )
                    })?;
                    if let Some(mcf) = crate::Module::main_conf_mut_from_cf(cf) {
                        mcf.max_padding =
                            mcf.max_padding.max(rule.header_min).max(rule.message_min);
                    }
                    compiled.push(Padding {
                        regex,
                        header_min: rule.header_min,
                        message_min: rule.message_min,
                    });
                }
                set_once(&mut l.padding, std::rc::Rc::new(compiled), &name)
            }
            _ => unreachable!(),
        }
    })
}

/// Compiles a PCRE regex with nginx's regex API (case-sensitive, as the C module).
unsafe fn compile_regex(
    cf: *mut ngx_conf_t,
    pattern: &str,
) -> Result<*mut nginx_sys::ngx_regex_t, String> {
    let mut errbuf = [0u8; 256];
    let mut rc: nginx_sys::ngx_regex_compile_t = core::mem::zeroed();
    let p = nginx_sys::ngx_pnalloc((*cf).pool, pattern.len()) as *mut u8;
    if p.is_null() {
        return Err("out of memory".into());
    }
    ptr::copy_nonoverlapping(pattern.as_ptr(), p, pattern.len());
    rc.pattern = ngx_str_t {
        len: pattern.len(),
        data: p,
    };
    rc.pool = (*cf).pool;
    rc.err = ngx_str_t {
        len: errbuf.len(),
        data: errbuf.as_mut_ptr(),
    };
    if nginx_sys::ngx_regex_compile(&mut rc) != NGX_OK as nginx_sys::ngx_int_t {
        return Err(text(&rc.err));
    }
    Ok(rc.regex)
}

/// A path relative to nginx's configuration prefix made absolute, as nginx does for its files.
unsafe fn full_path(cf: *mut ngx_conf_t, s: &ngx_str_t) -> Result<String, String> {
    let mut name = *s;
    if nginx_sys::ngx_conf_full_name((*cf).cycle, &mut name, 1) != NGX_OK as nginx_sys::ngx_int_t {
        return Err("push stream module: out of memory".into());
    }
    Ok(text(&name))
}

/// `push_stream_publisher`, `push_stream_subscriber`, `push_stream_channels_statistics`.
///
/// # Safety
/// Called by nginx with a directive of ours.
pub unsafe extern "C" fn set_role(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    let name = directive_name(cf);
    setter(cf, conf, |l: &mut LocConf, args| {
        let value = args.first().map(text);
        let role = match name.as_str() {
            "push_stream_publisher" => LocationRole::Publisher(match value {
                Some(v) => cv::PublisherMode::parse(&v)?,
                None => cv::PublisherMode::default(),
            }),
            "push_stream_subscriber" => {
                let mode = match &value {
                    Some(v) => cv::SubscriberMode::parse(v)?,
                    None => cv::SubscriberMode::default(),
                };
                LocationRole::Subscriber(mode)
            }
            "push_stream_metrics" => LocationRole::Metrics,
            _ => LocationRole::Statistics,
        };
        if l.role.is_some() {
            return Err(format!("\"{name}\" directive is duplicate"));
        }
        l.role = Some(role);
        set_content_handler(cf, crate::handlers::content_handler);
        mark_used(cf);
        Ok(())
    })
}

/// merge_loc_conf: inheritance, then the checks that need the merged values.
///
/// # Safety
/// Called by nginx with two of our location configurations.
pub unsafe extern "C" fn merge_loc_conf(
    cf: *mut ngx_conf_t,
    prev: *mut c_void,
    conf: *mut c_void,
) -> *mut c_char {
    guard((*cf).log, "merge_loc_conf", NGX_CONF_ERROR, || {
        let prev = &*(prev as *const LocConf);
        let conf = &mut *(conf as *mut LocConf);
        fn inherit<T: Clone>(c: &mut Option<T>, p: &Option<T>) {
            if c.is_none() {
                *c = p.clone();
            }
        }
        inherit(&mut conf.channels_path, &prev.channels_path);
        inherit(&mut conf.store_messages, &prev.store_messages);
        inherit(
            &mut conf.channel_info_on_publish,
            &prev.channel_info_on_publish,
        );
        inherit(&mut conf.allowed_origins, &prev.allowed_origins);
        inherit(&mut conf.header_template, &prev.header_template);
        inherit(&mut conf.message_template, &prev.message_template);
        inherit(&mut conf.footer_template, &prev.footer_template);
        inherit(
            &mut conf.authorized_channels_only,
            &prev.authorized_channels_only,
        );
        inherit(
            &mut conf.allow_connections_to_events_channel,
            &prev.allow_connections_to_events_channel,
        );
        inherit(
            &mut conf.wildcard_channel_max_qtd,
            &prev.wildcard_channel_max_qtd,
        );
        inherit(&mut conf.ping_message_interval, &prev.ping_message_interval);
        inherit(
            &mut conf.subscriber_connection_ttl,
            &prev.subscriber_connection_ttl,
        );
        inherit(
            &mut conf.longpolling_connection_ttl,
            &prev.longpolling_connection_ttl,
        );
        inherit(
            &mut conf.websocket_allow_publish,
            &prev.websocket_allow_publish,
        );
        inherit(
            &mut conf.last_received_message_time,
            &prev.last_received_message_time,
        );
        inherit(
            &mut conf.last_received_message_tag,
            &prev.last_received_message_tag,
        );
        inherit(&mut conf.last_event_id, &prev.last_event_id);
        inherit(&mut conf.user_agent, &prev.user_agent);
        inherit(&mut conf.padding, &prev.padding);
        if let Some(mcf) = crate::Module::main_conf_mut_from_cf(cf) {
            let prefix_set = mcf
                .wildcard_channel_prefix
                .as_ref()
                .is_some_and(|p| !p.is_empty());
            if conf.wildcard_channel_max_qtd.is_some() && !prefix_set {
                conf_error(cf, NGX_LOG_EMERG, "push stream module: cannot set wildcard channel max qtd if push_stream_wildcard_channel_prefix is not set or blank.");
                return NGX_CONF_ERROR;
            }
            if let (Some(qtd), Some(max)) = (
                conf.wildcard_channel_max_qtd,
                mcf.max_number_of_wildcard_channels,
            ) {
                if max < qtd {
                    conf_error(cf, NGX_LOG_EMERG, "push stream module: max number of wildcard channels cannot be smaller than value in push_stream_wildcard_channel_max_qtd.");
                    return NGX_CONF_ERROR;
                }
            }
        }
        if conf
            .role
            .is_some_and(|r| !matches!(r, LocationRole::TestHook(_) | LocationRole::Metrics))
            && conf.channels_path.is_none()
        {
            conf_error(
                cf,
                NGX_LOG_EMERG,
                "push stream module: push_stream_channels_path must be set.",
            );
            return NGX_CONF_ERROR;
        }
        if let Some(LocationRole::Subscriber(mode)) = conf.role {
            let kind = match mode {
                cv::SubscriberMode::EventSource => Kind::EventSource,
                cv::SubscriberMode::WebSocket => Kind::WebSocket,
                _ => Kind::Plain,
            };
            conf.templates = Some(LocationTemplates::new(
                conf.header_template.as_deref().unwrap_or(b""),
                conf.message_template.as_deref().unwrap_or(b"~text~"),
                conf.footer_template.as_deref().unwrap_or(b""),
                kind,
            ));
        }
        ptr::null_mut()
    })
}

#[allow(dead_code)]
pub type Setter =
    unsafe extern "C" fn(*mut ngx_conf_t, *mut ngx_command_t, *mut c_void) -> *mut c_char;

/// The command table entries of the directives above.
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
