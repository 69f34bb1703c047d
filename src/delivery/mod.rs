//! The per-worker delivery engine: the worker's subscribers (`subscribers`), the fan-out of
//! what the host-wide store's delivery log holds (`fanout`), and the gathered writes with
//! their per-turn budget (`gather`). [`commit`] is the one way code changes the store and
//! wakes the host's other workers.
//!
//! Everything here runs on the worker's single event-loop thread.

mod fanout;
mod gather;
mod subscribers;

use std::cell::RefCell;
use std::collections::HashMap;

use push_stream_core::hash::PtrHash;
use push_stream_core::store::Limits;

use crate::ngx::event::{self, EventError, Internal, Source, Ticker};
use crate::ngx::thread::{eventfd, Waker};
use crate::ngx::zone::{Zone, ZoneStore, LATENCY_SLOTS, SUBSCRIBER_KINDS};
use crate::ngx::App;
use crate::ngx_log;

pub use fanout::{deliver_message, process_log, schedule_delivery, Since};
pub use gather::{gathered, leftover_first};
pub use subscribers::{
    end, forget, hold, is_subscriber, on_timer, on_write, reply_batch, send_bytes, shutdown,
    ws_body_timeout, ws_context, ws_feed, ws_in_message, ws_release, Mode, Sub, WsState,
    WS_PARTIAL_BUDGET,
};

/// The periodic timer: log catch-up, GC, registration retry.
const TICK_MS: u64 = 1000;

/// Per-worker delivery counters (copied to the zone for the metrics location).
#[derive(Default, Clone, Copy)]
pub struct Stats {
    /// Publish-to-write latency histogram (see core::metrics::LATENCY_BUCKETS) and sum (ms).
    pub latency: [u64; LATENCY_SLOTS],
    pub latency_sum_ms: u64,
    pub delivered: u64,
    pub bytes: u64,
    pub slow_closed: u64,
    pub lost: u64,
}

/// Why the worker's delivery state could not be set up.
#[derive(Debug)]
pub enum InitError {
    Event(EventError),
    Eventfd(std::io::Error),
}

impl std::fmt::Display for InitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InitError::Event(e) => write!(f, "{e}"),
            InitError::Eventfd(e) => write!(f, "eventfd() failed: {e}"),
        }
    }
}

pub struct Worker {
    /// The inbox eventfd (the background thread's wake-up, and the graceful-shutdown hook).
    inbox: Internal,
    /// The host wake-up socket (None without a zone).
    wake: Option<Internal>,
    ticker: Ticker,
    pub zone: Option<Zone>,
    pub limits: &'static Limits,
    pub slot: usize,
    pub pid: u32,
    /// This worker's place in the store's registry: None until registration succeeded.
    cursor: Option<u64>,
    /// The store generation this worker is registered in (a rebuild bumps it).
    generation: u64,
    /// A generation whose re-registration failed (zone full right after a rebuild): retried
    /// by the once-a-second tick only, not by every store operation, so a full zone logs one
    /// line per second rather than one per operation.
    rejoin_failed: Option<u64>,
    subs: HashMap<usize, Sub, PtrHash>,
    /// Subscribers (keys) of each channel: a set, so a subscriber leaving a channel of
    /// 100 000 is O(1), not a scan.
    by_channel: HashMap<Vec<u8>, std::collections::HashSet<usize, PtrHash>>,
    pub shutting_down: bool,
    pub ticks: u64,
    pub last_tick: u64,
    pub stats: Stats,
}

thread_local! {
    static WORKER: RefCell<Option<Worker>> = const { RefCell::new(None) };
}

/// Runs `f` with the worker state, if this process has one. `f` must not call anything that
/// writes to or ends a request (their cleanups re-enter here).
pub fn with<R>(f: impl FnOnce(&mut Worker) -> R) -> Option<R> {
    WORKER.with(|w| w.borrow_mut().as_mut().map(f))
}

/// Whether this worker can take subscribers: its delivery state is set up and it is
/// registered in the store. The reason when not.
pub fn accepting() -> Result<(), Refusal> {
    match with(|w| w.cursor.is_some() || w.zone.is_none()) {
        Some(true) => Ok(()),
        None | Some(false) => Err(Refusal::NoState),
    }
}

