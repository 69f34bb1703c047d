//! The RabbitMQ bridge that runs on each worker's background thread: a current-thread tokio
//! runtime with a lapin connection that consumes the configured stream from the offset the
//! worker gives it (or, with an exchange source, its own queue bound to the exchange), and
//! publishes what the worker's HTTP publishers hand it, with publisher confirms. It reconnects with capped exponential backoff and jitter. It talks to the event
//! loop only through the bounded inbox (messages, confirms, state, log lines) and a bounded
//! outbox; it never touches nginx memory.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties, ExchangeKind};
use push_stream_core::amqp::{self as core_amqp, ExchangeKind as Kind, HeaderValue, OP_HEADER};
pub use push_stream_core::amqp::{Settings, Source};
use tokio::sync::mpsc;

use super::thread::{BridgeCtx, InboxItem};

/// Where a consumed message sits: a stream offset, or (exchange source) the key the host's
/// workers recognise their copies of the same message by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    Offset(u64),
    Key(u128),
}

/// A message consumed from the broker.
#[derive(Debug)]
pub struct BrokerMessage {
    pub position: Position,
    /// A channel delete (`push-stream-op: delete`) rather than a message.
    pub delete: bool,
    pub channels: Vec<Vec<u8>>,
    pub event_id: Vec<u8>,
    pub event_type: Vec<u8>,
    pub text: Vec<u8>,
    /// The AMQP timestamp property (unix seconds), if the publisher set one.
    pub time: Option<i64>,
    /// The AMQP message-id property (a worker of this module sets `amqp::own_message_id`).
    pub message_id: Option<Vec<u8>>,
    /// Read again after the host's store was rebuilt: delivered before, only to be stored.
    pub refill: bool,
}

/// An HTTP publish handed to the bridge.
#[derive(Debug)]
pub struct PublishReq {
    pub token: u64,
    /// Its AMQP message-id (`push_stream_core::amqp::own_message_id`).
    pub message_id: String,
    pub channel_path: Vec<u8>,
    pub body: Vec<u8>,
    pub event_id: Option<Vec<u8>>,
    pub event_type: Option<Vec<u8>>,
    /// A channel delete: published with `push-stream-op: delete`, the body being the text.
    pub delete: bool,
}

/// Capacity of the outbox (HTTP publishes waiting for the bridge).
pub const OUTBOX_CAPACITY: usize = 1024;

/// Counters the worker shows in its statistics (shared with the thread, lock-free).
#[derive(Default)]
pub struct Status {
    pub connected: AtomicBool,
    /// Last stream offset consumed (-1: none yet).
    pub last_offset: AtomicI64,
    pub reconnects: AtomicU64,
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
    pub confirms_pending: AtomicU64,
    /// Offsets that fell out of the stream's retention before this worker read them.
    pub retention_gaps: AtomicU64,
    /// Set by the worker after the host's store was rebuilt: read the stream again from this
    /// unix second to refill it (0: nothing asked).
    pub refill_since: AtomicI64,
}

/// The thread body for `Bridge::start`.
pub fn run(
    settings: Settings,
    start_offset: Option<u64>,
    outbox: mpsc::Receiver<PublishReq>,
    status: Arc<Status>,
) -> impl FnOnce(&BridgeCtx) + Send + 'static {
    move |ctx: &BridgeCtx| {
        status.last_offset.store(
            start_offset.map(|o| o as i64 - 1).unwrap_or(-1),
            Ordering::Relaxed,
        );
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                log(
                    ctx,
                    format!("push_stream: amqp: cannot start the tokio runtime: {e}"),
                );
                return;
            }
        };
        rt.block_on(main_loop(ctx, settings, start_offset, outbox, status));
    }
}

