"""Memory of departed clients (issue 8, point 2): under ``client_policy="multi"``, clients that
send messages and leave before reading their echoes leave nothing behind once they are gone:
their input queues (the frames nobody will read) are freed, their connections end.

Measured with ``tracemalloc`` over real sockets on the three driver/backend pairs."""

from __future__ import annotations

import contextlib
import gc
import tracemalloc
from collections.abc import Iterator

import anyio
import pytest

from tests.adapters.faults import masked, message_frame, open_session, reset_on_close
from tests.adapters.support import make_params, wait_until
from wavewire import ConnectionClosed, TextFrame
from wavewire.transports.server import ClientHandle, DriverName

from .support import multi_server

pytestmark = pytest.mark.anyio

CLIENTS = 12
MESSAGES = 20
MESSAGE = TextFrame(text="m" * 60_000)
#: What may stay allocated after every client left (caches, the transport's own state).
SLACK = 1_500_000


@contextlib.contextmanager
def traced() -> Iterator[None]:
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


def allocated() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def test_clients_leaving_with_unread_input_leave_nothing_behind(driver: DriverName) -> None:
    """Each client sends MESSAGES messages and leaves; the application reads the first, is busy
    until the client is gone, then its reply fails and it stops reading: what it did not read
    must not outlive the client."""
    params = make_params(client_policy="multi")
    data = message_frame(MESSAGE) * MESSAGES + masked(0x9, b"sync-ping")

    async def busy_reader(client: ClientHandle) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for frame in client.input():
                await client._wait_gone()  # busy until the client has left
                await client.output().send(frame)  # ConnectionClosed: stop reading

    with traced(), anyio.fail_after(20):
        async with multi_server(params, driver=driver, reader=busy_reader) as transport:

            async def one_client(index: int) -> None:
                async with open_session(transport.port) as (stream, seen):
                    await stream.send(data)
                    while b"sync-ping" not in seen:  # the pong: the server has it all
                        seen += await stream.receive()
                    if index % 2:
                        reset_on_close(stream)  # half leave with a reset, half with a FIN

            async def departures() -> None:
                async with anyio.create_task_group() as clients:
                    for index in range(CLIENTS):
                        clients.start_soon(one_client, index)
                await wait_until(lambda: not transport._handles and not transport.clients)
                # The readers end and let go of the input asynchronously: give them a bounded
                # while (without the fix, the input is never let go of; the assertion says so).
                with anyio.move_on_after(3):
                    await wait_until(lambda: gc.collect() >= 0 and not transport._inboxes)

            await departures()  # one round first: what stays after it is the baseline
            baseline = allocated()
            await departures()
            await departures()
            grown = allocated() - baseline
    # Before the fix each departed client kept its unread input: about MESSAGES * 60 KB.
    assert grown < SLACK, f"{grown} bytes still held after {2 * CLIENTS} clients left"


async def test_input_nobody_took_is_freed_and_a_late_reader_ends_at_once(
    driver: DriverName,
) -> None:
    """No reader while the client was there: after its disconnect was handled, its unread
    frames are freed, and ``client.input()`` made then ends at once."""
    departed: list[ClientHandle] = []

    async def no_reader(client: ClientHandle) -> None:
        pass

    with anyio.fail_after(10):
        async with multi_server(driver=driver, reader=no_reader) as transport:
            transport.add_event_handler(
                "on_client_disconnected", lambda transport, client: departed.append(client)
            )
            async with open_session(transport.port) as (stream, seen):
                await stream.send(message_frame(MESSAGE) * 3 + masked(0x9, b"sync-ping"))
                while b"sync-ping" not in seen:
                    seen += await stream.receive()
            await wait_until(lambda: bool(departed) and not transport._handles)
            await wait_until(lambda: gc.collect() >= 0 and not transport._inboxes)
            assert [frame async for frame in departed[0].input()] == []
