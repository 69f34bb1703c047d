//! Server side of the WebSocket protocol (RFC 6455) as used by `push_stream_subscriber websocket`.
//!
//! Three independent pieces, none of which does any I/O:
//!
//! * **Handshake** — [`check_handshake`] validates the four mandatory request headers exactly as
//!   the C module does (presence only, plus `Sec-WebSocket-Version` 8 or 13), and [`accept_key`]
//!   computes `Sec-WebSocket-Accept`.
//! * **Encoder** — server frames are never masked and always have FIN set: [`frame_header`],
//!   [`text_frame`], [`close_frame`], [`refusal_frame`] and the fixed [`PING_FRAME`],
//!   [`PONG_FRAME`] and [`CLOSE_FRAME`] byte strings.
//! * **Decoder** — [`Decoder`] turns the client's byte stream, fed in arbitrary pieces, into
//!   [`Event`]s: reassembled, UTF-8-validated text messages, binary messages, ping, pong and
//!   close, or a single fatal [`Event::Error`] carrying the close code to answer with.
//!
//! Deliberate differences from the C module's reader (see `push-stream.md`, sections 2.7 and 7):
//!
//! * Client frames **must** be masked (RFC 6455 §5.1); an unmasked frame is a protocol error
//!   (1002). The C module accepts both.
//! * Every complete frame in the input is decoded, not one frame per read event, so frames that
//!   arrive together are never left sitting in a buffer.
//! * Protocol violations are classified with their RFC close code (1002, 1007, 1009). Whether the
//!   caller then sends [`CloseReason::close_frame`] or the C module's bare [`CLOSE_FRAME`] (or, for
//!   invalid UTF-8, nothing at all) is a policy decision left to the caller.
//! * Binary messages are decoded and reported as [`Event::Binary`]; the C module refuses them with
//!   [`CLOSE_FRAME`], which the caller can still do.

use base64::Engine as _;

/// The GUID appended to `Sec-WebSocket-Key` before hashing (RFC 6455 §1.3).
pub const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Opcode of a continuation frame.
pub const OP_CONTINUATION: u8 = 0x0;
/// Opcode of a text frame.
pub const OP_TEXT: u8 = 0x1;
/// Opcode of a binary frame.
pub const OP_BINARY: u8 = 0x2;
/// Opcode of a close frame.
pub const OP_CLOSE: u8 = 0x8;
/// Opcode of a ping frame.
pub const OP_PING: u8 = 0x9;
/// Opcode of a pong frame.
pub const OP_PONG: u8 = 0xA;

/// Close code 1000: normal closure.
pub const CLOSE_NORMAL: u16 = 1000;
/// Close code 1002: protocol error.
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// Close code 1007: payload data not consistent with the message type (invalid UTF-8).
pub const CLOSE_INVALID_DATA: u16 = 1007;
/// Close code 1008: policy violation (used by the C module for every post-handshake refusal).
pub const CLOSE_POLICY_VIOLATION: u16 = 1008;
/// Close code 1009: message too big.
pub const CLOSE_TOO_BIG: u16 = 1009;

/// Largest payload of a control frame (ping, pong, close), RFC 6455 §5.5.
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Server ping: FIN + opcode 9, empty payload (`\x89\x00`), sent at
/// `push_stream_ping_message_interval`.
pub const PING_FRAME: &[u8] = b"\x89\x00";
/// Server pong: FIN + opcode 10, empty payload (`\x8A\x00`). Like the C module, the client's ping
/// payload is not echoed.
pub const PONG_FRAME: &[u8] = b"\x8A\x00";
/// Empty close frame (`\x88\x00`): ttl reached, last channel deleted, server stop/reload, and the
/// reply to a client close.
pub const CLOSE_FRAME: &[u8] = b"\x88\x00";

