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

use core::alloc::Layout;
use core::ffi::c_void;
use core::ptr::{self, NonNull};

use allocator_api2::alloc::{AllocError, Allocator};
use allocator_api2::boxed::Box as ZBox;
use nginx_sys::{
    ngx_conf_t, ngx_cycle, ngx_int_t, ngx_shared_memory_add, ngx_shm_zone_t, ngx_shmtx_lock,
    ngx_shmtx_unlock, ngx_slab_alloc_locked, ngx_slab_free_locked, ngx_slab_pool_t, ngx_str_t,
    ngx_time, NGX_ERROR, NGX_LOG_WARN, NGX_OK,
};
use push_stream_core::store::Store;

use super::conf::{conf_error, MainConf};
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
}

/// How many process slots publish their counters (workers in slots beyond are not reported).
pub const MAX_SLOTS: usize = 128;

/// One worker's counters in the zone. Plain atomics: the owner stores, anyone loads.
#[repr(C)]
#[derive(Default)]
pub struct SlotStats {
    pub pid: std::sync::atomic::AtomicU64,
    pub subscribers: [std::sync::atomic::AtomicU64; 4],
    pub delivered: std::sync::atomic::AtomicU64,
    pub bytes: std::sync::atomic::AtomicU64,
    pub slow_closed: std::sync::atomic::AtomicU64,
    pub lost: std::sync::atomic::AtomicU64,
    pub amqp_connected: std::sync::atomic::AtomicU64,
    pub amqp_in: std::sync::atomic::AtomicU64,
    pub amqp_out: std::sync::atomic::AtomicU64,
    pub amqp_reconnects: std::sync::atomic::AtomicU64,
    pub inbox_depth: std::sync::atomic::AtomicU64,
    /// Publish-to-write latency histogram (per bucket, not cumulative) and its sum (ms).
    pub latency: [std::sync::atomic::AtomicU64; 13],
    pub latency_sum_ms: std::sync::atomic::AtomicU64,
}

const MAGIC: u64 = 0x7073_7472_6561_6d33; // "pstream3"

