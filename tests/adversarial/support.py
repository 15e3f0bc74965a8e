"""A policy-``multi`` echo server for the adversarial tests (every client echoed by its own
task, as ``wavewire serve --policy multi`` does)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import anyio

from tests.adapters.support import make_params
from wavewire import ConnectionClosed, WebsocketServerParams, WebsocketServerTransport
from wavewire.adapters import AnyioServerDriver, AsyncioServerDriver
from wavewire.cli import echo
from wavewire.transports.server import ClientHandle, DriverName

Reader = Callable[[ClientHandle], Coroutine[Any, Any, None]]


async def echo_client(client: ClientHandle) -> None:
    with contextlib.suppress(ConnectionClosed):
        await echo(client.input(), client.output())


@asynccontextmanager
async def multi_server(
    params: WebsocketServerParams | None = None,
    *,
    driver: DriverName,
    reader: Reader = echo_client,
) -> AsyncIterator[WebsocketServerTransport]:
    """A transport on 127.0.0.1:0 running ``reader(client)`` in a task for every client."""
    params = params or make_params(client_policy="multi")
    transport = WebsocketServerTransport(params, host="127.0.0.1", port=0, driver=driver)
    async with transport, anyio.create_task_group() as readers:

        @transport.event_handler("on_client_connected")
        def start_reader(transport: WebsocketServerTransport, client: ClientHandle) -> None:
            readers.start_soon(reader, client)

        yield transport
        readers.cancel_scope.cancel()


def pending_output(transport: WebsocketServerTransport) -> int:
    """Bytes the driver holds for its connections, not yet taken by the kernel."""
    driver = transport._driver_or_raise()
    if isinstance(driver, AnyioServerDriver):
        return sum(c.outbox.pending for c in driver._connections.values())
    assert isinstance(driver, AsyncioServerDriver)
    return sum(
        sum(map(len, link.queue))
        + (link.transport.get_write_buffer_size() if link.transport is not None else 0)
        for link in driver._links.values()
    )
