"""permessage-deflate (RFC 7692): negotiation both ways, literal compressed frames, limits."""

from __future__ import annotations

import base64
import hashlib
import tracemalloc
import zlib
from dataclasses import dataclass

import pytest
from wsproto.frame_protocol import Opcode, RsvBits

from wavewire.core.client import ClientProtocol
from wavewire.core.config import ClientConfig, ServerConfig
from wavewire.core.events import (
    ClientDisconnected,
    Connected,
    ConnectFailed,
    Disconnected,
    FrameReceived,
)
from wavewire.core.frames import Frame
from wavewire.core.protocol.connection import FAILURE_GRACE, State
from wavewire.core.protocol.framing import BoundedDeflate, Deflate, encode_frame
from wavewire.core.protocol.handshake import parse_extensions
from wavewire.core.server import ServerProtocol

from .pair import FIXED_MASK, CountingRandom

T0 = 100.0
KEY = "dGhlIHNhbXBsZSBub25jZQ=="
RSV1 = RsvBits(True, False, False)
#: RFC 7692 section 7.2.3.1: "Hello", compressed, its 00 00 ff ff tail removed.
HELLO = bytes.fromhex("f248cdc9c90700")
#: Section 7.2.3.2: the second "Hello" on the same context.
HELLO_AGAIN = bytes.fromhex("f200110000")


@dataclass(frozen=True, slots=True, kw_only=True)
class Message(Frame):
    """A test frame that carries one message as is."""

    data: bytes | str


class Passthrough:
    def serialize(self, frame: Frame) -> bytes | str | None:
        return frame.data if isinstance(frame, Message) else None

    def deserialize(self, data: bytes | str) -> Frame | None:
        return Message(data=data)


def upgrade(extensions: str | None) -> bytes:
    head = (
        "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n"
    )
    if extensions is not None:
        head += f"Sec-WebSocket-Extensions: {extensions}\r\n"
    return (head + "\r\n").encode()


def masked(opcode: Opcode, payload: bytes, *, fin: bool = True, rsv1: bool = False) -> bytes:
    rsv = RSV1 if rsv1 else RsvBits(False, False, False)
    return encode_frame(opcode, payload, fin=fin, rsv=rsv, mask_key=FIXED_MASK)


class DeflateServer:
    """A server core with one connection, upgraded with the given offer, fed literal bytes."""

    def __init__(self, offer: str | None = "permessage-deflate", **config: object) -> None:
        defaults: dict[str, object] = {
            "serializer": Passthrough(),
            "ping_interval": None,
            "compression": True,
        }
        self.server = ServerProtocol(ServerConfig(**{**defaults, **config}))  # type: ignore[arg-type]
        self.cid = self.server.connection_made(T0)
        self.server.receive_data(self.cid, upgrade(offer), T0)
        [handshake] = self.server.data_to_send()
        self.response = handshake.data
        assert self.response.startswith(b"HTTP/1.1 101 ")
        self.server.events_received()

    @property
    def extensions(self) -> str | None:
        for line in self.response.decode().split("\r\n"):
            name, _, value = line.partition(": ")
            if name.lower() == "sec-websocket-extensions":
                return value
        return None

    def feed(self, data: bytes) -> bytes:
        self.server.receive_data(self.cid, data, T0)
        return b"".join(t.data for t in self.server.data_to_send())

    def messages(self) -> list[bytes | str]:
        return [
            e.frame.data
            for e in self.server.events_received()
            if isinstance(e, FrameReceived) and isinstance(e.frame, Message)
        ]

    def send(self, data: bytes | str) -> bytes:
        self.server.send_message(self.cid, data)
        return b"".join(t.data for t in self.server.data_to_send())

    def failed_with(self, data: bytes) -> int:
        out = self.feed(data)
        if not out:  # a violation right behind a valid message fails after FAILURE_GRACE
            self.server.handle_timer(T0 + FAILURE_GRACE)
            out = b"".join(t.data for t in self.server.data_to_send())
        [event] = [e for e in self.server.events_received() if isinstance(e, ClientDisconnected)]
        assert out[:1] == b"\x88"  # our close frame carries the same code
        assert int.from_bytes(out[2:4], "big") == event.code
        return event.code


