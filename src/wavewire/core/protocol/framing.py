"""wsproto, extended at the seams the core needs: injected mask keys, early limits, and a
bounded permessage-deflate.

wsproto parses and validates frames (RFC 6455 section 5), reassembles UTF-8 incrementally
(section 8.1) and tracks the close handshake; we keep all of that. What it cannot do:

* take the client's masking key from a caller-supplied source (it reads the OS random source
  itself, a hidden random source the core may not have), so
  ``_FrameProtocol._serialize_frame`` is ours (it still runs the negotiated extension's
  outbound processing first);
* refuse a message from its frame headers (it has no size or fragment limits at all), so
  ``_LimitedFrameDecoder.parse_header`` checks every data frame's declared length before its
  payload is read (section 10.4);
* inflate a compressed message within a size bound: wsproto's ``PerMessageDeflate`` inflates
  without limit (a few KiB on the wire can become GiB), so ``BoundedDeflate`` inflates with
  ``max_length`` and fails the message with 1009 once its inflated size passes
  ``max_message_size``, counted across all the message's frames (RFC 7692 section 8.1).

And one shortcut for the common case (``WsConnection.received_events``, ``data_frame``): a
whole, unfragmented data frame (FIN, text or binary, no RSV bit, masked as the role expects,
within the size cap) that is all in the receive buffer is read straight from it, unmasked with
one copy of the payload, and handed on as a bare ``bytes`` or ``str``; a server's message goes
out as its header and the payload itself, without the copies of wsproto's ``send``. Everything
else -- fragments, control frames, close, a negotiated extension, any frame that breaks a rule --
goes through wsproto one frame at a time, unchanged, and the shortcut resumes at the next frame
boundary. tests/core/test_framing_fast_path.py checks both paths give the same messages, pongs
and close codes on generated frame streams cut at every byte.

These override wsproto internals (``FrameProtocol._serialize_frame``, ``_frame_decoder``,
``_parse_more``, ``Connection._state``); the dependency is pinned to wsproto 1.x and
tests/core/test_connection.py pins their behaviour.
"""

from __future__ import annotations

import enum
import struct
import zlib
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Protocol, cast

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.frame_protocol import (
    CloseReason,
    Frame,
    FrameDecoder,
    FrameProtocol,
    Header,
    Opcode,
    ParseFailed,
    RsvBits,
    XorMaskerNull,
    XorMaskerSimple,
)

__all__ = [
    "BoundedDeflate",
    "Deflate",
    "MaskSource",
    "WsConnection",
    "apply_mask",
    "encode_frame",
]

#: Returns ``n`` unpredictable bytes; adapters pass the OS random source, tests a fixed one.
MaskSource = Callable[[int], bytes]

_NO_RSV = RsvBits(False, False, False)
#: Opcodes by their 4-bit value, the control ones, and the RSV bits by their 3-bit value: looked
#: up once per frame instead of built.
_OPCODES = {int(opcode): opcode for opcode in Opcode}
_CONTROL = frozenset(opcode for opcode in Opcode if opcode.iscontrol())
_RSV = tuple(RsvBits(bool(bits & 4), bool(bits & 2), bool(bits & 1)) for bits in range(8))


class _Masker(Protocol):
    """XORs successive pieces of one frame's payload with its key (wsproto's and wsaccel's)."""

    def process(self, data: bytes | bytearray | memoryview) -> bytes | bytearray: ...


def _c_masker() -> Callable[[bytes], _Masker] | None:
    """wsaccel's masker, written in C (the ``speedups`` extra), or None if not installed.

    The same XOR as wsproto's pure-Python ``XorMaskerSimple``, which costs about as much as
    the rest of the frame layer put together on a 64 KiB message (docs/performance.md).
    """
    try:
        from wsaccel.xormask import XorMaskerSimple as CMasker
    except ImportError:
        return None
    return cast("Callable[[bytes], _Masker]", CMasker)


