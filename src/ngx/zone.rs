//! The shared memory zone (`push_stream_shared_memory_size`) that holds the host-wide store.
//!
//! The zone is an nginx slab pool mapped at the same address in every worker. It holds a
//! header and a `push_stream_core::store::Store` whose collections allocate from the slab
//! (through [`ZoneAlloc`]). Every access goes through [`with_store`], which holds the slab's
//! mutex for the duration of the closure and never while writing to a socket. nginx's master
//! force-unlocks that mutex if a worker dies holding it.
//!
//! The zone survives `nginx -s reload` when its name and size are unchanged; a size change on
//! reload is ignored with the C module's warning, so the data is kept.
//!
//! **Crash consistency.** A worker can die while it holds the mutex (`kill -9`, the OOM
//! killer, an abort) or a store operation can panic, leaving the store half changed. Every
//! operation marks the header busy (pid and slot) after locking and clears the mark just
//! before unlocking; a panic inside marks the store poisoned. The next process that takes the
//! lock and finds either mark rebuilds the store from nothing instead of using it: the slab is
//! re-initialised (the header is its first allocation, so it keeps its address), a new empty
//! store continues from the figures copied out after the last operation that completed
//! ([`Carry`]: sequence, tags, published count, uptime), the generation is bumped so every
//! worker re-registers and gives back its subscribers, and one `[alert]` says what was lost.

use core::alloc::Layout;
use core::ffi::c_void;
use core::ptr::{self, NonNull};

use allocator_api2::alloc::{AllocError, Allocator};
use allocator_api2::boxed::Box as ZBox;
use std::sync::atomic::{AtomicU64, Ordering};

use nginx_sys::{
    ngx_cycle, ngx_int_t, ngx_shared_memory_add, ngx_shm_zone_t, ngx_shmtx_lock, ngx_shmtx_unlock,
    ngx_slab_alloc_locked, ngx_slab_free_locked, ngx_slab_pool_t, ngx_str_t, ngx_time, NGX_ERROR,
    NGX_OK,
};
use push_stream_core::store::recovery::{POISONED, UNUSABLE};
use push_stream_core::store::{Carry, Found, Limits, Store};

use super::conf::{Conf, Level};
use super::guard::guard;
use super::log;

/// Allocates from the zone's slab pool. Only used while the pool's mutex is held.
#[derive(Clone, Copy)]
pub struct ZoneAlloc(NonNull<ngx_slab_pool_t>);

// SAFETY: the slab pool lives in shared memory for the life of the zone; allocation happens
// only under its mutex (see with_store).
unsafe impl Allocator for ZoneAlloc {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if layout.size() == 0 {
            let p = NonNull::new(layout.align() as *mut u8).ok_or(AllocError)?;
            return Ok(NonNull::slice_from_raw_parts(p, 0));
        }
        // The slab aligns chunks to their size class (powers of two, pages above that).
        let size = layout.size().max(layout.align());
        // SAFETY: the caller holds the pool mutex.
        let p = unsafe { ngx_slab_alloc_locked(self.0.as_ptr(), size) } as *mut u8;
        let p = NonNull::new(p).ok_or(AllocError)?;
        if !(p.as_ptr() as usize).is_multiple_of(layout.align()) {
            // SAFETY: just allocated from this pool.
            unsafe { ngx_slab_free_locked(self.0.as_ptr(), p.as_ptr() as *mut c_void) };
            return Err(AllocError);
        }
        Ok(NonNull::slice_from_raw_parts(p, layout.size()))
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if layout.size() != 0 {
            ngx_slab_free_locked(self.0.as_ptr(), ptr.as_ptr() as *mut c_void);
        }
    }
}

pub type ZoneStore = Store<ZoneAlloc>;

