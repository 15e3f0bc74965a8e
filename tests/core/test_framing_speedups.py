"""The optional C maskers (``wavewire[speedups]``: websockets' ``apply_mask`` for whole frames,
wsaccel for frames read in pieces) against the pure-Python path: the frame layer sends and
receives the same bytes and messages with any of them."""

from __future__ import annotations

import itertools
import sys

import pytest
from wsproto.events import BytesMessage, Event, TextMessage

from wavewire.core.protocol import framing
from wavewire.core.protocol.framing import WsConnection, apply_mask

wsaccel_masker = pytest.importorskip("wsaccel.xormask").XorMaskerSimple
websockets_apply_mask = pytest.importorskip("websockets.speedups").apply_mask

SIZES = (0, 1, 3, 4, 5, 125, 126, 640, 65535, 65536, 70001)


def _mask_keys() -> itertools.cycle[bytes]:
    return itertools.cycle((b"\x00\x00\x00\x00", b"\xff\x00\xa5\x5a", b"\x12\x34\x56\x78"))


def _run(
    c_masker: object, monkeypatch: pytest.MonkeyPatch, vector_mask: object = None
) -> tuple[bytes, list[Event]]:
    """A client's frames for every size (binary and text), then the server's events for them
    read in uneven pieces (a mask cut anywhere), with ``c_masker`` and ``vector_mask`` or the
    pure path."""
    monkeypatch.setattr(framing, "_C_MASKER", c_masker)
    monkeypatch.setattr(framing, "_VECTOR_MASK", vector_mask)
    keys = _mask_keys()
    client = WsConnection(
        client=True, max_message_size=1 << 20, max_fragments=16, mask_source=lambda n: next(keys)
    )
    server = WsConnection(client=False, max_message_size=1 << 20, max_fragments=16)
    wire = bytearray()
    for size in SIZES:
        payload = bytes((i * 7 + size) % 256 for i in range(size))
        wire += client.send(BytesMessage(data=payload))
        wire += client.send(TextMessage(data="é" * (size // 2)))
    events: list[Event] = []
    offset = 0
    for piece in itertools.cycle((1, 7, 1000, 3, 65537)):  # pieces that cut masks anywhere
        if offset >= len(wire):
            break
        server.receive_data(bytes(wire[offset : offset + piece]))
        events.extend(server.events())
        offset += piece
    return bytes(wire), events


def test_c_and_pure_masking_give_the_same_frames_and_messages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    c_wire, c_events = _run(wsaccel_masker, monkeypatch)
    pure_wire, pure_events = _run(None, monkeypatch)
    both_wire, both_events = _run(wsaccel_masker, monkeypatch, websockets_apply_mask)
    assert c_wire == pure_wire == both_wire
    assert c_events == pure_events == both_events
    # And the messages are the ones sent, unmasked (pieces of a message arrive as several
    # events: compare the concatenations).
    received = b"".join(bytes(e.data) for e in pure_events if isinstance(e, BytesMessage))
    expected = b"".join(bytes((i * 7 + s) % 256 for i in range(s)) for s in SIZES)
    assert received == expected
    text = "".join(e.data for e in pure_events if isinstance(e, TextMessage))
    assert text == "é" * sum(s // 2 for s in SIZES)


@pytest.mark.parametrize("size", SIZES)
def test_apply_mask_is_the_same_with_and_without_c(
    size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = bytes((i * 31) % 256 for i in range(size))
    key = b"\x9a\x01\xf0\x3c"
    monkeypatch.setattr(framing, "_VECTOR_MASK", websockets_apply_mask)
    vector_masked = apply_mask(data, key)
    monkeypatch.setattr(framing, "_VECTOR_MASK", None)
    monkeypatch.setattr(framing, "_C_MASKER", wsaccel_masker)
    c_masked = apply_mask(data, key)
    monkeypatch.setattr(framing, "_C_MASKER", None)
    pure_masked = apply_mask(data, key)
    assert vector_masked == c_masked == pure_masked
    assert apply_mask(pure_masked, key) == data
    assert size == 0 or pure_masked != data  # the key has no zero byte: every byte changes


def test_the_c_masker_is_used_when_importable_and_not_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert framing._c_masker() is wsaccel_masker
    assert framing._vector_mask() is websockets_apply_mask
    monkeypatch.setitem(sys.modules, "wsaccel.xormask", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "websockets.speedups", None)
    assert framing._c_masker() is None
    assert framing._vector_mask() is None