#: Unmasks received frames and masks a client's: the C masker when installed, else pure Python
#: (tests/core/test_framing_speedups.py checks both give the same bytes).
_C_MASKER = _c_masker()

_MaskFunction = Callable[[bytes | bytearray | memoryview, bytes], bytes]


def _vector_mask() -> _MaskFunction | None:
    """websockets' ``apply_mask`` (C, vectorised: about 2 µs per 64 KiB where wsaccel's
    byte-by-byte loop takes about 37), or None if websockets or its C extension is missing.

    Pipecat's websocket extra installs websockets, so most users have it. Stateless (the key
    starts at the first byte), so it serves whole frames (``apply_mask``) only; wsproto's path,
    which unmasks a frame piece by piece, keeps ``_C_MASKER``.
    """
    try:
        from websockets.speedups import apply_mask as vector_apply_mask
    except ImportError:
        return None
    return cast(_MaskFunction, vector_apply_mask)


_VECTOR_MASK = _vector_mask()


def apply_mask(data: bytes | bytearray | memoryview, key: bytes) -> bytes:
    """XOR ``data`` with the 4-byte ``key`` repeated (RFC 6455 section 5.3), into new bytes."""
    if _VECTOR_MASK is not None:
        return _VECTOR_MASK(data, key)
    if _C_MASKER is not None:
        return bytes(_C_MASKER(key).process(data))
    n = len(data)
    if n == 0:
        return b""
    # One big-int XOR instead of a per-byte loop: about 20x faster in CPython (websockets #1034).
    repeated = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")


def encode_frame(
    opcode: Opcode,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: RsvBits = _NO_RSV,
    mask_key: bytes | None = None,
) -> bytes:
    """Serialize one frame (RFC 6455 section 5.2); masked when ``mask_key`` is given."""
    header = _frame_header(opcode, len(payload), fin, rsv, masked=mask_key is not None)
    if mask_key is None:
        return header + payload
    return header + mask_key + apply_mask(payload, mask_key)


def _frame_header(opcode: Opcode, length: int, fin: bool, rsv: RsvBits, *, masked: bool) -> bytes:
    """A frame's first 2, 4 or 10 bytes, up to the masking key (RFC 6455 section 5.2)."""
    first = (fin << 7) | (rsv.rsv1 << 6) | (rsv.rsv2 << 5) | (rsv.rsv3 << 4) | int(opcode)
    return _header_bytes(first, (0x80 if masked else 0), length)


def _header_bytes(first: int, mask_bit: int, length: int) -> bytes:
    """The header from its first byte, the mask bit (0x80 or 0) and the payload length."""
    if length < 126:
        return bytes((first, mask_bit | length))
    if length < 1 << 16:
        return struct.pack("!BBH", first, mask_bit | 126, length)
    return struct.pack("!BBQ", first, mask_bit | 127, length)


@dataclass(frozen=True, slots=True)
class Deflate:
    """The permessage-deflate parameters both ends agreed on (RFC 7692 section 7.1).

    As in the server's ``Sec-WebSocket-Extensions`` response; a window size of None was not
    named there (the sender may then use up to 15 bits).
    """

    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: int | None = None
    client_max_window_bits: int | None = None

    def header_value(self) -> str:
        """The extension as the server's response names it."""
        parts = ["permessage-deflate"]
        if self.server_no_context_takeover:
            parts.append("server_no_context_takeover")
        if self.client_no_context_takeover:
            parts.append("client_no_context_takeover")
        if self.server_max_window_bits is not None:
            parts.append(f"server_max_window_bits={self.server_max_window_bits}")
        if self.client_max_window_bits is not None:
            parts.append(f"client_max_window_bits={self.client_max_window_bits}")
        return "; ".join(parts)


#: Every sync-flushed deflate block ends with these bytes; RFC 7692 section 7.2.1 strips them
#: from each compressed message and the receiver appends them again.
_SYNC_TAIL = b"\x00\x00\xff\xff"
_RSV1 = RsvBits(True, False, False)