/// The first thing in the zone.
#[repr(C)]
pub struct ZoneHeader {
    pub magic: u64,
    /// When the zone was created (unix seconds): `uptime` survives reloads.
    pub created: i64,
    pub store: *mut ZoneStore,
    /// The slab pool (at the zone's start) whose mutex guards the store.
    pub pool: *mut ngx_slab_pool_t,
    /// Unix second of the last GC run, so that one worker at a time does it.
    pub last_gc: i64,
    /// Per-worker counters, indexed by nginx process slot, written by each worker for itself
    /// (lock-free) and read by the metrics location.
    pub slots: [SlotStats; MAX_SLOTS],
    /// The wake-up token of the worker in each process slot (0: none), written by that worker
    /// at start: the name of its wake-up socket, which only the host's workers can read.
    /// (Workers in slots beyond `MAX_SLOTS` are not woken: their 1 s timer catches up.)
    pub wake: [[AtomicU64; 2]; MAX_SLOTS],
    /// The publish epoch of the worker in each slot (random per worker start, 0: none) and
    /// the highest publish token of that epoch this host's store has consumed back from the
    /// broker (read-your-writes).
    pub publish_epoch: [AtomicU64; MAX_SLOTS],
    pub stored_up_to: [AtomicU64; MAX_SLOTS],
    /// The process inside a store operation (pid, 0: none; and its process slot): set after
    /// locking, cleared before unlocking. Found set by the next locker, its owner died inside
    /// (nginx's master force-unlocked the mutex).
    pub busy_pid: AtomicU64,
    pub busy_slot: AtomicU64,
    /// A store operation panicked: the store may be half changed.
    pub poisoned: AtomicU64,
    /// Bumped by every rebuild: a worker that sees it change registers again.
    pub generation: AtomicU64,
    /// The generation whose rebuild the host's workers were woken for.
    pub woken_generation: AtomicU64,
    /// The last generation whose store should be refilled from the broker's stream, and the
    /// last one a consuming worker took the refill of.
    pub refill_wanted: AtomicU64,
    pub refill_taken: AtomicU64,
    /// Rebuilds since the zone was created, and the unix second of the last one.
    pub recoveries: AtomicU64,
    pub last_recovery: AtomicU64,
    /// The store's figures after the last operation that completed (written under the mutex).
    pub carry: Carry,
    /// Channels and stored messages then (only to say what a rebuild lost).
    pub channels: u64,
    pub stored: u64,
}

/// Latency histogram buckets (core's bounds and +Inf).
pub const LATENCY_SLOTS: usize = push_stream_core::metrics::LATENCY_BUCKETS.len() + 1;
/// Subscriber kinds counted per worker: streaming, EventSource, long-polling, WebSocket.
pub const SUBSCRIBER_KINDS: usize = 4;

/// How many process slots publish their counters (workers in slots beyond are not reported).
pub const MAX_SLOTS: usize = 128;

/// One worker's counters in the zone. Plain atomics: the owner stores, anyone loads.
#[repr(C)]
#[derive(Default)]
pub struct SlotStats {
    pub pid: std::sync::atomic::AtomicU64,
    pub subscribers: [std::sync::atomic::AtomicU64; SUBSCRIBER_KINDS],
    pub delivered: std::sync::atomic::AtomicU64,
    pub bytes: std::sync::atomic::AtomicU64,
    pub slow_closed: std::sync::atomic::AtomicU64,
    /// Subscribers detached from their requests now (`push_stream_detached_subscribers`).
    pub detached: std::sync::atomic::AtomicU64,
    pub lost: std::sync::atomic::AtomicU64,
    pub amqp_connected: std::sync::atomic::AtomicU64,
    pub amqp_in: std::sync::atomic::AtomicU64,
    pub amqp_out: std::sync::atomic::AtomicU64,
    pub amqp_reconnects: std::sync::atomic::AtomicU64,
    pub inbox_depth: std::sync::atomic::AtomicU64,
    /// Publish-to-write latency histogram (per bucket, not cumulative) and its sum (ms).
    pub latency: [std::sync::atomic::AtomicU64; LATENCY_SLOTS],
    pub latency_sum_ms: std::sync::atomic::AtomicU64,
    /// How long this worker held the zone's mutex per store operation: a histogram (per
    /// bucket, see `core::metrics::LOCK_HOLD_BUCKETS`), its sum and the longest (ns).
    pub lock_hold: [std::sync::atomic::AtomicU64; LOCK_HOLD_SLOTS],
    pub lock_hold_sum_ns: std::sync::atomic::AtomicU64,
    pub lock_hold_max_ns: std::sync::atomic::AtomicU64,
}