/// A graceful shutdown of this worker began: a subscriber that arrives now is ended at once
/// (footer, close frame or the long-poll's timeout answer), as the ones it held were, so its
/// client reconnects to a new worker (a browser's EventSource gives up on an error status).
pub fn shutting_down() -> bool {
    event::exiting() || with(|w| w.shutting_down).unwrap_or(false)
}

/// Why a worker refuses a subscriber (503).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Refusal {
    NoState,
}

impl Refusal {
    pub fn explain(self) -> &'static str {
        match self {
            Refusal::NoState => "Subscriptions are unavailable on this worker.",
        }
    }
}

/// Sets the worker up. Called from `init_process` when the configuration uses the module.
/// Starts no thread by itself.
pub fn init<A: App>(zone: Option<Zone>, limits: &'static Limits) -> Result<(), InitError> {
    let pid = std::process::id();
    let slot = event::process_slot();
    let efd = eventfd().map_err(InitError::Eventfd)?;
    let inbox = Internal::open::<A>(efd, Source::Inbox).map_err(InitError::Event)?;
    let wake = match zone {
        None => None,
        Some(z) => {
            let (fd, token) = event::wake_socket().map_err(InitError::Event)?;
            let c = Internal::open::<A>(fd, Source::Wake).map_err(InitError::Event)?;
            z.set_wake_token(slot, token);
            Some(c)
        }
    };
    WORKER.with(|w| {
        *w.borrow_mut() = Some(Worker {
            inbox,
            wake,
            ticker: Ticker::new::<A>(),
            zone,
            limits,
            slot,
            pid,
            cursor: None,
            generation: 0,
            rejoin_failed: None,
            subs: HashMap::default(),
            by_channel: HashMap::new(),
            shutting_down: false,
            ticks: 0,
            last_tick: 0,
            stats: Stats::default(),
        })
    });
    register();
    with(|w| w.ticker.arm(TICK_MS));
    publish_slot_stats();
    Ok(())
}

/// Registers this worker in the store (retried on every tick until it succeeds: a worker
/// that starts while the zone is full would otherwise stay unregistered for life).
fn register() {
    let Some((zone, slot, pid, limits)) = with(|w| (w.zone, w.slot, w.pid, w.limits)) else {
        return;
    };
    let Some(zone) = zone else { return };
    match zone.with_store(|s| s.register_worker(slot, pid, event::now(), limits)) {
        Some(Ok(cursor)) => {
            // Read after the operation: a rebuild happens inside the lock, before it.
            let generation = zone.generation();
            with(|w| {
                w.cursor = Some(cursor);
                w.generation = generation;
            });
        }
        Some(Err(e)) => ngx_log!(
            error,
            crate::ngx::log::Log::cycle(),
            "push_stream: worker {pid} cannot register in the shared zone ({e}): it refuses subscribers until it can (retried every second)"
        ),
        None => {}
    }
}

/// The wake-up of the worker's background thread (its eventfd).
pub fn inbox_waker() -> Option<Waker> {
    with(|w| Waker::new(w.inbox.fd()))
}

/// Asks for the inbox handler to run again on the next turn (work is left).
pub fn inbox_next_turn() {
    with(|w| w.inbox.post_next());
}

/// Runs `f` on the host-wide store, then makes every worker of the host (this one on its
/// next turn, after the running handler answered) deliver what `f` added to the delivery
/// log. The one way code changes the store. None when the zone is not set up.
#[track_caller]
pub fn commit<R>(zone: Zone, f: impl FnOnce(&mut ZoneStore) -> R) -> Option<R> {
    // Room for the registered workers is taken before locking (nothing inside the lock may
    // abort on a failed allocation); workers in slots beyond `MAX_SLOTS` have no wake token
    // anyway (their tick catches up).
    let mut slots: Vec<(usize, u32)> = Vec::with_capacity(crate::ngx::zone::MAX_SLOTS);
    let r = zone.with_store(|s| {
        let r = f(s);
        s.for_each_worker(|slot, pid| {
            if slots.len() < slots.capacity() {
                slots.push((slot, pid));
            }
        });
        r
    })?;
    schedule_delivery();
    wake_others(zone, &slots);
    rejoin_if_rebuilt();
    Some(r)
}

