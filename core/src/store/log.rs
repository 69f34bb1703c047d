//! The host delivery log: every record with a seq in `(log_floor, last_seq]`, found through
//! the log index, read by each worker from its cursor.

use allocator_api2::alloc::Allocator;

use super::channels::DELETING;
use super::index::CHANNEL;
use super::pool::NIL;
use super::record::BROKER;
use super::{copy, Batch, Record, Store};

/// How many message bytes one [`Store::records_after`] copies out under the lock at most
/// (unless one record alone is larger).
pub const MAX_BATCH_BYTES: usize = 1 << 20;

impl<A: Allocator + Clone> Store<A> {
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Log records after `cursor`, oldest first, at most `max` records and at most
    /// [`MAX_BATCH_BYTES`] of message and notice bytes (a larger record comes alone). Records
    /// at or below the freeing floor are no longer available: they are skipped and counted in
    /// `lost`. The returned cursor is the last seq consumed (returned or counted lost), or
    /// `cursor` when nothing was. The copies are made under the zone lock: when the process
    /// heap cannot take one, the batch ends before it and the record is read again by the next
    /// call; a record whose copy fails as the first of a batch is skipped and counted in `lost`
    /// and `no_heap` (so a worker whose heap cannot hold a record never stops reading the log,
    /// and never pins it for the host).
    pub fn records_after(&self, cursor: u64, max: usize) -> Batch {
        let mut batch = Batch {
            records: Vec::new(),
            cursor,
            lost: 0,
            no_heap: 0,
        };
        if cursor >= self.last_seq {
            return batch;
        }
        let mut s = cursor;
        if s < self.log_floor {
            batch.lost = self.log_floor - s;
            s = self.log_floor;
        }
        let mut bytes = 0usize;
        while s < self.last_seq && batch.records.len() < max {
            let next = s + 1;
            let copied = match self.index.get(next) {
                NIL => {
                    batch.lost += 1;
                    Ok(())
                }
                e if e & CHANNEL != 0 => match self.chans.get(e & !CHANNEL) {
                    c if c.state == DELETING && c.order == next => {
                        let (channel, text) = (c.id(), c.notice_text());
                        bytes = bytes.saturating_add(channel.len() + text.len());
                        if bytes > MAX_BATCH_BYTES && !batch.records.is_empty() {
                            break;
                        }
                        (|| {
                            let r = Record::ChannelDeleted {
                                seq: next,
                                channel: copy::bytes(channel)?,
                                text: copy::bytes(text)?,
                            };
                            copy::push(&mut batch.records, r)
                        })()
                    }
                    _ => {
                        batch.lost += 1;
                        Ok(())
                    }
                },
                m => match self.msgs.get(m) {
                    n if n.seq != next => {
                        batch.lost += 1;
                        Ok(())
                    }
                    n if n.kind == BROKER => Ok(()),
                    n => {
                        bytes = bytes.saturating_add(n.copy_len());
                        if bytes > MAX_BATCH_BYTES && !batch.records.is_empty() {
                            break;
                        }
                        n.record().and_then(|r| copy::push(&mut batch.records, r))
                    }
                },
            };
            if copied.is_err() {
                if !batch.records.is_empty() {
                    break;
                }
                batch.lost += 1;
                batch.no_heap += 1;
            }
            s = next;
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
