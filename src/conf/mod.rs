//! The module's configuration: the model (`http{}` and location levels), every default in
//! one table ([`defaults`]), and the directives (`directives`: the command table, setters
//! and the merge). Values are parsed with `push_stream_core::conf_values` (unit-tested).

mod directives;

pub use directives::{commands, finish_main, merge, N_COMMANDS};

use push_stream_core::amqp;
use push_stream_core::conf_values as cv;
use push_stream_core::store::Limits;
use push_stream_core::template::LocationTemplates;

use crate::ngx::conf::{Complex, Regex};
use crate::ngx::zone::Zone;

/// Every default of the module's directives, in one place (docs/directives.md lists them).
pub mod defaults {
    pub const SHM_NAME: &[u8] = b"push_stream_module";
    pub const CHANNEL_DELETED_MESSAGE_TEXT: &[u8] = b"Channel deleted";
    pub const CHANNEL_INACTIVITY_TIME_S: u64 = 30;
    pub const MESSAGE_TTL_S: u64 = 30 * 60;
    pub const PING_MESSAGE_TEXT: &[u8] = b" ";
    pub const TIMEOUT_WITH_BODY: bool = false;
    pub const STORE_MESSAGES: bool = false;
    pub const CHANNEL_INFO_ON_PUBLISH: bool = true;
    pub const AUTHORIZED_CHANNELS_ONLY: bool = false;
    pub const ALLOW_CONNECTIONS_TO_EVENTS_CHANNEL: bool = false;
    pub const WEBSOCKET_ALLOW_PUBLISH: bool = false;
    pub const DETACHED_SUBSCRIBERS: bool = false;
    pub const MESSAGE_TEMPLATE: &[u8] = b"~text~";
    /// `push_stream_max_channels_per_request`.
    pub const MAX_CHANNELS_PER_REQUEST: u64 = 100;
    /// `push_stream_max_pending_bytes`: 1 MiB.
    pub const MAX_PENDING_BYTES: u64 = 1024 * 1024;
    // The push_stream_amqp_* defaults: push_stream_core::amqp (DEFAULT_PREFETCH, …).
}

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
    /// Stops draining the inbox for `?ms=` milliseconds (the thread must then wait).
    PauseInbox,
    /// Takes the zone's lock, applies half of a store change (`?kind=`) and kills the worker
    /// with SIGKILL while it holds the lock; `kind=panic` panics inside the change instead.
    DieInLock,
}

/// `http{}`-level configuration.
pub struct MainConf {
    /// Some location uses the module.
    pub used: bool,
    /// `push_stream_shared_memory_size`.
    pub shm_size: usize,
    pub shm_name: Vec<u8>,
    pub shm_zone: Option<Zone>,
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
    pub amqp: amqp::Directives,
    /// The largest header/message minimum of every padding rule (the padding cap, as in C).
    pub max_padding: usize,
    /// Built in init_main_conf from the fields above.
    pub limits: Limits,
    /// `push_stream_test_bridge_ticks` (test-hooks): start the thread skeleton with a ticker.
    pub test_ticks_ms: u64,
    /// `push_stream_test_inbox_capacity` (test-hooks): a smaller inbox (0: the default).
    pub test_inbox_capacity: usize,
    /// `push_stream_test_trash_delay` (test-hooks): the store's trash delay in seconds, so
    /// that lifecycle tests stay short (the shipped module always uses the C module's 10 s).
    pub test_trash_delay: Option<u64>,
}

impl Default for MainConf {
    fn default() -> Self {
        MainConf {
            used: false,
            shm_size: 0,
            shm_name: defaults::SHM_NAME.to_vec(),
            shm_zone: None,
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
            amqp: amqp::Directives::default(),
            limits: Limits::default(),
            test_ticks_ms: 0,
            test_inbox_capacity: 0,
            test_trash_delay: None,
        }
    }
}

impl MainConf {
    pub fn ping_text(&self) -> &[u8] {
        self.ping_message_text
            .as_deref()
            .unwrap_or(defaults::PING_MESSAGE_TEXT)
    }

    /// The zone (set by `push_stream_shared_memory_size`, required when the module is used).
    pub fn zone(&self) -> Option<Zone> {
        self.shm_zone
    }

