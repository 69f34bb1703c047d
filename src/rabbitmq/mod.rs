//! RabbitMQ inside nginx, under one name: the worker's background thread (`thread`), the
//! lapin client it runs (`client`), and the event-loop side: messages consumed into the
//! host-wide store and to subscribers (`consume`), publishes handed to the broker and
//! answered on its confirm (`publish`). The thread never touches nginx memory; it talks to
//! the event loop through the bounded inbox and the eventfd.

mod client;
mod consume;
mod publish;
pub mod thread;

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use push_stream_core::amqp::Occurrences;
use tokio::sync::mpsc;

use crate::conf::MainConf;
use crate::delivery;
use crate::ngx::event;
use crate::ngx_log;
use client::Status;
use push_stream_core::amqp::Source;
use thread::InboxItem;

pub use publish::{forget, publish, timed_out, Answer, Message, Outcome, Publisher};

/// The event-loop side's state.
struct State {
    outbox: mpsc::Sender<client::PublishReq>,
    status: Arc<Status>,
    connected: bool,
    next_token: u64,
    /// Publishes waiting for the broker's confirm, by token.
    pending: HashMap<u64, publish::Pending>,
    /// Confirmed publishes waiting for this host's store to consume them back (stream
    /// source: read-your-writes), by token.
    awaiting: std::collections::BTreeMap<u64, publish::Pending>,
    /// This worker's publish epoch (`amqp::own_message_id`).
    epoch: u64,
    /// The source is a stream: every host consumes every message, so a publish is answered
    /// once this host's store has it.
    stream: bool,
    /// The last stream offset this worker delivered (redeliveries after a reconnect are
    /// skipped).
    last_offset: Option<u64>,
    /// Exchange source: how often this worker saw each dedupe key lately.
    seen: Option<Occurrences>,
    main: &'static MainConf,
    /// One worker consumes for the host: consumed messages go through the zone's log.
    host: bool,
    /// This worker consumes the source (always, unless another worker does it for the host).
    consumer: bool,
}

thread_local! {
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
}

fn with<R>(f: impl FnOnce(&mut State) -> R) -> Option<R> {
    STATE.with(|s| s.borrow_mut().as_mut().map(f))
}

/// Whether the configuration has a broker (an AMQP source).
pub fn configured(mcf: &MainConf) -> bool {
    mcf.amqp.settings().is_some()
}

/// Why the bridge could not start.
#[derive(Debug)]
pub enum StartError {
    NoWorkerState,
    Thread(std::io::Error),
    Epoch(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::NoWorkerState => write!(f, "the worker's delivery state is missing"),
            StartError::Thread(e) => write!(f, "cannot start the background thread: {e}"),
            StartError::Epoch(e) => write!(f, "cannot draw a publish epoch: {e}"),
        }
    }
}

/// Starts this worker's bridge (from init_process) when the configuration has an AMQP
/// source; Ok(false) without one.
pub fn start(mcf: &'static MainConf) -> Result<bool, StartError> {
    let Some(mut settings) = mcf.amqp.settings() else {
        return Ok(false);
    };
    let exchange = matches!(settings.source, Source::Exchange(_));
    // `push_stream_amqp_consumer host`: nginx's worker number 0 (the same number again when
    // the master respawns it) consumes the stream for the host, resuming after the highest
    // offset in the zone; the other workers deliver what it stores from the zone's log.
    let host = mcf.amqp.consumer_host() && !exchange;
    settings.consume = !host || event::worker_number() == 0;
    // A worker that does not consume has no offset to resume from (its statistics say 0).
    let start = if exchange || !settings.consume {
        None
    } else {
        mcf.zone()
            .and_then(|z| z.with_store(|s| s.broker_offset()))
            .flatten()
            .map(|o| o + 1)
    };
    let consumer = settings.consume;
    let epoch = event::random_token().map_err(|e| StartError::Epoch(e.to_string()))? as u64;
    if let Some(zone) = mcf.zone() {
        zone.set_publish_epoch(delivery::slot(), epoch);
    }
    let (tx, rx) = mpsc::channel(client::OUTBOX_CAPACITY);
    let status = Arc::new(Status::default());
    let waker = delivery::inbox_waker().ok_or(StartError::NoWorkerState)?;
    thread::start(
        waker,
        mcf.test_inbox_capacity,
        client::run(settings, start, rx, status.clone()),
    )
    .map_err(StartError::Thread)?;
    STATE.with(|s| {
        *s.borrow_mut() = Some(State {
            outbox: tx,
            status,
            connected: false,
            next_token: 1,
            pending: HashMap::new(),
            awaiting: Default::default(),
            epoch,
            stream: !exchange,
            last_offset: start.map(|o| o.saturating_sub(1)),
            seen: exchange.then(Occurrences::default),
            main: mcf,
            host,
            consumer,
        })
    });
    Ok(true)
}