/// Lock-hold histogram buckets (core's bounds and +Inf).
pub const LOCK_HOLD_SLOTS: usize = push_stream_core::metrics::LOCK_HOLD_BUCKETS.len() + 1;

const MAGIC: u64 = 0x7073_7472_6561_6d38; // "pstream8"

/// The limits a rebuilt store is made with (this process's configuration; set by
/// [`Zone::configure`] in the master, inherited by the workers it forks).
static REBUILD_LIMITS: std::sync::Mutex<Option<Limits>> = std::sync::Mutex::new(None);

/// What a zone is initialised with, in the declaring configuration's pool (dropped with it).
#[repr(C)]
struct ZoneSpec {
    /// 0: never the header's magic (both sit first in what the zone's data points at).
    not_magic: u64,
    /// The store's limits ([`Zone::configure`]).
    limits: Limits,
}

unsafe extern "C" fn drop_spec(data: *mut c_void) {
    ptr::drop_in_place(data as *mut ZoneSpec);
}

/// Declares the zone `name` of `size` bytes (already validated). On a reload that changes
/// the size, the running size is kept (with the C module's warning), so the data is kept.
/// [`Zone::configure`] gives it the store's limits once the whole `http{}` block is read.
pub fn add(cf: Conf, name: &[u8], size: usize) -> Result<Zone, String> {
    let tag = core::ptr::addr_of!(ZONE_TAG) as *mut c_void;
    let mut size = size;
    // SAFETY: during a reload ngx_cycle is the running cycle: keep its zone's size.
    if let Some(old) = unsafe { existing_size(name, tag) } {
        if old != size {
            cf.error(
                Level::Warn,
                &format!(
                    "Cannot change memory area size without restart, ignoring change on zone: {}",
                    String::from_utf8_lossy(name)
                ),
            );
            size = old;
        }
    }
    // SAFETY: the name is copied into the configuration pool; nginx owns the zone record.
    unsafe {
        let cfp = cf.raw();
        let data = nginx_sys::ngx_pnalloc((*cfp).pool, name.len()) as *mut u8;
        if data.is_null() {
            return Err("push stream module: out of memory".into());
        }
        ptr::copy_nonoverlapping(name.as_ptr(), data, name.len());
        let mut n = ngx_str_t {
            len: name.len(),
            data,
        };
        let zone = ngx_shared_memory_add(cfp, &mut n, size, tag);
        if zone.is_null() {
            return Err(format!(
                "push stream module: cannot create shared memory zone \"{}\"",
                String::from_utf8_lossy(name)
            ));
        }
        if !(*zone).data.is_null() {
            return Err(format!(
                "push stream module: shared memory zone \"{}\" is already used by another http block",
                String::from_utf8_lossy(name)
            ));
        }
        let cln = nginx_sys::ngx_pool_cleanup_add((*cfp).pool, core::mem::size_of::<ZoneSpec>());
        if cln.is_null() {
            return Err("push stream module: out of memory".into());
        }
        let spec = (*cln).data as *mut ZoneSpec;
        ptr::write(
            spec,
            ZoneSpec {
                not_magic: 0,
                limits: Limits::default(),
            },
        );
        (*cln).handler = Some(drop_spec);
        (*zone).init = Some(init_zone);
        (*zone).data = spec as *mut c_void;
        Ok(Zone(NonNull::new_unchecked(zone)))
    }
}

/// The tag of the module's zones.
static ZONE_TAG: u8 = 0;

unsafe fn existing_size(name: &[u8], tag: *mut c_void) -> Option<usize> {
    if ngx_cycle.is_null() {
        return None;
    }
    let list = &(*ngx_cycle).shared_memory;
    let mut part = &list.part as *const nginx_sys::ngx_list_part_t;
    while !part.is_null() {
        let zones = (*part).elts as *const ngx_shm_zone_t;
        for i in 0..(*part).nelts {
            let z = &*zones.add(i);
            if z.tag == tag && z.shm.name.as_bytes() == name {
                return Some(z.shm.size);
            }
        }
        part = (*part).next;
    }
    None
}

