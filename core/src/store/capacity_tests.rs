//! How much the store holds in a zone of a given size, on a model of nginx's slab allocator,
//! against the C module's figures (its `misc/spec/mix/measure_memory_spec.rb`: about 5,400
//! channels with one 1-byte message each in 2 MiB, 2 MiB / 175 B = 11,980 1-byte messages in
//! one channel, about 250 subscribers each on its own channel in 128 KiB).

use super::*;
use core::alloc::Layout;
use core::cell::RefCell;
use core::ptr::NonNull;
use std::rc::Rc;

const PAGE: usize = 4096;
/// `sizeof(ngx_slab_page_t)`: the slab's bookkeeping of every page.
const PAGE_DESC: usize = 24;
/// The slab pool's header, its size-class slots and their statistics (nginx 1.22 on 64 bits:
/// `ngx_slab_pool_t`, 9 slots of 24 bytes, 9 statistics of 32 bytes).
const POOL_HEADER: usize = 200 + 9 * 24 + 9 * 32;

/// Pages the slab of a zone of `size` bytes has (as `ngx_slab_init` computes them: the page
/// descriptors come first and the pages start at a page boundary).
fn zone_pages(size: usize) -> usize {
    let pages = (size - POOL_HEADER) / (PAGE + PAGE_DESC);
    let start = (POOL_HEADER + pages * PAGE_DESC).div_ceil(PAGE) * PAGE;
    pages.min((size - start) / PAGE)
}

/// The chunk size class of an allocation of `size` bytes (0: whole pages).
fn class(size: usize) -> usize {
    if size > PAGE / 2 {
        0
    } else {
        size.max(8).next_power_of_two()
    }
}

/// Chunks of `class` bytes one page holds (small classes keep their bitmap in the page).
fn per_page(class: usize) -> usize {
    let n = PAGE / class;
    if class < 64 {
        n - (n / 8).div_ceil(class)
    } else {
        n
    }
}

/// A model of `ngx_slab_alloc_locked` in a zone: sizes round up to powers of two from 8 to
/// 2048 bytes, packed in pages of their size class; bigger ones take whole pages. Pages of a
/// class are counted as if the class's chunks were packed (exact for fills, optimistic after
/// frees). Memory itself comes from the process heap.
#[derive(Clone)]
struct Slab(Rc<RefCell<SlabState>>);

struct SlabState {
    pages: usize,
    /// Live chunks per class (index: log2 of the class).
    live: [usize; 12],
    big_pages: usize,
}

impl SlabState {
    fn used_pages(&self) -> usize {
        let small: usize = (3..12)
            .map(|k| self.live[k].div_ceil(per_page(1 << k)))
            .sum();
        small + self.big_pages
    }
}

impl Slab {
    fn zone(size: usize) -> Self {
        Slab(Rc::new(RefCell::new(SlabState {
            pages: zone_pages(size),
            live: [0; 12],
            big_pages: 0,
        })))
    }

    fn used_pages(&self) -> usize {
        self.0.borrow().used_pages()
    }
}

// SAFETY: delegates to `Global`, only counting.
unsafe impl Allocator for Slab {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if layout.size() == 0 {
            return Global.allocate(layout);
        }
        let size = layout.size().max(layout.align());
        let mut st = self.0.borrow_mut();
        match class(size) {
            0 => st.big_pages += size.div_ceil(PAGE),
            c => st.live[c.trailing_zeros() as usize] += 1,
        }
        if st.used_pages() > st.pages {
            match class(size) {
                0 => st.big_pages -= size.div_ceil(PAGE),
                c => st.live[c.trailing_zeros() as usize] -= 1,
            }
            return Err(AllocError);
        }
        Global.allocate(layout)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if layout.size() != 0 {
            let size = layout.size().max(layout.align());
            let mut st = self.0.borrow_mut();
            match class(size) {
                0 => st.big_pages -= size.div_ceil(PAGE),
                c => st.live[c.trailing_zeros() as usize] -= 1,
            }
        }
        // SAFETY: allocated by `Global` with `layout` (see `allocate`).
        unsafe { Global.deallocate(ptr, layout) }
    }
}

const T0: i64 = 1_000_000;

/// The module's limits in the C spec's configuration (`message_ttl 60m`, no limit of stored
/// messages, the delete reserve of a zone of `size` bytes: an eighth, at most 4 pages).
fn spec_limits(size: usize) -> Limits {
    Limits {
        message_ttl: 3600,
        channel_inactivity_time: 3600,
        delete_reserve_pages: (size / 8 / RESERVE_PAGE).min(MAX_RESERVE_PAGES),
        ..Limits::default()
    }
}

/// The module's zone header (`src/ngx/zone.rs` `ZoneHeader`: the counters of 128 worker slots,
/// their wake-up tokens and the crash marks), in whole pages: a zone of the module starts with
/// 72 KiB used, of which 16 KiB are the delete reserve and 4 KiB the store and its first
/// allocations (`tests/reliability.rs`, "FIGURE zone-full").
const HEADER_PAGES: usize = 13;

