"""Descriptor exhaustion (issue 8, point 1): ``wavewire serve`` with a low RLIMIT_NOFILE,
flooded with idle connects, keeps serving the client it has, stays up, logs the failing
``accept()`` a bounded number of times, and accepts again once the flood is gone."""

from __future__ import annotations

import asyncio
import contextlib
import errno
from typing import Any

import anyio
import anyio.abc
import pytest

from tests.adapters.support import make_params
from tests.adapters.wsclient import connect
from wavewire import TextFrame, WebsocketServerTransport
from wavewire.adapters import AsyncioServerDriver
from wavewire.adapters.asyncio_server import ACCEPT_EXHAUSTED

from .conftest import PAIRS
from .server_process import serve

pytestmark = pytest.mark.anyio

#: The server's descriptor limit, and how many idle connects exceed it.
LIMIT_FDS = 64
FLOOD = 150


async def echoes(port: int, text: str) -> bool:
    async with connect(port) as fresh:
        await fresh.send(TextFrame(text=text))
        reply = await fresh.next_frame()
        await fresh.close()
    return isinstance(reply, TextFrame) and reply.text == text


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize(("driver", "backend"), PAIRS, ids=[f"{d}-on-{b}" for d, b in PAIRS])
async def test_descriptor_exhaustion_is_survived_and_logged_boundedly(
    driver: str, backend: str
) -> None:
    with anyio.fail_after(40):
        async with (
            serve(
                "--policy", "multi", driver=driver, backend=backend, descriptors=LIMIT_FDS
            ) as server,
            connect(server.port) as client,
        ):
            await client.send(TextFrame(text="before"))
            assert (await client.next_frame()) == TextFrame(text="before")

            flood: list[anyio.abc.SocketStream] = []
            try:
                for _ in range(FLOOD):
                    flood.append(await anyio.connect_tcp("127.0.0.1", server.port))
                await server.wait_for(b"accept() failed")
                # Retries while still out of descriptors (the backoff reaches 1 s).
                await anyio.sleep(1.5)
                assert server.exit_status() is None
                await client.send(TextFrame(text="during"))
                assert (await client.next_frame()) == TextFrame(text="during")
            finally:
                for stream in flood:
                    with contextlib.suppress(OSError):
                        await stream.aclose()
            # Descriptors free again: a new client is accepted and served.
            assert await echoes(server.port, "after")
            await client.send(TextFrame(text="still"))
            assert (await client.next_frame()) == TextFrame(text="still")
            await client.close()
        assert server.exit_status() == 0, server.text()
    log = server.text()
    assert "Traceback" not in log
    assert log.count("out of system resource") == 0
    # One line for the exhaustion (rate-limited: 10 s between lines for one kind of failure).
    assert 1 <= log.count("accept() failed") <= 2, log


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_native_driver_filters_only_its_own_accept_reports(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """While serving, asyncio's per-retry report for our listener becomes one rate-limited line;
    other reports reach the application's handler, which is put back afterwards."""
    loop = asyncio.get_running_loop()
    seen: list[str] = []

    def application_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        seen.append(context["message"])

    loop.set_exception_handler(application_handler)
    try:
        transport = WebsocketServerTransport(
            make_params(), host="127.0.0.1", port=0, driver="asyncio"
        )
        async with transport:
            driver = transport._driver_or_raise()
            assert isinstance(driver, AsyncioServerDriver)
            listening = driver._servers[0].sockets[0]
            exhausted = OSError(errno.EMFILE, "Too many open files")
            for _ in range(5):
                loop.call_exception_handler(
                    {"message": ACCEPT_EXHAUSTED, "exception": exhausted, "socket": listening}
                )
            loop.call_exception_handler({"message": "something else"})
        assert loop.get_exception_handler() is application_handler
    finally:
        loop.set_exception_handler(None)
    assert seen == ["something else"]
    lines = [r.getMessage() for r in caplog.records if "accept() failed" in r.getMessage()]
    assert len(lines) == 1 and "EMFILE" in lines[0]
    assert not any(r.exc_info for r in caplog.records)