/// Publishers go through the broker (`push_stream_amqp_publish`, on by default with a
/// source) and this worker's bridge runs.
pub fn publishes(mcf: &MainConf) -> bool {
    mcf.amqp.publish() && with(|_| ()).is_some()
}

/// The bridge's counters, for the statistics and the metrics.
#[derive(Default, Clone, Copy)]
pub struct Stats {
    pub connected: bool,
    pub consumer: bool,
    pub consumed_up_to_offset: u64,
    pub reconnects: u64,
    pub messages_in: u64,
    pub messages_out: u64,
    pub confirms_pending: u64,
    pub lost_to_retention: u64,
    pub inbox_depth: u64,
    pub exchange_keys: u64,
}

impl Stats {
    /// The statistics' field names and values, in their order.
    pub fn fields(&self) -> [(&'static str, u64); 10] {
        [
            ("amqp_connected", self.connected as u64),
            ("amqp_consumer", self.consumer as u64),
            (
                "amqp_messages_consumed_up_to_offset",
                self.consumed_up_to_offset,
            ),
            ("amqp_reconnects", self.reconnects),
            ("amqp_messages_in", self.messages_in),
            ("amqp_messages_out", self.messages_out),
            ("amqp_confirms_pending", self.confirms_pending),
            ("amqp_messages_lost_to_retention", self.lost_to_retention),
            ("amqp_inbox_depth", self.inbox_depth),
            ("amqp_exchange_keys", self.exchange_keys),
        ]
    }
}

/// The bridge's counters (None without a bridge).
pub fn stats() -> Option<Stats> {
    with(|s| {
        let st = &s.status;
        Stats {
            connected: s.connected,
            consumer: s.consumer,
            consumed_up_to_offset: st.last_offset.load(Ordering::Relaxed).max(0) as u64,
            reconnects: st.reconnects.load(Ordering::Relaxed),
            messages_in: st.messages_in.load(Ordering::Relaxed),
            messages_out: st.messages_out.load(Ordering::Relaxed),
            confirms_pending: st.confirms_pending.load(Ordering::Relaxed),
            lost_to_retention: st.retention_gaps.load(Ordering::Relaxed),
            inbox_depth: thread::inbox_depth() as u64,
            exchange_keys: s.seen.as_ref().map_or(0, |o| o.len() as u64),
        }
    })
}

/// Copies the bridge's counters into this worker's slot of the zone (metrics).
pub fn publish_slot_stats(mcf: &MainConf) {
    use std::sync::atomic::Ordering::Relaxed;
    let (Some(st), Some(zone)) = (stats(), mcf.zone()) else {
        return;
    };
    let Some(slot) = zone.slot_stats(delivery::slot()) else {
        return;
    };
    slot.amqp_connected.store(st.connected as u64, Relaxed);
    slot.amqp_in.store(st.messages_in, Relaxed);
    slot.amqp_out.store(st.messages_out, Relaxed);
    slot.amqp_reconnects.store(st.reconnects, Relaxed);
    slot.inbox_depth.store(st.inbox_depth, Relaxed);
}

fn state(connected: bool, detail: &str) {
    with(|s| s.connected = connected);
    if connected {
        ngx_log!(
            notice,
            crate::ngx::log::Log::cycle(),
            "push_stream: amqp: connected, {detail}"
        );
    } else {
        ngx_log!(
            warn,
            crate::ngx::log::Log::cycle(),
            "push_stream: amqp: broker unavailable ({detail}); reconnecting"
        );
    }
}

/// The inbox's wake-up: what the background thread handed over. Writes left from an earlier
/// batch go first; the inbox waits (it is bounded and the thread holds back) until they are
/// out, so a worker under load keeps its turns short.
pub fn drain_inbox() {
    refill_if_wanted();
    #[cfg(feature = "test-hooks")]
    if PAUSED_UNTIL.with(|p| p.get()) > event::now_ms() {
        return; // the periodic timer drains it once the pause is over
    }
    // Writes left from an earlier batch go first, and the bounded inbox holds back the
    // broker meanwhile; except on the worker that consumes for the host, whose inbox feeds
    // every worker through the zone: it is drained at once, and only this worker's own
    // deliveries (from the log) wait for its leftover writes.
    let for_host = with(|s| s.host && s.consumer).unwrap_or(false);
    if !for_host && !delivery::leftover_first() {
        delivery::inbox_next_turn();
        return;
    }
    let items = thread::drain();
    // Broker messages of one drain reach each subscriber in one write, and go into the
    // store together (one lock, one wake-up of the other workers).
    delivery::gathered(|| {
        let mut broker = Vec::new();
        for item in items {
            match item {
                InboxItem::Broker(m) => {
                    broker.push(*m);
                    continue;
                }
                // Anything else keeps its place after the messages before it.
                other => {
                    consume::consumed_all(std::mem::take(&mut broker));
                    match other {
                        InboxItem::Tick(n) => {
                            delivery::with(|w| {
                                w.ticks += 1;
                                w.last_tick = n;
                            });
                        }
                        InboxItem::Log(msg) => {
                            ngx_log!(warn, crate::ngx::log::Log::cycle(), "{msg}")
                        }
                        InboxItem::AmqpState { connected, detail } => state(connected, &detail),
                        InboxItem::PublishDone { token, result } => {
                            publish::confirmed(token, result)
                        }
                        InboxItem::Broker(_) => {}
                    }
                }
            }
        }
        consume::consumed_all(broker);
    });
    publish::answer_stored();
}

/// Another worker consumed back some of this worker's publishes (its wake-up): answer them.
pub fn check_stored() {
    refill_if_wanted();
    publish::answer_stored();
}

/// After the host's store was rebuilt (a worker died inside a change; see `ngx::zone`), one
/// worker that consumes the stream reads it again from `push_stream_message_ttl` ago, so
/// the messages the store still held come back (stored, not delivered again).
fn refill_if_wanted() {
    let Some((mcf, status, stream, consumer)) =
        with(|s| (s.main, s.status.clone(), s.stream, s.consumer))
    else {
        return;
    };
    if !(stream && consumer && mcf.amqp.store_messages()) {
        return;
    }
    let Some(zone) = mcf.zone() else { return };
    if zone.claim_refill() {
        let since = event::now() - mcf.limits.message_ttl;
        status.refill_since.store(since.max(1), Ordering::Relaxed);
    }
}

#[cfg(feature = "test-hooks")]
thread_local! {
    static PAUSED_UNTIL: std::cell::Cell<i64> = const { std::cell::Cell::new(0) };
}

/// Test hook: the inbox is not drained for `ms` milliseconds (its items wait; the thread
/// waits for room rather than drop a stream message or a publish's answer).
#[cfg(feature = "test-hooks")]
pub fn pause_inbox(ms: i64) {
    PAUSED_UNTIL.with(|p| p.set(event::now_ms() + ms));
}

/// Stops the bridge (exit_process); true when no thread is left running.
pub fn stop() -> bool {
    STATE.with(|s| s.borrow_mut().take());
    thread::stop(std::time::Duration::from_secs(3))
}