unsafe extern "C" fn init_zone(zone: *mut ngx_shm_zone_t, data: *mut c_void) -> ngx_int_t {
    guard(
        log::Log::cycle(),
        "zone init",
        NGX_ERROR as ngx_int_t,
        || {
            let zone = &mut *zone;
            let spec = &*(zone.data as *const ZoneSpec);
            let limits = &spec.limits;
            let name = String::from_utf8_lossy(zone.shm.name.as_bytes()).into_owned();
            let sp = zone.shm.addr as *mut ngx_slab_pool_t;
            // The store reports a full zone itself (a clear error and a log line of ours): the
            // slab's own "ngx_slab_alloc() failed: no memory" at crit would only add noise.
            (*sp).set_log_nomem(0);
            if !data.is_null() {
                // Reload: the previous cycle's zone, same name and size, is reused as it is.
                zone.data = data;
                let hdr = data as *mut ZoneHeader;
                if let Some(events) = &limits.events_channel_id {
                    // An events channel configured only now gets created (the C module crashed here).
                    let alloc_ok = with_header(hdr, |s| {
                        s.get_or_create(events, ngx_time() as i64, limits).is_ok()
                    }) == Some(true);
                    if !alloc_ok {
                        log::warn(
                            log::Log::cycle(),
                            "push_stream: cannot create the events channel: shared memory full",
                        );
                    }
                }
                return NGX_OK as ngx_int_t;
            }
            let alloc = ZoneAlloc(NonNull::new(sp).expect("slab pool"));
            let now = ngx_time() as i64;
            ngx_shmtx_lock(&mut (*sp).mutex);
            let made = (|| {
                // The header is the slab's first allocation: a rebuild re-initialises the slab
                // and allocates it first again, at the same address (see `rebuild`).
                let hdr = ngx_slab_alloc_locked(sp, core::mem::size_of::<ZoneHeader>())
                    as *mut ZoneHeader;
                if hdr.is_null() {
                    return None;
                }
                let store = Store::new_in(alloc, now, limits).ok()?;
                let store = ZBox::try_new_in(store, alloc).ok()?;
                // All zero is a valid ZoneHeader (atomics, integers, null pointers); then the fields.
                core::ptr::write_bytes(hdr as *mut u8, 0, core::mem::size_of::<ZoneHeader>());
                (*hdr).magic = MAGIC;
                (*hdr).created = now;
                (*hdr).carry = store.carry();
                (*hdr).store = ZBox::into_raw(store);
                (*hdr).pool = sp;
                Some(hdr)
            })();
            ngx_shmtx_unlock(&mut (*sp).mutex);
            let Some(hdr) = made else {
                log::alert(
                    log::Log::cycle(),
                    &format!("push_stream: zone \"{name}\" is too small for the store"),
                );
                return NGX_ERROR as ngx_int_t;
            };
            (*sp).data = hdr as *mut c_void;
            zone.data = hdr as *mut c_void;
            log::info(
                log::Log::cycle(),
                &format!(
                    "Using {}KiB of shared memory for push stream module on zone: {}",
                    zone.shm.size / 1024,
                    name
                ),
            );
            NGX_OK as ngx_int_t
        },
    )
}

/// Holds the zone's mutex; released on drop (also while unwinding from a panic, which marks
/// the store poisoned first). Clears the busy mark and records how long it was held.
struct Locked {
    hdr: *mut ZoneHeader,
    since: std::time::Instant,
    /// The store operation's place in the code (for the slow-hold line).
    at: &'static std::panic::Location<'static>,
}

/// A lock hold at least this long is logged at warn (after unlocking) with the operation's
/// place in the code, at most once a second per worker.
const SLOW_HOLD_NS: u64 = 100_000_000;

thread_local! {
    /// The second of this worker's last slow-hold line.
    static SLOW_LOGGED: std::cell::Cell<i64> = const { std::cell::Cell::new(i64::MIN) };
}