class BoundedDeflate(PerMessageDeflate):
    """permessage-deflate (RFC 7692) with the agreed parameters and a bounded inflate.

    Negotiation is ``handshake.py``'s; this object is made only once it succeeded, so it is
    always enabled. Compared with wsproto's ``PerMessageDeflate``:

    * inflating stops at ``max_message_size + 1`` bytes per message (``zlib`` ``max_length``),
      summed across the message's frames, and the message fails with 1009: memory stays
      bounded by the cap however well the peer's data compresses;
    * a control frame between the frames of a compressed message does not reset the message's
      state (wsproto's does, and inflates nothing after it);
    * a window of 8 bits may be agreed (RFC 7692 allows 8 to 15; zlib deflates with 9 at
      least): we deflate with 9, whose longest back-reference (2**9 - 262 bytes: zlib keeps
      ``MIN_LOOKAHEAD`` out of reach) fits a 256-byte window, and always inflate with 15, which
      reads a stream made with any smaller window;
    * RSV1 on a continuation frame, and a data frame's opcode out of message order, fail with
      1002 from the frame header, before anything is inflated.
    """

    def __init__(self, agreed: Deflate, *, client: bool, max_message_size: int) -> None:
        super().__init__()  # wsproto's defaults; what was agreed is kept below
        self.agreed = agreed
        if client:
            local_bits = agreed.client_max_window_bits
            self._local_reset = agreed.client_no_context_takeover
            self._remote_reset = agreed.server_no_context_takeover
        else:
            local_bits = agreed.server_max_window_bits
            self._local_reset = agreed.server_no_context_takeover
            self._remote_reset = agreed.client_no_context_takeover
        self._local_bits = max(9, local_bits or 15)
        self._max_message_size = max_message_size
        self._deflater: zlib._Compress | None = None
        self._inflater: zlib._Decompress | None = None
        #: Whether the message being received is compressed; None between messages.
        self._message_compressed: bool | None = None
        #: Inflated bytes of the message being received.
        self._inflated = 0
        #: The frame being received is a data frame (not a control frame).
        self._data_frame = False

    def enabled(self) -> bool:
        return True

    def frame_inbound_header(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        payload_length: int,
    ) -> CloseReason | RsvBits:
        self._data_frame = not opcode.iscontrol()
        if not self._data_frame:
            return _NO_RSV  # RSV1 on a control frame: wsproto fails it with 1002
        if opcode is Opcode.CONTINUATION:
            if rsv.rsv1 or self._message_compressed is None:
                return CloseReason.PROTOCOL_ERROR  # RSV1 is the first frame's (7.2.3.1)
        elif self._message_compressed is not None:
            return CloseReason.PROTOCOL_ERROR  # a new message inside a fragmented one
        else:
            self._message_compressed = rsv.rsv1
            self._inflated = 0
        return _RSV1

    def frame_inbound_payload_data(
        self, proto: FrameDecoder | FrameProtocol, data: bytes
    ) -> bytes | CloseReason:
        if not (self._data_frame and self._message_compressed):
            return data
        return self._inflate(data)

    def frame_inbound_complete(
        self, proto: FrameDecoder | FrameProtocol, fin: bool
    ) -> bytes | CloseReason | None:
        if not (self._data_frame and fin):
            return None
        compressed, self._message_compressed = self._message_compressed, None
        if not compressed:
            return None
        tail = self._inflate(_SYNC_TAIL)
        if self._remote_reset:
            self._inflater = None
        return tail

    def _inflate(self, data: bytes) -> bytes | CloseReason:
        if self._inflater is None:
            self._inflater = zlib.decompressobj(-15)
        room = self._max_message_size - self._inflated
        try:
            # Never more than one byte past the cap: that byte is what proves it too big.
            out = self._inflater.decompress(data, room + 1)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self._inflated += len(out)
        if self._inflated > self._max_message_size:
            return CloseReason.MESSAGE_TOO_BIG
        return out

    def frame_outbound(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        data: bytes,
        fin: bool,
    ) -> tuple[RsvBits, bytes]:
        if opcode.iscontrol():
            return rsv, data
        # The core sends every message whole, in one frame: compress it as one.
        assert fin and opcode is not Opcode.CONTINUATION
        if self._deflater is None:
            self._deflater = zlib.compressobj(
                zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -self._local_bits
            )
        out = self._deflater.compress(data) + self._deflater.flush(zlib.Z_SYNC_FLUSH)
        if self._local_reset:
            self._deflater = None
        return RsvBits(True, rsv.rsv2, rsv.rsv3), out[: -len(_SYNC_TAIL)]

    def __repr__(self) -> str:
        return f"<BoundedDeflate {self.agreed.header_value()}>"


