"""The core's own frame-header parser (``framing._LimitedFrameDecoder.parse_header``) against
wsproto's, which it replaces: on any header, the same frame or the same failure code.

Headers are built field by field (any first byte, either mask bit, every length encoding with
minimal and non-minimal values and the 64-bit MSB), followed by the payload when it is short,
and fed to both decoders whole or split at a random point; the length edges are also checked
one by one. Our decoder runs with limits too high to matter, so only the parsing is compared.
One difference is by design and excluded: with RSV bits set and no extension, wsproto fails as
soon as it reads the length, ours once the masking key is in (the extension check runs once per
complete header); both fail with 1002.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameDecoder, ParseFailed

from wavewire.core.protocol.framing import _LimitedFrameDecoder


def outcome(decoder: FrameDecoder, chunks: list[bytes]) -> list[object]:
    """Everything the decoder makes of ``chunks``: frames, then a failure code if any."""
    seen: list[object] = []
    try:
        for chunk in chunks:
            decoder.receive_bytes(chunk)
            while (frame := decoder.process_buffer()) is not None:
                seen.append((frame.opcode, frame.payload, frame.frame_finished))
                seen.append(frame.message_finished)
    except ParseFailed as exc:
        seen.append(("failed", exc.code))
        return seen
    if decoder.header is not None:  # waiting for payload: compare the header read so far
        seen.append((decoder.header.fin, decoder.header.opcode, decoder.header.payload_len))
    return seen


@st.composite
def headers(draw: st.DrawFn) -> bytes:
    # Mostly the opcodes that exist and no RSV bit, so that most headers reach the length checks.
    fin = draw(st.booleans())
    rsv = draw(st.one_of(st.just(0), st.integers(0, 7)))
    opcode = draw(st.one_of(st.sampled_from([0, 1, 2, 8, 9, 10]), st.integers(0, 15)))
    first = fin << 7 | rsv << 4 | opcode
    mask = draw(st.booleans())
    form = draw(st.sampled_from(["short", "16", "64"]))
    if form == "short":
        length = draw(st.integers(0, 125))
        head = bytes((first, mask << 7 | length))
    elif form == "16":
        edges = st.sampled_from([0, 125, 126, 300, 0xFFFF])
        length = draw(st.one_of(edges, st.integers(0, 300), st.integers(0, 0xFFFF)))
        head = struct.pack("!BBH", first, mask << 7 | 126, length)
    else:
        edges = st.sampled_from([0, 125, 126, 0xFFFF, 0x10000, 2**63 - 1, 2**63, 2**64 - 1])
        length = draw(st.one_of(edges, st.integers(0, 0x1_0000_0000), st.integers(0, 2**64 - 1)))
        head = struct.pack("!BBQ", first, mask << 7 | 127, length)
    if mask:
        head += draw(st.binary(min_size=4, max_size=4))
    if length <= 300:
        head += draw(st.binary(min_size=length, max_size=length))
    return head


@settings(max_examples=1000)
@given(data=headers(), client=st.booleans(), split=st.integers(0, 400))
def test_same_frames_and_failures_as_wsproto(data: bytes, client: bool, split: int) -> None:
    rsv_bits = data[0] & 0x70
    split = min(split, len(data))
    chunks = [data[:split], data[split:]]
    ours = outcome(_LimitedFrameDecoder(client, 2**70, 2**40, []), chunks)
    theirs = outcome(FrameDecoder(client, []), chunks)
    if rsv_bits and theirs[-1:] == [("failed", 1002)]:
        assert ours[-1:] == [("failed", 1002)] or ours == []  # see the module docstring
    else:
        assert ours == theirs


@pytest.mark.parametrize(
    "head",
    [
        struct.pack("!BBH", 0x82, 0x80 | 126, 125),  # 2-byte length that fits in 7 bits
        struct.pack("!BBH", 0x82, 0x80 | 126, 126),
        struct.pack("!BBQ", 0x82, 0x80 | 127, 0xFFFF),  # 8-byte length that fits in 2 bytes
        struct.pack("!BBQ", 0x82, 0x80 | 127, 0x10000),
        struct.pack("!BBQ", 0x82, 0x80 | 127, 2**63 - 1),
        struct.pack("!BBQ", 0x82, 0x80 | 127, 2**63),  # the most significant bit set
        bytes((0x89, 0x80 | 125)),  # the longest control frame
        bytes((0x89, 0x80 | 126)),
    ],
)
def test_length_edges_as_wsproto(head: bytes) -> None:
    chunks = [head + b"\x01\x02\x03\x04"]  # the masking key
    ours = outcome(_LimitedFrameDecoder(False, 2**70, 2**40, []), chunks)
    assert ours == outcome(FrameDecoder(False, []), chunks)