/// Says (after unlocking) that one store operation held the zone lock `ns` long: a long
/// operation, or this worker descheduled while it held the lock (a busy machine); either way
/// every other worker of the host waited that long.
fn slow_hold(ns: u64, at: &std::panic::Location<'static>) {
    let now = super::event::now();
    if SLOW_LOGGED.with(|l| l.replace(now)) == now {
        return;
    }
    log::warn(
        log::Log::cycle(),
        &format!(
            "push_stream: one operation held the shared zone's lock {} ms ({}:{}); the other workers of the host waited",
            ns / 1_000_000,
            at.file(),
            at.line()
        ),
    );
}

impl Drop for Locked {
    fn drop(&mut self) {
        // SAFETY: locked in with_header; the header lives as long as the zone.
        unsafe {
            let h = &*self.hdr;
            if std::thread::panicking() {
                let _ =
                    h.poisoned
                        .compare_exchange(0, POISONED, Ordering::Relaxed, Ordering::Relaxed);
            }
            h.busy_pid.store(0, Ordering::Relaxed);
            let held = self.since.elapsed().as_nanos() as u64;
            ngx_shmtx_unlock(&mut (*h.pool).mutex);
            record_hold(h, held);
            if held >= SLOW_HOLD_NS && !std::thread::panicking() && super::event::is_worker() {
                slow_hold(held, self.at);
            }
        }
    }
}

/// Adds one lock hold to this worker's histogram (workers only: the master's few operations
/// at start-up would land in some worker's slot).
fn record_hold(h: &ZoneHeader, ns: u64) {
    if !super::event::is_worker() {
        return;
    }
    let Some(s) = h.slots.get(super::event::process_slot()) else {
        return;
    };
    let b = push_stream_core::metrics::lock_hold_bucket(ns);
    s.lock_hold[b].fetch_add(1, Ordering::Relaxed);
    s.lock_hold_sum_ns.fetch_add(ns, Ordering::Relaxed);
    s.lock_hold_max_ns.fetch_max(ns, Ordering::Relaxed);
}

/// Runs `f` on the store under the mutex, rebuilding the store first when the last
/// operation did not complete. None when the store cannot be rebuilt (never expected: the
/// empty store fitted when the zone was made).
#[track_caller]
unsafe fn with_header<R>(hdr: *mut ZoneHeader, f: impl FnOnce(&mut ZoneStore) -> R) -> Option<R> {
    let pool = (*hdr).pool;
    ngx_shmtx_lock(&mut (*pool).mutex);
    let locked = Locked {
        hdr,
        since: std::time::Instant::now(),
        at: std::panic::Location::caller(),
    };
    let h = &*hdr;
    let mut report: Option<Result<String, String>> = None;
    match Found::read(
        h.busy_pid.load(Ordering::Relaxed),
        h.busy_slot.load(Ordering::Relaxed),
        h.poisoned.load(Ordering::Relaxed),
    ) {
        Found::Clean => {}
        // A rebuild failed before (said once): the store stays unusable.
        Found::Unusable => return None,
        found => report = Some(rebuild(hdr, found)),
    }
    let r = if matches!(report, Some(Err(_))) {
        None
    } else {
        h.busy_slot
            .store(super::event::process_slot() as u64, Ordering::Relaxed);
        h.busy_pid
            .store(u64::from(std::process::id()), Ordering::Relaxed);
        let store = &mut *(*hdr).store;
        let r = f(store);
        // The operation completed: this is the consistent state a rebuild continues from.
        let c = store.counters();
        (*hdr).carry = store.carry();
        (*hdr).channels = c.channels + c.wildcard_channels;
        (*hdr).stored = c.stored_messages;
        Some(r)
    };
    drop(locked);
    // Logged once the mutex is released.
    match report {
        Some(Ok(msg)) => log::alert(log::Log::cycle(), &msg),
        Some(Err(msg)) => log::alert(log::Log::cycle(), &msg),
        None => {}
    }
    r
}

