"""Shared pieces of the adapter tests: an echo server and an event recorder."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import trio.lowlevel
import trio.testing

from wavewire import WebsocketServerParams, WebsocketServerTransport
from wavewire.cli import echo
from wavewire.transports.server import SERVER_EVENTS, ClientHandle, DriverName

#: Every wait in these tests is bounded by this (seconds).
LIMIT = 5.0


#: Real seconds every task must have been idle before the virtual clock jumps: time for bytes
#: just written on loopback to become readable (the kernel may finish delivering them a little
#: after the write returns), so that no arrival is stamped at a later deadline.
AUTOJUMP_AFTER = 0.01


def backend_on_synthetic_clock(backend: str) -> str | tuple[str, dict[str, Any]]:
    """asyncio as it is; trio on a virtual clock (``MockClock``) that jumps to the next
    deadline once every task has been idle ``AUTOJUMP_AFTER`` real seconds."""
    if backend == "trio":
        return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=AUTOJUMP_AFTER)})
    return backend


def synthetic_clock() -> bool:
    """Whether this test runs on the virtual clock, where times are exact."""
    try:
        return isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock)
    except RuntimeError:  # not in trio
        return False


def make_params(**overrides: Any) -> WebsocketServerParams:
    settings: dict[str, Any] = {
        "audio_in_enabled": True,
        "audio_out_enabled": True,
        "audio_in_sample_rate": 16000,
        "audio_out_sample_rate": 16000,  # the echo sends back what it got
        "close_timeout": 2.0,
    }
    settings.update(overrides)
    return WebsocketServerParams(**settings)


class Recorder:
    """Records every transport event as ``(name, client_id)``; lets tests wait for one."""

    def __init__(self, transport: WebsocketServerTransport) -> None:
        self.log: list[tuple[str, int | None]] = []
        self.handles: list[ClientHandle] = []
        self._changed = anyio.Event()
        for name in SERVER_EVENTS:
            transport.add_event_handler(name, self._recorder(name))

    def _recorder(self, name: str) -> Any:
        def record(
            transport: WebsocketServerTransport, client: ClientHandle | None = None, *_: object
        ) -> None:
            self.log.append((name, None if client is None else int(client.id)))
            if client is not None and client not in self.handles:
                self.handles.append(client)
            self._changed.set()
            self._changed = anyio.Event()

        return record

    def count(self, name: str) -> int:
        return sum(1 for event, _ in self.log if event == name)

    async def wait(self, name: str, count: int = 1) -> None:
        while self.count(name) < count:
            await self._changed.wait()

    def names(self) -> list[tuple[str, int | None]]:
        return [entry for entry in self.log if entry[0] != "on_websocket_ready"]


async def wait_until(condition: Callable[[], bool]) -> None:
    """Poll a condition no event exposes (a task parked inside anyio); callers bound it."""
    while not condition():  # noqa: ASYNC110 - nothing to wait on but the state itself
        await anyio.sleep(0.005)


@asynccontextmanager
async def echo_server(
    params: WebsocketServerParams | None = None, *, driver: DriverName = "anyio"
) -> AsyncIterator[tuple[WebsocketServerTransport, Recorder]]:
    """A transport on 127.0.0.1:0 echoing the current client (not for policy ``multi``)."""
    transport = WebsocketServerTransport(
        params or make_params(), host="127.0.0.1", port=0, driver=driver
    )
    recorder = Recorder(transport)
    async with transport, anyio.create_task_group() as tg:
        tg.start_soon(echo, transport.input(), transport.output())
        yield transport, recorder
        tg.cancel_scope.cancel()
