"""Misbehaving peers for the adapter hardening tests: raw TCP sockets that speak just enough
WebSocket to get a session, then stop reading, stop answering, trickle, or vanish."""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.abc
from anyio.abc import SocketAttribute
from wsproto.frame_protocol import Opcode

from wavewire.core.frames import Frame
from wavewire.core.protocol.framing import encode_frame
from wavewire.core.serializers.protobuf import ProtobufFrameSerializer

MASK = b"\x37\xfa\x21\x3d"
UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def upgrade_request(*headers: str, path: str = "/ws") -> bytes:
    """``UPGRADE`` for ``path`` with extra header lines."""
    head = UPGRADE.replace(b"GET /ws ", f"GET {path} ".encode())
    extra = "".join(f"{h}\r\n" for h in headers).encode()
    return head[:-2] + extra + b"\r\n"


def masked(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """A client frame (masked with ``MASK``)."""
    return encode_frame(Opcode(opcode), payload, fin=fin, mask_key=MASK)


def frame_header(opcode: int, length: int) -> bytes:
    """Only the header (and mask key) of a masked client frame declaring ``length`` bytes."""
    return struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length) + MASK


def message_frame(frame: Frame) -> bytes:
    """``frame`` as the default (protobuf) serializer sends it, in a masked binary frame."""
    data = ProtobufFrameSerializer().serialize(frame)
    assert isinstance(data, bytes)
    return masked(0x2, data)


async def read_head(stream: anyio.abc.ByteReceiveStream) -> tuple[bytes, bytes]:
    """An HTTP response head and whatever came after it."""
    seen = b""
    while b"\r\n\r\n" not in seen:
        seen += await stream.receive()
    head, _, rest = seen.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n", rest


async def read_to_end(stream: anyio.abc.ByteReceiveStream) -> bytes:
    """Everything until the server closes (EOF or reset)."""
    data = b""
    with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError):
        while True:
            data += await stream.receive()
    return data


@asynccontextmanager
async def open_session(
    port: int, request: bytes = UPGRADE
) -> AsyncIterator[tuple[anyio.abc.SocketStream, bytes]]:
    """A raw connection whose upgrade succeeded, and the bytes read past the 101; closed (if
    still open) on the way out, whatever happened."""
    stream = await anyio.connect_tcp("127.0.0.1", port)
    try:
        await stream.send(request)
        head, rest = await read_head(stream)
        assert head.startswith(b"HTTP/1.1 101 "), head
        yield stream, rest
    finally:
        await anyio.aclose_forcefully(stream)


def shrink_receive_buffer(stream: anyio.abc.SocketStream, size: int = 4096) -> None:
    """Make a peer that stops reading stop the server's writes sooner."""
    raw: socket.socket = stream.extra(SocketAttribute.raw_socket)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def reset_on_close(stream: anyio.abc.SocketStream) -> None:
    """Make closing ``stream`` send a TCP reset instead of a FIN (SO_LINGER 0)."""
    raw: socket.socket = stream.extra(SocketAttribute.raw_socket)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def close_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(code, reason) of every close frame in unmasked server bytes (frames parsed in order)."""
    out = []
    i = 0
    while i + 2 <= len(data):
        opcode, length = data[i] & 0x0F, data[i + 1] & 0x7F
        i += 2
        if length == 126:
            length = int.from_bytes(data[i : i + 2], "big")
            i += 2
        elif length == 127:
            length = int.from_bytes(data[i : i + 8], "big")
            i += 8
        payload = data[i : i + length]
        i += length
        if opcode == 0x8 and len(payload) >= 2:
            out.append((int.from_bytes(payload[:2], "big"), payload[2:]))
    return out