# --- negotiation, server side -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offer", "response"),
    [
        ("permessage-deflate", "permessage-deflate"),
        ("permessage-deflate; client_max_window_bits", "permessage-deflate"),
        ("permessage-deflate; client_max_window_bits=9", "permessage-deflate"),
        (
            "permessage-deflate; client_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        ),
        (
            "permessage-deflate; server_max_window_bits=8",
            "permessage-deflate; server_max_window_bits=8",
        ),
        (
            "permessage-deflate;server_max_window_bits=15",
            "permessage-deflate; server_max_window_bits=15",
        ),
        (
            'permessage-deflate; server_max_window_bits="10"',
            "permessage-deflate; server_max_window_bits=10",
        ),
        (
            'permessage-deflate; server_max_window_bits="1\\2"',
            "permessage-deflate; server_max_window_bits=12",
        ),
        # The first acceptable offer wins; others are skipped.
        ("permessage-deflate; server_max_window_bits=16, permessage-deflate", "permessage-deflate"),
        (
            "x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=9",
            "permessage-deflate; server_max_window_bits=9",
        ),
        ('x-other; p="abc", permessage-deflate', "permessage-deflate"),
        (" , permessage-deflate ,", "permessage-deflate"),
    ],
)
def test_server_accepts_the_first_valid_offer(offer: str, response: str) -> None:
    assert DeflateServer(offer).extensions == response


@pytest.mark.parametrize(
    "offer",
    [
        None,
        "",
        "x-webkit-deflate-frame",
        "permessage-deflate; server_max_window_bits",  # needs a value
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=08",  # no leading zero (RFC 7692 7.1.2)
        "permessage-deflate; client_max_window_bits=",
        "permessage-deflate; client_max_window_bits=x",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; unknown_parameter",
        "permessage-deflate; =1",
        'permessage-deflate; server_max_window_bits="9',  # unclosed quote
        '"permessage-deflate"',
        'x-other; p="a, b", permessage-deflate',  # a quoted value must hold a token
        'permessage-deflate; server_max_window_bits="\\"9"',
    ],
)
def test_server_declines_invalid_offers(offer: str | None) -> None:
    assert DeflateServer(offer).extensions is None


def test_server_without_compression_ignores_the_offer() -> None:
    server = DeflateServer("permessage-deflate", compression=False)
    assert server.extensions is None
    # RSV1 then means nothing agreed: 1002 (aiohttp #12976).
    assert server.failed_with(masked(Opcode.TEXT, HELLO, rsv1=True)) == 1002


def test_parse_extensions() -> None:
    assert parse_extensions(['a; b=1; c="x y"', "d"]) is None  # a quoted value must be a token
    assert parse_extensions(['a; b=1; c="xy"', "d"]) == [
        ("a", (("b", "1"), ("c", "xy"))),
        ("d", ()),
    ]
    assert parse_extensions(["a, b c"]) is None
    assert parse_extensions([]) == []


# --- frames, server side ------------------------------------------------------------------------


def test_compressed_messages_both_ways_with_context_takeover() -> None:
    server = DeflateServer()
    server.feed(masked(Opcode.TEXT, HELLO, rsv1=True) + masked(Opcode.TEXT, HELLO_AGAIN, rsv1=True))
    assert server.messages() == ["Hello", "Hello"]
    # Our output: RSV1 set, the RFC's bytes, the context kept across messages.
    assert server.send("Hello") == b"\xc1\x07" + HELLO
    assert server.send("Hello") == b"\xc1\x05" + HELLO_AGAIN
    big = bytes(range(256)) * 64
    out = server.send(big)
    assert out[0] == 0xC2 and len(out) < len(big)
    assert zlib.decompressobj(-15).decompress(out[4:] + b"\x00\x00\xff\xff") != b""


def test_fragmented_uncompressed_and_empty_messages() -> None:
    server = DeflateServer()
    server.feed(
        masked(Opcode.TEXT, HELLO[:3], fin=False, rsv1=True)
        + masked(Opcode.PING, b"p")  # a control frame in between changes nothing
        + masked(Opcode.CONTINUATION, HELLO[3:])
        + masked(Opcode.BINARY, b"plain")  # RSV1 clear: not compressed
        + masked(Opcode.BINARY, b"\x00", rsv1=True)  # an empty message (RFC 7692 7.2.3.6)
        + masked(Opcode.BINARY, b"", rsv1=True)
    )
    assert server.messages() == ["Hello", b"plain", b"", b""]


