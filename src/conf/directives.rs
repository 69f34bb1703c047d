//! The directives: the command table nginx reads, the setters it calls (through the nginx
//! layer's generic trampolines, with the command's field), the `http{}`-level checks and the
//! location merge.

use std::marker::PhantomData;
use std::rc::Rc;

use nginx_sys::{
    ngx_command_t, NGX_CONF_2MORE, NGX_CONF_NOARGS, NGX_CONF_TAKE1, NGX_CONF_TAKE12,
    NGX_HTTP_LIF_CONF, NGX_HTTP_LOC_CONF, NGX_HTTP_LOC_CONF_OFFSET, NGX_HTTP_MAIN_CONF,
    NGX_HTTP_MAIN_CONF_OFFSET, NGX_HTTP_SRV_CONF,
};
use ngx::http::HttpModuleMainConf;
use push_stream_core::amqp;
use push_stream_core::conf_values as cv;
use push_stream_core::template::{Kind, LocationTemplates};

use super::{defaults, LocConf, LocationRole, MainConf, Padding, TestHook};
use crate::ngx::conf::{command, set_loc, set_main, Conf, Directives, Level};
use crate::ngx::App;

/// The module's directives for the module type `A` (its content handler and main
/// configuration).
pub struct Push<A>(PhantomData<A>);

/// Which `http{}`-level field a directive sets (the command's `offset`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(usize)]
enum MainField {
    SharedMemorySize,
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
    TestBridgeTicks,
    TestInboxCapacity,
    TestTrashDelay,
}

const MAIN_FIELDS: [MainField; 26] = [
    MainField::SharedMemorySize,
    MainField::ChannelDeletedMessageText,
    MainField::ChannelInactivityTime,
    MainField::MessageTtl,
    MainField::MaxSubscribersPerChannel,
    MainField::MaxMessagesStoredPerChannel,
    MainField::MaxChannelIdLength,
    MainField::MaxNumberOfChannels,
    MainField::MaxNumberOfWildcardChannels,
    MainField::WildcardChannelPrefix,
    MainField::EventsChannelId,
    MainField::PingMessageText,
    MainField::TimeoutWithBody,
    MainField::AmqpUrl,
    MainField::AmqpStream,
    MainField::AmqpStreamMaxAge,
    MainField::AmqpStreamMaxBytes,
    MainField::AmqpPrefetch,
    MainField::AmqpPublish,
    MainField::AmqpStoreMessages,
    MainField::AmqpConfirmTimeout,
    MainField::AmqpExchange,
    MainField::AmqpConsumer,
    MainField::TestBridgeTicks,
    MainField::TestInboxCapacity,
    MainField::TestTrashDelay,
];

/// Which location-level field a directive sets (the command's `offset`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(usize)]
enum LocField {
    Publisher,
    Subscriber,
    Statistics,
    Metrics,
    TestHook,
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
    MaxChannelsPerRequest,
    MaxPendingBytes,
    DetachedSubscribers,
}

const LOC_FIELDS: [LocField; 28] = [
    LocField::Publisher,
    LocField::Subscriber,
    LocField::Statistics,
    LocField::Metrics,
    LocField::TestHook,
    LocField::ChannelsPath,
    LocField::StoreMessages,
    LocField::ChannelInfoOnPublish,
    LocField::AllowedOrigins,
    LocField::HeaderTemplate,
    LocField::HeaderTemplateFile,
    LocField::MessageTemplate,
    LocField::FooterTemplate,
    LocField::AuthorizedChannelsOnly,
    LocField::AllowConnectionsToEventsChannel,
    LocField::WildcardChannelMaxQtd,
    LocField::PingMessageInterval,
    LocField::SubscriberConnectionTtl,
    LocField::LongpollingConnectionTtl,
    LocField::WebsocketAllowPublish,
    LocField::LastReceivedMessageTime,
    LocField::LastReceivedMessageTag,
    LocField::LastEventId,
    LocField::UserAgent,
    LocField::PaddingByUserAgent,
    LocField::MaxChannelsPerRequest,
    LocField::MaxPendingBytes,
    LocField::DetachedSubscribers,
];

