"""The frame layer's shortcut for whole data frames (``WsConnection.received_events`` and
``data_frame``) against wsproto's own path (``events()`` and ``send()``), which it bypasses.

Streams of frames are generated (data, continuation, control and close frames; wrong masks,
RSV bits, unknown opcodes, non-minimal and oversized lengths, bad UTF-8, messages over the size
cap) and fed to one connection read through the shortcut and one read through wsproto only,
cut into two reads at every byte boundary, and also one byte per read. Both must make the same
messages (pieces joined), pings, pongs, close events (code and reason), failure and state. The
one difference by design is when a binary message is handed on: the shortcut hands it on once
its frame is whole, wsproto in pieces as they arrive; so pieces are joined before comparing.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.connection import ConnectionState
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.frame_protocol import Opcode
from wsproto.utilities import LocalProtocolError

from wavewire.core.protocol import framing
from wavewire.core.protocol.framing import Deflate, WsConnection, apply_mask

KEY = b"\x37\xfa\x21\x3d"
#: Small, so that generated messages cross it (1009) in both paths.
CAP = 300


def frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    form: str = "minimal",
) -> bytes:
    """One frame as a peer would send it, any field free to be wrong."""
    first = (fin << 7) | (rsv << 4) | opcode
    mask_bit = 0x80 if masked else 0
    length = len(payload)
    if form == "16" or (form == "minimal" and 126 <= length < 1 << 16):
        head = struct.pack("!BBH", first, mask_bit | 126, length)
    elif form == "64" or (form == "minimal" and length >= 1 << 16):
        head = struct.pack("!BBQ", first, mask_bit | 127, length)
    else:
        head = bytes((first, mask_bit | length))
    if masked:
        return head + KEY + apply_mask(payload, KEY)
    return head + payload


def connection(client: bool, *, cap: int = CAP, local_close: bool = False) -> WsConnection:
    ws = WsConnection(
        client=client, max_message_size=cap, max_fragments=8, mask_source=lambda n: KEY
    )
    if local_close:  # our close frame is out: the peer's close then ends wsproto's state
        ws.send(CloseConnection(code=1000))
    return ws


Pieces = list[TextMessage | BytesMessage]


def normalized(events: Iterable[Event | bytes | str], pieces: Pieces) -> list[object]:
    """Whole messages (their pieces joined), control events and closes, in order."""
    seen: list[object] = []
    for event in events:
        if isinstance(event, bytes | str):
            assert not pieces, "a whole message inside another one"
            seen.append(("message", event))
        elif isinstance(event, TextMessage | BytesMessage):
            pieces.append(event)
            if event.message_finished:
                joined: str | bytes
                if isinstance(event, TextMessage):
                    joined = "".join(str(p.data) for p in pieces)
                else:
                    joined = b"".join(p.data for p in pieces if not isinstance(p.data, str))
                seen.append(("message", joined))
                pieces.clear()
        elif isinstance(event, Ping | Pong):
            seen.append((type(event).__name__, bytes(event.payload)))
        else:
            assert isinstance(event, CloseConnection)
            seen.append(("close", event.code, event.reason))
    return seen


def outcome(
    reads: list[bytes], *, shortcut: bool, client: bool, cap: int = CAP, local_close: bool = False
) -> tuple[list[object], object, ConnectionState]:
    ws = connection(client, cap=cap, local_close=local_close)
    seen: list[object] = []
    pieces: Pieces = []
    for data in reads:
        if ws.state in (ConnectionState.OPEN, ConnectionState.LOCAL_CLOSING):
            ws.receive_data(data)
        seen += normalized(ws.received_events() if shortcut else ws.events(), pieces)
    failure = None if ws.failure is None else (ws.failure.code, str(ws.failure))
    return seen, failure, ws.state


def assert_same_at_every_cut(
    stream: bytes, *, client: bool = False, cap: int = CAP, local_close: bool = False
) -> None:
    splits = [[stream[:cut], stream[cut:]] for cut in range(len(stream) + 1)]
    splits.append([stream[i : i + 1] for i in range(len(stream))])
    for reads in splits:
        ours = outcome(reads, shortcut=True, client=client, cap=cap, local_close=local_close)
        theirs = outcome(reads, shortcut=False, client=client, cap=cap, local_close=local_close)
        assert ours == theirs, [len(r) for r in reads]


KINDS = [
    "binary",
    "binary",
    "text",
    "text",
    "bad_text",
    "fragmented",
    "ping",
    "pong",
    "close",
    "odd",
]


@st.composite
def frames(draw: st.DrawFn, client: bool) -> bytes:
    """Mostly valid frames (so that streams go on past the first one), any rule sometimes broken."""
    kind = draw(st.sampled_from(KINDS))
    masked = draw(st.sampled_from([not client] * 9 + [client]))
    size = draw(st.sampled_from([0, 1, 125, 126, 200, CAP, CAP + 1]) | st.integers(0, 130))
    if kind == "binary":
        return frame(Opcode.BINARY, draw(st.binary(min_size=size, max_size=size)), masked=masked)
    if kind == "text":
        text = draw(st.text(min_size=size // 4, max_size=size // 4))
        return frame(Opcode.TEXT, text.encode(), masked=masked)
    if kind == "bad_text":  # invalid UTF-8 somewhere, or a code point cut at the end
        good = "é" * (size // 2)
        at = draw(st.integers(0, len(good)))
        bad = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80"]))
        return frame(Opcode.TEXT, good[:at].encode() + bad + good[at:].encode(), masked=masked)
    if kind == "fragmented":  # a message in 2 or 3 frames, maybe a ping between them
        opcode = draw(st.sampled_from([Opcode.TEXT, Opcode.BINARY]))
        parts = draw(st.lists(st.text(max_size=40), min_size=2, max_size=3))
        out = b""
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            out += frame(opcode if i == 0 else Opcode.CONTINUATION, part.encode(), fin=last)
            if not last and draw(st.booleans()):
                out += frame(Opcode.PING, b"between")
        return out
    if kind in ("ping", "pong"):
        opcode = Opcode.PING if kind == "ping" else Opcode.PONG
        return frame(opcode, draw(st.binary(max_size=125)), masked=masked)
    if kind == "close":
        code = draw(st.sampled_from([1000, 1001, 1005, 999, 3000, 5000]))
        return frame(Opcode.CLOSE, code.to_bytes(2, "big") + b"bye", masked=masked)
    # A frame that breaks one header rule, or a stray continuation.
    first = draw(st.sampled_from([0x82, 0x81, 0x02, 0x00, 0x80, 0x83, 0x8B, 0xC2, 0xA1, 0x92]))
    form = draw(st.sampled_from(["minimal", "16", "64"]))
    payload = draw(st.binary(max_size=130))
    return frame(first & 0x0F, payload, fin=bool(first & 0x80), rsv=(first >> 4) & 7, form=form)


@settings(max_examples=60)
@given(data=st.data(), client=st.booleans(), local_close=st.booleans())
def test_same_events_as_wsproto_at_every_cut(
    data: st.DataObject, client: bool, local_close: bool
) -> None:
    stream = b"".join(data.draw(st.lists(frames(client), min_size=1, max_size=4)))
    assert_same_at_every_cut(stream, client=client, local_close=local_close)


EDGES = {
    "two whole messages": frame(2, b"x" * 640) + frame(1, "é".encode() * 70),
    "an empty binary and text message": frame(2, b"") + frame(1, b""),
    "2-byte length": frame(2, bytes(200)) + frame(1, b"t" * 126),
    "2-byte length used for 125 bytes": frame(2, bytes(125), form="16") + frame(2, b"late"),
    "8-byte length used for 200 bytes": frame(2, bytes(200), form="64"),
    "8-byte length with its top bit set": struct.pack("!BBQ", 0x82, 0xFF, 2**63) + KEY,
    "over the cap": frame(2, bytes(CAP + 1)) + frame(2, b"late"),
    "unmasked to a server": frame(2, b"abc", masked=False) + frame(2, b"late"),
    "RSV1 without an extension": frame(2, b"abc", rsv=4),
    "bad UTF-8 in a whole frame": frame(2, b"ok") + frame(1, b"ab\xffcd") + frame(2, b"late"),
    "text cut inside a code point": frame(1, "é".encode()[:1]),
    "a message between fragments": frame(1, b"a", fin=False) + frame(2, b"b"),
    "a ping inside a fragmented message, then a whole one": (
        frame(2, b"a", fin=False) + frame(9, b"p") + frame(0, b"b") + frame(2, b"whole")
    ),
    "close, then more": frame(2, b"a") + frame(8, b"\x03\xe8") + frame(2, b"after close"),
    "pong, unknown opcode": frame(10, b"p") + frame(3, b"?"),
}


@pytest.mark.parametrize("name", list(EDGES))
@pytest.mark.parametrize("local_close", [False, True])
def test_edge_streams_give_the_same_events(name: str, local_close: bool) -> None:
    assert_same_at_every_cut(EDGES[name], local_close=local_close)


def test_client_reads_unmasked_frames_and_refuses_masked_ones() -> None:
    unmasked = frame(2, b"to the client", masked=False) + frame(1, b"text", masked=False)
    assert_same_at_every_cut(unmasked, client=True)
    assert_same_at_every_cut(frame(2, b"masked") + frame(2, b"late", masked=False), client=True)


@pytest.mark.parametrize("size", [65535, 65536, 70001])
def test_large_frames_at_the_cuts_that_matter(size: int) -> None:
    payload = bytes(i % 251 for i in range(size))
    for opcode in (Opcode.BINARY, Opcode.TEXT):
        data = payload if opcode is Opcode.BINARY else b"a" * size
        stream = frame(opcode, data) + frame(Opcode.BINARY, b"next")
        cuts = [1, 2, 3, 4, 9, 10, 13, 14, 15, 1000, len(stream) - 13, len(stream) - 1]
        for cut in cuts:
            reads = [stream[:cut], stream[cut:]]
            ours = outcome(reads, shortcut=True, client=False, cap=1 << 20)
            assert ours == outcome(reads, shortcut=False, client=False, cap=1 << 20)
            whole = data if opcode is Opcode.BINARY else data.decode()
            assert ours[0] == [("message", whole), ("message", b"next")]


def test_whole_frames_come_as_bare_messages_and_binary_waits_whole() -> None:
    ws = connection(client=False)
    stream = frame(2, b"bin" * 50) + frame(1, b"text")
    ws.receive_data(stream[:100])
    assert list(ws.received_events()) == []  # the binary frame is not all here: nothing yet
    ws.receive_data(stream[100:])
    assert list(ws.received_events()) == [b"bin" * 50, "text"]
    # A text frame that is not all here goes through wsproto: its UTF-8 is checked as it comes.
    ws.receive_data(frame(1, b"ab\xff" + bytes(100))[:12])
    events = list(ws.received_events())
    assert events == [CloseConnection(code=1007, reason=str(ws.failure))]
    assert ws.failure is not None and ws.failure.code == 1007


def test_the_pure_unmasking_path_gives_the_same_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(framing, "_C_MASKER", None)
    monkeypatch.setattr(framing, "_VECTOR_MASK", None)
    assert_same_at_every_cut(EDGES["two whole messages"])


@given(
    data=st.one_of(
        st.binary(max_size=300),
        st.text(max_size=100),
        st.sampled_from([bytes(65535), bytes(65536), "é" * 40000]),
    )
)
def test_data_frame_is_what_wsproto_sends(data: bytes | str) -> None:
    message = TextMessage(data) if isinstance(data, str) else BytesMessage(data)
    for client in (False, True):
        ours, theirs = connection(client), connection(client)
        header, payload = ours.data_frame(data)
        assert header + payload == theirs.send(message)
    if isinstance(data, bytes) and data:
        assert connection(False).data_frame(data)[1] is data  # the payload is not copied


def test_data_frame_goes_through_wsproto_with_deflate_or_when_not_open() -> None:
    deflating = WsConnection(client=False, max_message_size=CAP, max_fragments=8, deflate=Deflate())
    header, payload = deflating.data_frame(b"a" * 100)
    assert payload == b"" and header[0] == 0xC2 and len(header) < 100  # RSV1: compressed
    closing = connection(client=False, local_close=True)
    with pytest.raises(LocalProtocolError):
        closing.data_frame(b"after our close")


def test_the_end_of_input_reported_to_wsproto_comes_first() -> None:
    ws = connection(client=False)
    other = connection(client=False)
    ws.receive_data(None)  # wsproto's way to say the byte stream ended: 1006
    assert list(ws.received_events()) == [CloseConnection(code=1006)]
    # Its event queue is its own once used (until then the connections share an empty one).
    assert list(other.events()) == []
    other.receive_data(None)
    assert list(other.events()) == [CloseConnection(code=1006)]
    assert list(ws.events()) == []


def events(received: list[Any]) -> str:
    """The events' repr without the frames' ids and names, which count frames made in the
    process."""
    return re.sub(r"(id=\d+, )?name='\w+#\d+'", "name=...", repr(received))


def server_core_run(stream: bytes, cut: int, *, shortcut: bool) -> list[object]:
    """What a server core (``RawServer``: the raw serializer, no application) makes of
    ``stream`` read in two pieces, then once the failure grace has passed: its events and the
    bytes it writes, each step."""
    from .test_connection import RawServer

    original = WsConnection.__init__

    def without_shortcut(self: WsConnection, **kwargs: Any) -> None:
        original(self, **kwargs)
        self._shortcut = False

    if not shortcut:
        WsConnection.__init__ = without_shortcut  # type: ignore[method-assign]
    try:
        raw = RawServer(max_message_size=CAP, max_fragments=8)
        steps: list[object] = []
        for piece in (stream[:cut], stream[cut:]):
            steps += [raw.feed(piece), events(raw.server.events_received())]
        steps += [raw.at(raw.now + 1.0), events(raw.server.events_received())]
    finally:
        WsConnection.__init__ = original  # type: ignore[method-assign]
    return steps


@settings(max_examples=80)
@given(data=st.data())
def test_the_server_core_writes_and_reports_the_same_either_way(data: st.DataObject) -> None:
    # The whole connection (Connection on WsConnection): the same messages, pongs, close frames
    # and codes, deferred failures and end events with the shortcut as through wsproto only.
    stream = b"".join(data.draw(st.lists(frames(client=False), min_size=1, max_size=5)))
    cut = data.draw(st.integers(0, len(stream)))
    assert server_core_run(stream, cut, shortcut=True) == server_core_run(
        stream, cut, shortcut=False
    )


@pytest.mark.parametrize("name", list(EDGES))
def test_the_server_core_is_the_same_either_way_on_the_edge_streams(name: str) -> None:
    stream = EDGES[name]
    for cut in range(0, len(stream) + 1, max(1, len(stream) // 40)):
        assert server_core_run(stream, cut, shortcut=True) == server_core_run(
            stream, cut, shortcut=False
        )


def test_bytes_after_the_peers_close_frame_are_as_wsproto_treats_them() -> None:
    # Bytes go straight to the frame decoder's buffer only while open (or closing from our
    # side); after the peer's close frame wsproto ignores them, once closed it refuses them.
    ws = connection(client=False)
    ws.receive_data(frame(Opcode.CLOSE, struct.pack("!H", 1000), masked=True) + b"\x82")
    assert list(ws.received_events()) == [CloseConnection(code=1000, reason="")]
    after_close = ws.state  # a local: mypy would keep ws.state narrowed past ws.send
    assert after_close is ConnectionState.REMOTE_CLOSING
    buffered = bytes(ws._proto._frame_decoder.buffer.buffer)
    ws.receive_data(b"ignored")
    assert bytes(ws._proto._frame_decoder.buffer.buffer) == buffered
    ws.send(CloseConnection(code=1000))
    assert ws.state is ConnectionState.CLOSED
    with pytest.raises(LocalProtocolError):
        ws.receive_data(b"refused")
