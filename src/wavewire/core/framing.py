"""wsproto, extended at its two seams the core needs: injected mask keys and early limits.

wsproto parses and validates frames (RFC 6455 section 5), reassembles UTF-8 incrementally
(section 8.1) and tracks the close handshake; we keep all of that. Two things it cannot do:

* take the client's masking key from a caller-supplied source (it calls ``os.urandom``, a hidden
  random source the core may not have), so ``_FrameProtocol._serialize_frame`` is ours;
* refuse a message from its frame headers (it has no size or fragment limits at all), so
  ``_LimitedFrameDecoder.parse_header`` checks every data frame's declared length before its
  payload is read (section 10.4).

These override wsproto internals (``FrameProtocol._serialize_frame``, ``_frame_decoder``); the
dependency is pinned to wsproto 1.x and tests/core/test_connection.py pins their behaviour.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Generator

from wsproto.connection import Connection, ConnectionType
from wsproto.frame_protocol import (
    CloseReason,
    Frame,
    FrameDecoder,
    FrameProtocol,
    Opcode,
    ParseFailed,
    RsvBits,
)

__all__ = ["MaskSource", "WsConnection", "apply_mask", "encode_frame"]

#: Returns ``n`` unpredictable bytes; adapters pass ``os.urandom``, tests a fixed source.
MaskSource = Callable[[int], bytes]

_NO_RSV = RsvBits(False, False, False)


def apply_mask(data: bytes, key: bytes) -> bytes:
    """XOR ``data`` with the 4-byte ``key`` repeated (RFC 6455 section 5.3)."""
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
    first = (fin << 7) | (rsv.rsv1 << 6) | (rsv.rsv2 << 5) | (rsv.rsv3 << 4) | int(opcode)
    mask_bit = 0x80 if mask_key is not None else 0
    length = len(payload)
    if length < 126:
        header = bytes((first, mask_bit | length))
    elif length < 1 << 16:
        header = struct.pack("!BBH", first, mask_bit | 126, length)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, length)
    if mask_key is None:
        return header + payload
    return header + mask_key + apply_mask(payload, mask_key)


class _LimitedFrameDecoder(FrameDecoder):
    """A frame decoder that fails a message as soon as a header shows it breaks a limit."""

    def __init__(self, client: bool, max_message_size: int, max_fragments: int) -> None:
        super().__init__(client)
        self._max_message_size = max_message_size
        self._max_fragments = max_fragments
        self._message_size = 0
        self._fragments = 0
        self._in_message = False

    def parse_header(self) -> bool:
        if not super().parse_header():
            return False
        header = self.header
        assert header is not None
        if header.opcode.iscontrol():
            return True  # control frames: wsproto caps them at 125 bytes (section 5.5)
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
    def __init__(
        self,
        client: bool,
        *,
        max_message_size: int,
        max_fragments: int,
        mask_source: MaskSource | None,
    ) -> None:
        # No extension is negotiated yet: permessage-deflate comes with a decompression bound
        # (wsproto's own is unbounded), and until then frames go out exactly as given.
        super().__init__(client, [])
        # The parse generator reads self._frame_decoder lazily, so swapping it here is safe.
        self._frame_decoder = _LimitedFrameDecoder(client, max_message_size, max_fragments)
        self._mask_source = mask_source
        #: The peer's violation, if parsing failed; wsproto reports it only as a close event.
        self.failure: ParseFailed | None = None

    def received_frames(self) -> Generator[Frame, None, None]:
        try:
            yield from super().received_frames()
        except ParseFailed as exc:
            self.failure = exc
            raise

    def _serialize_frame(
        self, opcode: Opcode, payload: bytes | bytearray = b"", fin: bool = True
    ) -> bytearray:
        data = bytes(payload)
        if opcode.iscontrol() and len(data) > 125:
            raise ValueError("control frame payloads are at most 125 bytes (RFC 6455 5.5)")
        mask_key = None
        if self.client:
            assert self._mask_source is not None
            mask_key = self._mask_source(4)
            if len(mask_key) != 4:
                raise ValueError("the mask source must return exactly the bytes asked for")
        return bytearray(encode_frame(opcode, data, fin=fin, mask_key=mask_key))


class WsConnection(Connection):
    """wsproto's post-handshake connection with injected masking and early limits."""

    _proto: _FrameProtocol

    def __init__(
        self,
        *,
        client: bool,
        max_message_size: int,
        max_fragments: int,
        mask_source: MaskSource | None = None,
    ) -> None:
        if client and mask_source is None:
            raise ValueError("a client connection needs a mask source")
        super().__init__(ConnectionType.CLIENT if client else ConnectionType.SERVER)
        self._proto = _FrameProtocol(
            client,
            max_message_size=max_message_size,
            max_fragments=max_fragments,
            mask_source=mask_source,
        )

    @property
    def failure(self) -> ParseFailed | None:
        """The peer's protocol violation, once parsing has failed."""
        return self._proto.failure