/// A store in a modelled zone of `size` bytes, with what the module puts there besides (its
/// zone header and the store itself).
fn zone_store(size: usize) -> (Zone, Store<Slab>, Limits) {
    let slab = Slab::zone(size);
    let l = spec_limits(size);
    let held = [HEADER_PAGES * PAGE, core::mem::size_of::<Store<Slab>>()].map(|n| {
        let mut v = AVec::new_in(slab.clone());
        v.try_reserve_exact(n).unwrap();
        v
    });
    let s = Store::new_in(slab.clone(), T0, &l).unwrap();
    (held, s, l)
}

/// What the module holds in the zone besides the store's own allocations.
type Zone = [AVec<u8, Slab>; 2];

/// Publishes `1` with `next(i)` as channel id until the store refuses; collects once every
/// 1000 publishes (the module collects every second, with its workers' cursors at the end
/// of the log). Returns how many publishes succeeded.
fn publish_until_full(s: &mut Store<Slab>, l: &Limits, next: impl Fn(usize) -> Vec<u8>) -> usize {
    let mut n = 0;
    loop {
        match s.publish(&next(n), b"1", None, None, true, T0, l) {
            Ok(_) => n += 1,
            Err(StoreError::OutOfMemory) => return n,
            Err(e) => panic!("{e:?}"),
        }
        if n % 1000 == 0 {
            s.gc(T0, l, &|_| true);
        }
    }
}

#[test]
fn the_slab_model_counts_pages_like_ngx_slab() {
    // 2 MiB: 508 pages after the pool's header and page descriptors.
    assert_eq!(zone_pages(2 << 20), 508);
    assert_eq!(
        (class(1), class(9), class(2048), class(2049)),
        (8, 16, 2048, 0)
    );
    assert_eq!(
        (per_page(8), per_page(16), per_page(32), per_page(64)),
        (504, 254, 127, 64)
    );
    let slab = Slab::zone(16 * PAGE + 2 * PAGE);
    let total = zone_pages(18 * PAGE);
    let big = Layout::from_size_align(PAGE + 1, 8).unwrap();
    let p = slab.allocate(big).unwrap();
    assert_eq!(slab.used_pages(), 2);
    // SAFETY: allocated just above with this layout.
    unsafe { slab.deallocate(p.cast(), big) };
    let small = Layout::from_size_align(40, 8).unwrap();
    let mut held = Vec::new();
    while let Ok(p) = slab.allocate(small) {
        held.push(p);
    }
    assert_eq!(held.len(), total * 64);
    for p in held {
        // SAFETY: allocated above with this layout.
        unsafe { slab.deallocate(p.cast(), small) };
    }
    assert_eq!(slab.used_pages(), 0);
}

#[test]
fn channels_with_one_message_in_2_mib_at_least_as_many_as_the_c_module() {
    let (_zone, mut s, l) = zone_store(2 << 20);
    let n = publish_until_full(&mut s, &l, |i| (1000 + i).to_string().into_bytes());
    let channels = s.counters().channels;
    println!("2 MiB zone: {channels} channels with one 1-byte message (C module: about 5,400)");
    // A refused publish creates no channel.
    assert_eq!(channels, n as u64);
    assert!(channels >= 5_400, "{channels}");
    s.check();
}

#[test]
fn messages_in_one_channel_in_2_mib_at_least_as_many_as_the_c_module() {
    let (_zone, mut s, l) = zone_store(2 << 20);
    let n = publish_until_full(&mut s, &l, |_| b"ch_test_message_size".to_vec());
    let c = s.counters();
    println!(
        "2 MiB zone: {} 1-byte messages in one channel (C module: 2 MiB / 175 B = 11,980)",
        c.published_messages
    );
    assert_eq!(
        (c.published_messages, c.stored_messages),
        (n as u64, n as u64)
    );
    assert!(n >= (2 << 20) / 175, "{n}");
    s.check();
}

#[test]
fn subscribers_each_on_its_own_channel_in_128_kib_at_least_as_many_as_the_c_module() {
    let (_zone, mut s, l) = zone_store(128 << 10);
    s.register_worker(0, 100, T0, &l).unwrap();
    let mut n = 0u64;
    loop {
        let id = (1000 + n).to_string().into_bytes();
        let r = s
            .get_or_create(&id, T0, &l)
            .and_then(|_| s.add_subscriber(&id, 0, T0, &l));
        match r {
            Ok(()) => {
                s.count_worker_subscriber(0, 100);
                n += 1;
            }
            Err(StoreError::OutOfMemory) => break,
            Err(e) => panic!("{e:?}"),
        }
    }
    let c = s.counters();
    println!(
        "128 KiB zone: {} subscribers each on its own channel (C module: about 250)",
        c.subscribers
    );
    assert_eq!(c.subscribers, n);
    assert!(n >= 250, "{n}");
    s.check();
}