/// Resolves once the worker asked the thread to stop.
async fn stopped(ctx: &BridgeCtx) {
    while !ctx.stop_requested() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn log(ctx: &BridgeCtx, msg: String) {
    ctx.deliver_blocking(InboxItem::Log(msg), Duration::from_millis(100));
}

async fn main_loop(
    ctx: &BridgeCtx,
    settings: Settings,
    start_offset: Option<u64>,
    mut outbox: mpsc::Receiver<PublishReq>,
    status: Arc<Status>,
) {
    let mut next_offset = start_offset;
    let mut attempt: u32 = 0;
    let mut seed: u64 = std::process::id() as u64 ^ 0x9e37_79b9_7f4a_7c15;
    loop {
        if ctx.stop_requested() {
            return;
        }
        // The worker's stop request wins over anything the session awaits (connecting,
        // declaring, closing): dropping the session future cancels it, so exit_process never
        // waits on the broker.
        let r = tokio::select! {
            r = session(ctx, &settings, &mut next_offset, &mut outbox, &status, &mut attempt) => r,
            _ = stopped(ctx) => Ok(()),
        };
        status.connected.store(false, Ordering::Relaxed);
        match r {
            Ok(()) => return,
            Err(e) => {
                ctx.deliver_blocking(
                    InboxItem::AmqpState {
                        connected: false,
                        detail: e.clone(),
                    },
                    Duration::from_millis(100),
                );
                // Publishes waiting now cannot go out: answer them at once (503).
                while let Ok(req) = outbox.try_recv() {
                    let _ = ctx.deliver(InboxItem::PublishDone {
                        token: req.token,
                        result: Err(Unavailable(e.clone())),
                    });
                }
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let wait = push_stream_core::amqp::backoff_ms(attempt, 200, 30_000, seed >> 17);
                attempt = attempt.saturating_add(1);
                status.reconnects.fetch_add(1, Ordering::Relaxed);
                let until = tokio::time::Instant::now() + Duration::from_millis(wait);
                while tokio::time::Instant::now() < until {
                    if ctx.stop_requested() {
                        return;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                        req = outbox.recv() => if let Some(req) = req {
                            let _ = ctx.deliver(InboxItem::PublishDone { token: req.token, result: Err(Unavailable(e.clone())) });
                        }
                    }
                }
            }
        }
    }
}

/// Why a publish failed: the broker is not there (503) or did not confirm in time (504).
#[derive(Debug, Clone)]
pub enum PublishError {
    Unavailable(String),
    Timeout,
    Nacked,
    /// Confirmed but returned (mandatory): no queue is bound for the routing key.
    Unroutable,
}
use PublishError::Unavailable;

fn long_string(v: &[u8]) -> AMQPValue {
    AMQPValue::LongString(LongString::from(v.to_vec()))
}

/// lapin's header value as core's (which holds the header rules).
fn header_value(v: &AMQPValue) -> HeaderValue<'_> {
    match v {
        AMQPValue::LongString(s) => HeaderValue::LongString(s.as_bytes()),
        AMQPValue::ShortString(s) => HeaderValue::ShortString(s.as_str()),
        AMQPValue::ByteArray(b) => HeaderValue::ByteArray(b.as_slice()),
        AMQPValue::LongLongInt(n) => HeaderValue::LongLongInt(*n),
        AMQPValue::LongInt(n) => HeaderValue::LongInt(*n),
        AMQPValue::LongUInt(n) => HeaderValue::LongUInt(*n),
        _ => HeaderValue::Other,
    }
}

fn header_bytes(v: &AMQPValue) -> Option<Vec<u8>> {
    core_amqp::header_bytes(header_value(v))
}

fn offset_of(h: Option<&FieldTable>) -> Option<u64> {
    core_amqp::stream_offset(header_value(
        h?.inner().get(core_amqp::STREAM_OFFSET_HEADER)?,
    ))
}