const MAIN: usize = NGX_HTTP_MAIN_CONF_OFFSET;
const LOC: usize = NGX_HTTP_LOC_CONF_OFFSET;
const M: u32 = NGX_HTTP_MAIN_CONF;
/// Location-level directives are valid in http, server and location blocks.
const ANY: u32 = NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF;
/// … and inside `if` in a location.
const ANY_IF: u32 = ANY | NGX_HTTP_LIF_CONF;
const T1: u32 = NGX_CONF_TAKE1;

#[cfg(not(feature = "test-hooks"))]
pub const N_COMMANDS: usize = 51;
#[cfg(feature = "test-hooks")]
pub const N_COMMANDS: usize = 55;

/// The command table (its last entry is the empty terminator).
#[rustfmt::skip]
pub const fn commands<A>() -> [ngx_command_t; N_COMMANDS]
where
    A: App + HttpModuleMainConf<MainConf = MainConf>,
{
    let sm = set_main::<Push<A>>;
    let sl = set_loc::<Push<A>>;
    use MainField as F;
    use LocField as L;
    [
        command(c"push_stream_shared_memory_size", M | NGX_CONF_TAKE12, sm, MAIN, F::SharedMemorySize as usize),
        command(c"push_stream_channel_deleted_message_text", M | T1, sm, MAIN, F::ChannelDeletedMessageText as usize),
        command(c"push_stream_channel_inactivity_time", M | T1, sm, MAIN, F::ChannelInactivityTime as usize),
        command(c"push_stream_message_ttl", M | T1, sm, MAIN, F::MessageTtl as usize),
        command(c"push_stream_max_subscribers_per_channel", M | T1, sm, MAIN, F::MaxSubscribersPerChannel as usize),
        command(c"push_stream_max_messages_stored_per_channel", M | T1, sm, MAIN, F::MaxMessagesStoredPerChannel as usize),
        command(c"push_stream_max_channel_id_length", M | T1, sm, MAIN, F::MaxChannelIdLength as usize),
        command(c"push_stream_max_number_of_channels", M | T1, sm, MAIN, F::MaxNumberOfChannels as usize),
        command(c"push_stream_max_number_of_wildcard_channels", M | T1, sm, MAIN, F::MaxNumberOfWildcardChannels as usize),
        command(c"push_stream_wildcard_channel_prefix", M | T1, sm, MAIN, F::WildcardChannelPrefix as usize),
        command(c"push_stream_events_channel_id", M | T1, sm, MAIN, F::EventsChannelId as usize),
        command(c"push_stream_ping_message_text", M | T1, sm, MAIN, F::PingMessageText as usize),
        command(c"push_stream_timeout_with_body", M | T1, sm, MAIN, F::TimeoutWithBody as usize),
        command(c"push_stream_amqp_url", M | T1, sm, MAIN, F::AmqpUrl as usize),
        command(c"push_stream_amqp_stream", M | T1, sm, MAIN, F::AmqpStream as usize),
        command(c"push_stream_amqp_stream_max_age", M | T1, sm, MAIN, F::AmqpStreamMaxAge as usize),
        command(c"push_stream_amqp_stream_max_bytes", M | T1, sm, MAIN, F::AmqpStreamMaxBytes as usize),
        command(c"push_stream_amqp_prefetch", M | T1, sm, MAIN, F::AmqpPrefetch as usize),
        command(c"push_stream_amqp_publish", M | T1, sm, MAIN, F::AmqpPublish as usize),
        command(c"push_stream_amqp_store_messages", M | T1, sm, MAIN, F::AmqpStoreMessages as usize),
        command(c"push_stream_amqp_confirm_timeout", M | T1, sm, MAIN, F::AmqpConfirmTimeout as usize),
        command(c"push_stream_amqp_exchange", M | NGX_CONF_2MORE, sm, MAIN, F::AmqpExchange as usize),
        command(c"push_stream_amqp_consumer", M | T1, sm, MAIN, F::AmqpConsumer as usize),
        command(c"push_stream_metrics", NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS, sl, LOC, L::Metrics as usize),
        command(c"push_stream_channels_statistics", NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS, sl, LOC, L::Statistics as usize),
        command(c"push_stream_publisher", NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS | T1, sl, LOC, L::Publisher as usize),
        command(c"push_stream_subscriber", NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS | T1, sl, LOC, L::Subscriber as usize),
        command(c"push_stream_channels_path", ANY_IF | T1, sl, LOC, L::ChannelsPath as usize),
        command(c"push_stream_store_messages", ANY_IF | T1, sl, LOC, L::StoreMessages as usize),
        command(c"push_stream_channel_info_on_publish", ANY | T1, sl, LOC, L::ChannelInfoOnPublish as usize),
        command(c"push_stream_allowed_origins", ANY | T1, sl, LOC, L::AllowedOrigins as usize),
        command(c"push_stream_header_template", ANY | T1, sl, LOC, L::HeaderTemplate as usize),
        command(c"push_stream_header_template_file", ANY | T1, sl, LOC, L::HeaderTemplateFile as usize),
        command(c"push_stream_message_template", ANY | T1, sl, LOC, L::MessageTemplate as usize),
        command(c"push_stream_footer_template", ANY | T1, sl, LOC, L::FooterTemplate as usize),
        command(c"push_stream_authorized_channels_only", ANY | T1, sl, LOC, L::AuthorizedChannelsOnly as usize),
        command(c"push_stream_allow_connections_to_events_channel", ANY_IF | T1, sl, LOC, L::AllowConnectionsToEventsChannel as usize),
        command(c"push_stream_wildcard_channel_max_qtd", ANY | T1, sl, LOC, L::WildcardChannelMaxQtd as usize),
        command(c"push_stream_ping_message_interval", ANY | T1, sl, LOC, L::PingMessageInterval as usize),
        command(c"push_stream_subscriber_connection_ttl", ANY | T1, sl, LOC, L::SubscriberConnectionTtl as usize),
        command(c"push_stream_longpolling_connection_ttl", ANY | T1, sl, LOC, L::LongpollingConnectionTtl as usize),
        command(c"push_stream_websocket_allow_publish", ANY | T1, sl, LOC, L::WebsocketAllowPublish as usize),
        command(c"push_stream_last_received_message_time", ANY_IF | T1, sl, LOC, L::LastReceivedMessageTime as usize),
        command(c"push_stream_last_received_message_tag", ANY_IF | T1, sl, LOC, L::LastReceivedMessageTag as usize),
        command(c"push_stream_last_event_id", ANY_IF | T1, sl, LOC, L::LastEventId as usize),
        command(c"push_stream_user_agent", ANY | T1, sl, LOC, L::UserAgent as usize),
        command(c"push_stream_padding_by_user_agent", ANY | T1, sl, LOC, L::PaddingByUserAgent as usize),
        command(c"push_stream_max_channels_per_request", ANY | T1, sl, LOC, L::MaxChannelsPerRequest as usize),
        command(c"push_stream_max_pending_bytes", ANY | T1, sl, LOC, L::MaxPendingBytes as usize),
        command(c"push_stream_detached_subscribers", ANY | T1, sl, LOC, L::DetachedSubscribers as usize),
        #[cfg(feature = "test-hooks")]
        command(c"push_stream_test_hook", NGX_HTTP_LOC_CONF | T1, sl, LOC, L::TestHook as usize),
        #[cfg(feature = "test-hooks")]
        command(c"push_stream_test_bridge_ticks", M | T1, sm, MAIN, F::TestBridgeTicks as usize),
        #[cfg(feature = "test-hooks")]
        command(c"push_stream_test_inbox_capacity", M | T1, sm, MAIN, F::TestInboxCapacity as usize),
        #[cfg(feature = "test-hooks")]
        command(c"push_stream_test_trash_delay", M | T1, sm, MAIN, F::TestTrashDelay as usize),
        ngx_command_t::empty(),
    ]
}

