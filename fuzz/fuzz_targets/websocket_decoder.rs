//! WebSocket frame decoder (`websocket::Decoder`).
//!
//! Input byte 0 picks the mode and the limits, byte 1 seeds how the stream is cut into pieces.
//!
//! * Raw mode (byte 0 even): the rest is fed as a client byte stream, whole and in random
//!   pieces. Checked: both give the same events (chunking invariance); at most one terminal
//!   event (`Close`/`Error`), always the last, after which `is_done()` holds and more input
//!   yields nothing; texts are valid UTF-8; messages fit `max_message`; control payloads fit 125
//!   bytes; close codes are valid and reasons UTF-8; error close codes are 1002/1007/1009; and
//!   no single allocation made by the decoder exceeds `max(125, min(max_message, 2 × input))`
//!   (nothing is buffered on the strength of a declared length alone), also with
//!   `Limits::UNLIMITED`; after every piece, `partial_len()` is within `max_message` and
//!   non-zero only while `in_message()`, and 0 once done.
//! * Round-trip mode (byte 0 odd): the rest drives `arbitrary` to build valid masked messages
//!   (fragmented, with pings in between, random length encodings and masks, then maybe a close
//!   and trailing garbage); the decoder must return exactly the messages that were encoded.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use push_stream_core::websocket::{
    is_valid_close_code, Decoder, Event, Limits, CLOSE_INVALID_DATA, CLOSE_PROTOCOL_ERROR,
    CLOSE_TOO_BIG, MAX_CONTROL_PAYLOAD, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG,
    OP_TEXT,
};
use push_stream_fuzz::{Chunker, TrackingAlloc};

#[global_allocator]
static ALLOC: TrackingAlloc = TrackingAlloc;

const LIMITS: [Limits; 5] = [
    Limits { max_frame_payload: 0, max_message: 0 },
    Limits { max_frame_payload: 16, max_message: 40 },
    Limits { max_frame_payload: 300, max_message: 200 },
    Limits { max_frame_payload: 1 << 20, max_message: 1 << 20 },
    // `client_max_body_size 0`: no limit, so only the allocation bound stops a huge length.
    Limits::UNLIMITED,
];

/// Feeds `pieces` in order and returns every event, checking the allocation bound.
fn decode(limits: Limits, pieces: &[&[u8]], total_len: usize) -> (Vec<Event>, Decoder) {
    let mut d = Decoder::new(limits);
    // Every frame takes at least 2 bytes: the events fit without the vector reallocating, so
    // every allocation seen while tracking is the decoder's own.
    let mut events = Vec::with_capacity(total_len / 2 + 2);
    TrackingAlloc::start();
    for p in pieces {
        d.feed_with(p, |e| events.push(e));
        let partial = d.partial_len();
        assert!(partial as u64 <= limits.max_message, "partial_len {partial} over the limit");
        assert!(partial == 0 || d.in_message(), "partial_len {partial} without a message");
    }
    let largest = TrackingAlloc::stop();
    let bound = (MAX_CONTROL_PAYLOAD as u64)
        .max(limits.max_message.min(2 * total_len as u64));
    assert!(
        largest as u64 <= bound,
        "decoder allocated {largest} bytes at once (bound {bound}, input {total_len})"
    );
    (events, d)
}

fn check_events(limits: Limits, events: &[Event], d: &mut Decoder) {
    for (i, e) in events.iter().enumerate() {
        let last = i + 1 == events.len();
        match e {
            Event::Text(t) => {
                assert!(std::str::from_utf8(t).is_ok(), "text not UTF-8");
                assert!(t.len() as u64 <= limits.max_message);
            }
            Event::Binary(b) => assert!(b.len() as u64 <= limits.max_message),
            Event::Ping(p) | Event::Pong(p) => assert!(p.len() <= MAX_CONTROL_PAYLOAD),
            Event::Close { code, reason } => {
                assert!(last, "event after Close");
                if let Some(c) = code {
                    assert!(is_valid_close_code(*c), "invalid close code {c} accepted");
                } else {
                    assert!(reason.is_empty());
                }
                assert!(std::str::from_utf8(reason).is_ok());
                assert!(reason.len() <= MAX_CONTROL_PAYLOAD - 2);
            }
            Event::Error(r) => {
                assert!(last, "event after Error");
                assert!(matches!(
                    r.code(),
                    CLOSE_PROTOCOL_ERROR | CLOSE_INVALID_DATA | CLOSE_TOO_BIG
                ));
            }
        }
    }
    let terminal = matches!(events.last(), Some(Event::Close { .. } | Event::Error(_)));
    assert_eq!(d.is_done(), terminal, "is_done() disagrees with the events");
    if terminal {
        assert!(!d.in_message());
        assert_eq!(d.partial_len(), 0);
        assert!(d.feed(b"\x81\x80\0\0\0\0\x88\x80\0\0\0\0").is_empty(), "events after done");
    }
}

// ----- round-trip mode -----------------------------------------------------------------------

