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
from wavewire import ConnectionClosed, TextFrame, WebsocketServerTransport
from wavewire.transports.server import ClientHandle, DriverName

pytestmark = pytest.mark.anyio

PAIRS: list[tuple[DriverName, str]] = [
    ("anyio", "asyncio"),
    ("anyio", "trio"),
    ("asyncio", "asyncio"),
]
CLIENTS = 12
MESSAGES = 20
MESSAGE = TextFrame(text="m" * 60_000)
#: What may stay allocated after every client left (caches, the transport's own state).
SLACK = 1_500_000


@pytest.fixture(params=PAIRS, ids=[f"{d}-on-{b}" for d, b in PAIRS])
def pair(request: pytest.FixtureRequest) -> tuple[DriverName, str]:
    value: tuple[DriverName, str] = request.param
    return value


@pytest.fixture
def anyio_backend(pair: tuple[DriverName, str]) -> str:
    return pair[1]


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


async def test_clients_leaving_with_unread_input_leave_nothing_behind(
    pair: tuple[DriverName, str],
) -> None:
    """Each client sends MESSAGES messages and leaves; the application reads the first, is busy
    until the client is gone, then its reply fails and it stops reading: what it did not read
    must not outlive the client."""
    driver = pair[0]
    params = make_params(client_policy="multi")
    transport = WebsocketServerTransport(params, host="127.0.0.1", port=0, driver=driver)
    data = message_frame(MESSAGE) * MESSAGES + masked(0x9, b"sync-ping")

    with traced(), anyio.fail_after(20):
        async with transport, anyio.create_task_group() as readers:

            @transport.event_handler("on_client_connected")
            def start_reader(transport: WebsocketServerTransport, client: ClientHandle) -> None:
                readers.start_soon(busy_reader, client)

            async def busy_reader(client: ClientHandle) -> None:
                with contextlib.suppress(ConnectionClosed):
                    async for frame in client.input():
                        await client._gone.wait()  # busy until the client has left
                        await client.output().send(frame)  # ConnectionClosed: stop reading

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
            readers.cancel_scope.cancel()
    # Before the fix each departed client kept its unread input: about MESSAGES * 60 KB.
    assert grown < SLACK, f"{grown} bytes still held after {2 * CLIENTS} clients left"