/// Declares the zone. `size` is already validated. Returns the zone.
///
/// # Safety
/// `cf` is a live configuration; `tag` is the module's address; `mcf` outlives the cycle.
pub unsafe fn add(
    cf: *mut ngx_conf_t,
    mcf: *mut MainConf,
    size: usize,
    tag: *mut c_void,
) -> Result<*mut ngx_shm_zone_t, String> {
    let name = (*mcf).shm_name.clone();
    let mut size = size;
    // During a reload ngx_cycle is the running cycle: keep its zone's size.
    if let Some(old) = existing_size(&name, tag) {
        if old != size {
            conf_error(
                cf,
                NGX_LOG_WARN,
                &format!(
                    "Cannot change memory area size without restart, ignoring change on zone: {}",
                    String::from_utf8_lossy(&name)
                ),
            );
            size = old;
        }
    }
    let data = nginx_sys::ngx_pnalloc((*cf).pool, name.len()) as *mut u8;
    if data.is_null() {
        return Err("push stream module: out of memory".into());
    }
    ptr::copy_nonoverlapping(name.as_ptr(), data, name.len());
    let mut n = ngx_str_t {
        len: name.len(),
        data,
    };
    let zone = ngx_shared_memory_add(cf, &mut n, size, tag);
    if zone.is_null() {
        return Err(format!(
            "push stream module: cannot create shared memory zone \"{}\"",
            String::from_utf8_lossy(&name)
        ));
    }
    if !(*zone).data.is_null() {
        return Err(format!(
            "push stream module: shared memory zone \"{}\" is already used by another http block",
            String::from_utf8_lossy(&name)
        ));
    }
    (*zone).init = Some(init_zone);
    (*zone).data = mcf as *mut c_void;
    (*mcf).shm_size = size;
    Ok(zone)
}

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
    guard(ptr::null_mut(), "zone init", NGX_ERROR as ngx_int_t, || {
        let zone = &mut *zone;
        let mcf = &*(zone.data as *const MainConf);
        let name = String::from_utf8_lossy(zone.shm.name.as_bytes()).into_owned();
        let sp = zone.shm.addr as *mut ngx_slab_pool_t;
        // The store reports a full zone itself (a clear error and a log line of ours): the
        // slab's own "ngx_slab_alloc() failed: no memory" at crit would only add noise.
        (*sp).set_log_nomem(0);
        if !data.is_null() {
            // Reload: the previous cycle's zone, same name and size, is reused as it is.
            zone.data = data;
            let hdr = data as *mut ZoneHeader;
            if let Some(events) = &mcf.limits.events_channel_id {
                // An events channel configured only now gets created (the C module crashed here).
                let alloc_ok = with_header(hdr, |s| {
                    s.get_or_create(events, ngx_time() as i64, &mcf.limits)
                        .is_ok()
                });
                if !alloc_ok {
                    log::warn(
                        ptr::null_mut(),
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
            let store = Store::new_in(alloc, now, &mcf.limits).ok()?;
            let store = ZBox::try_new_in(store, alloc).ok()?;
            let hdr =
                ngx_slab_alloc_locked(sp, core::mem::size_of::<ZoneHeader>()) as *mut ZoneHeader;
            if hdr.is_null() {
                return None;
            }
            // All zero is a valid ZoneHeader (atomics, integers, null pointers); then the fields.
            core::ptr::write_bytes(hdr as *mut u8, 0, core::mem::size_of::<ZoneHeader>());
            (*hdr).magic = MAGIC;
            (*hdr).created = now;
            (*hdr).store = ZBox::into_raw(store);
            (*hdr).pool = sp;
            Some(hdr)
        })();
        ngx_shmtx_unlock(&mut (*sp).mutex);
        let Some(hdr) = made else {
            log::alert(
                ptr::null_mut(),
                &format!("push_stream: zone \"{name}\" is too small for the store"),
            );
            return NGX_ERROR as ngx_int_t;
        };
        (*sp).data = hdr as *mut c_void;
        zone.data = hdr as *mut c_void;
        log::info(
            ptr::null_mut(),
            &format!(
                "Using {}KiB of shared memory for push stream module on zone: {}",
                zone.shm.size / 1024,
                name
            ),
        );
        NGX_OK as ngx_int_t
    })
}

/// Holds the zone's mutex; released on drop (also while unwinding from a panic).
struct Locked(*mut ngx_slab_pool_t);

impl Drop for Locked {
    fn drop(&mut self) {
        // SAFETY: locked in with_header.
        unsafe { ngx_shmtx_unlock(&mut (*self.0).mutex) }
    }
}

unsafe fn with_header<R>(hdr: *mut ZoneHeader, f: impl FnOnce(&mut ZoneStore) -> R) -> R {
    let store = (*hdr).store;
    let pool = (*hdr).pool;
    ngx_shmtx_lock(&mut (*pool).mutex);
    let _locked = Locked(pool);
    f(&mut *store)
}

/// Runs `f` with exclusive access to the host-wide store of `zone`, or returns None when the
/// zone is not initialised.
pub fn with_store<R>(zone: *mut ngx_shm_zone_t, f: impl FnOnce(&mut ZoneStore) -> R) -> Option<R> {
    // SAFETY: the zone and its header were set up by init_zone; the mutex serialises access
    // between workers; this runs on a worker's event-loop thread.
    unsafe {
        let hdr = header(zone)?;
        Some(with_header(hdr, f))
    }
}

/// The zone header of a live zone.
///
/// # Safety
/// `zone` is a zone declared by [`add`].
pub unsafe fn header(zone: *mut ngx_shm_zone_t) -> Option<*mut ZoneHeader> {
    if zone.is_null() {
        return None;
    }
    let h = (*zone).data as *mut ZoneHeader;
    if h.is_null() || (*h).magic != MAGIC {
        return None;
    }
    Some(h)
}

/// This worker's counters in the zone, if its slot has one.
pub fn slot_stats(zone: *mut ngx_shm_zone_t, slot: usize) -> Option<&'static SlotStats> {
    // SAFETY: the header lives as long as the zone; the array is only accessed atomically.
    unsafe { header(zone).and_then(|h| (*h).slots.get(slot)) }
}

/// Every slot's counters.
pub fn all_slot_stats(zone: *mut ngx_shm_zone_t) -> &'static [SlotStats] {
    // SAFETY: as above.
    unsafe { header(zone).map(|h| &(&(*h).slots)[..]).unwrap_or(&[]) }
}

/// When the zone was created (survives reloads).
pub fn created(zone: *mut ngx_shm_zone_t) -> Option<i64> {
    // SAFETY: header checks the magic.
    unsafe { header(zone).map(|h| (*h).created) }
}

/// Bytes of the zone in use and its size.
pub fn memory(zone: *mut ngx_shm_zone_t) -> (u64, u64) {
    // SAFETY: reads two words of the slab pool header; a racy read is harmless for stats.
    unsafe {
        if zone.is_null() {
            return (0, 0);
        }
        let size = (*zone).shm.size as u64;
        let sp = (*zone).shm.addr as *const ngx_slab_pool_t;
        let page = nginx_sys::ngx_pagesize as u64;
        let total_pages = ((*sp).end as u64 - (*sp).start as u64) / page;
        let free = (*sp).pfree as u64;
        (size - free.min(total_pages) * page, size)
    }
}

/// True (once per second, host-wide) when this worker should run the store's GC now.
pub fn claim_gc(zone: *mut ngx_shm_zone_t, now: i64) -> bool {
    // SAFETY: the field is only written under the zone mutex.
    unsafe {
        let Some(h) = header(zone) else { return false };
        let pool = (*h).pool;
        if nginx_sys::ngx_shmtx_trylock(&mut (*pool).mutex) == 0 {
            return false;
        }
        let _locked = Locked(pool);
        if (*h).last_gc >= now {
            return false;
        }
        (*h).last_gc = now;
        true
    }
}
