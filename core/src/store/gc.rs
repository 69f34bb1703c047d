//! Garbage collection, run about once a second (the C module's cleanup runs every 4 s):
//! dead workers, deleted channels, expired messages, inactive channels, the trash.

use allocator_api2::alloc::Allocator;
use allocator_api2::vec::Vec as AVec;
use hashbrown::HashMap;

use super::broker::XKeys;
use super::keys::SeqHash;
use super::record::TrashEntry;
use super::{ChannelMap, GcReport, Limits, MsgMap, Store};

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

        // (3) Expire stored messages from the head of each queue.
        let deadline = now.saturating_add(limits.trash_delay());
        for ch in self.channels.values_mut() {
            while let Some(e) = ch.queue.front() {
                if e.expires > now {
                    break;
                }
                // Cannot fail: the trash always has room for everything queued.
                if self
                    .trash
                    .push_back(TrashEntry {
                        seq: e.seq,
                        deadline,
                    })
                    .is_err()
                {
                    break;
                }
                ch.queue.pop_front();
                self.queued_total -= 1;
                self.messages_in_trash += 1;
                if !ch.events {
                    self.stored -= 1;
                }
                report.expired_messages += 1;
            }
        }

        // (4) Remove inactive channels: no stored message, no subscriber, and the inactivity
        // deadline passed (strictly, as in the C module).
        let mut removed: Vec<Vec<u8>> = Vec::new();
        for (k, ch) in self.channels.extract_if(|_, c| {
            !c.events && c.queue.is_empty() && c.subs.total == 0 && c.inactive_at < now
        }) {
            if ch.wildcard {
                self.n_wildcard -= 1;
            } else {
                self.n_channels -= 1;
            }
            // Cannot fail (chan_trash has room for every live channel); if it did, the channel
            // is simply freed at once.
            let _ = self.chan_trash.push_back(deadline);
            removed.push(k.0[..].to_vec());
        }
        report.removed_channels = removed.len() as u64;
        for id in &removed {
            self.emit("channel_destroyed", id, now, limits);
        }

        // (5) Free trashed messages whose delay passed (strictly, as in the C module) and that
        // every live worker has seen.
        while let Some(e) = self.trash.front() {
            if e.deadline >= now || e.seq > self.log_floor {
                break;
            }
            self.trash.pop_front();
            if self.msgs.remove(&e.seq).is_some() {
                self.messages_in_trash -= 1;
                report.freed_messages += 1;
            }
        }

        // (6) Drop trashed channels whose delay passed.
        while self.chan_trash.front().is_some_and(|d| d < now) {
            self.chan_trash.pop_front();
        }

        // (7) Forget exchange keys whose window passed.
        while let Some(x) = self.xorder.front() {
            if x.expires > now {
                break;
            }
            self.xorder.pop_front();
            self.xkeys.remove(&(x.key, x.occurrence));
        }

        self.shrink();
        // Take the delete reserve back (best effort).
        let _ = self.hold_reserve(limits);
        report
    }

    /// Gives memory back after GC (best effort, never allocates more than it frees).
    pub(super) fn shrink(&mut self) {
        self.trash.shrink(self.queued_total);
        self.xorder.shrink(0);
        if self.xkeys.capacity() >= 64 && self.xkeys.len() * 4 <= self.xkeys.capacity() {
            let mut m: XKeys<A> =
                HashMap::with_hasher_in(self.xkeys.hasher().clone(), self.alloc.clone());
            if m.try_reserve(self.xkeys.len() * 2).is_ok() {
                for (k, v) in self.xkeys.drain() {
                    m.insert(k, v);
                }
                self.xkeys = m;
            }
        }
        self.chan_trash
            .shrink(self.channels.len() + self.deleting.len());
        for ch in self.channels.values_mut() {
            ch.queue.shrink(0);
            if ch.subs.slots.is_empty() && ch.subs.slots.capacity() > 0 {
                ch.subs.slots = AVec::new_in(self.alloc.clone());
            }
        }
        if self.msgs.is_empty() {
            if self.msgs.capacity() > 0 {
                self.msgs = HashMap::with_hasher_in(SeqHash, self.alloc.clone());
            }
        } else if self.msgs.capacity() >= 64 && self.msgs.len() * 4 <= self.msgs.capacity() {
            let mut m: MsgMap<A> = HashMap::with_hasher_in(SeqHash, self.alloc.clone());
            if m.try_reserve(self.msgs.len() * 2).is_ok() {
                for (k, v) in self.msgs.drain() {
                    m.insert(k, v);
                }
                self.msgs = m;
            }
        }
        if self.channels.is_empty() {
            if self.channels.capacity() > 0 {
                let h = self.channels.hasher().clone();
                self.channels = HashMap::with_hasher_in(h, self.alloc.clone());
            }
        } else if self.channels.capacity() >= 64
            && self.channels.len() * 4 <= self.channels.capacity()
        {
            let mut m: ChannelMap<A> =
                HashMap::with_hasher_in(self.channels.hasher().clone(), self.alloc.clone());
            if m.try_reserve(self.channels.len() * 2).is_ok() {
                for (k, v) in self.channels.drain() {
                    m.insert(k, v);
                }
                self.channels = m;
            }
        }
        if self.deleting.is_empty() && self.deleting.capacity() > 0 {
            self.deleting = AVec::new_in(self.alloc.clone());
        }
    }
}