/// When the store was rebuilt (a worker died inside a change; see `ngx::zone`), registers
/// this worker again and gives back its subscriber counts from its own registry; the first
/// worker of the host to notice wakes the others so they do the same at once. After a failed
/// attempt only [`tick`] tries again (see [`rejoin_after_failure`]).
pub fn rejoin_if_rebuilt() {
    rejoin(false);
}

/// Whether a re-registration attempt for store `generation` should run now: always from the
/// tick; from any other caller only while no attempt for this generation has failed.
fn rejoin_after_failure(from_tick: bool, failed: Option<u64>, generation: u64) -> bool {
    from_tick || failed != Some(generation)
}

fn rejoin(from_tick: bool) {
    let Some((Some(zone), known, Some(cursor), failed)) =
        with(|w| (w.zone, w.generation, w.cursor, w.rejoin_failed))
    else {
        return;
    };
    let generation = zone.generation();
    if generation == known || !rejoin_after_failure(from_tick, failed, generation) {
        return;
    }
    let Some((slot, pid, limits, counts, requests)) = with(|w| {
        let counts: Vec<(Vec<u8>, u64)> = w
            .by_channel
            .iter()
            .map(|(id, subs)| (id.clone(), subs.len() as u64))
            .collect();
        let requests = w.subs.values().filter(|s| s.counted).count() as u64;
        (w.slot, w.pid, w.limits, counts, requests)
    }) else {
        return;
    };
    let now = event::now();
    let done = zone.with_store(|s| {
        s.rejoin_worker(slot, pid, Some(cursor), requests, now, limits)?;
        let mut refused = 0u64;
        for (id, n) in &counts {
            if s.restore_subscribers(id, slot, *n, now, limits).is_err() {
                refused += n;
            }
        }
        Ok::<u64, push_stream_core::store::StoreError>(refused)
    });
    let given: u64 = counts.iter().map(|(_, n)| n).sum();
    match done {
        Some(Ok(refused)) => {
            let generation = zone.generation();
            with(|w| {
                w.generation = generation;
                w.rejoin_failed = None;
            });
            ngx_log!(
                warn,
                crate::ngx::log::Log::cycle(),
                "push_stream: worker {pid} registered again in the rebuilt shared store: {} subscriber(s) of {} channel(s) given back{}",
                given - refused,
                counts.len(),
                if refused > 0 {
                    format!(", {refused} not counted (shared memory full)")
                } else {
                    String::new()
                }
            );
        }
        // Retried by the tick only.
        Some(Err(e)) => {
            with(|w| w.rejoin_failed = Some(generation));
            ngx_log!(
                error,
                crate::ngx::log::Log::cycle(),
                "push_stream: worker {pid} cannot register in the rebuilt shared store ({e}); retried every second"
            )
        }
        None => {}
    }
    if zone.claim_rebuild_wake(generation) {
        WORKER.with(|w| {
            let w = w.borrow();
            let Some(from) = w.as_ref().and_then(|w| w.wake.as_ref()) else {
                return;
            };
            for (s, token) in zone.wake_tokens() {
                if s != slot {
                    event::send_wake(from, token);
                }
            }
        });
    }
    schedule_delivery();
}

/// Pokes every other registered worker (by the token its slot published).
fn wake_others(zone: Zone, slots: &[(usize, u32)]) {
    let me = std::process::id();
    WORKER.with(|w| {
        let w = w.borrow();
        let Some(from) = w.as_ref().and_then(|w| w.wake.as_ref()) else {
            return;
        };
        for &(slot, pid) in slots {
            if pid == me {
                continue;
            }
            let token = zone.wake_token(slot);
            if token != 0 {
                event::send_wake(from, token);
            }
        }
    });
}

