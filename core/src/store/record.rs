//! One stored record: a message node (80 bytes with the zone's allocator) and its packed bytes
//! (one allocation: the publish time in milliseconds, then the lengths as varints, then the
//! channel id, the event id, the event type and the text back to back). (A channel-deleted
//! notice is kept in its deleted channel's node, see `channels`.)

use allocator_api2::alloc::Allocator;
use allocator_api2::vec::Vec as AVec;

use super::pool::{concat_in, link_through, Slot, NIL};
use super::{copy, Record, StoreError, StoredMessage};

/// A message in the host delivery log.
pub(super) const MSG: u8 = 1;
/// A message consumed from the broker by every worker: not part of the host delivery log.
/// (A broker message one worker consumed for the host, `push_stream_amqp_consumer host`, is a
/// `MSG`: the others deliver it from the log.)
pub(super) const BROKER: u8 = 2;
pub(super) struct MsgNode<A: Allocator> {
    pub(super) seq: u64,
    pub(super) id: i64,
    pub(super) time: i64,
    pub(super) tag: u64,
    /// While queued: when it expires; in the trash: when it may be freed.
    pub(super) when: i64,
    /// The queue or trash it is on (or the free list).
    pub(super) next: u32,
    /// `MSG` or `BROKER` (0: vacant).
    pub(super) kind: u8,
    pub(super) _pad: [u8; 3],
    pub(super) data: AVec<u8, A>,
}

impl<A: Allocator + Clone> Slot<A> for MsgNode<A> {
    fn vacant(alloc: &A) -> Self {
        MsgNode {
            seq: 0,
            id: 0,
            time: 0,
            tag: 0,
            when: 0,
            next: NIL,
            kind: 0,
            _pad: [0; 3],
            data: AVec::new_in(alloc.clone()),
        }
    }
    fn is_vacant(&self) -> bool {
        self.kind == 0
    }
    link_through!(next);
}

/// Where the parts are in a record's packed bytes.
pub(super) struct Parts {
    pub(super) published_ms: i64,
    pub(super) channel: (usize, usize),
    pub(super) event_id: Option<(usize, usize)>,
    pub(super) event_type: Option<(usize, usize)>,
    pub(super) text: usize,
}

fn put_varint(out: &mut [u8], at: &mut usize, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        out[*at] = if v == 0 { b } else { b | 0x80 };
        *at += 1;
        if v == 0 {
            return;
        }
    }
}

fn get_varint(b: &[u8], at: &mut usize) -> u64 {
    let mut v = 0u64;
    let mut shift = 0;
    while let Some(&x) = b.get(*at) {
        *at += 1;
        if shift < 64 {
            v |= u64::from(x & 0x7f) << shift;
        }
        shift += 7;
        if x & 0x80 == 0 {
            break;
        }
    }
    v
}

fn opt_len(p: Option<&[u8]>) -> u64 {
    p.map_or(0, |p| p.len() as u64 + 1)
}

/// Packs a record's bytes into one exactly-sized allocation.
pub(super) fn pack<A: Allocator + Clone>(
    alloc: &A,
    published_ms: i64,
    channel: &[u8],
    event_id: Option<&[u8]>,
    event_type: Option<&[u8]>,
    text: &[u8],
) -> Result<AVec<u8, A>, StoreError> {
    // The publish time and three varints of at most 10 bytes each.
    let mut head = [0u8; 38];
    head[..8].copy_from_slice(&published_ms.to_le_bytes());
    let mut at = 8;
    for l in [channel.len() as u64, opt_len(event_id), opt_len(event_type)] {
        put_varint(&mut head, &mut at, l);
    }
    concat_in(
        alloc,
        &[
            &head[..at],
            channel,
            event_id.unwrap_or_default(),
            event_type.unwrap_or_default(),
            text,
        ],
    )
}

impl<A: Allocator> MsgNode<A> {
    pub(super) fn parts(&self) -> Parts {
        let d = &self.data[..];
        let mut ms = [0u8; 8];
        if let Some(b) = d.get(..8) {
            ms.copy_from_slice(b);
        }
        let mut at = 8;
        let cl = get_varint(d, &mut at) as usize;
        let el = get_varint(d, &mut at) as usize;
        let tl = get_varint(d, &mut at) as usize;
        let c = (at, at + cl);
        let e = (c.1, c.1 + el.saturating_sub(1));
        let t = (e.1, e.1 + tl.saturating_sub(1));
        Parts {
            published_ms: i64::from_le_bytes(ms),
            channel: c,
            event_id: (el > 0).then_some(e),
            event_type: (tl > 0).then_some(t),
            text: t.1,
        }
    }

    #[cfg(test)]
    pub(super) fn channel(&self) -> &[u8] {
        let (a, b) = self.parts().channel;
        &self.data[a..b]
    }

    pub(super) fn event_id(&self) -> Option<&[u8]> {
        self.parts().event_id.map(|(a, b)| &self.data[a..b])
    }

    /// The bytes a copy of this message takes (see [`MsgNode::record`]).
    pub(super) fn copy_len(&self) -> usize {
        self.data.len()
    }

    /// Copies of the parts, made under the zone lock: fallible (see `copy`).
    #[allow(clippy::type_complexity)]
    fn fields(&self) -> Result<(i64, Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>), StoreError> {
        let p = self.parts();
        let get = |r: Option<(usize, usize)>| {
            r.map_or(Ok(Vec::new()), |(a, b)| copy::bytes(&self.data[a..b]))
        };
        Ok((
            p.published_ms,
            get(Some(p.channel))?,
            get(p.event_id)?,
            get(p.event_type)?,
            copy::bytes(&self.data[p.text..])?,
        ))
    }

    /// A copy for the delivery log (made under the zone lock: fallible, see `copy`).
    pub(super) fn record(&self) -> Result<Record, StoreError> {
        let (published_ms, channel, event_id, event_type, text) = self.fields()?;
        Ok(Record::Message {
            seq: self.seq,
            channel,
            id: self.id,
            time: self.time,
            tag: self.tag,
            event_id,
            event_type,
            text,
            published_ms,
        })
    }

    /// A copy for a subscriber's old messages (fallible, see `copy`).
    pub(super) fn stored(&self) -> Result<StoredMessage, StoreError> {
        let (_, _, event_id, event_type, text) = self.fields()?;
        Ok(StoredMessage {
            id: self.id,
            time: self.time,
            tag: self.tag,
            event_id,
            event_type,
            text,
        })
    }
}