class _LimitedFrameDecoder(FrameDecoder):
    """A frame decoder that fails a message as soon as a header shows it breaks a limit."""

    def __init__(
        self,
        client: bool,
        max_message_size: int,
        max_fragments: int,
        extensions: list[Extension],
    ) -> None:
        super().__init__(client, extensions)
        self._max_message_size = max_message_size
        self._max_fragments = max_fragments
        self._message_size = 0
        self._fragments = 0
        self._in_message = False

    def extension_processing(self, opcode: Opcode, rsv: RsvBits, payload_len: int) -> None:
        """Deferred to ``parse_header``: wsproto calls this before it has the masking key and
        calls it again for the same header once the key arrives, but extensions keep state."""

    def parse_header(self) -> bool:
        """Read one frame header (RFC 6455 section 5.2), or return False until it is all here.

        Replaces wsproto's: the same checks in the same order, with the same errors, without
        its per-header enum call, tuples and buffer bookkeeping (about half the frame layer's
        time on small messages). Sets what wsproto's ``process_buffer`` reads next.
        """
        data = self.buffer.buffer  # wsproto's Buffer; nothing is consumed between frames
        available = len(data)
        if available < 2:
            return False  # after every read that ended on a frame's end: one len() only
        first, second = data[0], data[1]
        opcode = _OPCODES.get(first & 0x0F)
        if opcode is None:
            raise ParseFailed(f"Invalid opcode {first & 0x0F:#x}")
        fin = bool(first & 0x80)
        control = opcode in _CONTROL
        if control and not fin:
            raise ParseFailed("Invalid attempt to fragment control frame")
        length = second & 0x7F
        if control and length > 125:
            raise ParseFailed("Control frame with payload len > 125")
        start = 2
        if length == 126:
            if available < 4:
                return False
            length, start = int.from_bytes(data[2:4], "big"), 4
            if length <= 125:
                raise ParseFailed("Payload length used 2 bytes when 1 would have sufficed")
        elif length == 127:
            if available < 10:
                return False
            length, start = int.from_bytes(data[2:10], "big"), 10
            if length <= 0xFFFF:
                raise ParseFailed("Payload length used 8 bytes when 2 would have sufficed")
            if length >> 63:
                raise ParseFailed("8-byte payload length with non-zero MSB")
        masked = bool(second & 0x80)
        if masked and self.client:
            raise ParseFailed("client received unexpected masked frame")
        if not masked and not self.client:
            raise ParseFailed("server received unexpected unmasked frame")
        masker: XorMaskerNull | XorMaskerSimple
        if masked:
            if available < start + 4:
                return False
            key = bytes(data[start : start + 4])
            if _C_MASKER is None:
                masker = XorMaskerSimple(key)
            else:  # wsproto only calls its process()
                masker = cast(XorMaskerSimple, _C_MASKER(key))
            start += 4
        else:
            masker = XorMaskerNull()
        del data[:start]
        header = Header(fin, _RSV[(first >> 4) & 7], opcode, length, None)
        self.header = header
        self.effective_opcode = opcode
        self.masker = masker
        self.payload_required = length if control else 0
        self.payload_consumed = 0
        # Once per frame, with the whole header read: RSV bits, then the extension's checks.
        if self.extensions:
            super().extension_processing(header.opcode, header.rsv, header.payload_len)
        elif header.rsv.rsv1 or header.rsv.rsv2 or header.rsv.rsv3:
            # What wsproto's check comes to with no extension: no RSV bit may be set (5.2).
            raise ParseFailed("Reserved bit set unexpectedly")
        if control:
            return True  # control frames: capped at 125 bytes above (section 5.5)
        if header.opcode is Opcode.CONTINUATION:
            if not self._in_message:
                return True  # wsproto fails the stray continuation with 1002
            self._message_size += header.payload_len
            self._fragments += 1
        else:
            self._message_size = header.payload_len
            self._fragments = 1
        self._in_message = not header.fin
        # Python ints do not overflow: lengths near 2**63 summed across fragments still compare.
        if self._message_size > self._max_message_size:
            raise ParseFailed("message too big", CloseReason.MESSAGE_TOO_BIG)
        if self._fragments > self._max_fragments:
            raise ParseFailed("too many fragments", CloseReason.MESSAGE_TOO_BIG)
        return True