#[derive(Arbitrary, Debug)]
enum Piece {
    Message {
        text: bool,
        data: Vec<u8>,
        /// Fragment sizes, used cyclically (0 = empty fragment).
        cuts: Vec<u8>,
        /// A ping after fragment i when bit i is set.
        pings: u16,
        len_form: u8,
        mask: [u8; 4],
    },
    Ping(Vec<u8>, [u8; 4]),
    Pong(Vec<u8>, [u8; 4]),
}

#[derive(Arbitrary, Debug)]
struct Script {
    pieces: Vec<Piece>,
    close: Option<(u16, String)>,
    garbage: Vec<u8>,
}

fn encode(out: &mut Vec<u8>, fin: bool, opcode: u8, payload: &[u8], len_form: u8, mask: [u8; 4]) {
    out.push(if fin { 0x80 } else { 0 } | opcode);
    let n = payload.len();
    match len_form % 3 {
        0 if n <= 125 => out.push(0x80 | n as u8),
        0 | 1 if n <= 0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        _ => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
}

fn control(p: &[u8]) -> &[u8] {
    &p[..p.len().min(MAX_CONTROL_PAYLOAD)]
}

fn round_trip(u: &mut Unstructured, chunker: &mut Chunker) -> arbitrary::Result<()> {
    let script = Script::arbitrary(u)?;
    let mut wire = Vec::new();
    let mut expected = Vec::new();
    for piece in &script.pieces {
        match piece {
            Piece::Message { text, data, cuts, pings, len_form, mask } => {
                let data = if *text {
                    String::from_utf8_lossy(data).into_owned().into_bytes()
                } else {
                    data.clone()
                };
                let mut rest = &data[..];
                let mut i = 0usize;
                loop {
                    let cut = if cuts.is_empty() { rest.len() } else { cuts[i % cuts.len()] as usize };
                    let n = cut.min(rest.len());
                    let (frag, r) = rest.split_at(n);
                    rest = r;
                    let fin = rest.is_empty() || i >= 64;
                    let frag = if fin && i >= 64 { [frag, rest].concat() } else { frag.to_vec() };
                    let op = if i > 0 {
                        OP_CONTINUATION
                    } else if *text {
                        OP_TEXT
                    } else {
                        OP_BINARY
                    };
                    encode(&mut wire, fin, op, &frag, len_form.wrapping_add(i as u8), *mask);
                    if fin {
                        break;
                    }
                    if i < 16 && pings & (1 << i) != 0 {
                        encode(&mut wire, true, OP_PING, &frag[..frag.len().min(4)], 0, *mask);
                        expected.push(Event::Ping(frag[..frag.len().min(4)].to_vec()));
                    }
                    i += 1;
                }
                expected.push(if *text { Event::Text(data) } else { Event::Binary(data) });
            }
            Piece::Ping(p, mask) => {
                encode(&mut wire, true, OP_PING, control(p), 0, *mask);
                expected.push(Event::Ping(control(p).to_vec()));
            }
            Piece::Pong(p, mask) => {
                encode(&mut wire, true, OP_PONG, control(p), 0, *mask);
                expected.push(Event::Pong(control(p).to_vec()));
            }
        }
    }
    if let Some((code, reason)) = &script.close {
        let code = if is_valid_close_code(*code) { *code } else { 1000 };
        let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(&reason.as_bytes()[..end]);
        encode(&mut wire, true, OP_CLOSE, &payload, 0, [1, 2, 3, 4]);
        expected.push(Event::Close { code: Some(code), reason: reason.as_bytes()[..end].to_vec() });
        wire.extend_from_slice(&script.garbage);
    }
    let limits = LIMITS[3];
    let (whole, mut d) = decode(limits, &[&wire], wire.len());
    assert_eq!(whole, expected, "round trip (whole input)");
    check_events(limits, &whole, &mut d);
    let max_piece = 1 + (chunker.next_u64() % 20) as usize;
    let pieces = chunker.pieces(&wire, max_piece);
    let (split, _) = decode(limits, &pieces, wire.len());
    assert_eq!(split, expected, "round trip (input in pieces)");
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let mode = data[0];
    let mut chunker = Chunker::new(u64::from(data[1]));
    let rest = &data[2..];
    if mode & 1 == 1 {
        let _ = round_trip(&mut Unstructured::new(rest), &mut chunker);
        return;
    }
    let limits = LIMITS[usize::from(mode >> 1) % LIMITS.len()];
    let (whole, mut d) = decode(limits, &[rest], rest.len());
    check_events(limits, &whole, &mut d);
    let max_piece = if mode & 0x80 != 0 { 1 } else { 1 + (chunker.next_u64() % 32) as usize };
    let pieces = chunker.pieces(rest, max_piece);
    let (split, mut d2) = decode(limits, &pieces, rest.len());
    assert_eq!(whole, split, "events depend on how the input is cut");
    check_events(limits, &split, &mut d2);
});