/// Pokes the worker in process slot `slot` (not this one).
pub fn wake_slot(zone: Zone, slot: usize) {
    let me = with(|w| w.slot);
    if me == Some(slot) {
        return;
    }
    let token = zone.wake_token(slot);
    WORKER.with(|w| {
        if let (Some(from), true) = (
            w.borrow().as_ref().and_then(|w| w.wake.as_ref()),
            token != 0,
        ) {
            event::send_wake(from, token);
        }
    });
}

/// The periodic timer: catch up with the log, retry registration, GC. (The worker's
/// subscriber count in the store needs no census: it changes with each subscriber, in the
/// critical sections that subscribe and unsubscribe it.)
pub fn tick() {
    if with(|w| w.cursor.is_none()).unwrap_or(false) {
        register();
    }
    rejoin(true);
    process_log();
    let Some((zone, limits)) = with(|w| (w.zone, w.limits)) else {
        return;
    };
    publish_slot_stats();
    if let Some(zone) = zone {
        let t = event::now();
        if zone.claim_gc(t) {
            let report = zone.with_store(|s| s.gc(t, limits, &event::pid_alive));
            if let Some(r) = report.filter(|r| !r.dead_workers.is_empty()) {
                ngx_log!(
                    warn,
                    crate::ngx::log::Log::cycle(),
                    "push_stream: workers {:?} died without unregistering; their share of the store was released",
                    r.dead_workers
                );
            }
        }
    }
    if !event::exiting() {
        with(|w| w.ticker.arm(TICK_MS));
    }
}

/// This worker's nginx process slot (its key in the store's per-worker counts).
pub fn slot() -> usize {
    with(|w| w.slot).unwrap_or(0)
}

/// This worker's slot and pid (its entry in the store's registry of workers).
pub fn slot_pid() -> (usize, u32) {
    with(|w| (w.slot, w.pid)).unwrap_or((0, std::process::id()))
}

/// Copies this worker's delivery counters into its slot of the zone (read by the metrics
/// location).
pub fn publish_slot_stats() {
    use std::sync::atomic::Ordering::Relaxed;
    let Some((zone, slot, pid, stats, modes)) = with(|w| {
        let mut modes = [0u64; SUBSCRIBER_KINDS];
        for s in w.subs.values() {
            modes[s.metrics_kind()] += 1;
        }
        (w.zone, w.slot, w.pid, w.stats, modes)
    }) else {
        return;
    };
    let Some(st) = zone.and_then(|z| z.slot_stats(slot)) else {
        return;
    };
    st.pid.store(pid as u64, Relaxed);
    for (i, n) in modes.iter().enumerate() {
        st.subscribers[i].store(*n, Relaxed);
    }
    st.delivered.store(stats.delivered, Relaxed);
    st.bytes.store(stats.bytes, Relaxed);
    st.slow_closed.store(stats.slow_closed, Relaxed);
    st.detached
        .store(crate::ngx::held::detached().1 as u64, Relaxed);
    st.lost.store(stats.lost, Relaxed);
    for (i, n) in stats.latency.iter().enumerate() {
        st.latency[i].store(*n, Relaxed);
    }
    st.latency_sum_ms.store(stats.latency_sum_ms, Relaxed);
}

/// `exit_process`, after `shutdown` and after the background thread was stopped (`joined`:
/// it finished, so its eventfd can be closed): leave the store, close the connections.
pub fn exit(joined: bool) {
    crate::ngx::held::run_closes();
    crate::ngx::held::close_all_detached();
    let Some(w) = WORKER.with(|w| w.borrow_mut().take()) else {
        return;
    };
    if let (Some(zone), Some(_)) = (w.zone, w.cursor) {
        zone.with_store(|s| s.unregister_worker(w.slot, w.pid, event::now(), w.limits));
        zone.set_wake_token(w.slot, 0);
    }
    if let Some(c) = w.wake {
        c.close();
    }
    if joined {
        w.inbox.close();
    } else {
        ngx_log!(
            alert,
            crate::ngx::log::Log::cycle(),
            "push_stream: the background thread did not stop in time; leaving its eventfd open"
        );
        w.inbox.leak();
    }
}