// ---------------------------------------------------------------------------------------------
// Handshake
// ---------------------------------------------------------------------------------------------

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`: `base64(SHA-1(key + GUID))`.
///
/// The key is used byte for byte, as the C module does (no trimming, no validation of its
/// base64 form or length).
pub fn accept_key(sec_websocket_key: &[u8]) -> String {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(sec_websocket_key);
    sha.update(WEBSOCKET_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha.digest().bytes())
}

/// Why a WebSocket upgrade request is refused before the `101` (section 2.7, steps 2 and 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// One of `Upgrade`, `Connection`, `Sec-WebSocket-Key`, `Sec-WebSocket-Version` is absent.
    MissingHeaders,
    /// `Sec-WebSocket-Version` is present but neither 8 nor 13.
    BadVersion,
}

impl HandshakeError {
    /// HTTP status of the refusal: always `400`.
    pub fn status(self) -> u16 {
        400
    }

    /// Value of the `X-Nginx-PushStream-Explain` header, byte-exact with the C module.
    pub fn explain(self) -> &'static str {
        match self {
            HandshakeError::MissingHeaders => {
                "Don't have at least one of the mandatory headers: Connection, Upgrade, \
                 Sec-WebSocket-Key and Sec-WebSocket-Version"
            }
            HandshakeError::BadVersion => "Version not supported. Supported versions: 8, 13",
        }
    }

    /// Extra response header `(name, value)`: `Sec-WebSocket-Version: 8, 13` for
    /// [`HandshakeError::BadVersion`], none otherwise.
    pub fn extra_header(self) -> Option<(&'static str, &'static str)> {
        match self {
            HandshakeError::MissingHeaders => None,
            HandshakeError::BadVersion => Some(("Sec-WebSocket-Version", "8, 13")),
        }
    }
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.explain())
    }
}

impl std::error::Error for HandshakeError {}

/// Checks a WebSocket upgrade request's headers the way the C module does.
///
/// Each argument is the header's value, `None` when the header is absent. Only presence is
/// checked for `Upgrade`, `Connection` and `Sec-WebSocket-Key` (an empty value counts as
/// present). The version must be a decimal number equal to 8 or 13; like the C module's
/// `ngx_atoi`, leading zeros are accepted (`013`), and surrounding spaces/tabs are ignored.
/// Missing headers are reported before a bad version.
pub fn check_handshake(
    upgrade: Option<&[u8]>,
    connection: Option<&[u8]>,
    key: Option<&[u8]>,
    version: Option<&[u8]>,
) -> Result<(), HandshakeError> {
    let (Some(_), Some(_), Some(_), Some(version)) = (upgrade, connection, key, version) else {
        return Err(HandshakeError::MissingHeaders);
    };
    match parse_version(version) {
        Some(8) | Some(13) => Ok(()),
        _ => Err(HandshakeError::BadVersion),
    }
}

/// Decimal value of a version header, `None` if it is not all digits (after trimming spaces).
fn parse_version(v: &[u8]) -> Option<u32> {
    let is_ws = |b: &u8| *b == b' ' || *b == b'\t';
    let start = v.iter().position(|b| !is_ws(b))?;
    let end = v.iter().rposition(|b| !is_ws(b))? + 1;
    let digits = &v[start..end];
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0u32, |acc, d| {
        acc.saturating_mul(10).saturating_add(u32::from(d - b'0'))
    }))
}

// ---------------------------------------------------------------------------------------------
// Encoder
// ---------------------------------------------------------------------------------------------

/// Appends the header of an unmasked, FIN-set frame with `opcode` and a payload of `len` bytes:
/// 7-bit length up to 125, `126` + 16-bit length up to 65535, otherwise `127` + 64-bit length,
/// all in network byte order.
pub fn write_frame_header(out: &mut Vec<u8>, opcode: u8, len: usize) {
    out.push(0x80 | (opcode & 0x0F));
    if len <= 125 {
        out.push(len as u8);
    } else if let Ok(len16) = u16::try_from(len) {
        out.push(126);
        out.extend_from_slice(&len16.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

/// The header of an unmasked, FIN-set frame (see [`write_frame_header`]).
pub fn frame_header(opcode: u8, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(10);
    write_frame_header(&mut out, opcode, len);
    out
}

/// Appends a complete unmasked, FIN-set frame (header and payload).
pub fn write_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.reserve(payload.len() + 10);
    write_frame_header(out, opcode, payload.len());
    out.extend_from_slice(payload);
}

/// A complete unmasked, FIN-set frame (header and payload).
pub fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_frame(&mut out, opcode, payload);
    out
}

/// A text frame (`0x81` + length + payload): how every rendered message, and the header and
/// footer templates, are sent. The payload is sent as is (no UTF-8 check, like the C module).
pub fn text_frame(payload: &[u8]) -> Vec<u8> {
    frame(OP_TEXT, payload)
}

/// A close frame with a status `code` and a `reason`.
///
/// The reason is cut to its longest valid UTF-8 prefix of at most 123 bytes, so the payload
/// stays within the 125-byte control-frame limit, never splits a character, and is always valid
/// UTF-8 (a peer must fail the connection on an invalid close reason).
pub fn close_frame(code: u16, reason: &[u8]) -> Vec<u8> {
    let reason = utf8_prefix(reason, MAX_CONTROL_PAYLOAD - 2);
    let mut out = Vec::with_capacity(4 + reason.len());
    write_frame_header(&mut out, OP_CLOSE, 2 + reason.len());
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(reason);
    out
}

/// Longest prefix of `s` that is at most `max` bytes long and valid UTF-8.
fn utf8_prefix(s: &[u8], max: usize) -> &[u8] {
    let s = &s[..s.len().min(max)];
    match std::str::from_utf8(s) {
        Ok(_) => s,
        Err(e) => &s[..e.valid_up_to()],
    }
}

/// The close frame the C module sends when a request fails after the `101` (section 2.7, step
/// 5): close code 1008 (`\x03\xF0`) followed by
/// `{"http_status": STATUS, "explain":"EXPLAIN"}`, byte for byte including the spacing.
///
/// Unlike the C module, `explain` is escaped for JSON. If the payload would exceed the 125-byte
/// control-frame limit, the explain is shortened (never inside an escape sequence or a
/// character) so that the frame stays valid and the payload stays valid JSON. None of the
/// module's own explain strings comes close to that limit.
pub fn refusal_frame(status: u16, explain: &str) -> Vec<u8> {
    let mut payload = Vec::with_capacity(MAX_CONTROL_PAYLOAD);
    payload.extend_from_slice(&CLOSE_POLICY_VIOLATION.to_be_bytes());
    payload.extend_from_slice(b"{\"http_status\": ");
    payload.extend_from_slice(status.to_string().as_bytes());
    payload.extend_from_slice(b", \"explain\":\"");
    const TAIL: &[u8] = b"\"}";
    let mut buf = [0u8; 4];
    let mut escaped = Vec::with_capacity(8);
    for ch in explain.chars() {
        escaped.clear();
        crate::escape::json_escape_into(&mut escaped, ch.encode_utf8(&mut buf).as_bytes());
        if payload.len() + escaped.len() + TAIL.len() > MAX_CONTROL_PAYLOAD {
            break;
        }
        payload.extend_from_slice(&escaped);
    }
    payload.extend_from_slice(TAIL);
    frame(OP_CLOSE, &payload)
}

// ---------------------------------------------------------------------------------------------
// Decoder
// ---------------------------------------------------------------------------------------------

/// Size limits enforced by the [`Decoder`], checked against the lengths declared in frame
/// headers, before any payload byte is buffered.
///
/// `u64::MAX` means "no limit" (for example nginx's `client_max_body_size 0`): see
/// [`Limits::UNLIMITED`]. No arithmetic on the limits can overflow; a message is then bounded
/// only by the address space (on a 32-bit target, a message larger than `usize::MAX` is still
/// refused with [`CloseReason::MessageTooBig`]), and the decoder's buffer still grows only with
/// the bytes actually received, never to a length a header merely announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted payload of one text, binary or continuation frame. Control frames are
    /// bounded by the protocol's own 125 bytes instead.
    pub max_frame_payload: u64,
    /// Largest accepted reassembled message (sum of the payloads of its frames).
    pub max_message: u64,
}

impl Limits {
    /// No size limit on frames or messages.
    pub const UNLIMITED: Limits = Limits {
        max_frame_payload: u64::MAX,
        max_message: u64::MAX,
    };
}

/// Something the client sent, or the fatal error that ends the decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete text message: fragments joined, unmasked, valid UTF-8.
    Text(Vec<u8>),
    /// A complete binary message: fragments joined, unmasked. (The C module refuses binary
    /// messages; the caller decides.)
    Binary(Vec<u8>),
    /// A ping with its payload (at most 125 bytes).
    Ping(Vec<u8>),
    /// A pong with its payload (at most 125 bytes).
    Pong(Vec<u8>),
    /// A close frame: `code` is `None` for an empty payload; `reason` is valid UTF-8. The
    /// decoder ignores everything after it.
    Close {
        /// Close status code sent by the client, already checked to be a valid one.
        code: Option<u16>,
        /// Close reason, valid UTF-8 (possibly empty).
        reason: Vec<u8>,
    },
    /// A fatal protocol violation. The decoder ignores everything after it; the caller should
    /// close the connection (with [`CloseReason::close_frame`] or its own policy).
    Error(CloseReason),
}

/// Why the decoder failed the connection. [`CloseReason::code`] is the close code to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// A client frame without the MASK bit (1002).
    Unmasked,
    /// RSV1, RSV2 or RSV3 set while no extension was negotiated (1002).
    ReservedBits,
    /// An opcode that is not continuation, text, binary, close, ping or pong (1002).
    UnknownOpcode(u8),
    /// A control frame with FIN clear (1002).
    FragmentedControl,
    /// A control frame with a payload longer than 125 bytes (1002).
    ControlTooLong,
    /// A continuation frame while no fragmented message is open (1002).
    UnexpectedContinuation,
    /// A new text or binary frame while a fragmented message is still open (1002).
    ExpectedContinuation,
    /// A 64-bit payload length with its most significant bit set (1002).
    LengthTopBit,
    /// A close frame with a 1-byte payload (1002).
    CloseTooShort,
    /// A close frame with a code that may not be sent on the wire (1002).
    InvalidCloseCode(u16),
    /// A text message that is not valid UTF-8 (1007).
    InvalidUtf8,
    /// A close reason that is not valid UTF-8 (1007).
    InvalidCloseReason,
    /// A frame whose declared payload exceeds [`Limits::max_frame_payload`] (1009).
    FrameTooBig,
    /// A message whose frames add up to more than [`Limits::max_message`] (1009).
    MessageTooBig,
}

impl CloseReason {
    /// The close code to send back: 1002, 1007 or 1009.
    pub fn code(self) -> u16 {
        use CloseReason::*;
        match self {
            Unmasked
            | ReservedBits
            | UnknownOpcode(_)
            | FragmentedControl
            | ControlTooLong
            | UnexpectedContinuation
            | ExpectedContinuation
            | LengthTopBit
            | CloseTooShort
            | InvalidCloseCode(_) => CLOSE_PROTOCOL_ERROR,
            InvalidUtf8 | InvalidCloseReason => CLOSE_INVALID_DATA,
            FrameTooBig | MessageTooBig => CLOSE_TOO_BIG,
        }
    }

    /// A short English description, usable as the close reason.
    pub fn description(self) -> &'static str {
        use CloseReason::*;
        match self {
            Unmasked => "client frame not masked",
            ReservedBits => "reserved bits set",
            UnknownOpcode(_) => "unknown opcode",
            FragmentedControl => "fragmented control frame",
            ControlTooLong => "control frame too long",
            UnexpectedContinuation => "continuation without a message",
            ExpectedContinuation => "new message inside a fragmented message",
            LengthTopBit => "invalid payload length",
            CloseTooShort => "close payload of one byte",
            InvalidCloseCode(_) => "invalid close code",
            InvalidUtf8 => "text message not valid UTF-8",
            InvalidCloseReason => "close reason not valid UTF-8",
            FrameTooBig => "frame too big",
            MessageTooBig => "message too big",
        }
    }

    /// The close frame to answer with: [`CloseReason::code`] and [`CloseReason::description`].
    pub fn close_frame(self) -> Vec<u8> {
        close_frame(self.code(), self.description().as_bytes())
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.description(), self.code())
    }
}

impl std::error::Error for CloseReason {}

/// Whether a close code received from a client is acceptable (RFC 6455 §7.4): the defined codes
/// that may appear on the wire (1000–1003, 1007–1011, and the IANA-registered 1012–1014) and the
/// registered/private range 3000–4999. 1004, 1005, 1006, 1015 and everything else are invalid.
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Kind of the fragmented message being reassembled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MsgKind {
    Text,
    Binary,
}

/// Where the decoder is in the byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Collecting the (2 to 14 byte) header of the next frame.
    Header,
    /// Reading `remaining` payload bytes of the current frame.
    Payload,
    /// After a close frame or a fatal error: all input is ignored.
    Done,
}

/// Incremental decoder of client → server frames.
///
/// Feed it the bytes read from the socket, in pieces of any size; it returns the events of
/// every frame completed by those bytes, in order. Frames may be split at any byte and several
/// may arrive in one piece. Control frames may be interleaved inside a fragmented message.
///
/// After [`Event::Close`] or [`Event::Error`] the decoder is [done](Decoder::is_done) and
/// ignores further input.
///
/// The client may send its first frames in the same packet as the upgrade request: whatever
/// followed the request's header block in the read buffer is simply the start of this byte
/// stream, and is fed first, like any later read.
///
/// Memory: the header is collected in a fixed 14-byte array; a control payload uses at most 125
/// bytes; a data message is only buffered after its header passed the [`Limits`] check, and the
/// buffer's capacity never grows past the end of the frame being read, so it stays within
/// `max_message`. Non-minimal length encodings (e.g. a 5-byte payload announced with the 64-bit
/// form) are accepted, as most servers and the C module do.
#[derive(Debug, Clone)]
pub struct Decoder {
    limits: Limits,
    state: State,
    /// Header bytes received so far for the current frame.
    hdr: [u8; 14],
    hdr_len: usize,
    /// Current frame (valid once its header is complete).
    fin: bool,
    opcode: u8,
    payload_len: u64,
    mask: [u8; 4],
    /// Payload bytes of the current frame still to read.
    remaining: u64,
    /// Payload bytes of the current frame already read (mask index).
    read: u64,
    /// Payload of the current control frame.
    control: Vec<u8>,
    /// Fragmented (or single-frame) data message being assembled.
    msg: Option<MsgKind>,
    msg_buf: Vec<u8>,
    /// Length of the `msg_buf` prefix already known to be valid UTF-8 (text messages).
    utf8_valid: usize,
    /// `msg_buf.len()` plus the current data frame's declared payload length.
    frame_end: usize,
}

impl Decoder {
    /// A decoder waiting for the first frame.
    pub fn new(limits: Limits) -> Self {
        Decoder {
            limits,
            state: State::Header,
            hdr: [0; 14],
            hdr_len: 0,
            fin: false,
            opcode: 0,
            payload_len: 0,
            mask: [0; 4],
            remaining: 0,
            read: 0,
            control: Vec::new(),
            msg: None,
            msg_buf: Vec::new(),
            utf8_valid: 0,
            frame_end: 0,
        }
    }

    /// The limits this decoder enforces.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// True after a close frame or a fatal error: further input is ignored.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// True while a data message has been started and not finished: a fragmented message
    /// whose final frame has not arrived, or a text/binary frame whose payload is still being
    /// read.
    pub fn in_message(&self) -> bool {
        self.msg.is_some()
    }

    /// Payload bytes buffered for the data message being assembled (its complete fragments and
    /// what has arrived of the current frame); 0 when no message is open (see
    /// [`in_message`](Decoder::in_message)), and after a close or an error. Control frames
    /// received meanwhile are not counted. Always within [`Limits::max_message`].
    pub fn partial_len(&self) -> usize {
        if self.msg.is_some() {
            self.msg_buf.len()
        } else {
            0
        }
    }

    /// Decodes `data` and returns the events of every frame it completes, in order.
    pub fn feed(&mut self, data: &[u8]) -> Vec<Event> {
        let mut events = Vec::new();
        self.feed_with(data, |e| events.push(e));
        events
    }

    /// Decodes `data`, calling `on_event` for each event, in order. Same as [`Decoder::feed`]
    /// without the intermediate vector.
    pub fn feed_with(&mut self, mut data: &[u8], mut on_event: impl FnMut(Event)) {
        while !data.is_empty() {
            match self.state {
                State::Done => return,
                State::Header => {
                    self.hdr[self.hdr_len] = data[0];
                    self.hdr_len += 1;
                    data = &data[1..];
                    if let Err(reason) = self.header_progress(&mut on_event) {
                        self.fail(reason, &mut on_event);
                    }
                }
                State::Payload => {
                    let n =
                        usize::try_from(self.remaining).map_or(data.len(), |r| r.min(data.len()));
                    let (chunk, rest) = data.split_at(n);
                    data = rest;
                    self.take_payload(chunk);
                    if self.remaining == 0 {
                        self.finish_frame(&mut on_event);
                    }
                }
            }
        }
    }

    /// Emits the fatal error and stops decoding, releasing the buffers.
    fn fail(&mut self, reason: CloseReason, on_event: &mut impl FnMut(Event)) {
        self.state = State::Done;
        self.msg = None;
        self.msg_buf = Vec::new();
        self.control = Vec::new();
        on_event(Event::Error(reason));
    }

    /// Validates what is known of the header after each new byte; when the header is complete,
    /// starts the payload (or finishes an empty frame at once).
    fn header_progress(&mut self, on_event: &mut impl FnMut(Event)) -> Result<(), CloseReason> {
        let b0 = self.hdr[0];
        if self.hdr_len == 1 {
            // FIN, RSV1-3, opcode.
            self.fin = b0 & 0x80 != 0;
            self.opcode = b0 & 0x0F;
            if b0 & 0x70 != 0 {
                return Err(CloseReason::ReservedBits);
            }
            match self.opcode {
                OP_CONTINUATION => {
                    if self.msg.is_none() {
                        return Err(CloseReason::UnexpectedContinuation);
                    }
                }
                OP_TEXT | OP_BINARY => {
                    if self.msg.is_some() {
                        return Err(CloseReason::ExpectedContinuation);
                    }
                }
                OP_CLOSE | OP_PING | OP_PONG => {
                    if !self.fin {
                        return Err(CloseReason::FragmentedControl);
                    }
                }
                op => return Err(CloseReason::UnknownOpcode(op)),
            }
            return Ok(());
        }
        let b1 = self.hdr[1];
        let len7 = b1 & 0x7F;
        let ext_len = match len7 {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        if self.hdr_len == 2 {
            if b1 & 0x80 == 0 {
                return Err(CloseReason::Unmasked);
            }
            if self.is_control() {
                if len7 > MAX_CONTROL_PAYLOAD as u8 {
                    return Err(CloseReason::ControlTooLong);
                }
                if self.opcode == OP_CLOSE && len7 == 1 {
                    return Err(CloseReason::CloseTooShort);
                }
            }
        }
        if self.hdr_len == 2 + ext_len {
            // The payload length is now known: check it before anything is buffered.
            self.payload_len = match ext_len {
                0 => u64::from(len7),
                2 => u64::from(u16::from_be_bytes([self.hdr[2], self.hdr[3]])),
                _ => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&self.hdr[2..10]);
                    let len = u64::from_be_bytes(b);
                    if len >> 63 != 0 {
                        return Err(CloseReason::LengthTopBit);
                    }
                    len
                }
            };
            if !self.is_control() {
                self.check_data_limits()?;
            }
        }
        let total = 2 + ext_len + 4;
        if self.hdr_len < total {
            return Ok(());
        }
        // Header complete.
        self.mask.copy_from_slice(&self.hdr[2 + ext_len..total]);
        self.hdr_len = 0;
        self.remaining = self.payload_len;
        self.read = 0;
        if self.is_control() {
            self.control.clear();
            self.control.reserve_exact(self.payload_len as usize);
        } else {
            if self.opcode != OP_CONTINUATION {
                self.msg = Some(if self.opcode == OP_TEXT {
                    MsgKind::Text
                } else {
                    MsgKind::Binary
                });
            }
            // Bounded by check_data_limits: fits in usize and within max_message.
            self.frame_end = self.msg_buf.len() + self.payload_len as usize;
        }
        if self.remaining == 0 {
            self.finish_frame(on_event);
        } else {
            self.state = State::Payload;
        }
        Ok(())
    }

    /// Applies [`Limits`] to the declared length of a data frame.
    fn check_data_limits(&self) -> Result<(), CloseReason> {
        let len = self.payload_len;
        if len > self.limits.max_frame_payload {
            return Err(CloseReason::FrameTooBig);
        }
        let total = (self.msg_buf.len() as u64).saturating_add(len);
        if total > self.limits.max_message || usize::try_from(total).is_err() {
            return Err(CloseReason::MessageTooBig);
        }
        Ok(())
    }

    fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }

    /// Unmasks `chunk` (at most `remaining` bytes) into the control or message buffer.
    fn take_payload(&mut self, chunk: &[u8]) {
        let buf = if self.is_control() {
            &mut self.control
        } else {
            let needed = self.msg_buf.len() + chunk.len();
            if needed > self.msg_buf.capacity() {
                // Grow geometrically, but never past the end of this frame (within the limits).
                let target = (self.msg_buf.capacity() * 2)
                    .max(needed)
                    .min(self.frame_end)
                    .max(needed);
                self.msg_buf.reserve_exact(target - self.msg_buf.len());
            }
            &mut self.msg_buf
        };
        let offset = (self.read & 3) as usize;
        buf.extend(
            chunk
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ self.mask[(offset + i) & 3]),
        );
        self.read += chunk.len() as u64;
        self.remaining -= chunk.len() as u64;
    }

    /// The current frame's payload is complete: emit its event, if any, and expect a header.
    fn finish_frame(&mut self, on_event: &mut impl FnMut(Event)) {
        self.state = State::Header;
        match self.opcode {
            OP_PING => on_event(Event::Ping(std::mem::take(&mut self.control))),
            OP_PONG => on_event(Event::Pong(std::mem::take(&mut self.control))),
            OP_CLOSE => match parse_close(&self.control) {
                Ok((code, reason)) => {
                    let reason = reason.to_vec();
                    self.state = State::Done;
                    self.msg = None;
                    self.msg_buf = Vec::new();
                    self.control = Vec::new();
                    on_event(Event::Close { code, reason });
                }
                Err(e) => self.fail(e, on_event),
            },
            _ => {
                let kind = self.msg.expect("data frame without a message");
                if kind == MsgKind::Text {
                    // Fail fast on invalid UTF-8, allowing a character split across frames.
                    match std::str::from_utf8(&self.msg_buf[self.utf8_valid..]) {
                        Ok(_) => self.utf8_valid = self.msg_buf.len(),
                        Err(e) => {
                            if e.error_len().is_some() || self.fin {
                                return self.fail(CloseReason::InvalidUtf8, on_event);
                            }
                            self.utf8_valid += e.valid_up_to();
                        }
                    }
                }
                if self.fin {
                    let data = std::mem::take(&mut self.msg_buf);
                    self.msg = None;
                    self.utf8_valid = 0;
                    on_event(match kind {
                        MsgKind::Text => Event::Text(data),
                        MsgKind::Binary => Event::Binary(data),
                    });
                }
            }
        }
    }
}

/// Splits and validates a close payload (already known not to be 1 byte long).
fn parse_close(payload: &[u8]) -> Result<(Option<u16>, &[u8]), CloseReason> {
    if payload.is_empty() {
        return Ok((None, &[]));
    }
    if payload.len() < 2 {
        return Err(CloseReason::CloseTooShort);
    }
    let code = u16::from_be_bytes([payload[0], payload[1]]);
    if !is_valid_close_code(code) {
        return Err(CloseReason::InvalidCloseCode(code));
    }
    let reason = &payload[2..];
    if std::str::from_utf8(reason).is_err() {
        return Err(CloseReason::InvalidCloseReason);
    }
    Ok((Some(code), reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    fn big_limits() -> Limits {
        Limits {
            max_frame_payload: 1 << 20,
            max_message: 1 << 20,
        }
    }

    /// Length encoding forced in a test client frame.
    #[derive(Clone, Copy)]
    enum Len {
        Minimal,
        Force16,
        Force64,
    }

    /// A client frame: `first` is the whole first byte (FIN, RSV, opcode).
    fn raw_frame(first: u8, mask: Option<[u8; 4]>, payload: &[u8], len: Len) -> Vec<u8> {
        let mut out = vec![first];
        let m = if mask.is_some() { 0x80 } else { 0 };
        let n = payload.len();
        match len {
            Len::Minimal if n <= 125 => out.push(m | n as u8),
            Len::Minimal | Len::Force16 if n <= 0xFFFF => {
                out.push(m | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            _ => {
                out.push(m | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        match mask {
            Some(k) => {
                out.extend_from_slice(&k);
                out.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
            }
            None => out.extend_from_slice(payload),
        }
        out
    }

    /// A masked client frame with the given FIN and opcode.
    fn cframe(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let first = if fin { 0x80 } else { 0 } | opcode;
        raw_frame(first, Some(MASK), payload, Len::Minimal)
    }

    fn decode(data: &[u8]) -> Vec<Event> {
        Decoder::new(big_limits()).feed(data)
    }

    fn decode_err(data: &[u8]) -> CloseReason {
        let ev = decode(data);
        match ev.last() {
            Some(Event::Error(r)) => *r,
            other => panic!("expected an error, got {other:?} in {ev:?}"),
        }
    }

    // ---- handshake ------------------------------------------------------------------------

    #[test]
    fn accept_key_rfc6455_example() {
        // RFC 6455 §1.3 (the value is the one printed in the RFC, checked with
        // `openssl sha1 -binary | base64`).
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        // The example used by Wikipedia and MDN.
        assert_eq!(
            accept_key(b"x3JJHMbDL1EzLkh9GBhXDw=="),
            "HSmrc0sMlYUkAGmm5OPpG2HaGWk="
        );
    }

    #[test]
    fn accept_key_uses_key_bytes_verbatim() {
        assert_ne!(
            accept_key(b" dGhlIHNhbXBsZSBub25jZQ=="),
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ==")
        );
        assert_eq!(accept_key(b"").len(), 28);
    }

    #[test]
    fn handshake_accepts_versions_8_and_13() {
        let h = Some(&b"x"[..]);
        assert_eq!(check_handshake(h, h, h, Some(b"13")), Ok(()));
        assert_eq!(check_handshake(h, h, h, Some(b"8")), Ok(()));
        assert_eq!(check_handshake(h, h, h, Some(b" 13\t")), Ok(()));
        assert_eq!(check_handshake(h, h, h, Some(b"013")), Ok(()));
        // Values of the other headers are not checked, only their presence.
        assert_eq!(
            check_handshake(Some(b""), Some(b""), Some(b""), Some(b"8")),
            Ok(())
        );
    }

    #[test]
    fn handshake_missing_headers() {
        let h = Some(&b"x"[..]);
        let v = Some(&b"13"[..]);
        for args in [
            (None, h, h, v),
            (h, None, h, v),
            (h, h, None, v),
            (h, h, h, None),
            (None, None, None, None),
        ] {
            assert_eq!(
                check_handshake(args.0, args.1, args.2, args.3),
                Err(HandshakeError::MissingHeaders)
            );
        }
        // Missing headers win over a bad version.
        assert_eq!(
            check_handshake(None, h, h, Some(b"7")),
            Err(HandshakeError::MissingHeaders)
        );
    }

    #[test]
    fn handshake_bad_version() {
        let h = Some(&b"x"[..]);
        for v in [
            &b"7"[..],
            b"",
            b" ",
            b"13a",
            b"-13",
            b"8, 13",
            b"99999999999999999999",
        ] {
            assert_eq!(
                check_handshake(h, h, h, Some(v)),
                Err(HandshakeError::BadVersion),
                "{v:?}"
            );
        }
    }

    #[test]
    fn handshake_error_responses() {
        let m = HandshakeError::MissingHeaders;
        let b = HandshakeError::BadVersion;
        assert_eq!(m.status(), 400);
        assert_eq!(b.status(), 400);
        assert_eq!(
            m.explain(),
            "Don't have at least one of the mandatory headers: Connection, Upgrade, \
             Sec-WebSocket-Key and Sec-WebSocket-Version"
        );
        assert_eq!(
            b.explain(),
            "Version not supported. Supported versions: 8, 13"
        );
        assert_eq!(m.extra_header(), None);
        assert_eq!(b.extra_header(), Some(("Sec-WebSocket-Version", "8, 13")));
        assert_eq!(b.to_string(), b.explain());
    }

    // ---- encoder --------------------------------------------------------------------------

    #[test]
    fn frame_header_length_encodings() {
        assert_eq!(frame_header(OP_TEXT, 0), vec![0x81, 0]);
        assert_eq!(frame_header(OP_TEXT, 125), vec![0x81, 125]);
        assert_eq!(frame_header(OP_TEXT, 126), vec![0x81, 126, 0, 126]);
        assert_eq!(frame_header(OP_TEXT, 65535), vec![0x81, 126, 0xFF, 0xFF]);
        assert_eq!(
            frame_header(OP_TEXT, 65536),
            vec![0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]
        );
        assert_eq!(frame_header(OP_CLOSE, 2), vec![0x88, 2]);
        assert_eq!(frame_header(OP_BINARY, 1), vec![0x82, 1]);
    }

    #[test]
    fn text_frame_bytes() {
        assert_eq!(
            text_frame(b"FOOTER_TEMPLATE"),
            b"\x81\x0fFOOTER_TEMPLATE".to_vec()
        );
        assert_eq!(text_frame(b""), b"\x81\x00".to_vec());
        let p = vec![b'a'; 300];
        let f = text_frame(&p);
        assert_eq!(&f[..4], &[0x81, 126, 0x01, 0x2C]);
        assert_eq!(&f[4..], &p[..]);
        let p = vec![b'b'; 70000];
        let f = text_frame(&p);
        assert_eq!(&f[..10], &[0x81, 127, 0, 0, 0, 0, 0, 0x01, 0x11, 0x70]);
        assert_eq!(f.len(), 70010);
    }

    #[test]
    fn fixed_control_frames() {
        assert_eq!(PING_FRAME, &[0x89, 0x00]);
        assert_eq!(PONG_FRAME, &[0x8A, 0x00]);
        assert_eq!(CLOSE_FRAME, &[0x88, 0x00]);
    }

    #[test]
    fn close_frame_bytes() {
        assert_eq!(close_frame(1000, b""), vec![0x88, 2, 0x03, 0xE8]);
        assert_eq!(close_frame(1002, b"bye"), b"\x88\x05\x03\xEAbye".to_vec());
    }

    #[test]
    fn close_frame_truncates_on_utf8_boundary() {
        let ascii = vec![b'x'; 200];
        let f = close_frame(1000, &ascii);
        assert_eq!(f[1], 125);
        assert_eq!(f.len(), 127);

        let reason = "é".repeat(100); // 200 bytes, 2 per char
        let f = close_frame(1000, reason.as_bytes());
        assert_eq!(f[1], 124); // 2 + 122: 123 would split a character
        assert!(std::str::from_utf8(&f[4..]).is_ok());

        // An invalid byte ends the reason there.
        let f = close_frame(1000, b"ab\xffcd");
        assert_eq!(&f[4..], b"ab");
    }

    #[test]
    fn refusal_frame_exact_bytes() {
        let json: &[u8] =
            b"{\"http_status\": 403, \"explain\":\"Subscriber could not create channels.\"}";
        let mut expected = vec![0x88, (json.len() + 2) as u8, 0x03, 0xF0];
        expected.extend_from_slice(json);
        assert_eq!(
            refusal_frame(403, "Subscriber could not create channels."),
            expected
        );
        assert_eq!(expected[1], 73);
    }

    #[test]
    fn refusal_frame_escapes_and_stays_a_control_frame() {
        let f = refusal_frame(400, "a\"b\\c");
        assert_eq!(
            &f[4..],
            b"{\"http_status\": 400, \"explain\":\"a\\\"b\\\\c\"}"
        );
        let long = "\"".repeat(200);
        let f = refusal_frame(500, &long);
        assert!(f[1] as usize <= MAX_CONTROL_PAYLOAD);
        assert_eq!(f.len(), 2 + f[1] as usize);
        let json = std::str::from_utf8(&f[4..]).unwrap();
        assert!(json.ends_with("\\\"\"}"), "{json}");
        assert!(!json.ends_with("\\\"}"), "{json}");
    }

    // ---- decoder: basics ------------------------------------------------------------------

    #[test]
    fn decodes_masked_text_rfc_example() {
        // RFC 6455 §5.7: a single-frame masked text message containing "Hello".
        let data = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        assert_eq!(decode(&data), vec![Event::Text(b"Hello".to_vec())]);
    }

    #[test]
    fn decodes_each_length_encoding() {
        for (n, len) in [
            (0, Len::Minimal),
            (1, Len::Minimal),
            (125, Len::Minimal),
            (126, Len::Minimal),
            (65535, Len::Minimal),
            (65536, Len::Minimal),
            (200_000, Len::Minimal),
            (5, Len::Force16),
            (5, Len::Force64),
            (300, Len::Force64),
        ] {
            let payload: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
            let f = raw_frame(0x81, Some(MASK), &payload, len);
            assert_eq!(decode(&f), vec![Event::Text(payload.clone())], "len {n}");
            let f = raw_frame(0x82, Some(MASK), &payload, len);
            assert_eq!(decode(&f), vec![Event::Binary(payload)], "len {n}");
        }
    }

    #[test]
    fn encoder_output_round_trips_through_decoder_once_masked() {
        for n in [0usize, 125, 126, 65535, 65536] {
            let payload = vec![b'z'; n];
            let f = text_frame(&payload);
            // Set the MASK bit and insert a zero mask key after the length.
            let hl = frame_header(OP_TEXT, n).len();
            let mut masked = f[..hl].to_vec();
            masked[1] |= 0x80;
            masked.extend_from_slice(&[0, 0, 0, 0]);
            masked.extend_from_slice(&f[hl..]);
            assert_eq!(decode(&masked), vec![Event::Text(payload)]);
        }
    }

    #[test]
    fn several_frames_in_one_buffer() {
        let mut data = cframe(true, OP_TEXT, b"one");
        data.extend(cframe(true, OP_PING, b"p"));
        data.extend(cframe(true, OP_TEXT, b""));
        data.extend(cframe(true, OP_PONG, b""));
        data.extend(cframe(true, OP_BINARY, &[0, 1, 2]));
        data.extend(cframe(true, OP_TEXT, "two é".as_bytes()));
        assert_eq!(
            decode(&data),
            vec![
                Event::Text(b"one".to_vec()),
                Event::Ping(b"p".to_vec()),
                Event::Text(Vec::new()),
                Event::Pong(Vec::new()),
                Event::Binary(vec![0, 1, 2]),
                Event::Text("two é".as_bytes().to_vec()),
            ]
        );
    }

    fn sample_stream() -> (Vec<u8>, Vec<Event>) {
        let mut data = cframe(true, OP_TEXT, b"hello");
        data.extend(cframe(false, OP_TEXT, "frag é".as_bytes()));
        data.extend(cframe(true, OP_PING, b"ping!"));
        data.extend(cframe(false, OP_CONTINUATION, b""));
        data.extend(cframe(true, OP_CONTINUATION, b" end"));
        data.extend(raw_frame(0x82, Some(MASK), &[7; 300], Len::Minimal));
        data.extend(cframe(true, OP_CLOSE, b"\x03\xe8ok"));
        let events = vec![
            Event::Text(b"hello".to_vec()),
            Event::Ping(b"ping!".to_vec()),
            Event::Text("frag é end".as_bytes().to_vec()),
            Event::Binary(vec![7; 300]),
            Event::Close {
                code: Some(1000),
                reason: b"ok".to_vec(),
            },
        ];
        (data, events)
    }

    #[test]
    fn frames_fed_one_byte_at_a_time() {
        let (data, expected) = sample_stream();
        let mut d = Decoder::new(big_limits());
        let mut got = Vec::new();
        for b in &data {
            got.extend(d.feed(std::slice::from_ref(b)));
        }
        assert_eq!(got, expected);
        assert!(d.is_done());
    }

    #[test]
    fn frames_split_at_every_byte() {
        let (data, expected) = sample_stream();
        for i in 0..=data.len() {
            let mut d = Decoder::new(big_limits());
            let mut got = d.feed(&data[..i]);
            got.extend(d.feed(&data[i..]));
            assert_eq!(got, expected, "split at {i}");
        }
    }

    #[test]
    fn frames_split_at_every_pair_of_boundaries() {
        // Every length encoding, a fragmented message with a ping inside, and a close.
        let mut data = raw_frame(0x01, Some(MASK), b"ab", Len::Force64);
        data.extend(cframe(true, OP_PING, b"p"));
        data.extend(raw_frame(0x80, Some(MASK), &[b'c'; 130], Len::Minimal));
        data.extend(raw_frame(0x82, Some(MASK), b"xyz", Len::Force16));
        data.extend(cframe(true, OP_CLOSE, b"\x03\xe8"));
        let mut text = b"ab".to_vec();
        text.extend_from_slice(&[b'c'; 130]);
        let expected = vec![
            Event::Ping(b"p".to_vec()),
            Event::Text(text),
            Event::Binary(b"xyz".to_vec()),
            Event::Close {
                code: Some(1000),
                reason: Vec::new(),
            },
        ];
        for i in 0..=data.len() {
            for j in i..=data.len() {
                let mut d = Decoder::new(big_limits());
                let mut got = d.feed(&data[..i]);
                got.extend(d.feed(&data[i..j]));
                got.extend(d.feed(&data[j..]));
                assert_eq!(got, expected, "split at {i} and {j}");
                assert!(d.is_done());
            }
        }
    }

    #[test]
    fn bytes_that_arrived_with_the_handshake_are_decoded() {
        // One read holding the upgrade request and the client's first frames: the caller
        // feeds what follows the header block, then later reads; every cut gives the same.
        let request = b"GET /ws/ch1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
            Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
            Sec-WebSocket-Version: 13\r\n\r\n";
        let (frames, expected) = sample_stream();
        let mut wire = request.to_vec();
        wire.extend_from_slice(&frames);
        let body = wire.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert_eq!(body, request.len());
        for read_end in body..=wire.len() {
            let mut d = Decoder::new(big_limits());
            // Bytes of the first read that follow the request, then the rest of the stream.
            let mut got = d.feed(&wire[body..read_end]);
            got.extend(d.feed(&wire[read_end..]));
            assert_eq!(got, expected, "first read ends at {read_end}");
        }
    }

    #[test]
    fn partial_len_counts_the_open_message() {
        let mut d = Decoder::new(big_limits());
        assert_eq!((d.partial_len(), d.in_message()), (0, false));
        assert_eq!(d.feed(&cframe(false, OP_TEXT, b"frag")), vec![]);
        assert_eq!((d.partial_len(), d.in_message()), (4, true));
        // A control frame in between does not count.
        assert_eq!(
            d.feed(&cframe(true, OP_PING, b"ping")),
            vec![Event::Ping(b"ping".to_vec())]
        );
        assert_eq!(d.partial_len(), 4);
        // Part of the next fragment: its received bytes count.
        let next = cframe(false, OP_CONTINUATION, b"12345");
        assert_eq!(d.feed(&next[..next.len() - 2]), vec![]);
        assert_eq!(d.partial_len(), 7);
        assert_eq!(d.feed(&next[next.len() - 2..]), vec![]);
        assert_eq!(d.partial_len(), 9);
        assert_eq!(
            d.feed(&cframe(true, OP_CONTINUATION, b"!")),
            vec![Event::Text(b"frag12345!".to_vec())]
        );
        assert_eq!((d.partial_len(), d.in_message()), (0, false));
        // A single frame being read is an open message too.
        let one = cframe(true, OP_BINARY, b"abcdef");
        assert_eq!(d.feed(&one[..one.len() - 3]), vec![]);
        assert_eq!((d.partial_len(), d.in_message()), (3, true));
        assert_eq!(
            d.feed(&one[one.len() - 3..]),
            vec![Event::Binary(b"abcdef".to_vec())]
        );
        assert_eq!(d.partial_len(), 0);
        // An error or a close releases the message.
        assert_eq!(d.feed(&cframe(false, OP_TEXT, b"abc")), vec![]);
        assert_eq!(d.partial_len(), 3);
        assert_eq!(
            d.feed(&cframe(true, OP_CLOSE, b"")),
            vec![Event::Close {
                code: None,
                reason: Vec::new()
            }]
        );
        assert_eq!((d.partial_len(), d.in_message()), (0, false));
        let mut d = Decoder::new(big_limits());
        d.feed(&cframe(false, OP_TEXT, b"abc"));
        assert_eq!(
            d.feed(&raw_frame(0x80, None, b"x", Len::Minimal)),
            vec![Event::Error(CloseReason::Unmasked)]
        );
        assert_eq!(d.partial_len(), 0);
    }

    #[test]
    // On 32-bit targets a 2^63-byte message does not fit in memory: MessageTooBig, by design.
    #[cfg(target_pointer_width = "64")]
    fn unlimited_limits_do_not_overflow() {
        assert_eq!(
            Limits::UNLIMITED,
            Limits {
                max_frame_payload: u64::MAX,
                max_message: u64::MAX
            }
        );
        // Ordinary traffic.
        let (data, expected) = sample_stream();
        assert_eq!(Decoder::new(Limits::UNLIMITED).feed(&data), expected);
        // The largest length a header may announce (2^63 - 1), alone and after a fragment:
        // accepted, and only what actually arrives is buffered.
        let huge = (1u64 << 63) - 1;
        let header = |first: u8| {
            let mut h = vec![first, 0x80 | 127];
            h.extend_from_slice(&huge.to_be_bytes());
            h.extend_from_slice(&[0, 0, 0, 0]);
            h
        };
        let mut d = Decoder::new(Limits::UNLIMITED);
        assert_eq!(d.feed(&header(0x81)), vec![]);
        assert_eq!(d.feed(&[b'a'; 1000]), vec![]);
        assert_eq!(d.partial_len(), 1000);
        assert!(d.msg_buf.capacity() <= 2000, "{}", d.msg_buf.capacity());
        let mut d = Decoder::new(Limits::UNLIMITED);
        assert_eq!(d.feed(&cframe(false, OP_TEXT, b"0123456789")), vec![]);
        assert_eq!(d.feed(&header(0x80)), vec![]);
        assert_eq!(d.feed(b"abc"), vec![]);
        assert_eq!((d.partial_len(), d.in_message()), (13, true));
        assert!(!d.is_done());
        // A length with the top bit set is still a protocol error.
        let mut bad = vec![0x81, 0x80 | 127];
        bad.extend_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(
            Decoder::new(Limits::UNLIMITED).feed(&bad),
            vec![Event::Error(CloseReason::LengthTopBit)]
        );
    }

    #[test]
    fn feed_with_callback_matches_feed() {
        let (data, expected) = sample_stream();
        let mut d = Decoder::new(big_limits());
        let mut got = Vec::new();
        d.feed_with(&data, |e| got.push(e));
        assert_eq!(got, expected);
    }

    #[test]
    fn fragmented_message_with_interleaved_ping() {
        let mut data = cframe(false, OP_TEXT, b"Hel");
        data.extend(cframe(true, OP_PING, b"x"));
        data.extend(cframe(false, OP_CONTINUATION, b"lo, "));
        data.extend(cframe(true, OP_PONG, b""));
        data.extend(cframe(true, OP_CONTINUATION, b"world"));
        let mut d = Decoder::new(big_limits());
        let ev = d.feed(&data[..data.len() - 1]);
        assert_eq!(
            ev,
            vec![Event::Ping(b"x".to_vec()), Event::Pong(Vec::new())]
        );
        assert!(d.in_message());
        let ev = d.feed(&data[data.len() - 1..]);
        assert_eq!(ev, vec![Event::Text(b"Hello, world".to_vec())]);
        assert!(!d.in_message());
        // A new message may start afterwards.
        assert_eq!(
            d.feed(&cframe(true, OP_TEXT, b"next")),
            vec![Event::Text(b"next".to_vec())]
        );
    }

    #[test]
    fn fragmented_binary_message() {
        let mut data = cframe(false, OP_BINARY, &[1, 2]);
        data.extend(cframe(true, OP_CONTINUATION, &[0xff]));
        assert_eq!(decode(&data), vec![Event::Binary(vec![1, 2, 0xff])]);
    }

    #[test]
    fn utf8_character_split_across_fragments() {
        let e = "é".as_bytes();
        let mut data = cframe(false, OP_TEXT, &e[..1]);
        data.extend(cframe(true, OP_CONTINUATION, &e[1..]));
        assert_eq!(decode(&data), vec![Event::Text(e.to_vec())]);
    }

    #[test]
    fn close_frames() {
        assert_eq!(
            decode(&cframe(true, OP_CLOSE, b"")),
            vec![Event::Close {
                code: None,
                reason: Vec::new()
            }]
        );
        for code in [1000u16, 1001, 1003, 1007, 1011, 1012, 1014, 3000, 4999] {
            let mut p = code.to_be_bytes().to_vec();
            p.extend_from_slice("bye ☃".as_bytes());
            assert_eq!(
                decode(&cframe(true, OP_CLOSE, &p)),
                vec![Event::Close {
                    code: Some(code),
                    reason: "bye ☃".as_bytes().to_vec()
                }],
                "code {code}"
            );
        }
    }

    #[test]
    fn nothing_after_close() {
        let mut data = cframe(true, OP_CLOSE, b"");
        data.extend(cframe(true, OP_TEXT, b"late"));
        let mut d = Decoder::new(big_limits());
        assert_eq!(d.feed(&data).len(), 1);
        assert!(d.is_done());
        assert!(d.feed(&cframe(true, OP_TEXT, b"later")).is_empty());
    }

    #[test]
    fn close_inside_fragmented_message() {
        let mut data = cframe(false, OP_TEXT, b"part");
        data.extend(cframe(true, OP_CLOSE, b"\x03\xe9"));
        assert_eq!(
            decode(&data),
            vec![Event::Close {
                code: Some(1001),
                reason: Vec::new()
            }]
        );
    }

    // ---- decoder: errors ------------------------------------------------------------------

    #[test]
    fn error_unmasked_frame() {
        let f = raw_frame(0x81, None, b"hi", Len::Minimal);
        assert_eq!(decode_err(&f), CloseReason::Unmasked);
        assert_eq!(CloseReason::Unmasked.code(), 1002);
        // Detected from the first two bytes.
        assert_eq!(decode(&f[..2]), vec![Event::Error(CloseReason::Unmasked)]);
    }

    #[test]
    fn error_reserved_bits() {
        for rsv in [0x40u8, 0x20, 0x10] {
            let f = raw_frame(0x80 | rsv | OP_TEXT, Some(MASK), b"x", Len::Minimal);
            assert_eq!(decode_err(&f), CloseReason::ReservedBits);
            assert_eq!(
                decode(&f[..1]),
                vec![Event::Error(CloseReason::ReservedBits)]
            );
        }
        assert_eq!(CloseReason::ReservedBits.code(), 1002);
    }

    #[test]
    fn error_unknown_opcodes() {
        for op in [3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
            let f = cframe(true, op, b"");
            assert_eq!(decode_err(&f), CloseReason::UnknownOpcode(op));
            assert_eq!(CloseReason::UnknownOpcode(op).code(), 1002);
        }
    }

    #[test]
    fn error_control_frame_too_long() {
        for op in [OP_PING, OP_PONG, OP_CLOSE] {
            let f = raw_frame(0x80 | op, Some(MASK), &[b'a'; 126], Len::Minimal);
            assert_eq!(decode_err(&f), CloseReason::ControlTooLong);
            // Any extended length on a control frame is refused from the second byte.
            assert_eq!(
                decode(&f[..2]),
                vec![Event::Error(CloseReason::ControlTooLong)]
            );
            let f = raw_frame(0x80 | op, Some(MASK), b"ok", Len::Force16);
            assert_eq!(decode_err(&f), CloseReason::ControlTooLong);
        }
        // 125 bytes is fine.
        let f = raw_frame(0x89, Some(MASK), &[b'a'; 125], Len::Minimal);
        assert_eq!(decode(&f), vec![Event::Ping(vec![b'a'; 125])]);
        assert_eq!(CloseReason::ControlTooLong.code(), 1002);
    }

    #[test]
    fn error_fragmented_control_frame() {
        for op in [OP_PING, OP_PONG, OP_CLOSE] {
            let f = cframe(false, op, b"");
            assert_eq!(decode_err(&f), CloseReason::FragmentedControl);
        }
        assert_eq!(CloseReason::FragmentedControl.code(), 1002);
    }

    #[test]
    fn error_continuation_without_message() {
        assert_eq!(
            decode_err(&cframe(true, OP_CONTINUATION, b"x")),
            CloseReason::UnexpectedContinuation
        );
        // Also after a message has been completed.
        let mut data = cframe(true, OP_TEXT, b"done");
        data.extend(cframe(true, OP_CONTINUATION, b"x"));
        assert_eq!(
            decode(&data),
            vec![
                Event::Text(b"done".to_vec()),
                Event::Error(CloseReason::UnexpectedContinuation)
            ]
        );
        assert_eq!(CloseReason::UnexpectedContinuation.code(), 1002);
    }

    #[test]
    fn error_new_message_inside_fragmented_one() {
        for op in [OP_TEXT, OP_BINARY] {
            let mut data = cframe(false, OP_TEXT, b"a");
            data.extend(cframe(true, op, b"b"));
            assert_eq!(decode_err(&data), CloseReason::ExpectedContinuation);
        }
        assert_eq!(CloseReason::ExpectedContinuation.code(), 1002);
    }

    #[test]
    fn error_64_bit_length_top_bit() {
        let mut f = vec![0x81, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 5];
        assert_eq!(decode(&f), vec![Event::Error(CloseReason::LengthTopBit)]);
        f.extend_from_slice(&MASK);
        assert_eq!(decode_err(&f), CloseReason::LengthTopBit);
        assert_eq!(CloseReason::LengthTopBit.code(), 1002);
    }

    #[test]
    fn error_close_payload_of_one_byte() {
        let f = cframe(true, OP_CLOSE, b"\x03");
        assert_eq!(decode_err(&f), CloseReason::CloseTooShort);
        assert_eq!(
            decode(&f[..2]),
            vec![Event::Error(CloseReason::CloseTooShort)]
        );
        assert_eq!(CloseReason::CloseTooShort.code(), 1002);
    }

    #[test]
    fn error_invalid_close_codes() {
        for code in [
            0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            let f = cframe(true, OP_CLOSE, &code.to_be_bytes());
            assert_eq!(decode_err(&f), CloseReason::InvalidCloseCode(code));
            assert_eq!(CloseReason::InvalidCloseCode(code).code(), 1002);
        }
    }

    #[test]
    fn error_invalid_utf8_text() {
        assert_eq!(
            decode_err(&cframe(true, OP_TEXT, b"ab\xffcd")),
            CloseReason::InvalidUtf8
        );
        // Truncated sequence at the end of the final frame.
        assert_eq!(
            decode_err(&cframe(true, OP_TEXT, b"ab\xc3")),
            CloseReason::InvalidUtf8
        );
        // Detected in the first fragment already, before the message ends.
        let mut d = Decoder::new(big_limits());
        assert_eq!(
            d.feed(&cframe(false, OP_TEXT, b"\xed\xa0\x80")), // UTF-16 surrogate
            vec![Event::Error(CloseReason::InvalidUtf8)]
        );
        // Incomplete sequence completed wrongly in the next fragment.
        let mut data = cframe(false, OP_TEXT, b"\xc3");
        data.extend(cframe(true, OP_CONTINUATION, b"A"));
        assert_eq!(decode_err(&data), CloseReason::InvalidUtf8);
        assert_eq!(CloseReason::InvalidUtf8.code(), 1007);
        // Binary messages are not checked.
        assert_eq!(
            decode(&cframe(true, OP_BINARY, b"\xff")),
            vec![Event::Binary(vec![0xff])]
        );
    }

    #[test]
    fn error_invalid_utf8_close_reason() {
        let f = cframe(true, OP_CLOSE, b"\x03\xe8\xff");
        assert_eq!(decode_err(&f), CloseReason::InvalidCloseReason);
        assert_eq!(CloseReason::InvalidCloseReason.code(), 1007);
    }

    #[test]
    fn error_frame_too_big_detected_from_header() {
        let limits = Limits {
            max_frame_payload: 1000,
            max_message: 1 << 40,
        };
        // A huge declared length and no payload at all: 1009 as soon as the length is known.
        let mut f = vec![0x81, 0x80 | 127];
        f.extend_from_slice(&(1u64 << 40).to_be_bytes());
        assert_eq!(
            Decoder::new(limits).feed(&f),
            vec![Event::Error(CloseReason::FrameTooBig)]
        );
        // 16-bit form.
        let f = [0x82, 0x80 | 126, 0x03, 0xE9];
        assert_eq!(
            Decoder::new(limits).feed(&f),
            vec![Event::Error(CloseReason::FrameTooBig)]
        );
        // 7-bit form, with a tiny limit.
        let tiny = Limits {
            max_frame_payload: 4,
            max_message: 100,
        };
        assert_eq!(
            Decoder::new(tiny).feed(&[0x81, 0x85]),
            vec![Event::Error(CloseReason::FrameTooBig)]
        );
        // Exactly at the limit is accepted.
        assert_eq!(
            Decoder::new(tiny).feed(&cframe(true, OP_TEXT, b"1234")),
            vec![Event::Text(b"1234".to_vec())]
        );
        // Control frames are bounded by 125, not by max_frame_payload.
        assert_eq!(
            Decoder::new(tiny).feed(&cframe(true, OP_PING, b"123456")),
            vec![Event::Ping(b"123456".to_vec())]
        );
        assert_eq!(CloseReason::FrameTooBig.code(), 1009);
    }

    #[test]
    fn error_message_too_big_detected_from_header() {
        let limits = Limits {
            max_frame_payload: 10,
            max_message: 16,
        };
        let mut d = Decoder::new(limits);
        assert!(d.feed(&cframe(false, OP_TEXT, b"0123456789")).is_empty());
        assert!(d
            .feed(&cframe(false, OP_CONTINUATION, b"012345"))
            .is_empty());
        // 16 bytes buffered; a frame declaring one more byte fails before its payload.
        assert_eq!(
            d.feed(&[0x80, 0x81]),
            vec![Event::Error(CloseReason::MessageTooBig)]
        );
        assert!(d.is_done());
        // Exactly max_message is fine.
        let mut d = Decoder::new(limits);
        let mut data = cframe(false, OP_TEXT, b"0123456789");
        data.extend(cframe(true, OP_CONTINUATION, b"012345"));
        assert_eq!(
            d.feed(&data),
            vec![Event::Text(b"0123456789012345".to_vec())]
        );
        // A single frame bigger than max_message but within max_frame_payload.
        let limits = Limits {
            max_frame_payload: 100,
            max_message: 3,
        };
        assert_eq!(
            Decoder::new(limits).feed(&[0x81, 0x84]),
            vec![Event::Error(CloseReason::MessageTooBig)]
        );
        assert_eq!(CloseReason::MessageTooBig.code(), 1009);
    }

    #[test]
    fn buffer_capacity_stays_within_limits() {
        let limits = Limits {
            max_frame_payload: 1000,
            max_message: 1000,
        };
        let payload = vec![b'q'; 1000];
        let f = cframe(true, OP_TEXT, &payload);
        let mut d = Decoder::new(limits);
        for chunk in f[..f.len() - 1].chunks(7) {
            assert!(d.feed(chunk).is_empty());
            assert!(d.msg_buf.capacity() <= 1000, "{}", d.msg_buf.capacity());
        }
        assert_eq!(d.feed(&f[f.len() - 1..]), vec![Event::Text(payload)]);
    }

    #[test]
    fn nothing_after_an_error() {
        let mut data = cframe(true, OP_TEXT, b"ok");
        data.extend(raw_frame(0x81, None, b"bad", Len::Minimal));
        data.extend(cframe(true, OP_TEXT, b"ignored"));
        let mut d = Decoder::new(big_limits());
        assert_eq!(
            d.feed(&data),
            vec![
                Event::Text(b"ok".to_vec()),
                Event::Error(CloseReason::Unmasked)
            ]
        );
        assert!(d.is_done());
        assert!(d.feed(&cframe(true, OP_TEXT, b"x")).is_empty());
    }

    #[test]
    fn close_reason_frames_and_display() {
        assert_eq!(
            CloseReason::Unmasked.close_frame(),
            close_frame(1002, b"client frame not masked")
        );
        assert_eq!(
            &CloseReason::MessageTooBig.close_frame()[2..4],
            &[0x03, 0xF1]
        );
        assert_eq!(
            CloseReason::InvalidUtf8.to_string(),
            "text message not valid UTF-8 (1007)"
        );
    }
}
