//! Garbage collection, run about once a second (the C module's cleanup runs every 4 s):
//! dead workers, deleted channels, expired messages, inactive channels, the trash.

use allocator_api2::alloc::Allocator;

use super::pool::NIL;
use super::{GcReport, Limits, Store};

/// Buckets of the channel table one collection looks at (expiry and inactivity; about twice
/// as many channels). A bigger table is covered over several collections.
pub const GC_BUCKETS: usize = 4096;

/// At most this many trashed messages, trashed channels and expired exchange keys are freed
/// by one collection (each); the rest by the next ones, a second apart. Far above what this
/// host can publish in a second, so the trash never grows because of it, and it bounds one
/// collection's hold of the lock when a burst of messages leaves the trash at once.
pub const GC_FREES: usize = 65_536;

impl<A: Allocator + Clone> Store<A> {
    pub fn gc(&mut self, now: i64, limits: &Limits, is_alive: &dyn Fn(u32) -> bool) -> GcReport {
        let mut report = GcReport::default();

        // (1) Dead workers stop pinning the log, and their subscribers are gone.
        // A pid registered again in another slot by a worker that started later belongs to
        // that worker now (the kernel reused it): the older entry is a dead worker's.
        let reused = |w: &super::workers::WorkerEntry, all: &[super::workers::WorkerEntry]| {
            all.iter()
                .any(|o| o.pid == w.pid && o.slot != w.slot && o.started > w.started)
        };
        let mut i = 0;
        while i < self.workers.len() {
            let w = self.workers[i];
            if !reused(&w, &self.workers) && is_alive(w.pid) {
                i += 1;
            } else {
                self.workers.remove(i);
                report.dead_workers.push(w.pid);
                self.drop_slot(w.slot, now, limits);
            }
        }
        // What every live worker has read (a record at or below it may be freed).
        let floor = self
            .workers
            .iter()
            .map(|w| w.cursor)
            .min()
            .unwrap_or(self.last_seq);
        self.log_floor = self.log_floor.max(floor.min(self.last_seq));

        // (2) Deleted channels that no one waits on (and whose notice every worker has read)
        // go to the trash.
        report.trashed_deleted = self.collect_deleted(now, limits);

        // (3) and (4), over a slice of the channel table (resumed at the next collection, so
        // no critical section walks a big store): expire stored messages from the head of each
        // queue, and remove inactive channels (no stored message, no subscriber, and the
        // inactivity deadline passed, strictly, as in the C module).
        let deadline = now.saturating_add(limits.trash_delay());
        let mut removed: Vec<Vec<u8>> = Vec::new();
        let mut lost = 0;
        let buckets = self.table.buckets();
        let (from, n) = if buckets <= GC_BUCKETS {
            (0, buckets)
        } else {
            (self.gc_cursor % buckets, GC_BUCKETS)
        };
        for k in 0..n {
            let b = (from + k) % buckets;
            let mut prev = NIL;
            let mut h = self.table.head(b);
            while h != NIL {
                let next = self.chans.get(h).next;
                report.expired_messages += self.expire(h, now, deadline);
                let c = self.chans.get(h);
                if c.events || c.queue.len > 0 || c.inactive_at >= now || self.subs_total(h) > 0 {
                    self.free_subs_if(h, false);
                    prev = h;
                    h = next;
                    continue;
                }
                match super::keys::try_copy(c.id()) {
                    Some(id) if removed.try_reserve(1).is_ok() => removed.push(id),
                    _ => lost += 1,
                }
                self.table.unlink(&mut self.chans, b, prev, h);
                self.unlink_counts(h);
                self.channel_to_trash(h, now, limits);
                report.removed_channels += 1;
                h = next;
            }
        }
        self.gc_cursor = (from + n) % buckets.max(1);
        for id in &removed {
            self.emit("channel_destroyed", id, now, limits);
        }
        self.lost_event(limits, lost);

        // (5) Free trashed messages whose delay passed (strictly, as in the C module) and that
        // every live worker has seen.
        let mut budget = GC_FREES;
        while self.trash.head != NIL && budget > 0 {
            budget -= 1;
            let m = self.msgs.get(self.trash.head);
            if m.when >= now || m.seq > self.log_floor {
                break;
            }
            if let Some(m) = self.trash.pop(&mut self.msgs) {
                self.msgs.remove(m);
                self.messages_in_trash -= 1;
                report.freed_messages += 1;
            }
        }
        self.index.drop_to(self.log_floor, self.last_seq);

        // (6) Free trashed channels whose delay passed.
        let mut budget = GC_FREES;
        while budget > 0
            && self.chan_trash.head != NIL
            && self.chans.get(self.chan_trash.head).inactive_at < now
        {
            budget -= 1;
            if let Some(h) = self.chan_trash.pop(&mut self.chans) {
                self.chans.remove(h);
            }
        }

        // (7) Forget exchange keys whose window passed.
        self.expire_exchange_keys(now, GC_FREES);

        self.shrink();
        // Take the delete reserve back (best effort).
        let _ = self.hold_reserve(limits);
        report
    }

    /// Moves channel `h`'s expired stored messages to the trash; returns how many.
    fn expire(&mut self, h: u32, now: i64, deadline: i64) -> u64 {
        self.unqueue(h, deadline, |msgs, q| {
            q.head != NIL && msgs.get(q.head).when <= now
        })
    }

    /// Gives memory back after GC (never allocates).
    pub(super) fn shrink(&mut self) {
        self.msgs.trim();
        self.chans.trim();
        self.subs.trim();
        self.xnodes.trim();
    }
}
