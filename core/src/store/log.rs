//! The host delivery log: every record with a seq in `(log_floor, last_seq]`, found through
//! the log index, read by each worker from its cursor.

use allocator_api2::alloc::Allocator;

use super::channels::DELETING;
use super::index::CHANNEL;
use super::pool::NIL;
use super::record::BROKER;
use super::{Batch, Record, Store};

impl<A: Allocator + Clone> Store<A> {
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Log records after `cursor`, oldest first, at most `max`. Records at or below the freeing
    /// floor are no longer available: they are skipped and counted in `lost`. The returned
    /// cursor is the last seq consumed (returned or counted lost), or `cursor` when nothing was.
    pub fn records_after(&self, cursor: u64, max: usize) -> Batch {
        let mut batch = Batch {
            records: Vec::new(),
            cursor,
            lost: 0,
        };
        if cursor >= self.last_seq {
            return batch;
        }
        let mut s = cursor;
        if s < self.log_floor {
            batch.lost = self.log_floor - s;
            s = self.log_floor;
        }
        while s < self.last_seq && batch.records.len() < max {
            s += 1;
            match self.index.get(s) {
                NIL => batch.lost += 1,
                e if e & CHANNEL != 0 => match self.chans.get(e & !CHANNEL) {
                    c if c.state == DELETING && c.order == s => {
                        batch.records.push(Record::ChannelDeleted {
                            seq: s,
                            channel: c.id().to_vec(),
                            text: c.notice_text().to_vec(),
                        })
                    }
                    _ => batch.lost += 1,
                },
                m => match self.msgs.get(m) {
                    n if n.seq != s => batch.lost += 1,
                    n if n.kind == BROKER => {}
                    n => batch.records.push(n.record()),
                },
            }
        }
        batch.cursor = s;
        batch
    }

    pub fn ack(&mut self, slot: usize, pid: u32, cursor: u64) {
        let last = self.last_seq;
        if let Some(w) = self
            .workers
            .iter_mut()
            .find(|w| w.slot == slot && w.pid == pid)
        {
            w.cursor = w.cursor.max(cursor.min(last));
        }
    }
}