class _FrameProtocol(FrameProtocol):
    _frame_decoder: _LimitedFrameDecoder

    def __init__(
        self,
        client: bool,
        *,
        max_message_size: int,
        max_fragments: int,
        mask_source: MaskSource | None,
        extensions: list[Extension],
    ) -> None:
        super().__init__(client, extensions)
        # The parse generator reads self._frame_decoder lazily, so swapping it here is safe.
        self._frame_decoder = _LimitedFrameDecoder(
            client, max_message_size, max_fragments, self.extensions
        )
        self._mask_source = mask_source
        #: The peer's violation, if parsing failed; wsproto reports it only as a close event.
        self.failure: ParseFailed | None = None

    def received_frames(self) -> Generator[Frame, None, None]:
        # wsproto's own received_frames is this loop; running it here saves a generator layer
        # per frame. The parser yields None when it needs more bytes.
        try:
            for frame in self._parse_more:
                if frame is None:
                    return
                yield frame
        except ParseFailed as exc:
            self.failure = exc
            raise

    def _serialize_frame(
        self, opcode: Opcode, payload: bytes | bytearray = b"", fin: bool = True
    ) -> bytearray:
        data = bytes(payload)
        if opcode.iscontrol() and len(data) > 125:
            raise ValueError("control frame payloads are at most 125 bytes (RFC 6455 5.5)")
        rsv = _NO_RSV
        for extension in reversed(self.extensions):
            rsv, data = extension.frame_outbound(self, opcode, rsv, data, fin)
        mask_key = None
        if self.client:
            assert self._mask_source is not None
            mask_key = self._mask_source(4)
            if len(mask_key) != 4:
                raise ValueError("the mask source must return exactly the bytes asked for")
        if mask_key is not None:
            return bytearray(encode_frame(opcode, data, fin=fin, rsv=rsv, mask_key=mask_key))
        # Unmasked (a server's frame): the payload is copied once, after the header.
        frame = bytearray(_frame_header(opcode, len(data), fin, rsv, masked=False))
        frame += data
        return frame


class _Slow(enum.Enum):
    """Why the shortcut did not take the frame at the start of the receive buffer."""

    #: Not a whole-message data frame it handles (or it breaks a rule): wsproto reads it.
    FRAME = enum.auto()
    #: A binary frame it handles, not all here yet: wait for the rest (the size cap bounds it).
    WAIT = enum.auto()


#: Every ``WsConnection``'s event queue until wsproto must queue an event (never appended to).
_NO_EVENTS: deque[Event] = deque(maxlen=0)

