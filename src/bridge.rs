//! The worker's background thread ("bridge"): today the skeleton that the RabbitMQ consumer
//! will run in. It talks to the event loop only through the bounded inbox and the eventfd
//! waker; it never touches nginx memory.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};

use crate::glue::thread::{spawn_blocking_signals, Waker};

/// What the thread hands to the event loop.
#[derive(Debug)]
pub enum InboxItem {
    /// A heartbeat of the test ticker (feature `test-hooks`).
    #[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
    Tick(u64),
}

/// Capacity of the inbox between the thread and the event loop.
pub const INBOX_CAPACITY: usize = 4096;

/// The thread's side: a bounded sender, the waker and the stop signal.
pub struct BridgeCtx {
    inbox: Sender<InboxItem>,
    waker: Waker,
    stop: Receiver<()>,
    /// Items refused because the inbox was full (visible in stats and logs).
    pub dropped: Arc<AtomicU64>,
}

impl BridgeCtx {
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

    /// Waits up to `d`; true when the worker asked the thread to stop.
    pub fn wait_stop(&self, d: Duration) -> bool {
        !matches!(self.stop.recv_timeout(d), Err(RecvTimeoutError::Timeout))
    }
}

/// The worker's handle on its thread.
pub struct Bridge {
    handle: Option<JoinHandle<()>>,
    stop: Option<Sender<()>>,
    done: Receiver<()>,
    pub dropped: Arc<AtomicU64>,
}

impl Bridge {
    /// Starts `body` on a thread named `push-stream-bridge`.
    pub fn start<F>(waker: Waker, inbox: Sender<InboxItem>, body: F) -> std::io::Result<Bridge>
    where
        F: FnOnce(&BridgeCtx) + Send + 'static,
    {
        let (stop_tx, stop_rx) = bounded::<()>(1);
        let (done_tx, done_rx) = bounded::<()>(1);
        let dropped = Arc::new(AtomicU64::new(0));
        let ctx = BridgeCtx {
            inbox,
            waker,
            stop: stop_rx,
            dropped: dropped.clone(),
        };
        let handle = spawn_blocking_signals("push-stream-bridge", move || {
            // A panic in the thread must not take the worker down: report it and end.
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&ctx)));
            if r.is_err() {
                eprintln!("push_stream: the bridge thread panicked and stopped");
            }
            let _ = done_tx.send(());
        })?;
        Ok(Bridge {
            handle: Some(handle),
            stop: Some(stop_tx),
            done: done_rx,
            dropped,
        })
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