/// Rebuilds the store after an operation that did not complete (called with the mutex held
/// and the busy or poisoned mark set). Nothing of the damaged store is read: the slab is
/// re-initialised and a new store continues from the header's [`Carry`]. The message to log
/// (after unlocking) says what happened.
unsafe fn rebuild(hdr: *mut ZoneHeader, found: Found) -> Result<String, String> {
    let h = &*hdr;
    let sp = h.pool;
    let name = "push_stream";
    // The header, copied to this process's heap while the slab is re-initialised.
    let size = core::mem::size_of::<ZoneHeader>();
    let mut saved = std::vec::Vec::<u8>::new();
    if saved.try_reserve_exact(size).is_err() {
        return Err(format!(
            "{name}: the shared store must be rebuilt but this worker cannot allocate {size} bytes; another worker will try"
        ));
    }
    saved.resize(size, 0);
    ptr::copy_nonoverlapping(hdr as *const u8, saved.as_mut_ptr(), size);
    nginx_sys::ngx_slab_init(sp);
    (*sp).set_log_nomem(0);
    let again = ngx_slab_alloc_locked(sp, size) as *mut ZoneHeader;
    // The header goes back where it was, whatever happens next.
    ptr::copy_nonoverlapping(saved.as_ptr(), hdr as *mut u8, size);
    drop(saved);
    let h = &*hdr;
    if again != hdr {
        // Cannot happen (a fresh slab gives its first pages first); the store stays marked
        // and unusable rather than corrupt.
        h.poisoned.store(UNUSABLE, Ordering::Relaxed);
        return Err(format!(
            "{name}: the shared store could not be rebuilt (its header would move); the module's shared zone is unusable until nginx restarts"
        ));
    }
    let limits = REBUILD_LIMITS
        .lock()
        .map(|l| l.clone().unwrap_or_default())
        .unwrap_or_default();
    let alloc = ZoneAlloc(NonNull::new(sp).expect("slab pool"));
    let now = ngx_time() as i64;
    let carry = (*hdr).carry;
    let made = Store::new_in(alloc, now, &limits).ok().and_then(|mut s| {
        s.carry_over(&carry);
        ZBox::try_new_in(s, alloc).ok()
    });
    let Some(store) = made else {
        h.poisoned.store(UNUSABLE, Ordering::Relaxed);
        return Err(format!(
            "{name}: the shared store could not be rebuilt (no memory for an empty store); the module's shared zone is unusable until nginx restarts"
        ));
    };
    (*hdr).store = ZBox::into_raw(store);
    let (lost_channels, lost_stored) = ((*hdr).channels, (*hdr).stored);
    (*hdr).channels = 0;
    (*hdr).stored = 0;
    h.busy_pid.store(0, Ordering::Relaxed);
    h.poisoned.store(0, Ordering::Relaxed);
    let generation = h.generation.fetch_add(1, Ordering::AcqRel) + 1;
    h.refill_wanted.store(generation, Ordering::Release);
    let n = h.recoveries.fetch_add(1, Ordering::Relaxed) + 1;
    h.last_recovery.store(now.max(0) as u64, Ordering::Relaxed);
    Ok(found.rebuilt_line(n, generation, lost_channels, lost_stored))
}

/// The module's shared zone: a typed handle to a zone declared by [`add`]. Its methods
/// check that the zone was initialised (its header's magic) before using it.
#[derive(Clone, Copy)]
pub struct Zone(NonNull<ngx_shm_zone_t>);

impl Zone {
    /// Gives the zone the store's limits (from `init_main_conf`, before nginx initialises
    /// the zone).
    pub fn configure(self, limits: Limits) {
        if let Ok(mut l) = REBUILD_LIMITS.lock() {
            *l = Some(limits.clone());
        }
        // SAFETY: before init_zone, the zone's data is the spec `add` put there.
        unsafe {
            let z = self.0.as_ptr();
            if self.header().is_none() && !(*z).data.is_null() {
                (*((*z).data as *mut ZoneSpec)).limits = limits;
            }
        }
    }

    fn header(self) -> Option<*mut ZoneHeader> {
        // SAFETY: a zone declared by `add`: its data is our spec until init_zone replaces it
        // with the header, whose magic is checked.
        unsafe {
            let h = (*self.0.as_ptr()).data as *mut ZoneHeader;
            if h.is_null() || (*h).magic != MAGIC {
                return None;
            }
            Some(h)
        }
    }

