//! The registry of worker processes (one slot each).

use allocator_api2::alloc::Allocator;

use super::{Limits, Store, StoreError, WorkerSlot, OOM};

#[derive(Clone, Copy)]
pub(super) struct WorkerEntry {
    pub(super) slot: usize,
    pub(super) pid: u32,
    pub(super) started: i64,
    /// Requests the worker holds as subscribers (one per request, whatever its channels),
    /// counted when the request subscribes and uncounted when it ends, so a statistics
    /// request never misses a subscriber that has received a byte.
    pub(super) subscribers: u64,
    pub(super) cursor: u64,
}

impl<A: Allocator + Clone> Store<A> {
    /// Registers the worker `pid` in `slot` (replacing whatever the slot held) and returns the
    /// cursor it starts reading the log from. Unless the slot was already registered to this
    /// same `pid`, the subscriber counts the slot still holds belong to a process that is gone
    /// (a respawn after a crash, or one whose registration failed): they are removed as by
    /// [`Store::gc`] for a dead worker (and its subscriber count starts at 0; a registration
    /// repeated by the same `pid` keeps it). `OutOfMemory` changes nothing.
    pub fn register_worker(
        &mut self,
        slot: usize,
        pid: u32,
        now: i64,
        limits: &Limits,
    ) -> Result<u64, StoreError> {
        let pos = self.workers.iter().position(|w| w.slot >= slot);
        let existing = pos.filter(|&i| self.workers[i].slot == slot);
        if existing.is_none() {
            self.workers.try_reserve(1).map_err(|_| OOM)?;
        }
        let same_pid = existing.filter(|&i| self.workers[i].pid == pid);
        if same_pid.is_none() {
            self.drop_slot(slot, now, limits);
        }
        // `drop_slot` does not touch `workers`: `pos` and `existing` still hold. The cursor is
        // taken after it, past the events it emitted.
        let entry = WorkerEntry {
            slot,
            pid,
            started: now,
            subscribers: same_pid.map_or(0, |i| self.workers[i].subscribers),
            cursor: self.last_seq,
        };
        match existing {
            Some(i) => self.workers[i] = entry,
            None => self
                .workers
                .insert(pos.unwrap_or(self.workers.len()), entry),
        }
        Ok(self.last_seq)
    }

    /// The worker `pid` leaves `slot` cleanly (it has removed its subscribers already). Any
    /// count its slot still holds is removed as for a dead worker, so nothing can leak. A
    /// `pid` that does not own the slot changes nothing (the slot's owner is someone else).
    pub fn unregister_worker(&mut self, slot: usize, pid: u32, now: i64, limits: &Limits) {
        match self.workers.iter().position(|w| w.slot == slot) {
            Some(i) if self.workers[i].pid == pid => {
                self.workers.remove(i);
            }
            Some(_) => return,
            None => {}
        }
        self.drop_slot(slot, now, limits);
    }

    /// The worker `pid` in `slot` holds one more subscriber request. Called in the critical
    /// section that subscribes the request to its channels, before anything is written to it.
    /// A `pid` that does not own the slot changes nothing.
    pub fn count_worker_subscriber(&mut self, slot: usize, pid: u32) {
        if let Some(w) = self.worker_mut(slot, pid) {
            w.subscribers = w.subscribers.saturating_add(1);
        }
    }

    /// The worker `pid` in `slot` holds one subscriber request fewer (it ended, or was refused
    /// after subscribing).
    pub fn uncount_worker_subscriber(&mut self, slot: usize, pid: u32) {
        if let Some(w) = self.worker_mut(slot, pid) {
            w.subscribers = w.subscribers.saturating_sub(1);
        }
    }

    fn worker_mut(&mut self, slot: usize, pid: u32) -> Option<&mut WorkerEntry> {
        self.workers
            .iter_mut()
            .find(|w| w.slot == slot && w.pid == pid)
    }

    /// Calls `f(slot, pid)` for every registered worker (no copy: usable under the lock).
    pub fn for_each_worker(&self, mut f: impl FnMut(usize, u32)) {
        for w in self.workers.iter() {
            f(w.slot, w.pid);
        }
    }

    pub fn workers(&self) -> Vec<WorkerSlot> {
        self.workers
            .iter()
            .map(|w| WorkerSlot {
                slot: w.slot,
                pid: w.pid,
                started: w.started,
                subscribers: w.subscribers,
                cursor: w.cursor,
            })
            .collect()
    }
}
