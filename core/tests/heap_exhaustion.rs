//! The copies the store makes under the zone lock (records for delivery, old messages,
//! listings, event texts) must fail cleanly when the process heap refuses them: an aborting
//! allocation there would kill the worker while it holds the lock. This binary's global
//! allocator refuses, when armed, every allocation of at least a given size; the store itself
//! lives in an allocator that bypasses it (as the zone's slab does in nginx). A copy made with
//! an infallible allocation would abort this test binary.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ptr::NonNull;

use push_stream_core::resume::Cursor;
use push_stream_core::store::{AllocError, Allocator, Limits, Record, Store, StoreError};

struct Refusing;

thread_local! {
    /// Allocations of at least this many bytes fail (usize::MAX: none).
    static REFUSE_FROM: Cell<usize> = const { Cell::new(usize::MAX) };
}

// SAFETY: delegates to the system allocator, or returns null (an allocation failure).
unsafe impl GlobalAlloc for Refusing {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= REFUSE_FROM.with(Cell::get) {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        if new >= REFUSE_FROM.with(Cell::get) {
            return std::ptr::null_mut();
        }
        unsafe { System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static GLOBAL: Refusing = Refusing;

/// The store's allocator: the system's, never refused (the zone in nginx).
#[derive(Clone, Copy)]
struct Zone;

// SAFETY: delegates to the system allocator.
unsafe impl Allocator for Zone {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if layout.size() == 0 {
            return Ok(NonNull::slice_from_raw_parts(NonNull::dangling(), 0));
        }
        let p = NonNull::new(unsafe { System.alloc(layout) }).ok_or(AllocError)?;
        Ok(NonNull::slice_from_raw_parts(p, layout.size()))
    }
    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if layout.size() != 0 {
            unsafe { System.dealloc(ptr.as_ptr(), layout) }
        }
    }
}

/// Runs `f` with allocations of `from` bytes or more refused.
fn refusing<R>(from: usize, f: impl FnOnce() -> R) -> R {
    REFUSE_FROM.with(|r| r.set(from));
    let out = f();
    REFUSE_FROM.with(|r| r.set(usize::MAX));
    out
}

const T: i64 = 1_000_000;
const BIG: usize = 300 * 1024;

fn limits() -> Limits {
    Limits {
        message_ttl: 100,
        channel_inactivity_time: 30,
        ..Limits::default()
    }
}

fn text(r: &Record) -> &[u8] {
    match r {
        Record::Message { text, .. } => text,
        r => panic!("{r:?}"),
    }
}

#[test]
fn a_record_the_heap_cannot_copy_is_skipped_and_counted_and_reading_goes_on() {
    let l = limits();
    let mut s = Store::new_in(Zone, T, &l).unwrap();
    s.publish(b"a", b"small 1", None, None, false, T, &l)
        .unwrap();
    s.publish(b"a", &vec![b'x'; BIG], None, None, false, T, &l)
        .unwrap();
    s.publish(b"a", b"small 2", None, None, false, T, &l)
        .unwrap();
    let last = s.last_seq();
    // The big record is not first: the batch ends before it.
    let b = refusing(BIG, || s.records_after(0, 256));
    assert_eq!((b.records.len(), b.lost, b.no_heap), (1, 0, 0));
    assert_eq!(text(&b.records[0]), b"small 1");
    // Now it is first: skipped and counted; the next record comes.
    let b = refusing(BIG, || s.records_after(b.cursor, 256));
    assert_eq!((b.records.len(), b.lost, b.no_heap), (1, 1, 1));
    assert_eq!(text(&b.records[0]), b"small 2");
    assert_eq!(b.cursor, last);
    // With the heap back, nothing was changed in the store: it is read whole.
    let b = s.records_after(0, 256);
    assert_eq!((b.records.len(), b.lost), (3, 0));
    assert_eq!(text(&b.records[1]).len(), BIG);
}

#[test]
fn old_messages_the_heap_cannot_copy_refuse_the_subscriber() {
    let l = limits();
    let mut s = Store::new_in(Zone, T, &l).unwrap();
    s.publish(b"a", &vec![b'x'; BIG], None, None, true, T, &l)
        .unwrap();
    let cur = Cursor {
        backtrack: 1,
        ..Cursor::default()
    };
    let r = refusing(BIG, || s.old_messages(b"a", &cur).map(|m| m.len()));
    assert_eq!(r, Err(StoreError::HeapExhausted));
    assert_eq!(s.old_messages(b"a", &cur).unwrap()[0].text.len(), BIG);
}

#[test]
fn a_listing_the_heap_cannot_hold_fails_cleanly() {
    let l = limits();
    let mut s = Store::new_in(Zone, T, &l).unwrap();
    for i in 0..2000 {
        s.get_or_create(format!("channel-{i}").as_bytes(), T, &l)
            .unwrap();
    }
    // The listing needs room for 2 000 entries; refuse anything from 16 KiB on.
    let r = refusing(16 * 1024, || s.channels(None).map(|v| v.len()));
    assert_eq!(r, Err(StoreError::HeapExhausted));
    assert_eq!(s.channels(None).unwrap().len(), 2000);
}

#[test]
fn an_event_text_the_heap_cannot_hold_is_dropped_and_counted() {
    let l = Limits {
        events_channel_id: Some(b"events".to_vec()),
        ..limits()
    };
    let mut s = Store::new_in(Zone, T, &l).unwrap();
    let long = vec![b'c'; 8 * 1024];
    let dropped = s.dropped_events();
    // channel_created for a channel whose escaped id needs a text of up to 6 × 8 KiB.
    refusing(32 * 1024, || s.get_or_create(&long, T, &l)).unwrap();
    assert_eq!(s.dropped_events(), dropped + 1);
    assert!(s.channel(&long).is_some());
}
