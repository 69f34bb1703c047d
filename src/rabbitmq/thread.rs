//! The worker's background thread ("bridge"). It runs the RabbitMQ client (`client`),
//! and, in test builds, a ticker. It talks to the event loop only through the bounded inbox
//! and the eventfd waker; it never touches nginx memory.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError};

use crate::ngx::thread::{spawn_blocking_signals, Waker};

/// What the thread hands to the event loop.
#[derive(Debug)]
pub enum InboxItem {
    /// A heartbeat of the test ticker (feature `test-hooks`).
    #[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
    Tick(u64),
    /// A line for nginx's error log (the thread does not write it itself).
    Log(String),
    /// The broker connection came up or went away.
    AmqpState { connected: bool, detail: String },
    /// A message consumed from the broker.
    Broker(Box<super::client::BrokerMessage>),
    /// The broker confirmed (or not) an HTTP publish.
    PublishDone {
        token: u64,
        result: Result<(), super::client::PublishError>,
    },
}

/// Capacity of the inbox between the thread and the event loop.
pub const INBOX_CAPACITY: usize = 4096;

/// A cloneable way into the event loop's inbox (also for tasks the thread spawns).
#[derive(Clone)]
pub struct InboxHandle {
    inbox: Sender<InboxItem>,
    waker: Waker,
    /// Items refused because the inbox was full (visible in stats and logs).
    pub dropped: Arc<AtomicU64>,
}

impl InboxHandle {
    /// Queues `item` and wakes the event loop. A full inbox is an explicit error, counted.
    pub fn deliver(&self, item: InboxItem) -> Result<(), InboxItem> {
        match self.inbox.try_send(item) {
            Ok(()) => {
                self.waker.wake();
                Ok(())
            }
            Err(TrySendError::Full(item)) | Err(TrySendError::Disconnected(item)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                Err(item)
            }
        }
    }

    /// Like `deliver`, for a caller that waits for room and retries (a full inbox is not a
    /// drop then): the item comes back with why it was not taken.
    pub fn offer(&self, item: InboxItem) -> Result<(), TrySendError<InboxItem>> {
        self.inbox.try_send(item)?;
        self.waker.wake();
        Ok(())
    }

    pub fn depth(&self) -> usize {
        self.inbox.len()
    }
}

/// The thread's side: the inbox and the stop signal.
pub struct BridgeCtx {
    handle: InboxHandle,
    stop: Receiver<()>,
}

impl BridgeCtx {
    pub fn deliver(&self, item: InboxItem) -> Result<(), InboxItem> {
        self.handle.deliver(item)
    }

    /// Delivers, retrying for up to `wait` while the inbox is full.
    pub fn deliver_blocking(&self, item: InboxItem, wait: Duration) {
        let deadline = std::time::Instant::now() + wait;
        let mut item = item;
        while let Err(back) = self.handle.deliver(item) {
            if std::time::Instant::now() > deadline || self.stop_requested() {
                return;
            }
            item = back;
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    pub fn handle(&self) -> InboxHandle {
        self.handle.clone()
    }

    /// True once the worker asked the thread to stop.
    pub fn stop_requested(&self) -> bool {
        !matches!(self.stop.try_recv(), Err(TryRecvError::Empty))
    }

    /// Waits up to `d`; true when the worker asked the thread to stop.
    #[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
    pub fn wait_stop(&self, d: Duration) -> bool {
        !matches!(self.stop.recv_timeout(d), Err(RecvTimeoutError::Timeout))
    }
}

/// The worker's handle on its thread.
pub struct Bridge {
    handle: Option<JoinHandle<()>>,
    stop: Option<Sender<()>>,
    done: Receiver<()>,
    inbox: InboxHandle,
}

impl Bridge {
    /// Starts `body` on a thread named `push-stream-bridge`.
    pub fn start<F>(waker: Waker, inbox: Sender<InboxItem>, body: F) -> std::io::Result<Bridge>
    where
        F: FnOnce(&BridgeCtx) + Send + 'static,
    {
        let (stop_tx, stop_rx) = bounded::<()>(1);
        let (done_tx, done_rx) = bounded::<()>(1);
        let handle = InboxHandle {
            inbox,
            waker,
            dropped: Arc::new(AtomicU64::new(0)),
        };
        let ctx = BridgeCtx {
            handle: handle.clone(),
            stop: stop_rx,
        };
        let thread = spawn_blocking_signals("push-stream-bridge", move || {
            // A panic in the thread must not take the worker down: report it and end.
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&ctx)));
            if r.is_err() {
                ctx.deliver_blocking(
                    InboxItem::Log(
                        "push_stream: the background thread panicked and stopped".into(),
                    ),
                    Duration::from_millis(100),
                );
            }
            let _ = done_tx.send(());
        })?;
        Ok(Bridge {
            handle: Some(thread),
            stop: Some(stop_tx),
            done: done_rx,
            inbox: handle,
        })
    }

    #[cfg(feature = "test-hooks")]
    pub fn dropped(&self) -> u64 {
        self.inbox.dropped.load(Ordering::Relaxed)
    }

    pub fn inbox_depth(&self) -> usize {
        self.inbox.depth()
    }

    /// Asks the thread to stop and joins it, waiting at most `timeout`. Returns false when the
    /// thread did not finish in time (it is then left detached; its waker's fd must stay open).
    pub fn stop(mut self, timeout: Duration) -> bool {
        drop(self.stop.take());
        let finished = match self.done.recv_timeout(timeout) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => true,
            Err(RecvTimeoutError::Timeout) => false,
        };
        if finished {
            if let Some(h) = self.handle.take() {
                let _ = h.join();
            }
        }
        finished
    }
}