/// Declares what the source needs and starts consuming (unless `s.consume` is off); returns
/// the consumer and a line for the log.
async fn subscribe(
    conn: &Connection,
    s: &Settings,
    next_offset: &Option<u64>,
) -> Result<(lapin::Channel, Option<lapin::Consumer>, String), String> {
    let ch = conn
        .create_channel()
        .await
        .map_err(|e| format!("cannot open a channel: {e}"))?;
    let tag: ShortString = format!("ngx-push-stream-{}", std::process::id()).into();
    match &s.source {
        Source::Stream {
            name,
            max_age,
            max_bytes,
        } => {
            let mut args = FieldTable::default();
            args.insert("x-queue-type".into(), long_string(b"stream"));
            if let Some(age) = max_age {
                args.insert("x-max-age".into(), long_string(age.as_bytes()));
            }
            if let Some(bytes) = max_bytes {
                args.insert(
                    "x-max-length-bytes".into(),
                    AMQPValue::LongLongInt(*bytes as i64),
                );
            }
            let opts = QueueDeclareOptions {
                durable: true,
                ..Default::default()
            };
            ch.queue_declare(name.as_str().into(), opts, args)
                .await
                .map_err(|e| format!("cannot declare the stream \"{name}\": {e}"))?;
            if !s.consume {
                return Ok((
                    ch,
                    None,
                    format!("publishing to stream \"{name}\"; worker 0 consumes it for the host"),
                ));
            }
            ch.basic_qos(s.prefetch, BasicQosOptions::default())
                .await
                .map_err(|e| format!("basic.qos failed: {e}"))?;
            let mut cargs = FieldTable::default();
            match *next_offset {
                Some(o) => cargs.insert("x-stream-offset".into(), AMQPValue::LongLongInt(o as i64)),
                None => cargs.insert("x-stream-offset".into(), long_string(b"next")),
            };
            let consumer = ch
                .basic_consume(
                    name.as_str().into(),
                    tag,
                    BasicConsumeOptions::default(),
                    cargs,
                )
                .await
                .map_err(|e| format!("cannot consume the stream \"{name}\": {e}"))?;
            let from = next_offset
                .map(|o| o.to_string())
                .unwrap_or_else(|| "next".into());
            Ok((
                ch,
                Some(consumer),
                format!("consuming stream \"{name}\" from offset {from}"),
            ))
        }
        Source::Exchange(x) => {
            // Declared (durable) when missing; an existing exchange of another type or
            // durability is an error the broker explains (logged, retried with backoff).
            let kind = match x.kind {
                Kind::Direct => ExchangeKind::Direct,
                Kind::Fanout => ExchangeKind::Fanout,
                Kind::Topic => ExchangeKind::Topic,
            };
            let opts = ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            };
            ch.exchange_declare(x.name.as_str().into(), kind, opts, FieldTable::default())
                .await
                .map_err(|e| {
                    format!(
                        "cannot declare the exchange \"{}\" ({}, durable): {e}",
                        x.name,
                        x.kind.as_str()
                    )
                })?;
            // This worker's own queue: server-named, gone with the connection.
            let q = ch
                .queue_declare(
                    "".into(),
                    QueueDeclareOptions {
                        exclusive: true,
                        auto_delete: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(|e| format!("cannot declare this worker's queue: {e}"))?;
            let qname = q.name().clone();
            for key in &x.keys {
                ch.queue_bind(
                    qname.clone(),
                    x.name.as_str().into(),
                    key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| {
                    format!(
                        "cannot bind to the exchange \"{}\" with \"{key}\": {e}",
                        x.name
                    )
                })?;
            }
            ch.basic_qos(s.prefetch, BasicQosOptions::default())
                .await
                .map_err(|e| format!("basic.qos failed: {e}"))?;
            let consumer = ch
                .basic_consume(
                    qname.clone(),
                    tag,
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| format!("cannot consume queue \"{qname}\": {e}"))?;
            Ok((
                ch,
                Some(consumer),
                format!(
                    "consuming exchange \"{}\" ({}) through queue \"{qname}\" bound with {:?}",
                    x.name,
                    x.kind.as_str(),
                    x.keys
                ),
            ))
        }
    }
}

/// The consumer's next delivery; never, on a worker that does not consume.
async fn next_delivery(
    c: &mut Option<lapin::Consumer>,
) -> Option<Result<lapin::message::Delivery, lapin::Error>> {
    match c {
        Some(c) => c.next().await,
        None => std::future::pending().await,
    }
}

/// Deliveries handed to the worker but not acknowledged to the broker yet.
#[derive(Default)]
struct Acks {
    last_tag: u64,
    pending: u64,
}

impl Acks {
    /// Counts a handled delivery; acknowledges everything up to it once `every` are pending.
    async fn add(&mut self, ch: &lapin::Channel, tag: u64, every: u64) -> Result<(), String> {
        self.last_tag = tag;
        self.pending += 1;
        if self.pending >= every {
            self.flush(ch).await?;
        }
        Ok(())
    }

    /// Acknowledges every delivery up to the last one handled (one `basic.ack multiple`).
    async fn flush(&mut self, ch: &lapin::Channel) -> Result<(), String> {
        if self.pending == 0 {
            return Ok(());
        }
        self.pending = 0;
        ch.basic_ack(self.last_tag, BasicAckOptions { multiple: true })
            .await
            .map_err(|e| format!("ack failed: {e}"))
    }
}

async fn session(
    ctx: &BridgeCtx,
    s: &Settings,
    next_offset: &mut Option<u64>,
    outbox: &mut mpsc::Receiver<PublishReq>,
    status: &Arc<Status>,
    attempt: &mut u32,
) -> Result<(), String> {
    let props = ConnectionProperties::default()
        .with_connection_name(format!("ngx-push-stream worker {}", std::process::id()).into());
    let conn = tokio::time::timeout(
        Duration::from_secs(10),
        Connection::connect_with_runtime(&s.url, props, async_rs::Runtime::tokio_current()),
    )
    .await
    .map_err(|_| "connecting timed out after 10s".to_string())?
    .map_err(|e| format!("cannot connect: {e}"))?;
    let (consumer_ch, mut consumer, detail) = subscribe(&conn, s, next_offset).await?;
    // Acks go in batches (multiple=true): every quarter of the prefetch window, and on the
    // tick, so the broker is never left waiting for credit and handles one ack per batch
    // rather than one per message per worker.
    let ack_every = (s.prefetch as u64 / 4).max(1);
    let mut acks = Acks::default();
    let pubch = conn
        .create_channel()
        .await
        .map_err(|e| format!("cannot open a channel: {e}"))?;
    pubch
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| format!("confirm.select failed: {e}"))?;
    status.connected.store(true, Ordering::Relaxed);
    *attempt = 0;
    ctx.deliver_blocking(
        InboxItem::AmqpState {
            connected: true,
            detail,
        },
        Duration::from_millis(100),
    );
    let source_name = match &s.source {
        Source::Stream { name, .. } => format!("stream \"{name}\""),
        Source::Exchange(x) => format!("exchange \"{}\"", x.name),
    };
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    // Refilling a rebuilt store: offsets below this were delivered before (store them only);
    // how many were read again, and how many consumers this session started.
    let mut refill_below: Option<u64> = None;
    let mut refilled = 0u64;
    let mut consumers = 0u32;
    loop {
        tokio::select! {
            d = next_delivery(&mut consumer) => {
                let delivery = match d {
                    Some(Ok(d)) => d,
                    Some(Err(e)) => return Err(format!("consumer failed: {e}")),
                    None => return Err("the broker cancelled the consumer".into()),
                };
                let headers = delivery.properties.headers().as_ref();
                let mut refill = false;
                let position = match &s.source {
                    Source::Stream { name, .. } => {
                        let Some(offset) = offset_of(headers) else {
                            acks.add(&consumer_ch, delivery.delivery_tag, ack_every).await?;
                            continue;
                        };
                        match refill_below {
                            Some(below) if offset < below => refill = true,
                            Some(_) => {
                                refill_below = None;
                                log(ctx, format!("push_stream: amqp: refilled the rebuilt store from stream \"{name}\": {refilled} message(s) read again"));
                            }
                            None => {}
                        }
                        if refill {
                            // Read again for the rebuilt store: no gap or order checks.
                        } else if let Some(expected) = *next_offset {
                            // A stream delivers from the start of the chunk holding the
                            // requested offset: what comes before it was handled already.
                            if offset < expected {
                                acks.add(&consumer_ch, delivery.delivery_tag, ack_every).await?;
                                continue;
                            }
                            // Beyond it: what lay between left the stream (retention) before
                            // this worker could read it. Say so; it cannot be delivered any more.
                            if offset > expected {
                                status.retention_gaps.fetch_add(offset - expected, Ordering::Relaxed);
                                log(ctx, format!(
                                    "push_stream: amqp: stream \"{name}\" offsets {expected} to {} are gone (retention) and were not delivered",
                                    offset - 1
                                ));
                            }
                        }
                        Some(offset)
                    }
                    Source::Exchange(_) => None,
                };
                let h = |name: &str| headers.and_then(|t| t.inner().get(name)).and_then(header_bytes);
                let rk = delivery.routing_key.as_str().as_bytes();
                match push_stream_core::amqp::map(rk, h) {
                    Ok(m) => {
                        let position = match position {
                            Some(o) => Position::Offset(o),
                            None => Position::Key(push_stream_core::amqp::dedupe_key(
                                delivery.properties.message_id().as_ref().map(|i| i.as_str().as_bytes()),
                                rk,
                                &m,
                                *delivery.properties.timestamp(),
                                &delivery.data,
                            )),
                        };
                        let msg = BrokerMessage {
                            position,
                            delete: m.delete,
                            channels: m.channels,
                            event_id: m.event_id,
                            event_type: m.event_type,
                            text: delivery.data.clone(),
                            time: delivery.properties.timestamp().map(|t| t as i64),
                            message_id: delivery
                                .properties
                                .message_id()
                                .as_ref()
                                .map(|i| i.as_str().as_bytes().to_vec()),
                            refill,
                        };
                        refilled += u64::from(refill);
                        // Never drop: wait for room in the inbox (the worker drains it on every wake-up).
                        let mut item = InboxItem::Broker(Box::new(msg));
                        loop {
                            match ctx.deliver(item) {
                                Ok(()) => break,
                                Err(back) => {
                                    if ctx.stop_requested() {
                                        return Ok(());
                                    }
                                    item = back;
                                    tokio::time::sleep(Duration::from_millis(2)).await;
                                }
                            }
                        }
                        status.messages_in.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        let at = position.map(|o| format!("offset {o}")).unwrap_or_else(|| format!("routing key \"{}\"", String::from_utf8_lossy(rk)));
                        log(ctx, format!("push_stream: amqp: {source_name} message at {at} skipped: {e}"))
                    }
                }
                if let (Some(offset), false) = (position, refill) {
                    status.last_offset.store(offset as i64, Ordering::Relaxed);
                    *next_offset = Some(offset + 1);
                }
                acks.add(&consumer_ch, delivery.delivery_tag, ack_every).await?;
            }
            req = outbox.recv() => {
                let Some(req) = req else { return Ok(()) };
                let mut headers = FieldTable::default();
                headers.insert("channel".into(), long_string(&req.channel_path));
                if let Some(v) = &req.event_id { headers.insert("event-id".into(), long_string(v)); }
                if let Some(v) = &req.event_type { headers.insert("event-type".into(), long_string(v)); }
                if req.delete { headers.insert(OP_HEADER.into(), long_string(b"delete")); }
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
                let props = BasicProperties::default()
                    .with_headers(headers)
                    .with_timestamp(now)
                    .with_delivery_mode(2)
                    .with_message_id(req.message_id.as_str().into());
                // Streams: the default exchange with the stream as routing key. Exchanges: the
                // channel path as routing key, mandatory (an unroutable message is an error).
                let (exchange, routing_key, mandatory) = match &s.source {
                    Source::Stream { name, .. } => (String::new(), name.clone(), false),
                    Source::Exchange(x) => {
                        (x.name.clone(), String::from_utf8_lossy(&req.channel_path).into_owned(), true)
                    }
                };
                let confirm = pubch
                    .basic_publish(exchange.as_str().into(), routing_key.as_str().into(), BasicPublishOptions { mandatory, ..Default::default() }, &req.body, props)
                    .await;
                match confirm {
                    Err(e) => {
                        let _ = ctx.deliver(InboxItem::PublishDone { token: req.token, result: Err(Unavailable(e.to_string())) });
                        return Err(format!("publish failed: {e}"));
                    }
                    Ok(confirm) => {
                        status.confirms_pending.fetch_add(1, Ordering::Relaxed);
                        let status = status.clone();
                        let waker = ctx.handle();
                        let timeout = s.confirm_timeout;
                        tokio::spawn(async move {
                            let result = match tokio::time::timeout(timeout, confirm).await {
                                Err(_) => Err(PublishError::Timeout),
                                Ok(Err(e)) => Err(Unavailable(e.to_string())),
                                Ok(Ok(Confirmation::Nack(_))) => Err(PublishError::Nacked),
                                Ok(Ok(Confirmation::Ack(Some(_)))) => Err(PublishError::Unroutable),
                                Ok(Ok(_)) => Ok(()),
                            };
                            status.confirms_pending.fetch_sub(1, Ordering::Relaxed);
                            if result.is_ok() {
                                status.messages_out.fetch_add(1, Ordering::Relaxed);
                            }
                            // Never dropped: the answer waits for room in the inbox (the
                            // worker drains it on every wake-up).
                            let mut item = InboxItem::PublishDone { token: req.token, result };
                            while let Err(crossbeam_channel::TrySendError::Full(back)) = waker.offer(item) {
                                item = back;
                                tokio::time::sleep(Duration::from_millis(1)).await;
                            }
                        });
                    }
                }
            }
            _ = tick.tick() => {
                acks.flush(&consumer_ch).await?;
                let since = status.refill_since.swap(0, Ordering::Relaxed);
                if let (true, Source::Stream { name, .. }, Some(c)) = (since > 0, &s.source, consumer.as_ref()) {
                    // Start over from `since` on the same channel: what comes before the
                    // next offset is stored only; then live messages follow in order.
                    if let Some(below) = *next_offset {
                        consumer_ch.basic_cancel(c.tag(), BasicCancelOptions::default()).await
                            .map_err(|e| format!("basic.cancel failed: {e}"))?;
                        consumers += 1;
                        let mut cargs = FieldTable::default();
                        cargs.insert("x-stream-offset".into(), AMQPValue::Timestamp(since as u64));
                        let tag: ShortString = format!("ngx-push-stream-{}-{consumers}", std::process::id()).into();
                        consumer = Some(consumer_ch
                            .basic_consume(name.as_str().into(), tag, BasicConsumeOptions::default(), cargs)
                            .await
                            .map_err(|e| format!("cannot consume the stream \"{name}\" again: {e}"))?);
                        refill_below = Some(below);
                        refilled = 0;
                        log(ctx, format!("push_stream: amqp: refilling the rebuilt store from stream \"{name}\" since unix time {since} (offsets below {below} are stored, not delivered again)"));
                    }
                }
                if ctx.stop_requested() {
                    let _ = tokio::time::timeout(Duration::from_secs(1), conn.close(200, "worker exiting".into())).await;
                    return Ok(());
                }
                if !conn.status().connected() {
                    return Err("connection lost".into());
                }
            }
        }
    }
}
