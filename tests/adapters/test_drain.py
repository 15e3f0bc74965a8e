"""Graceful drain, health checks and session keys over real sockets on 127.0.0.1, on every
driver and backend (``MATRIX``). Times are asserted only on trio's virtual clock, where they are
exact; elsewhere only codes, counts and orders."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest

from wavewire import (
    ReconnectPolicy,
    SessionKey,
    WebsocketClientTransport,
    WebsocketServerTransport,
)
from wavewire.core.events import Disconnected
from wavewire.transports.server import DriverName

from .client_support import ClientRecorder, client_params
from .support import LIMIT, Recorder, make_params, synthetic_clock
from .test_server_transport import IDS, MATRIX
from .wsclient import connect

pytestmark = pytest.mark.anyio


@pytest.fixture(params=MATRIX, ids=IDS)
def driver_backend(request: pytest.FixtureRequest) -> tuple[DriverName, str]:
    pair: tuple[DriverName, str] = request.param
    return pair


@pytest.fixture
def anyio_backend(driver_backend: tuple[DriverName, str]) -> str | tuple[str, dict[str, Any]]:
    from .support import backend_on_synthetic_clock

    return backend_on_synthetic_clock(driver_backend[1])


@pytest.fixture
def driver(driver_backend: tuple[DriverName, str]) -> DriverName:
    return driver_backend[0]


async def http(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """One raw HTTP exchange: status, headers (lower-cased names) and body."""
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(request)
        data = b""
        while True:
            try:
                data += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                break
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


async def test_drain_refuses_newcomers_lets_sessions_end_then_closes_the_rest_with_1012(
    driver: DriverName,
) -> None:
    params = make_params(client_policy="multi", drain_timeout=3.0, max_sessions=5)
    transport = WebsocketServerTransport(params, "127.0.0.1", 0, driver=driver)
    recorder = Recorder(transport)
    with anyio.fail_after(LIMIT * 2):
        async with transport:
            port = transport.port
            status, _, body = await http(port, get("/readyz"))
            assert (status, json.loads(body)["status"]) == (200, "ready")
            async with connect(port) as leaving, connect(port) as staying:
                await recorder.wait("on_client_connected", 2)
                drained = anyio.Event()
                started = anyio.current_time()

                async def drain() -> None:
                    await transport.drain()
                    drained.set()

                async with anyio.create_task_group() as tg:
                    tg.start_soon(drain)
                    await anyio.sleep(0.1)
                    # Refused while draining: 503 with Retry-After; /readyz says so too.
                    status, headers, _ = await http(port, UPGRADE)
                    assert (status, headers["retry-after"]) == (503, "1")
                    status, _, body = await http(port, get("/readyz"))
                    assert (status, json.loads(body)["status"]) == (503, "draining")
                    status, _, body = await http(port, get("/healthz"))
                    assert (status, json.loads(body)) == (200, {"status": "alive"})
                    # A session that ends on its own before the deadline: a normal close.
                    assert (await leaving.close()).code == 1000
                    assert not drained.is_set()
                    closed = await staying.next(Disconnected)
                    assert (closed.code, closed.reason) == (1012, "service restart")
                    if synthetic_clock():
                        assert anyio.current_time() == pytest.approx(started + 3.0)
                    await drained.wait()
    codes = sorted(h.disconnect.code for h in recorder.handles if h.disconnect is not None)
    assert codes == [1000, 1012]
    assert recorder.count("on_client_connected") == 2


async def test_session_keys_give_each_key_its_own_session_under_replace(
    driver: DriverName,
) -> None:
    params = make_params(session_key=SessionKey("query", "sid"))
    transport = WebsocketServerTransport(params, "127.0.0.1", 0, driver=driver)
    recorder = Recorder(transport)
    with anyio.fail_after(LIMIT):
        async with transport:
            port = transport.port
            async with connect(port, "/ws?sid=a") as a1, connect(port, "/ws?sid=b"):
                await recorder.wait("on_client_connected", 2)
                async with connect(port, "/ws?sid=a"):
                    closed = await a1.next(Disconnected)
                    assert (closed.code, closed.reason) == (1000, "replaced by a newer connection")
                    await recorder.wait("on_client_connected", 3)
                    keys = sorted(str(c.info.session_key) for c in transport.clients)
                    assert keys == ["a", "b"]
            status, _, _ = await http(port, UPGRADE)  # no key
            assert status == 400


async def test_the_client_reconnects_after_1012_with_backoff(driver: DriverName) -> None:
    server = WebsocketServerTransport(make_params(drain_timeout=0.2), "127.0.0.1", 0, driver=driver)
    policy = ReconnectPolicy(base=0.05, cap=0.4, random=lambda: 0.5)
    with anyio.fail_after(LIMIT):
        async with server:
            uri = f"ws://127.0.0.1:{server.port}/"
            client = WebsocketClientTransport(uri, client_params(reconnect=policy))
            events = ClientRecorder(client)
            async with client:
                await events.wait("on_connected")
                await server.drain()
                # The drained server refuses the reconnect with 503: retried, backed off.
                await events.wait("on_reconnecting", 2)
    closes = [c.disconnect.code for (c,) in events.args("on_disconnected")]
    assert closes[0] == 1012
    attempts = events.args("on_reconnecting")[:2]
    # Full jitter with random() = 0.5: half of 0.05, then half of 0.1.
    assert attempts == [(1, pytest.approx(0.025)), (2, pytest.approx(0.05))]