#: The first byte of a frame the shortcut reads: FIN, no RSV bit, text or binary.
_WHOLE_TEXT = 0x80 | Opcode.TEXT.value
_WHOLE_BINARY = 0x80 | Opcode.BINARY.value


class WsConnection(Connection):
    """wsproto's post-handshake connection with injected masking, early limits and, when
    ``deflate`` was agreed, bounded permessage-deflate; whole data frames take a shortcut."""

    _proto: _FrameProtocol

    def __init__(
        self,
        *,
        client: bool,
        max_message_size: int,
        max_fragments: int,
        mask_source: MaskSource | None = None,
        deflate: Deflate | None = None,
    ) -> None:
        if client and mask_source is None:
            raise ValueError("a client connection needs a mask source")
        super().__init__(ConnectionType.CLIENT if client else ConnectionType.SERVER)
        # wsproto's event deque (a 760-byte block even while empty, per idle connection) is
        # filled only by receive_data(None): shared and empty until then.
        self._events = _NO_EVENTS
        extensions: list[Extension] = []
        if deflate is not None:
            extensions.append(
                BoundedDeflate(deflate, client=client, max_message_size=max_message_size)
            )
        self._proto = _FrameProtocol(
            client,
            max_message_size=max_message_size,
            max_fragments=max_fragments,
            mask_source=mask_source,
            extensions=extensions,
        )
        self._max_message_size = max_message_size
        # An extension (deflate) may claim RSV bits and rewrite payloads: wsproto's path only.
        self._shortcut = not extensions
        # Set at a close frame or a violation: wsproto parses nothing after either.
        self._input_done = False

    @property
    def failure(self) -> ParseFailed | None:
        """The peer's protocol violation, once parsing has failed."""
        return self._proto.failure

    def receive_data(self, data: bytes | None) -> None:
        state = self._state
        if data is not None and (
            state is ConnectionState.OPEN or state is ConnectionState.LOCAL_CLOSING
        ):
            # Where wsproto's receive_data puts the bytes in these states, without its four
            # calls down to the frame decoder's buffer (once per read).
            self._proto._frame_decoder.buffer.buffer += data
            return
        if data is None and self._events is _NO_EVENTS:
            self._events = deque()  # wsproto queues the end of input (1006) here
        super().receive_data(data)

    def received_events(self) -> Generator[Event | bytes | str, None, None]:
        """What the bytes received so far make: a whole message read by the shortcut as bare
        ``bytes`` (binary) or ``str`` (text), anything else as wsproto's ``events()`` gives it
        (message pieces, pings, pongs, the close frame or a failure as ``CloseConnection``).

        The messages are the same as through ``events()``, but a binary frame the shortcut
        handles is handed on once whole, not in pieces as it arrives.
        """
        while self._events:  # only wsproto's receive_data(None) (end of input) puts events here
            yield self._events.popleft()
        proto = self._proto
        decoder = proto._frame_decoder
        while not self._input_done:
            if self._shortcut and decoder.header is None and not decoder._in_message:
                if len(decoder.buffer.buffer) < 2:
                    return  # the usual end of a read: its last message taken (wsproto waits too)
                message = self._take_whole_message(decoder)
                if message is _Slow.WAIT:
                    return
                if message is not _Slow.FRAME:
                    yield message
                    continue
            try:  # one frame (or the piece of one that is here) through wsproto's parser
                frame = next(proto._parse_more)
            except ParseFailed as exc:
                proto.failure = exc
                self._input_done = True
                yield CloseConnection(code=exc.code, reason=str(exc))
                return
            if frame is None:
                return  # wsproto needs more bytes
            yield self._frame_event(frame)

    def _take_whole_message(self, decoder: _LimitedFrameDecoder) -> bytes | str | _Slow:
        """Read the frame at the buffer's start if it is a whole message the shortcut handles.

        Only frames valid by every check of ``parse_header`` and the message decoder are taken
        (wsproto's path would accept them and make the same message); for any other, or
        on bad UTF-8, nothing is consumed and ``_Slow.FRAME`` sends the frame through wsproto,
        which fails it with the same error and close code as before.
        """
        data = decoder.buffer.buffer
        available = len(data)  # at least 2 (the caller checks)
        first, second = data[0], data[1]
        if first != _WHOLE_BINARY and first != _WHOLE_TEXT:
            return _Slow.FRAME
        if bool(second & 0x80) is self.client:
            return _Slow.FRAME  # masked to a client or unmasked to a server: 1002 (5.1)
        length = second & 0x7F
        start = 2
        if length == 126:
            if available < 4:
                return _Slow.WAIT
            length, start = (data[2] << 8) | data[3], 4
            if length < 126:
                return _Slow.FRAME  # not the minimal encoding (5.2)
        elif length == 127:
            if available < 10:
                return _Slow.WAIT
            length, start = int.from_bytes(data[2:10], "big"), 10
            if length <= 0xFFFF or length >> 63:
                return _Slow.FRAME
        if length > self._max_message_size:
            return _Slow.FRAME  # 1009 from parse_header
        key_end = start if self.client else start + 4
        end = key_end + length
        if available < end:
            # A binary frame waits whole in the buffer (bounded by the size cap); a text frame
            # goes through wsproto, which checks its UTF-8 piece by piece and fails bad text
            # as soon as it arrives (8.1).
            return _Slow.WAIT if first == _WHOLE_BINARY else _Slow.FRAME
        with memoryview(data) as view:
            if self.client:
                payload = bytes(view[start:end])
            else:
                payload = apply_mask(view[key_end:end], bytes(view[start:key_end]))
        message: bytes | str = payload
        if first == _WHOLE_TEXT:
            try:
                message = payload.decode("utf-8")
            except UnicodeDecodeError:
                return _Slow.FRAME  # wsproto's message decoder fails it with 1007
        del data[:end]
        return message

    def _frame_event(self, frame: Frame) -> Event:
        """The event wsproto's ``events()`` makes of a frame (wsproto 1.x)."""
        opcode, payload = frame.opcode, frame.payload
        finished = frame.frame_finished, frame.message_finished
        if opcode is Opcode.BINARY:
            return BytesMessage(cast(bytes, payload), *finished)
        if opcode is Opcode.TEXT:
            return TextMessage(cast(str, payload), *finished)
        if opcode is Opcode.PING:
            return Ping(payload=cast(bytes, payload))
        if opcode is Opcode.PONG:
            return Pong(payload=cast(bytes, payload))
        assert opcode is Opcode.CLOSE
        code, reason = cast(tuple[int, str], payload)
        self._input_done = True
        if self._state is ConnectionState.LOCAL_CLOSING:
            self._state = ConnectionState.CLOSED
        else:
            self._state = ConnectionState.REMOTE_CLOSING
        return CloseConnection(code=code, reason=reason)

    def data_frame(self, data: bytes | str) -> tuple[bytes, bytes]:
        """One whole message as a frame to send: its header and its payload, in that order.

        A server's frame without an extension is built here: the payload is the caller's
        bytes object itself (text: its UTF-8), not a copy. Anything else (a client's masked
        frame, a deflated one) comes from wsproto's ``send``, whole in the first item.
        Raises wsproto's ``LocalProtocolError`` unless the connection is open, as ``send``.
        """
        if self.client or not self._shortcut or self._state is not ConnectionState.OPEN:
            message = TextMessage(data=data) if isinstance(data, str) else BytesMessage(data=data)
            return self.send(message), b""
        if isinstance(data, str):
            payload, first = data.encode("utf-8"), _WHOLE_TEXT
        else:
            payload, first = bytes(data), _WHOLE_BINARY  # no copy of a bytes object
        return _header_bytes(first, 0, len(payload)), payload
