"""Hardening (issue 5): failure scenarios of the drivers and transport, over real sockets on
127.0.0.1, with peers that misbehave on purpose (``faults.py``).

Every test runs on the anyio driver under asyncio and trio and on the native asyncio driver,
and every wait is bounded with ``fail_after``. Timing assertions compare with the configured
timeouts plus a generous slack, never with a sleep.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
import pytest

from wavewire import (
    ConnectionClosed,
    TextFrame,
    WebsocketClientTransport,
    WebsocketServerParams,
    WebsocketServerTransport,
)
from wavewire.adapters.anyio_server import AnyioServerDriver
from wavewire.adapters.asyncio_server import AsyncioServerDriver
from wavewire.core.errors import HandshakeRejected
from wavewire.core.events import DisconnectCause
from wavewire.core.frames import Frame
from wavewire.core.protocol.handshake import Accept, HandshakeRequest, Reject
from wavewire.core.serializers.protobuf import ProtobufFrameSerializer
from wavewire.core.server import REPLACED_REASON
from wavewire.transports.server import ClientHandle, DriverName

from .client_support import ClientRecorder, client_params
from .faults import (
    UPGRADE,
    close_frames,
    frame_header,
    masked,
    message_frame,
    open_session,
    read_head,
    read_to_end,
    reset_on_close,
    shrink_receive_buffer,
    upgrade_request,
)
from .support import (
    LIMIT,
    Recorder,
    backend_on_synthetic_clock,
    echo_server,
    make_params,
    synthetic_clock,
    wait_until,
)
from .wsclient import connect

pytestmark = pytest.mark.anyio

MATRIX: list[tuple[DriverName, str]] = [
    ("anyio", "asyncio"),
    ("anyio", "trio"),
    ("asyncio", "asyncio"),
]
#: Not audio: audio output is paced in real time; this goes out at once.
BIG = TextFrame(text="x" * 64 * 1024)


def _ids(pair: tuple[DriverName, str]) -> str:
    return f"{pair[0]}-driver-on-{pair[1]}"


def matrix(**xfail: str) -> list[Any]:
    """MATRIX as params; ``xfail={"anyio-trio": reason}`` marks some strict xfail."""
    params = []
    for pair in MATRIX:
        key = f"{pair[0]}-{pair[1]}"
        marks = [pytest.mark.xfail(strict=True, reason=xfail[key])] if key in xfail else []
        params.append(pytest.param(pair, id=_ids(pair), marks=marks))
    return params


@pytest.fixture(params=matrix())
def driver_backend(request: pytest.FixtureRequest) -> tuple[DriverName, str]:
    pair: tuple[DriverName, str] = request.param
    return pair


@pytest.fixture
def anyio_backend(driver_backend: tuple[DriverName, str]) -> str | tuple[str, dict[str, Any]]:
    return backend_on_synthetic_clock(driver_backend[1])


@pytest.fixture
def driver(driver_backend: tuple[DriverName, str]) -> DriverName:
    return driver_backend[0]


def core_connections(transport: WebsocketServerTransport) -> int:
    driver = transport._driver_or_raise()
    assert isinstance(driver, AnyioServerDriver | AsyncioServerDriver)
    return driver.protocol.connection_count


# --- 1. bursts of reconnects under replace --------------------------------------------------------


@pytest.mark.parametrize("driver_backend", matrix(), indirect=True)
async def test_burst_of_twenty_handshakes_each_gets_its_101_then_one_survives(
    driver: DriverName,
) -> None:
    with anyio.fail_after(LIMIT):
        async with echo_server(make_params(close_timeout=1.0), driver=driver) as (t, recorder):
            streams = [await anyio.connect_tcp("127.0.0.1", t.port) for _ in range(20)]
            for stream in streams:  # 20 handshakes in quick succession, no reads in between
                await stream.send(UPGRADE)
            answers = []
            for stream in streams[:-1]:
                # A replaced client: its 101, then close 1000 "replaced", then the TCP close.
                answers.append(await read_to_end(stream))
                await stream.aclose()
            head, _ = await read_head(streams[-1])
            await recorder.wait("on_client_connected", 20)
            await recorder.wait("on_client_disconnected", 19)
            await wait_until(lambda: core_connections(t) == 1)
            survivor = recorder.handles[-1]
            assert t.client is survivor and survivor.connected
            await streams[-1].aclose()
    assert head.startswith(b"HTTP/1.1 101 ")
    for data in answers:
        assert data.startswith(b"HTTP/1.1 101 "), data[:40]
        assert close_frames(data.partition(b"\r\n\r\n")[2]) == [(1000, REPLACED_REASON.encode())]
    per_client: dict[int | None, list[str]] = {}
    for name, cid in recorder.names():
        per_client.setdefault(cid, []).append(name)
    assert len(per_client) == 20
    expected = ["on_client_connected", "on_client_disconnected"]
    assert all(names == expected for names in list(per_client.values())[:-1])
    assert list(per_client.values())[-1] == expected  # its end came with the transport's exit


async def test_reconnect_storm_of_real_clients_leaves_one_session(driver: DriverName) -> None:
    """20 wavewire clients, each connecting while the previous one is still open: the newest
    always wins, the replaced ones see close 1000 (so they do not come back)."""
    with anyio.fail_after(LIMIT):
        async with echo_server(make_params(close_timeout=1.0), driver=driver) as (t, recorder):
            codes: list[int] = []
            async with contextlib.AsyncExitStack() as stack:
                clients = []
                for _ in range(20):
                    client = await stack.enter_async_context(
                        WebsocketClientTransport(f"ws://127.0.0.1:{t.port}/ws", client_params())
                    )
                    clients.append(client)
                for client in clients[:-1]:
                    await wait_until(lambda c=client: not c.connected)  # type: ignore[misc]
                assert clients[-1].connected
                await clients[-1].output().send(TextFrame(text="last"))
                reply = await clients[-1].input().receive()
                assert isinstance(reply, TextFrame) and reply.text == "last"
                await wait_until(lambda: core_connections(t) == 1)
                for client in clients[:-1]:
                    connection = client.connection
                    assert connection is None
            await recorder.wait("on_client_disconnected", 20)
            del codes
    assert recorder.count("on_client_connected") == 20
    causes = [h.disconnect.cause for h in recorder.handles if h.disconnect is not None]
    assert causes[:19] == [DisconnectCause.REPLACED] * 19


# --- 2. disconnect without a close frame ----------------------------------------------------------


@pytest.mark.parametrize("how", ["fin-inside-a-frame", "reset-inside-a-frame", "reset-between"])
async def test_peer_vanishing_without_close_is_one_disconnect(driver: DriverName, how: str) -> None:
    with anyio.fail_after(LIMIT):
        async with echo_server(driver=driver) as (t, recorder), open_session(t.port) as (stream, _):
            await recorder.wait("on_client_connected")
            if how != "reset-between":
                await stream.send(masked(0x2, bytes(300))[:20])  # header and part of the payload
            if how.startswith("reset"):
                reset_on_close(stream)
            await stream.aclose()
            await recorder.wait("on_client_disconnected")
            await wait_until(lambda: core_connections(t) == 0)
            handle = recorder.handles[0]
    assert recorder.count("on_client_disconnected") == 1
    assert handle.disconnect is not None
    assert (handle.disconnect.code, handle.disconnect.cause) == (
        1006,
        DisconnectCause.CONNECTION_LOST,
    )


# --- 3. half-open TCP: keepalive with the writes stuck ----------------------------------------


@pytest.mark.parametrize("write_timeout", [1.0, None])
async def test_half_open_peer_is_dropped_by_keepalive_while_writes_are_stuck(
    driver: DriverName, write_timeout: float | None
) -> None:
    interval, timeout, close_timeout = 0.3, 0.3, 0.5
    params = make_params(
        ping_interval=interval,
        ping_timeout=timeout,
        close_timeout=close_timeout,
        write_timeout=write_timeout,
        max_output_buffer=64 * 1024,
    )
    with anyio.fail_after(LIMIT):
        async with (
            echo_server(params, driver=driver) as (t, recorder),
            open_session(t.port) as (stream, _),
        ):
            shrink_receive_buffer(stream)
            await recorder.wait("on_client_connected")
            handle = recorder.handles[0]
            opened = anyio.current_time()
            async with anyio.create_task_group() as tg:

                async def flood() -> None:
                    with contextlib.suppress(ConnectionClosed):
                        while True:  # the peer reads nothing: this blocks on drain
                            await handle.output().send(BIG)

                tg.start_soon(flood)
                await wait_until(lambda: not _writable(t, handle))  # the writes are stuck
                await recorder.wait("on_client_disconnected")
                disconnected = anyio.current_time() - opened
                await t._driver_or_raise().wait_done(handle.id)
                done = anyio.current_time() - opened
                tg.cancel_scope.cancel()
            await stream.aclose()
    assert handle.disconnect is not None
    assert handle.disconnect.cause is DisconnectCause.KEEPALIVE_TIMEOUT
    # The pong timer ran from the ping's queueing, behind megabytes that never left: had it
    # waited for the ping to be written, the write timeout (or nothing) would have ended it.
    if synthetic_clock():  # exact on the virtual clock: the ping at 0.3 s, no pong by 0.6 s
        assert disconnected == pytest.approx(interval + timeout)
        assert done <= disconnected + (write_timeout or close_timeout)


# --- 4. slow or stopped reader: bounded output, write timeout, logged once ---------------------


async def test_stopped_reader_is_aborted_after_write_timeout_and_logged_once(
    driver: DriverName, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="wavewire")
    params = make_params(write_timeout=0.3, max_output_buffer=64 * 1024, ping_interval=None)
    sent_before = sent_after = 0
    with anyio.fail_after(LIMIT):
        async with (
            echo_server(params, driver=driver) as (t, recorder),
            open_session(t.port) as (stream, _),
        ):
            shrink_receive_buffer(stream)
            await recorder.wait("on_client_connected")
            handle = recorder.handles[0]
            while handle.connected:
                await t.output().send(BIG)  # waits while the output buffer is full
                sent_before += 1
            for _ in range(200):  # the application does not notice at once: still quiet
                await t.output().send(BIG)
                sent_after += 1
            await t._driver_or_raise().wait_done(handle.id)
            await stream.aclose()
    assert handle.disconnect is not None
    assert handle.disconnect.cause is DisconnectCause.CONNECTION_LOST
    # Bounded: the sender was held back by the buffer (kernel buffers + max_output_buffer).
    assert sent_before * len(BIG.text) < 16 * 1024 * 1024
    records = [r for r in caplog.records if r.name.startswith("wavewire")]
    aborts = [r for r in records if "aborting" in r.getMessage()]
    assert len(aborts) == 1, [r.getMessage() for r in records]
    assert len(records) <= 2, [r.getMessage() for r in records]


# --- 5. inbound flood: backpressure -------------------------------------------------------------


async def test_unread_input_stops_reading_until_the_client_send_blocks(driver: DriverName) -> None:
    params = make_params(max_input_queue=2, ping_interval=None)
    transport = WebsocketServerTransport(params, "127.0.0.1", 0, driver=driver)
    recorder = Recorder(transport)
    burst = message_frame(TextFrame(text="x" * 60_000)) * 16  # ~1 MiB of valid messages
    accepted = 0
    with anyio.fail_after(LIMIT):
        async with transport, open_session(transport.port) as (stream, _):
            shrink_receive_buffer(stream)
            await recorder.wait("on_client_connected")
            blocked = False
            while not blocked and accepted < 256 * len(burst):
                # Nobody reads input(): once the queue and the socket buffers are full, a
                # send cannot complete however long it is given.
                with anyio.move_on_after(0.5) as scope:
                    await stream.send(burst)
                blocked = scope.cancelled_caught
                accepted += len(burst)
            assert blocked, f"the server took {accepted} bytes without being read"
            frames = transport.input()
            for _ in range(10):  # reading input lets the socket be read again
                frame = await frames.receive()
                assert isinstance(frame, TextFrame)
            await stream.aclose()
    # What the server held: the input queue, one read's frames and the socket buffers.
    assert accepted < 64 * 1024 * 1024


# --- 8. cancellation mid-write; 9. close handshake never answered ---------------------------------


async def test_cancelled_sender_leaves_no_reusable_connection_and_server_serves_on(
    driver: DriverName,
) -> None:
    params = make_params(write_timeout=0.4, max_output_buffer=64 * 1024, ping_interval=None)
    with anyio.fail_after(LIMIT):
        async with (
            echo_server(params, driver=driver) as (t, recorder),
            open_session(t.port) as (stream, _),
        ):
            shrink_receive_buffer(stream)
            await recorder.wait("on_client_connected")
            handle = recorder.handles[0]
            cancelled = False
            while not cancelled:
                # A send that cannot finish in 0.1 s is waiting on a stuck write (the timeout
                # is 0.4 s): its task is cancelled there, mid-write.
                with anyio.move_on_after(0.1) as scope:
                    await handle.output().send(BIG)
                cancelled = scope.cancelled_caught
            cancelled_at = anyio.current_time()
            # The blocked write is not reused: the connection ends (at write_timeout).
            await recorder.wait("on_client_disconnected")
            if synthetic_clock():  # 0.4 s from the stuck write's start, 0.1 s before the cancel
                assert anyio.current_time() - cancelled_at == pytest.approx(0.4 - 0.1)
            with pytest.raises(ConnectionClosed):
                await handle.output().send(TextFrame(text="never"))
            await stream.aclose()
            async with connect(t.port) as client:
                await client.send(TextFrame(text="next client"))
                reply = await client.next_frame()
                assert isinstance(reply, TextFrame) and reply.text == "next client"
                await client.close()
            await recorder.wait("on_client_disconnected", 2)


def _writable(transport: WebsocketServerTransport, handle: ClientHandle) -> bool:
    """Whether ``drain`` would return now (driver internals: a test-only probe)."""
    driver = transport._driver_or_raise()
    connections = getattr(driver, "_connections", None)
    if connections is not None:  # anyio driver
        connection = connections.get(handle.id)
        return connection is None or connection.outbox.pending <= 64 * 1024
    link = driver._links.get(handle.id)  # type: ignore[attr-defined]
    return link is None or bool(link.writable)


async def test_unanswered_close_is_aborted_after_close_timeout_even_if_the_closer_is_cancelled(
    driver: DriverName,
) -> None:
    close_timeout = 0.4
    params = make_params(close_timeout=close_timeout, ping_interval=None)
    with anyio.fail_after(LIMIT):
        async with (
            echo_server(params, driver=driver) as (t, recorder),
            open_session(t.port) as (stream, _),
        ):
            await recorder.wait("on_client_connected")
            handle = recorder.handles[0]
            started = anyio.current_time()
            with anyio.move_on_after(0.05):  # the waiter goes away; the close goes on
                await handle.close(4000, "bye")
            data = await read_to_end(stream)  # read everything, never answer
            if synthetic_clock():
                assert anyio.current_time() - started == pytest.approx(close_timeout)
            await recorder.wait("on_client_disconnected")
            await stream.aclose()
    assert close_frames(data) == [(4000, b"bye")]
    assert handle.disconnect is not None
    assert (handle.disconnect.code, handle.disconnect.cause) == (
        1006,
        DisconnectCause.CLOSE_TIMEOUT,
    )
    assert recorder.count("on_client_disconnected") == 1


# --- 10. handshake abuse over a real socket -----------------------------------------------------


async def test_slowloris_handshake_is_aborted_at_open_timeout(driver: DriverName) -> None:
    open_timeout = 0.5
    with anyio.fail_after(LIMIT):
        async with echo_server(make_params(open_timeout=open_timeout), driver=driver) as (t, r):
            stream = await anyio.connect_tcp("127.0.0.1", t.port)
            started = anyio.current_time()

            async def trickle() -> None:
                with contextlib.suppress(anyio.BrokenResourceError, OSError):
                    for byte in UPGRADE[:-4]:  # never the blank line
                        await stream.send(bytes([byte]))
                        await anyio.sleep(0.02)

            async with anyio.create_task_group() as tg:
                tg.start_soon(trickle)
                answer = await read_to_end(stream)
                if synthetic_clock():
                    assert anyio.current_time() - started == pytest.approx(open_timeout)
                tg.cancel_scope.cancel()
            await stream.aclose()
            async with connect(t.port) as client:  # and the server still serves
                await client.close()
    assert answer == b""  # aborted, nothing said (when: the core tests, synthetic clock)
    assert r.count("on_client_connected") == 1


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (upgrade_request("X-Pad: " + "a" * 20_000), b"431"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64), b"400"),
        (upgrade_request().replace(b"Sec-WebSocket-Version: 13\r\n", b""), b"400"),
    ],
    ids=["oversized-head", "junk", "no-version"],
)
async def test_bad_requests_are_answered_and_closed(
    driver: DriverName, request_bytes: bytes, status: bytes
) -> None:
    with anyio.fail_after(LIMIT):
        async with echo_server(driver=driver) as (t, recorder):
            stream = await anyio.connect_tcp("127.0.0.1", t.port)
            with contextlib.suppress(anyio.BrokenResourceError, OSError):
                await stream.send(request_bytes)
            answer = await read_to_end(stream)
            await stream.aclose()
            await wait_until(lambda: core_connections(t) == 0)
    assert answer.startswith(b"HTTP/1.1 " + status + b" ")
    assert recorder.count("on_client_connected") == 0


# --- 11. oversized frame, from its header alone ------------------------------------------------


async def test_header_of_a_100_mib_frame_is_answered_with_1009(driver: DriverName) -> None:
    with anyio.fail_after(LIMIT):
        async with echo_server(driver=driver) as (t, recorder), open_session(t.port) as (stream, _):
            await stream.send(frame_header(0x2, 100 * 1024 * 1024))  # and not one payload byte
            data = await read_to_end(stream)
            await recorder.wait("on_client_disconnected")
            await stream.aclose()
    assert close_frames(data) == [(1009, b"message too big")]
    handle = recorder.handles[0]
    assert handle.disconnect is not None
    assert (handle.disconnect.code, handle.disconnect.cause) == (
        1009,
        DisconnectCause.PROTOCOL_ERROR,
    )


# --- 12. exceptions in the serializer -----------------------------------------------------------


class Fragile(ProtobufFrameSerializer):
    """Protobuf, except for two magic texts: one breaks on receive, one on send."""

    def serialize(self, frame: Frame) -> bytes | None:
        if isinstance(frame, TextFrame) and frame.text == "explode":
            raise RuntimeError("secret detail from serialize")
        return super().serialize(frame)

    def deserialize(self, data: bytes | str) -> Frame | None:
        frame = super().deserialize(data)
        if isinstance(frame, TextFrame) and frame.text == "poison":
            raise RuntimeError("secret detail from deserialize")
        return frame


async def test_serializer_exceptions_leave_the_session_alive(
    driver: DriverName, caplog: pytest.LogCaptureFixture
) -> None:
    transport = WebsocketServerTransport(
        make_params(serializer=Fragile()), "127.0.0.1", 0, driver=driver
    )
    recorder = Recorder(transport)
    raised: list[str] = []

    async def app() -> None:
        async for frame in transport.input():
            assert isinstance(frame, TextFrame)
            if frame.text == "please explode":
                try:
                    await transport.output().send(TextFrame(text="explode"))
                except RuntimeError as exc:
                    raised.append(str(exc))
                    await transport.output().send(TextFrame(text="survived"))
            else:
                await transport.output().send(frame)

    with anyio.fail_after(LIMIT):
        async with transport, anyio.create_task_group() as tg:
            tg.start_soon(app)
            async with connect(transport.port) as client:
                await client.send(TextFrame(text="poison"))  # dropped, logged
                await client.send(TextFrame(text="ok"))
                reply = await client.next_frame()
                assert isinstance(reply, TextFrame) and reply.text == "ok"
                await client.send(TextFrame(text="please explode"))
                reply = await client.next_frame()
                assert isinstance(reply, TextFrame) and reply.text == "survived"
                await client.close()
            await recorder.wait("on_client_disconnected")
            tg.cancel_scope.cancel()
    assert raised == ["secret detail from serialize"]
    assert recorder.count("on_client_connected") == recorder.count("on_client_disconnected") == 1
    drops = [r for r in caplog.records if "message dropped" in r.getMessage()]
    assert len(drops) == 1


# --- 14. security: Origin allowlist, authentication before the upgrade ----------------------------


async def test_origin_allowlist_refuses_others_with_403(driver: DriverName) -> None:
    params = make_params(allowed_origins=["https://app.example"])
    with anyio.fail_after(LIMIT):
        async with echo_server(params, driver=driver) as (t, recorder):
            answers = []
            for origin in ("https://evil.example", "https://app.example.evil", None):
                stream = await anyio.connect_tcp("127.0.0.1", t.port)
                extra = () if origin is None else (f"Origin: {origin}",)
                await stream.send(upgrade_request(*extra))
                answers.append(await read_to_end(stream))
                await stream.aclose()
            async with open_session(t.port, upgrade_request("Origin: https://app.example")) as (
                stream,
                _,
            ):
                await recorder.wait("on_client_connected")
                await stream.aclose()
    assert [a.split(b"\r\n", 1)[0] for a in answers] == [b"HTTP/1.1 403 Forbidden"] * 3
    assert recorder.count("on_client_connected") == 1


TOKEN = "s3cret-token"


def authenticate(request: HandshakeRequest) -> Accept | Reject:
    """A token from ``Authorization: Bearer`` or ``?token=``, compared in constant time."""
    given = None
    auth = request.header("authorization")
    if auth is not None and auth.startswith("Bearer "):
        given = auth[len("Bearer ") :]
    elif request.query.get("token"):
        given = request.query["token"][0]
    if given is None or not hmac.compare_digest(given.encode(), TOKEN.encode()):
        return Reject(status_code=401, headers=[("WWW-Authenticate", "Bearer")])
    return Accept()


def auth_params() -> WebsocketServerParams:
    return make_params(handshake_hook=authenticate)


async def test_token_authentication_before_the_upgrade(driver: DriverName) -> None:
    transport = WebsocketServerTransport(auth_params(), "127.0.0.1", 0, driver=driver)
    recorder = Recorder(transport)
    base = "ws://127.0.0.1:{port}/ws"
    with anyio.fail_after(LIMIT):
        async with transport:
            url = base.format(port=transport.port)
            for uri, headers in [
                (url, {"Authorization": f"Bearer {TOKEN}"}),
                (url + f"?token={TOKEN}", None),
            ]:
                client = WebsocketClientTransport(uri, client_params(additional_headers=headers))
                events = ClientRecorder(client)
                async with client:
                    assert client.connected
                assert events.names() == ["on_connected", "on_disconnected"]
            for uri, headers in [
                (url, {"Authorization": "Bearer wrong"}),
                (url + "?token=s3cret-tokeN", None),
                (url, None),
            ]:
                client = WebsocketClientTransport(uri, client_params(additional_headers=headers))
                with pytest.raises(HandshakeRejected) as caught:
                    async with client:
                        pytest.fail("connected without a valid token")
                assert caught.value.status_code == 401
            # Over a raw socket: a 401 and the close, never a 101.
            stream = await anyio.connect_tcp("127.0.0.1", transport.port)
            await stream.send(UPGRADE)
            answer = await read_to_end(stream)
            await stream.aclose()
            await recorder.wait("on_client_disconnected", 2)
    assert answer.startswith(b"HTTP/1.1 401 ")
    assert b"www-authenticate: Bearer" in answer.lower().replace(b"bearer", b"Bearer")
    assert recorder.count("on_client_connected") == 2


def test_server_params_expose_the_handshake_hook() -> None:
    """Missing when this test was written (only a params subclass could set it); added to
    WebsocketServerParams in db7e880."""
    make: Callable[..., WebsocketServerParams] = WebsocketServerParams
    params = make(handshake_hook=authenticate)
    assert params.server_config().handshake_hook is authenticate
