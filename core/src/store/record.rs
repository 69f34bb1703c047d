//! One stored message and the queue and trash entries that point at it. (A channel-deleted
//! notice lives in its deleted channel's entry, see `channels`.)

use allocator_api2::alloc::Allocator;
use allocator_api2::vec::Vec as AVec;

use super::{copy, Record, StoreError, StoredMessage, OOM};

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

    /// The bytes a copy of this message takes (see [`Msg::record`]).
    pub(super) fn copy_len(&self) -> usize {
        self.data.len()
    }

    /// A copy for the delivery log (made under the zone lock: fallible, see `copy`).
    pub(super) fn record(&self) -> Result<Record, StoreError> {
        Ok(Record::Message {
            seq: self.seq,
            channel: copy::bytes(self.channel())?,
            id: self.id,
            time: self.time,
            tag: self.tag,
            event_id: copy::bytes(self.event_id().unwrap_or_default())?,
            event_type: copy::bytes(self.event_type().unwrap_or_default())?,
            text: copy::bytes(self.text())?,
            published_ms: self.published_ms,
        })
    }

    /// A copy for a subscriber's old messages (fallible, see `copy`).
    pub(super) fn stored(&self) -> Result<StoredMessage, StoreError> {
        Ok(StoredMessage {
            id: self.id,
            time: self.time,
            tag: self.tag,
            event_id: copy::bytes(self.event_id().unwrap_or_default())?,
            event_type: copy::bytes(self.event_type().unwrap_or_default())?,
            text: copy::bytes(self.text())?,
        })
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