    /// Runs `f` with exclusive access to the host-wide store, or returns None when the zone
    /// is not initialised. Holds the zone's mutex for the duration of `f` only: `f` must not
    /// write to sockets or log.
    #[track_caller]
    pub fn with_store<R>(self, f: impl FnOnce(&mut ZoneStore) -> R) -> Option<R> {
        let hdr = self.header()?;
        // SAFETY: the mutex serialises access between workers; this runs on a worker's
        // event-loop thread.
        unsafe { with_header(hdr, f) }
    }

    /// The store's generation (changes when a rebuild replaced it).
    pub fn generation(self) -> u64 {
        // SAFETY: the header lives as long as the zone; the word is atomic.
        self.header()
            .map_or(0, |h| unsafe { (*h).generation.load(Ordering::Acquire) })
    }

    /// True for the one caller per `generation` that should wake the host's workers.
    pub fn claim_rebuild_wake(self, generation: u64) -> bool {
        // SAFETY: as above.
        self.header().is_some_and(|h| unsafe {
            (*h).woken_generation
                .fetch_max(generation, Ordering::AcqRel)
                < generation
        })
    }

    /// True for the one consuming worker that takes the refill of the last rebuilt store
    /// (a generation not refilled yet).
    pub fn claim_refill(self) -> bool {
        // SAFETY: the header lives as long as the zone; the words are atomics.
        self.header().is_some_and(|h| unsafe {
            let wanted = (*h).refill_wanted.load(Ordering::Acquire);
            wanted != 0 && (*h).refill_taken.fetch_max(wanted, Ordering::AcqRel) < wanted
        })
    }

    /// Rebuilds since the zone was created, and the unix second of the last one.
    pub fn recoveries(self) -> (u64, u64) {
        // SAFETY: as above.
        self.header().map_or((0, 0), |h| unsafe {
            (
                (*h).recoveries.load(Ordering::Relaxed),
                (*h).last_recovery.load(Ordering::Relaxed),
            )
        })
    }

    /// Every process slot's wake-up token (0: none).
    pub fn wake_tokens(self) -> Vec<(usize, u128)> {
        (0..MAX_SLOTS)
            .map(|slot| (slot, self.wake_token(slot)))
            .filter(|(_, t)| *t != 0)
            .collect()
    }

    /// Test hook: takes the mutex, marks the store busy, runs `f` (half of a mutation), then,
    /// when `scribble`, overwrites the store's own record with garbage, and kills this worker
    /// with SIGKILL while it holds the mutex.
    #[cfg(feature = "test-hooks")]
    pub fn die_inside(self, scribble: bool, f: impl FnOnce(&mut ZoneStore)) -> ! {
        if let Some(hdr) = self.header() {
            // SAFETY: as with_header, but the mutex is never released: the process dies.
            unsafe {
                let pool = (*hdr).pool;
                ngx_shmtx_lock(&mut (*pool).mutex);
                (*hdr)
                    .busy_slot
                    .store(super::event::process_slot() as u64, Ordering::Relaxed);
                (*hdr)
                    .busy_pid
                    .store(u64::from(std::process::id()), Ordering::Relaxed);
                let store = (*hdr).store;
                f(&mut *store);
                if scribble {
                    ptr::write_bytes(store as *mut u8, 0xA5, core::mem::size_of::<ZoneStore>());
                }
            }
        }
        // SAFETY: kills this process.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }

    /// The counters of process slot `slot`, if it has a place.
    pub fn slot_stats(self, slot: usize) -> Option<&'static SlotStats> {
        // SAFETY: the header lives as long as the zone; the array is only accessed atomically.
        self.header().and_then(|h| unsafe { (*h).slots.get(slot) })
    }