fn text(s: &[u8]) -> String {
    String::from_utf8_lossy(s).into_owned()
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

impl<A> Directives for Push<A>
where
    A: App + HttpModuleMainConf<MainConf = MainConf>,
{
    type Main = MainConf;
    type Loc = LocConf;

    fn set_main(m: &mut MainConf, field: usize, cf: Conf) -> Result<(), String> {
        let field = *MAIN_FIELDS
            .get(field)
            .ok_or_else(|| format!("push stream module: unknown directive field {field}"))?;
        let name = cf.directive_name();
        let args = cf.args();
        let a = text(&args[0]);
        let num = || cv::parse_number(&a).map_err(|e| invalid(&name, e));
        let secs = || cv::parse_time_s(&a).map_err(|e| invalid(&name, e));
        match field {
            MainField::ChannelDeletedMessageText => set_once(
                &mut m.channel_deleted_message_text,
                args[0].as_slice().to_vec(),
                &name,
            ),
            MainField::ChannelInactivityTime => {
                set_once(&mut m.channel_inactivity_time, secs()?, &name)
            }
            MainField::MessageTtl => set_once(&mut m.message_ttl, nonzero(secs()?, &name)?, &name),
            MainField::MaxSubscribersPerChannel => set_once(
                &mut m.max_subscribers_per_channel,
                nonzero(num()?, &name)?,
                &name,
            ),
            MainField::MaxMessagesStoredPerChannel => set_once(
                &mut m.max_messages_stored_per_channel,
                nonzero(num()?, &name)?,
                &name,
            ),
            MainField::MaxChannelIdLength => {
                set_once(&mut m.max_channel_id_length, nonzero(num()?, &name)?, &name)
            }
            MainField::MaxNumberOfChannels => set_once(
                &mut m.max_number_of_channels,
                nonzero(num()?, &name)?,
                &name,
            ),
            MainField::MaxNumberOfWildcardChannels => set_once(
                &mut m.max_number_of_wildcard_channels,
                nonzero(num()?, &name)?,
                &name,
            ),
            MainField::WildcardChannelPrefix => set_once(
                &mut m.wildcard_channel_prefix,
                args[0].as_slice().to_vec(),
                &name,
            ),
            MainField::EventsChannelId => {
                let id = args[0].as_slice();
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
            MainField::PingMessageText => {
                set_once(&mut m.ping_message_text, args[0].as_slice().to_vec(), &name)
            }
            MainField::AmqpUrl => {
                // The URL itself, or `file:PATH` naming a file that holds it (credentials kept
                // out of nginx.conf). Checked without connecting.
                let url = match a.strip_prefix("file:") {
                    Some(path) => {
                        let full = cf.full_path(path.as_bytes())?;
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
                let url = amqp::parse_url(&name, &url)?;
                set_once(&mut m.amqp.url, url, &name)
            }
            MainField::AmqpStream => set_once(
                &mut m.amqp.stream,
                amqp::parse_stream_name(&name, &a)?,
                &name,
            ),
            MainField::AmqpStreamMaxAge => set_once(
                &mut m.amqp.stream_max_age,
                amqp::parse_stream_max_age(&name, &a)?,
                &name,
            ),
            MainField::AmqpStreamMaxBytes => set_once(
                &mut m.amqp.stream_max_bytes,
                amqp::parse_stream_max_bytes(&name, &a)?,
                &name,
            ),
            MainField::AmqpPrefetch => set_once(
                &mut m.amqp.prefetch,
                u64::from(amqp::parse_prefetch(&name, &a)?),
                &name,
            ),
            MainField::AmqpPublish => set_once(
                &mut m.amqp.publish,
                cv::parse_flag(&a).map_err(|e| invalid(&name, e))?,
                &name,
            ),
            MainField::AmqpStoreMessages => set_once(
                &mut m.amqp.store_messages,
                cv::parse_flag(&a).map_err(|e| invalid(&name, e))?,
                &name,
            ),
            MainField::AmqpConfirmTimeout => set_once(
                &mut m.amqp.confirm_timeout_ms,
                amqp::parse_confirm_timeout_ms(&name, &a)?,
                &name,
            ),
            MainField::AmqpExchange => {
                let words: Vec<String> = args.iter().map(|w| text(w)).collect();
                set_once(
                    &mut m.amqp.exchange,
                    amqp::parse_exchange(&name, &words)?,
                    &name,
                )
            }
            MainField::AmqpConsumer => set_once(
                &mut m.amqp.consumer_host,
                amqp::parse_consumer(&name, &a)?,
                &name,
            ),
            MainField::TimeoutWithBody => set_once(
                &mut m.timeout_with_body,
                cv::parse_flag(&a).map_err(|e| invalid(&name, e))?,
                &name,
            ),
            MainField::SharedMemorySize => set_shared_memory_size(m, cf, &args),
            MainField::TestBridgeTicks => {
                let ms = cv::parse_time_ms(&a).map_err(|e| {
                    format!("push stream module: invalid push_stream_test_bridge_ticks: {e}")
                })?;
                m.test_ticks_ms = nonzero(ms, "push_stream_test_bridge_ticks")?;
                Ok(())
            }
            MainField::TestInboxCapacity => {
                m.test_inbox_capacity = nonzero(num()?, &name)? as usize;
                Ok(())
            }
            MainField::TestTrashDelay => set_once(&mut m.test_trash_delay, secs()?, &name),
        }
    }

    fn set_loc(l: &mut LocConf, field: usize, cf: Conf) -> Result<(), String> {
        let field = *LOC_FIELDS
            .get(field)
            .ok_or_else(|| format!("push stream module: unknown directive field {field}"))?;
        let name = cf.directive_name();
        let args = cf.args();
        let a = args.first().map(|v| text(v)).unwrap_or_default();
        let flag = || cv::parse_flag(&a).map_err(|e| invalid(&name, e));
        match field {
            LocField::ChannelsPath => {
                set_once(&mut l.channels_path, cf.compile_complex(&args[0])?, &name)
            }
            LocField::AllowedOrigins => {
                set_once(&mut l.allowed_origins, cf.compile_complex(&args[0])?, &name)
            }
            LocField::StoreMessages => set_once(&mut l.store_messages, flag()?, &name),
            LocField::ChannelInfoOnPublish => {
                set_once(&mut l.channel_info_on_publish, flag()?, &name)
            }
            LocField::HeaderTemplate => {
                set_once(&mut l.header_template, args[0].as_slice().to_vec(), &name)
            }
            LocField::HeaderTemplateFile => {
                if l.header_template.is_some() {
                    return Err(
                        "\"push_stream_header_template_file\" directive is duplicate or template set by 'push_stream_header_template'"
                            .into(),
                    );
                }
                let path = cf.full_path(&args[0])?;
                let bytes = std::fs::read(&path).map_err(|_| {
                    format!(
                        "push stream module: unable to open file \"{path}\" for header template"
                    )
                })?;
                l.header_template = Some(bytes);
                l.header_from_file = true;
                Ok(())
            }
            LocField::MessageTemplate => {
                if args[0].as_slice().is_empty() {
                    return Err(
                        "push stream module: push_stream_message_template cannot be blank.".into(),
                    );
                }
                set_once(&mut l.message_template, args[0].as_slice().to_vec(), &name)
            }
            LocField::FooterTemplate => {
                set_once(&mut l.footer_template, args[0].as_slice().to_vec(), &name)
            }
            LocField::AuthorizedChannelsOnly => {
                set_once(&mut l.authorized_channels_only, flag()?, &name)
            }
            LocField::AllowConnectionsToEventsChannel => {
                set_once(&mut l.allow_connections_to_events_channel, flag()?, &name)
            }
            LocField::WebsocketAllowPublish => {
                set_once(&mut l.websocket_allow_publish, flag()?, &name)
            }
            LocField::DetachedSubscribers => set_once(&mut l.detached_subscribers, flag()?, &name),
            LocField::WildcardChannelMaxQtd => {
                let n = cv::parse_number(&a).map_err(|e| invalid(&name, e))?;
                set_once(&mut l.wildcard_channel_max_qtd, nonzero(n, &name)?, &name)
            }
            LocField::PingMessageInterval
            | LocField::SubscriberConnectionTtl
            | LocField::LongpollingConnectionTtl => {
                let ms = nonzero(cv::parse_time_ms(&a).map_err(|e| invalid(&name, e))?, &name)?;
                let slot = match field {
                    LocField::PingMessageInterval => &mut l.ping_message_interval,
                    LocField::SubscriberConnectionTtl => &mut l.subscriber_connection_ttl,
                    _ => &mut l.longpolling_connection_ttl,
                };
                set_once(slot, ms, &name)
            }
            LocField::LastReceivedMessageTime => set_once(
                &mut l.last_received_message_time,
                cf.compile_complex(&args[0])?,
                &name,
            ),
            LocField::LastReceivedMessageTag => set_once(
                &mut l.last_received_message_tag,
                cf.compile_complex(&args[0])?,
                &name,
            ),
            LocField::LastEventId => {
                set_once(&mut l.last_event_id, cf.compile_complex(&args[0])?, &name)
            }
            LocField::UserAgent => {
                set_once(&mut l.user_agent, cf.compile_complex(&args[0])?, &name)
            }
            LocField::MaxPendingBytes => {
                let n = cv::parse_size(&a).map_err(|e| invalid(&name, e))?;
                set_once(&mut l.max_pending_bytes, nonzero(n, &name)?, &name)
            }
            LocField::MaxChannelsPerRequest => {
                let n = cv::parse_number(&a).map_err(|e| invalid(&name, e))?;
                set_once(&mut l.max_channels_per_request, nonzero(n, &name)?, &name)
            }
            LocField::Publisher
            | LocField::Subscriber
            | LocField::Statistics
            | LocField::Metrics
            | LocField::TestHook => set_role::<A>(l, field, cf, &name, args.first()),
            LocField::PaddingByUserAgent => {
                let rules = cv::parse_padding(&a)?;
                let mut compiled = Vec::with_capacity(rules.len());
                for rule in rules {
                    let regex = cf.compile_regex(&rule.regex).map_err(|e| {
                        format!(
                            "push stream module: error applying padding pattern to {}: {e}",
                            rule.regex
                        )
                    })?;
                    if let Some(mcf) = cf.main_conf_mut::<A>() {
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
        }
    }
}

fn set_shared_memory_size(m: &mut MainConf, cf: Conf, args: &[Vec<u8>]) -> Result<(), String> {
    if m.shm_set {
        return Err("\"push_stream_shared_memory_size\" directive is duplicate".into());
    }
    let size = cv::parse_size(&text(&args[0]))
        .map_err(|e| format!("push stream module: invalid push_stream_shared_memory_size: {e}"))?
        as usize;
    let page = cf.page_size();
    let size = size.div_ceil(page) * page;
    if size < 32 * page {
        // The C module's message and level (warn), with the real limit (32 pages: 128KiB
        // with 4 KiB pages), and loading fails.
        cf.error(
            Level::Warn,
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
        m.shm_name = name.clone();
    }
    let zone = crate::ngx::zone::add(cf, &m.shm_name, size)?;
    m.shm_size = size;
    m.shm_zone = Some(zone);
    m.shm_set = true;
    Ok(())
}

/// `push_stream_publisher`, `push_stream_subscriber`, `push_stream_channels_statistics`,
/// `push_stream_metrics` (and the test hook): the location's role and content handler.
fn set_role<A>(
    l: &mut LocConf,
    field: LocField,
    cf: Conf,
    name: &str,
    value: Option<&Vec<u8>>,
) -> Result<(), String>
where
    A: App + HttpModuleMainConf<MainConf = MainConf>,
{
    let value = value.map(|v| text(v));
    let role = match field {
        LocField::Publisher => LocationRole::Publisher(match value {
            Some(v) => cv::PublisherMode::parse(&v)?,
            None => cv::PublisherMode::default(),
        }),
        LocField::Subscriber => LocationRole::Subscriber(match &value {
            Some(v) => cv::SubscriberMode::parse(v)?,
            None => cv::SubscriberMode::default(),
        }),
        LocField::Metrics => LocationRole::Metrics,
        LocField::TestHook => LocationRole::TestHook(match value.as_deref().unwrap_or("") {
            "ok" => TestHook::Ok,
            "panic" => TestHook::Panic,
            "hold" => TestHook::Hold,
            "inbox" => TestHook::Inbox,
            "pause-inbox" => TestHook::PauseInbox,
            "die-in-lock" => TestHook::DieInLock,
            other => {
                return Err(format!(
                    "push stream module: invalid push_stream_test_hook value: {other}, accepted values (ok, panic, hold, inbox, pause-inbox, die-in-lock)"
                ))
            }
        }),
        _ => LocationRole::Statistics,
    };
    if l.role.is_some() {
        return Err(format!("\"{name}\" directive is duplicate"));
    }
    l.role = Some(role);
    cf.set_content_handler::<A>();
    if let Some(mcf) = cf.main_conf_mut::<A>() {
        mcf.used = true;
    }
    Ok(())
}

/// `init_main_conf`: defaults, then the checks that need the whole `http{}` block.
pub fn finish_main(m: &mut MainConf) -> Result<(), String> {
    m.finish();
    m.amqp.check()?;
    if m.used && !m.shm_set {
        return Err("push stream module: push_stream_shared_memory_size must be set.".into());
    }
    if let Some(zone) = m.shm_zone {
        zone.configure(m.limits.clone());
    }
    Ok(())
}

/// `merge_loc_conf`: inheritance, then the checks that need the merged values.
///
/// nginx gives an `if` inside a location a configuration of its own, merged from the
/// location's (the parent here), and a request whose condition holds runs with it. So the
/// location's role is inherited too, as the C module does (`location_type`): without it such a
/// request found no role (a `500`). The templates are built from the inherited, unrewritten
/// values, so the EventSource rewrite is applied once; an `if` that changes no template shares
/// the location's compiled templates (one rendering per message for both).
pub fn merge<A>(conf: &mut LocConf, prev: &LocConf, cf: Conf) -> Result<(), String>
where
    A: HttpModuleMainConf<MainConf = MainConf>,
{
    fn inherit<T: Clone>(c: &mut Option<T>, p: &Option<T>) {
        if c.is_none() {
            *c = p.clone();
        }
    }
    inherit(&mut conf.role, &prev.role);
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
    inherit(&mut conf.detached_subscribers, &prev.detached_subscribers);
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
    inherit(
        &mut conf.max_channels_per_request,
        &prev.max_channels_per_request,
    );
    inherit(&mut conf.max_pending_bytes, &prev.max_pending_bytes);
    if let Some(mcf) = cf.main_conf_mut::<A>() {
        let prefix_set = mcf
            .wildcard_channel_prefix
            .as_ref()
            .is_some_and(|p| !p.is_empty());
        if conf.wildcard_channel_max_qtd.is_some() && !prefix_set {
            return Err("push stream module: cannot set wildcard channel max qtd if push_stream_wildcard_channel_prefix is not set or blank.".into());
        }
        if let (Some(qtd), Some(max)) = (
            conf.wildcard_channel_max_qtd,
            mcf.max_number_of_wildcard_channels,
        ) {
            if max < qtd {
                return Err("push stream module: max number of wildcard channels cannot be smaller than value in push_stream_wildcard_channel_max_qtd.".into());
            }
        }
    }
    if conf
        .role
        .is_some_and(|r| !matches!(r, LocationRole::TestHook(_) | LocationRole::Metrics))
        && conf.channels_path.is_none()
    {
        return Err("push stream module: push_stream_channels_path must be set.".into());
    }
    if let Some(LocationRole::Subscriber(mode)) = conf.role {
        let same_as_parent = prev.role == conf.role
            && prev.header_template == conf.header_template
            && prev.message_template == conf.message_template
            && prev.footer_template == conf.footer_template;
        conf.templates = match &prev.templates {
            Some(t) if same_as_parent => Some(t.clone()),
            _ => {
                let kind = match mode {
                    cv::SubscriberMode::EventSource => Kind::EventSource,
                    cv::SubscriberMode::WebSocket => Kind::WebSocket,
                    _ => Kind::Plain,
                };
                Some(Rc::new(LocationTemplates::new(
                    conf.header_template.as_deref().unwrap_or(b""),
                    conf.message_template
                        .as_deref()
                        .unwrap_or(defaults::MESSAGE_TEMPLATE),
                    conf.footer_template.as_deref().unwrap_or(b""),
                    kind,
                )))
            }
        };
    }
    Ok(())
}