    pub fn timeout_with_body(&self) -> bool {
        self.timeout_with_body
            .unwrap_or(defaults::TIMEOUT_WITH_BODY)
    }

    pub fn deleted_text(&self) -> &[u8] {
        self.channel_deleted_message_text
            .as_deref()
            .unwrap_or(defaults::CHANNEL_DELETED_MESSAGE_TEXT)
    }

    /// Defaults applied after the whole `http{}` block was read.
    pub fn finish(&mut self) {
        self.limits = Limits {
            message_ttl: self.message_ttl.unwrap_or(defaults::MESSAGE_TTL_S) as i64,
            max_messages_stored_per_channel: self.max_messages_stored_per_channel,
            max_number_of_channels: self.max_number_of_channels,
            max_number_of_wildcard_channels: self.max_number_of_wildcard_channels,
            max_subscribers_per_channel: self.max_subscribers_per_channel,
            channel_inactivity_time: self
                .channel_inactivity_time
                .unwrap_or(defaults::CHANNEL_INACTIVITY_TIME_S)
                as i64,
            wildcard_prefix: self
                .wildcard_channel_prefix
                .clone()
                .filter(|p| !p.is_empty()),
            events_channel_id: self.events_channel_id.clone().filter(|p| !p.is_empty()),
            trash_delay: self.test_trash_delay.map(|s| s as i64),
            // An eighth of the zone, at most 16 KiB: deletes on a full zone (store::reserve).
            delete_reserve_pages: (self.shm_size / 8 / push_stream_core::store::RESERVE_PAGE)
                .min(push_stream_core::store::MAX_RESERVE_PAGES),
        };
    }
}

/// A compiled `push_stream_padding_by_user_agent` rule.
pub struct Padding {
    pub regex: Regex,
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
    /// `push_stream_detached_subscribers`.
    pub detached_subscribers: Option<bool>,
    pub last_received_message_time: Option<Complex>,
    pub last_received_message_tag: Option<Complex>,
    pub last_event_id: Option<Complex>,
    pub user_agent: Option<Complex>,
    /// `push_stream_max_channels_per_request`.
    pub max_channels_per_request: Option<u64>,
    /// `push_stream_max_pending_bytes`.
    pub max_pending_bytes: Option<u64>,
    pub padding: Option<std::rc::Rc<Vec<Padding>>>,
    /// Built at merge time for subscriber locations (shared with an `if` inside the location
    /// that changes no template).
    pub templates: Option<std::rc::Rc<LocationTemplates>>,
}

impl LocConf {
    pub fn store_messages(&self) -> bool {
        self.store_messages.unwrap_or(defaults::STORE_MESSAGES)
    }
    pub fn channel_info_on_publish(&self) -> bool {
        self.channel_info_on_publish
            .unwrap_or(defaults::CHANNEL_INFO_ON_PUBLISH)
    }
    pub fn authorized_channels_only(&self) -> bool {
        self.authorized_channels_only
            .unwrap_or(defaults::AUTHORIZED_CHANNELS_ONLY)
    }
    pub fn allow_connections_to_events_channel(&self) -> bool {
        self.allow_connections_to_events_channel
            .unwrap_or(defaults::ALLOW_CONNECTIONS_TO_EVENTS_CHANNEL)
    }
    pub fn websocket_allow_publish(&self) -> bool {
        self.websocket_allow_publish
            .unwrap_or(defaults::WEBSOCKET_ALLOW_PUBLISH)
    }
    pub fn detached_subscribers(&self) -> bool {
        self.detached_subscribers
            .unwrap_or(defaults::DETACHED_SUBSCRIBERS)
    }
    /// How many distinct channels one request may name.
    pub fn max_channels_per_request(&self) -> usize {
        self.max_channels_per_request
            .unwrap_or(defaults::MAX_CHANNELS_PER_REQUEST) as usize
    }

    /// The backlog a subscriber may leave unread besides the message it is receiving.
    pub fn max_pending_bytes(&self) -> usize {
        self.max_pending_bytes
            .unwrap_or(defaults::MAX_PENDING_BYTES)
            .min(usize::MAX as u64) as usize
    }

    /// How long a waiting long-poll waits (ms); None: forever.
    pub fn longpolling_ttl(&self) -> Option<u64> {
        self.longpolling_connection_ttl
            .or(self.subscriber_connection_ttl)
    }
}
