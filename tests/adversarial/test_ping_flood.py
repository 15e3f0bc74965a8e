"""A ping flood from a peer that does not read (issue 8, point 6): the pongs it is owed are
held to ``max_output_buffer`` (it was one pong per ping, +44 MB for 1M pings); once it reads,
it gets the pong of its most recent ping (RFC 6455 section 5.5.3)."""

from __future__ import annotations

import contextlib

import anyio
import pytest

from tests.adapters.faults import (
    UPGRADE,
    masked,
    message_frame,
    read_head,
    shrink_receive_buffer,
)
from tests.adapters.support import make_params
from wavewire import ConnectionClosed, TextFrame
from wavewire.transports.server import ClientHandle, DriverName

from .support import multi_server, pending_output

pytestmark = pytest.mark.anyio

PINGS = 60_000
PAYLOAD = 125
MAX_OUTPUT_BUFFER = 64 * 1024
#: Held beyond the buffer: the pongs of one read (asyncio's transports read 256 KiB at once).
SLACK = 512 * 1024


def ping(n: int) -> bytes:
    return masked(0x9, n.to_bytes(4, "big") + b"p" * (PAYLOAD - 4))


async def test_pongs_owed_to_a_ping_flood_are_bounded(driver: DriverName) -> None:
    params = make_params(client_policy="multi", max_output_buffer=MAX_OUTPUT_BUFFER)
    flood = b"".join(ping(n) for n in range(PINGS)) + message_frame(TextFrame(text="done"))
    last_pong = bytes((0x8A, PAYLOAD)) + (PINGS - 1).to_bytes(4, "big") + b"p" * (PAYLOAD - 4)
    done = anyio.Event()

    async def reader(client: ClientHandle) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for _ in client.input():
                done.set()  # the flood is read: every pong is owed by now

    with anyio.fail_after(30):
        async with (
            multi_server(params, driver=driver, reader=reader) as transport,
            await anyio.connect_tcp("127.0.0.1", transport.port) as stream,
        ):
            # Before any traffic: shrinking a window already offered stalls TCP.
            shrink_receive_buffer(stream, 256 * 1024)
            await stream.send(UPGRADE)
            head, seen = await read_head(stream)
            assert head.startswith(b"HTTP/1.1 101 ")
            await stream.send(flood)  # and read nothing, for now
            await done.wait()
            held = pending_output(transport)
            received = bytearray(seen)
            while not received.endswith(last_pong):
                received += await stream.receive()
    # Before: every pong the kernel could not take was queued (7.6 MB of pongs, ~3 MB held).
    assert held < MAX_OUTPUT_BUFFER + SLACK, f"{held} bytes held for {PINGS} pings"
