"""Clients that close while the server still owes them output (issue 8, point 3): the close
completes on every driver without an error reported to the event loop.

The native asyncio driver used to close the transport from inside ``resume_writing``; when
asyncio had just emptied its buffer, it then ran ``connection_lost`` twice, the second time on
a transport already torn down: ``AttributeError: 'NoneType' object has no attribute
'connection_lost'`` in the loop's exception handler."""

from __future__ import annotations

import contextlib
import logging

import anyio
import pytest

from tests.adapters.faults import (
    masked,
    message_frame,
    open_session,
    read_to_end,
)
from tests.adapters.support import make_params, wait_until
from wavewire import ConnectionClosed, TextFrame
from wavewire.transports.server import ClientHandle, DriverName

from .support import multi_server

pytestmark = pytest.mark.anyio

CLIENTS = 10
#: One reply big enough to stay mostly in the server's write buffer: writing pauses.
REPLY = TextFrame(text="x" * 4_000_000)


async def big_reply(client: ClientHandle) -> None:
    """Answers the first message with REPLY (then waits for the end)."""
    with contextlib.suppress(ConnectionClosed):
        async for _ in client.input():
            await client.output().send(REPLY)


async def test_clients_closing_while_owed_output_close_cleanly(
    driver: DriverName, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    params = make_params(client_policy="multi", max_output_buffer=64 * 1024)
    answers: list[bytes] = []

    async def one_client(port: int) -> None:
        async with open_session(port) as (stream, seen):
            await stream.send(message_frame(TextFrame(text="go")))
            while not seen:  # the reply has started: the rest waits in the server's buffer
                seen += await stream.receive(1)
            # Our close, before reading on: the server's close reply (and its end of the TCP
            # connection) queue behind the paused reply.
            await stream.send(masked(0x8, (1000).to_bytes(2, "big")))
            await anyio.sleep(0.2)
            answers.append(seen + await read_to_end(stream))

    with anyio.fail_after(20):
        async with multi_server(params, driver=driver, reader=big_reply) as transport:
            async with anyio.create_task_group() as tg:
                for _ in range(CLIENTS):
                    tg.start_soon(one_client, transport.port)
            await wait_until(lambda: not transport._handles)
            await anyio.sleep(0.05)  # asyncio's connection_lost callbacks run after the close
    assert len(answers) == CLIENTS
    for answer in answers:
        assert answer.endswith(b"\x88\x02\x03\xe8")  # the close reply came last
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert problems == [], [r.getMessage() for r in problems]
