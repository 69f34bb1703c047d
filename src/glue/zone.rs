//! The shared memory zone (`push_stream_shared_memory_size`). It survives `nginx -s reload`
//! when its name and size are unchanged; a size change on reload is ignored with the C module's
//! warning, so the data is kept.

use core::ffi::c_void;
use core::ptr;

use nginx_sys::{
    ngx_conf_t, ngx_cycle, ngx_int_t, ngx_shared_memory_add, ngx_shm_zone_t, ngx_slab_alloc,
    ngx_slab_pool_t, ngx_str_t, ngx_time, NGX_ERROR, NGX_LOG_WARN, NGX_OK,
};

use super::conf::conf_error;
use super::guard::guard;
use super::log;

/// The first thing in the zone: what lets a reloaded configuration recognise its data.
#[repr(C)]
pub struct ZoneHeader {
    pub magic: u64,
    /// When the zone was created (unix seconds): the stats' `uptime` survives reloads.
    pub created: i64,
}

const MAGIC: u64 = 0x7073_7472_6561_6d31; // "pstream1"

/// Declares the zone. `size` is already validated. Returns the size actually used.
///
/// # Safety
/// `cf` is a live configuration; `tag` is the module's address.
pub unsafe fn add(
    cf: *mut ngx_conf_t,
    name: &[u8],
    size: usize,
    tag: *mut c_void,
) -> Result<*mut ngx_shm_zone_t, String> {
    let mut size = size;
    // During a reload ngx_cycle is the running cycle: keep its zone's size.
    if let Some(old) = existing_size(name, tag) {
        if old != size {
            conf_error(
                cf,
                NGX_LOG_WARN,
                &format!(
                    "Cannot change memory area size without restart, ignoring change on zone: {}",
                    String::from_utf8_lossy(name)
                ),
            );
            size = old;
        }
    }
    let mut n = ngx_str_t {
        len: name.len(),
        data: nginx_sys::ngx_pnalloc((*cf).pool, name.len()) as *mut u8,
    };
    if n.data.is_null() {
        return Err("push stream module: out of memory".into());
    }
    ptr::copy_nonoverlapping(name.as_ptr(), n.data, name.len());
    let zone = ngx_shared_memory_add(cf, &mut n, size, tag);
    if zone.is_null() {
        return Err(format!(
            "push stream module: cannot create shared memory zone \"{}\"",
            String::from_utf8_lossy(name)
        ));
    }
    if !(*zone).data.is_null() {
        return Err(format!(
            "push stream module: duplicate zone \"{}\"",
            String::from_utf8_lossy(name)
        ));
    }
    (*zone).init = Some(init_zone);
    (*zone).data = 1 as *mut c_void; // set: the zone is claimed by this configuration
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
        let name = String::from_utf8_lossy(zone.shm.name.as_bytes()).into_owned();
        if !data.is_null() {
            // Reload: the previous cycle's zone, same name and size, is reused as it is.
            zone.data = data;
            return NGX_OK as ngx_int_t;
        }
        let sp = zone.shm.addr as *mut ngx_slab_pool_t;
        let hdr = ngx_slab_alloc(sp, core::mem::size_of::<ZoneHeader>()) as *mut ZoneHeader;
        if hdr.is_null() {
            return NGX_ERROR as ngx_int_t;
        }
        hdr.write(ZoneHeader {
            magic: MAGIC,
            created: ngx_time() as i64,
        });
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

/// The zone header of a live zone.
///
/// # Safety
/// `zone` is a zone declared by [`add`] whose init has run.
#[allow(dead_code)]
pub unsafe fn header<'a>(zone: *mut ngx_shm_zone_t) -> Option<&'a ZoneHeader> {
    if zone.is_null() {
        return None;
    }
    let h = (*zone).data as *const ZoneHeader;
    if h.is_null() || (h as usize) == 1 || (*h).magic != MAGIC {
        return None;
    }
    Some(&*h)
}