def test_no_context_takeover_resets_both_contexts() -> None:
    server = DeflateServer(
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    )
    assert server.send("Hello") == b"\xc1\x07" + HELLO
    assert server.send("Hello") == b"\xc1\x07" + HELLO  # not HELLO_AGAIN: a fresh context
    server.feed(masked(Opcode.TEXT, HELLO, rsv1=True) + masked(Opcode.TEXT, HELLO, rsv1=True))
    assert server.messages() == ["Hello", "Hello"]


def test_eight_bit_window_output_fits_an_eight_bit_window() -> None:
    server = DeflateServer("permessage-deflate; server_max_window_bits=8")
    data = b"".join(bytes((i % 251, i % 7)) * 3 for i in range(4000))
    out = server.send(data)
    assert out[:2] == b"\xc2\x7e"  # compressed: RSV1, and far smaller than the 8000 bytes
    payload = out[4:]
    # A peer that keeps only a 256-byte window still reads every back-reference.
    assert zlib.decompressobj(-8).decompress(payload + b"\x00\x00\xff\xff") == data


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        (masked(Opcode.PING, b"", rsv1=True), 1002),  # RSV1 on a control frame
        (masked(Opcode.CLOSE, b"\x03\xe8", rsv1=True), 1002),
        (masked(Opcode.TEXT, HELLO[:3], fin=False, rsv1=True)
         + masked(Opcode.CONTINUATION, HELLO[3:], rsv1=True), 1002),  # RSV1 on a continuation
        (masked(Opcode.TEXT, HELLO[:3], fin=False, rsv1=True)
         + masked(Opcode.TEXT, HELLO, rsv1=True), 1002),  # a new message inside one
        (masked(Opcode.CONTINUATION, b"x"), 1002),  # no message to continue
        (masked(Opcode.TEXT, HELLO, rsv1=True) + bytes((0xA1, 0x80)) + FIXED_MASK, 1002),  # RSV3
        (masked(Opcode.BINARY, b"\xff\xff", rsv1=True), 1007),  # not deflate data
        (masked(Opcode.TEXT, zlib.compress(b"\xff")[2:-4], rsv1=True), 1007),  # not UTF-8
    ],
)  # fmt: skip
def test_violations_under_deflate(frames: bytes, code: int) -> None:
    assert DeflateServer().failed_with(frames) == code


def deflated_zeros(mib: int) -> bytes:
    deflater = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes(1 << 20)
    out = b"".join(deflater.compress(chunk) for _ in range(mib))
    return (out + deflater.flush(zlib.Z_SYNC_FLUSH))[:-4]


def test_compression_bomb_ends_in_1009_with_bounded_memory() -> None:
    bomb = deflated_zeros(100)  # 100 MiB of zeros
    assert len(bomb) < 150 * 1024
    frame = masked(Opcode.BINARY, bomb, rsv1=True)
    server = DeflateServer()  # max_message_size: 1 MiB
    tracemalloc.start()
    try:
        assert server.failed_with(frame) == 1009
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024


def test_inflated_size_is_counted_across_frames() -> None:
    data = deflated_zeros(1)  # each fragment inflates under the cap, the message does not
    half = len(data) // 2
    server = DeflateServer(max_message_size=600 * 1024)
    code = server.failed_with(
        masked(Opcode.BINARY, data[:half], fin=False, rsv1=True)
        + masked(Opcode.CONTINUATION, data[half:])
    )
    assert code == 1009
    server = DeflateServer(max_message_size=1 << 20)  # exactly at the cap: accepted
    server.feed(masked(Opcode.BINARY, data, rsv1=True))
    assert server.messages() == [bytes(1 << 20)]


# --- the client side ----------------------------------------------------------------------------