    /// Every slot's counters.
    pub fn all_slot_stats(self) -> &'static [SlotStats] {
        // SAFETY: as above.
        self.header()
            .map(|h| unsafe { &(&(*h).slots)[..] })
            .unwrap_or(&[])
    }

    /// Publishes this worker's wake-up token in its slot.
    pub fn set_wake_token(self, slot: usize, token: u128) {
        // SAFETY: the header lives as long as the zone; the tokens are atomics.
        if let Some(w) = self.header().and_then(|h| unsafe { (*h).wake.get(slot) }) {
            w[0].store(token as u64, Ordering::Release);
            w[1].store((token >> 64) as u64, Ordering::Release);
        }
    }

    /// The wake-up token of the worker in `slot` (0: none).
    pub fn wake_token(self, slot: usize) -> u128 {
        self.header()
            // SAFETY: as above.
            .and_then(|h| unsafe { (*h).wake.get(slot) })
            .map(|w| {
                w[0].load(Ordering::Acquire) as u128 | (w[1].load(Ordering::Acquire) as u128) << 64
            })
            .unwrap_or(0)
    }

    /// Starts a worker's publish epoch in its slot (its consumed-back mark starts at 0).
    pub fn set_publish_epoch(self, slot: usize, epoch: u64) {
        // SAFETY: the header lives as long as the zone; the words are atomics.
        if let Some(h) = self.header() {
            unsafe {
                if let (Some(e), Some(m)) =
                    ((*h).publish_epoch.get(slot), (*h).stored_up_to.get(slot))
                {
                    m.store(0, Ordering::Release);
                    e.store(epoch, Ordering::Release);
                }
            }
        }
    }

    /// The publish epoch of the worker in `slot` (0: none).
    pub fn publish_epoch(self, slot: usize) -> u64 {
        // SAFETY: as above.
        self.header()
            .and_then(|h| unsafe { (*h).publish_epoch.get(slot) })
            .map_or(0, |e| e.load(Ordering::Acquire))
    }

    /// Records that the store has consumed back the publish `token` of `slot`'s `epoch`
    /// (ignored when that slot's epoch changed: a later worker there).
    pub fn raise_stored_up_to(self, slot: usize, epoch: u64, token: u64) {
        // SAFETY: as above.
        if let Some(h) = self.header() {
            unsafe {
                if let (Some(e), Some(m)) =
                    ((*h).publish_epoch.get(slot), (*h).stored_up_to.get(slot))
                {
                    if e.load(Ordering::Acquire) == epoch && epoch != 0 {
                        m.fetch_max(token, Ordering::AcqRel);
                    }
                }
            }
        }
    }

    /// The highest publish token of `slot` the store has consumed back.
    pub fn stored_up_to(self, slot: usize) -> u64 {
        // SAFETY: as above.
        self.header()
            .and_then(|h| unsafe { (*h).stored_up_to.get(slot) })
            .map_or(0, |m| m.load(Ordering::Acquire))
    }

    /// When the zone was created (survives reloads).
    pub fn created(self) -> Option<i64> {
        // SAFETY: header checks the magic.
        self.header().map(|h| unsafe { (*h).created })
    }

    /// Bytes of the zone in use and its size.
    pub fn memory(self) -> (u64, u64) {
        // SAFETY: reads words of the slab pool header; a racy read is harmless for stats.
        unsafe {
            let zone = self.0.as_ptr();
            let size = (*zone).shm.size as u64;
            let sp = (*zone).shm.addr as *const ngx_slab_pool_t;
            if sp.is_null() {
                return (0, size);
            }
            let page = nginx_sys::ngx_pagesize as u64;
            let total_pages = ((*sp).end as u64 - (*sp).start as u64) / page;
            let free = (*sp).pfree as u64;
            (size - free.min(total_pages) * page, size)
        }
    }

    /// The zone's name.
    pub fn name(self) -> String {
        // SAFETY: the zone record nginx keeps for the cycle.
        unsafe { String::from_utf8_lossy((*self.0.as_ptr()).shm.name.as_bytes()).into_owned() }
    }

    /// True (once per second, host-wide) when this worker should run the store's GC now.
    pub fn claim_gc(self, now: i64) -> bool {
        let Some(h) = self.header() else { return false };
        // SAFETY: the field is only written under the zone mutex.
        unsafe {
            let pool = (*h).pool;
            if nginx_sys::ngx_shmtx_trylock(&mut (*pool).mutex) == 0 {
                return false;
            }
            // Two plain words, nothing that can fail or panic in between: no busy mark.
            let claimed = (*h).last_gc < now;
            if claimed {
                (*h).last_gc = now;
            }
            ngx_shmtx_unlock(&mut (*pool).mutex);
            claimed
        }
    }
}
