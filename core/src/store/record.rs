//! One stored message and the queue and trash entries that point at it. (A channel-deleted
//! notice lives in its deleted channel's entry, see `channels`.)

use allocator_api2::alloc::Allocator;
use allocator_api2::vec::Vec as AVec;

use super::{Record, StoreError, StoredMessage, OOM};

#[derive(Clone, Copy, Default)]
pub(super) struct QEntry {
    pub(super) seq: u64,
    pub(super) expires: i64,
}

#[derive(Clone, Copy, Default)]
pub(super) struct TrashEntry {
    pub(super) seq: u64,
    pub(super) deadline: i64,
}

/// One published message. `data` holds, back to back, the channel id, the event id, the event
/// type and the text.
pub(super) struct Msg<A: Allocator> {
    pub(super) seq: u64,
    pub(super) id: i64,
    pub(super) time: i64,
    pub(super) tag: u64,
    /// Consumed from the broker and not part of the host delivery log (every worker consumes
    /// the broker itself). False for a broker message that one worker consumed for the host
    /// (`push_stream_amqp_consumer host`): the others deliver it from the log.
    pub(super) broker: bool,
    /// Publish time in milliseconds (see `Store::set_clock_ms`), for delivery latency.
    pub(super) published_ms: i64,
    pub(super) chan_len: usize,
    pub(super) eid_len: Option<usize>,
    pub(super) etype_len: Option<usize>,
    pub(super) data: AVec<u8, A>,
}

impl<A: Allocator> Msg<A> {
    pub(super) fn channel(&self) -> &[u8] {
        &self.data[..self.chan_len]
    }
    pub(super) fn eid_end(&self) -> usize {
        self.chan_len + self.eid_len.unwrap_or(0)
    }
    pub(super) fn etype_end(&self) -> usize {
        self.eid_end() + self.etype_len.unwrap_or(0)
    }
    pub(super) fn event_id(&self) -> Option<&[u8]> {
        self.eid_len
            .map(|_| &self.data[self.chan_len..self.eid_end()])
    }
    pub(super) fn event_type(&self) -> Option<&[u8]> {
        self.etype_len
            .map(|_| &self.data[self.eid_end()..self.etype_end()])
    }
    pub(super) fn text(&self) -> &[u8] {
        &self.data[self.etype_end()..]
    }

    pub(super) fn record(&self) -> Record {
        Record::Message {
            seq: self.seq,
            channel: self.channel().to_vec(),
            id: self.id,
            time: self.time,
            tag: self.tag,
            event_id: self.event_id().unwrap_or_default().to_vec(),
            event_type: self.event_type().unwrap_or_default().to_vec(),
            text: self.text().to_vec(),
            published_ms: self.published_ms,
        }
    }

    pub(super) fn stored(&self) -> StoredMessage {
        StoredMessage {
            id: self.id,
            time: self.time,
            tag: self.tag,
            event_id: self.event_id().unwrap_or_default().to_vec(),
            event_type: self.event_type().unwrap_or_default().to_vec(),
            text: self.text().to_vec(),
        }
    }
}

/// Copies `parts` back to back into one exactly-sized allocator vector.
pub(super) fn concat_in<A: Allocator + Clone>(
    alloc: &A,
    parts: &[&[u8]],
) -> Result<AVec<u8, A>, StoreError> {
    let total = parts
        .iter()
        .try_fold(0usize, |acc, p| acc.checked_add(p.len()))
        .ok_or(OOM)?;
    let mut v = AVec::new_in(alloc.clone());
    v.try_reserve_exact(total).map_err(|_| OOM)?;
    for p in parts {
        v.extend_from_slice(p);
    }
    Ok(v)
}