/// The test ticker: one `Tick` every `every` until stopped.
#[cfg(feature = "test-hooks")]
pub fn ticker(every: Duration) -> impl FnOnce(&BridgeCtx) + Send + 'static {
    move |ctx: &BridgeCtx| {
        let mut n = 0u64;
        while !ctx.wait_stop(every) {
            n += 1;
            let _ = ctx.deliver(InboxItem::Tick(n));
        }
    }
}

/// The event loop's side of the worker's background thread: the thread, and the inbox it
/// fills. At most one per worker.
struct Running {
    bridge: Bridge,
    inbox: Receiver<InboxItem>,
}

thread_local! {
    static RUNNING: std::cell::RefCell<Option<Running>> = const { std::cell::RefCell::new(None) };
}

/// Starts the worker's background thread with `body`, waking the event loop through `waker`;
/// its inbox holds `capacity` items (0: `INBOX_CAPACITY`).
pub fn start<F>(waker: Waker, capacity: usize, body: F) -> std::io::Result<()>
where
    F: FnOnce(&BridgeCtx) + Send + 'static,
{
    let capacity = if capacity == 0 {
        INBOX_CAPACITY
    } else {
        capacity
    };
    let (tx, rx) = bounded(capacity);
    let bridge = Bridge::start(waker, tx, body)?;
    RUNNING.with(|r| *r.borrow_mut() = Some(Running { bridge, inbox: rx }));
    Ok(())
}

/// What the thread handed over since the last drain (at most a capacity's worth).
pub fn drain() -> Vec<InboxItem> {
    RUNNING.with(|r| {
        r.borrow()
            .as_ref()
            .map(|r| r.inbox.try_iter().take(INBOX_CAPACITY).collect())
            .unwrap_or_default()
    })
}

/// Whether a background thread runs.
#[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
pub fn running() -> bool {
    RUNNING.with(|r| r.borrow().is_some())
}

/// Items waiting in the inbox.
pub fn inbox_depth() -> usize {
    RUNNING.with(|r| r.borrow().as_ref().map_or(0, |r| r.bridge.inbox_depth()))
}

/// Items the inbox refused because it was full.
#[cfg(feature = "test-hooks")]
pub fn inbox_dropped() -> u64 {
    RUNNING.with(|r| r.borrow().as_ref().map_or(0, |r| r.bridge.dropped()))
}

/// Stops and joins the thread within `timeout`; true when no thread is left running (so
/// its eventfd may be closed).
pub fn stop(timeout: Duration) -> bool {
    match RUNNING.with(|r| r.borrow_mut().take()) {
        Some(r) => r.bridge.stop(timeout),
        None => true,
    }
}