class DeflateClient:
    def __init__(self, response_extensions: str | None, *, compression: bool = True) -> None:
        config = ClientConfig(serializer=Passthrough(), ping_interval=None, compression=compression)
        self.client = ClientProtocol(
            "ws://example.com/ws", config, random_bytes=CountingRandom(), now=T0
        )
        [request] = self.client.data_to_send()
        self.request = request.data
        key = next(
            line.split(b": ")[1]
            for line in self.request.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key")
        )
        accept = base64.b64encode(
            hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
        )
        response = (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n"
        )
        if response_extensions is not None:
            response += f"Sec-WebSocket-Extensions: {response_extensions}\r\n".encode()
        self.client.receive_data(response + b"\r\n", T0)
        self.events = self.client.events_received()

    def send(self, data: bytes | str) -> bytes:
        self.client.send_message(data)
        return b"".join(t.data for t in self.client.data_to_send())

    def feed(self, data: bytes) -> list[bytes | str]:
        self.client.receive_data(data, T0)
        return [
            e.frame.data
            for e in self.client.events_received()
            if isinstance(e, FrameReceived) and isinstance(e.frame, Message)
        ]


def test_client_offers_only_when_enabled() -> None:
    offer = b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    assert offer in DeflateClient(None).request
    assert b"Sec-WebSocket-Extensions" not in DeflateClient(None, compression=False).request


def unmask(frame: bytes) -> bytes:
    length = frame[1] & 0x7F
    assert frame[1] & 0x80 and length < 126
    key, payload = frame[2:6], frame[6:]
    return bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def test_client_round_trip_with_context_takeover() -> None:
    client = DeflateClient("permessage-deflate")
    assert isinstance(client.events[0], Connected)
    first, second = client.send("Hello"), client.send("Hello")
    assert first[0] == 0xC1 and unmask(first) == HELLO
    assert unmask(second) == HELLO_AGAIN
    assert client.feed(b"\xc1\x07" + HELLO + b"\xc1\x05" + HELLO_AGAIN) == ["Hello", "Hello"]


def test_client_follows_the_servers_parameters() -> None:
    client = DeflateClient(
        "permessage-deflate; client_no_context_takeover; server_no_context_takeover;"
        " client_max_window_bits=8; server_max_window_bits=10"
    )
    assert isinstance(client.events[0], Connected)
    assert unmask(client.send("Hello")) == HELLO
    assert unmask(client.send("Hello")) == HELLO  # fresh context per message
    assert client.feed(b"\xc1\x07" + HELLO + b"\xc1\x07" + HELLO) == ["Hello", "Hello"]
    deflate = client.client._connection._ws._proto.extensions[0]  # type: ignore[union-attr]
    assert isinstance(deflate, BoundedDeflate) and deflate.enabled()
    assert repr(deflate) == (
        "<BoundedDeflate permessage-deflate; server_no_context_takeover;"
        " client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=8>"
    )


@pytest.mark.parametrize(
    ("extensions", "compression", "detail"),
    [
        ("permessage-deflate", False, "the server chose an extension not offered"),
        ("x-webkit-deflate-frame", True, "the server chose an extension not offered"),
        (
            "permessage-deflate, permessage-deflate",
            True,
            "the server chose an extension not offered",
        ),
        ('permessage-deflate; a="', True, "malformed"),
        ("permessage-deflate; client_max_window_bits", True, "parameters are invalid"),
        ("permessage-deflate; server_max_window_bits=16", True, "parameters are invalid"),
        ("permessage-deflate; mystery", True, "parameters are invalid"),
    ],
)
def test_client_refuses_an_invalid_response(
    extensions: str, compression: bool, detail: str
) -> None:
    client = DeflateClient(extensions, compression=compression)
    [event] = client.events
    assert isinstance(event, ConnectFailed)
    assert detail in str(event.error)
    assert client.client.state is State.CLOSED


def test_client_rejects_a_bomb_with_1009() -> None:
    client = DeflateClient("permessage-deflate")
    bomb = deflated_zeros(20)
    client.client.receive_data(encode_frame(Opcode.BINARY, bomb, rsv=RSV1), T0)
    events = client.client.events_received()
    assert [(e.code, type(e)) for e in events if isinstance(e, Disconnected)] == [
        (1009, Disconnected)
    ]


def test_compression_setting_is_validated() -> None:
    with pytest.raises(TypeError, match="compression"):
        ServerConfig(compression=1)  # type: ignore[arg-type]
    assert Deflate(client_max_window_bits=9).header_value() == (
        "permessage-deflate; client_max_window_bits=9"
    )
