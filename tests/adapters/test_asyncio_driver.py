"""What only the native asyncio driver has: its refusal of trio, its own binding, TLS through
``loop.create_server``, and ``wavewire serve --driver asyncio``. The shared behaviour is in
test_server_transport.py, which runs on every driver."""

from __future__ import annotations

import asyncio
import collections
import signal
import socket
import ssl
import subprocess
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import trustme

from wavewire import ProtobufFrameSerializer, TextFrame, WebsocketServerTransport
from wavewire.adapters.asyncio_server import (
    BATCH_LIMIT,
    DRAIN_YIELD_EVERY,
    AsyncioServerDriver,
    _bind,
    _Link,
)
from wavewire.core.events import Disconnected
from wavewire.transports.server import DriverName

from .support import LIMIT, echo_server, make_params
from .test_cli import command, environment, free_port, read_until
from .wsclient import connect


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_asyncio_driver_under_trio_is_a_clear_error() -> None:
    transport = WebsocketServerTransport(make_params(), "127.0.0.1", 0, driver="asyncio")
    with pytest.raises(RuntimeError, match="only under asyncio"):
        async with transport:
            pass


def test_unknown_driver_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="unknown driver 'uvloop'"):
        WebsocketServerTransport(make_params(), driver="uvloop")  # type: ignore[arg-type]


def test_every_address_of_a_name_gets_the_same_port() -> None:
    async def bind() -> list[int]:
        sockets = await _bind(asyncio.get_running_loop(), "localhost", 0)
        try:
            return [sock.getsockname()[1] for sock in sockets]
        finally:
            for sock in sockets:
                sock.close()

    ports = asyncio.run(bind())
    assert ports and len(set(ports)) == 1


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("driver", ["anyio", "asyncio"])
async def test_wss_echo_and_port_on_each_driver(driver: DriverName) -> None:
    """``ssl_context``: TLS by the anyio driver (``TLSStream`` per connection) or by asyncio's
    ``create_server``."""
    from websockets.asyncio.client import connect as ws_connect

    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)
    serializer = ProtobufFrameSerializer()
    params = make_params(ssl_context=server_context)
    with anyio.fail_after(LIMIT):
        async with echo_server(params, driver=driver) as (transport, recorder):
            uri = f"wss://127.0.0.1:{transport.port}/tls"
            async with ws_connect(uri, ssl=client_context, compression=None) as ws:
                message = serializer.serialize(TextFrame(text="secret"))
                assert message is not None
                await ws.send(message)
                reply = serializer.deserialize(await ws.recv())
                assert isinstance(reply, TextFrame) and reply.text == "secret"
            await recorder.wait("on_client_disconnected")
            assert recorder.handles[0].path == "/tls"


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_serve_with_the_asyncio_driver_echoes_then_exits_0_on_sigint() -> None:
    port = free_port()
    args = command("--port", str(port), "--driver", "asyncio", "--policy", "multi")
    with anyio.fail_after(LIMIT * 2):
        async with await anyio.open_process(args, env=environment()) as process:
            assert process.stderr is not None
            await read_until(process.stderr, b"listening on ws://127.0.0.1:%d" % port)
            async with connect(port) as client:
                await client.send(TextFrame(text="native?"))
                reply = await client.next_frame()
                assert isinstance(reply, TextFrame) and reply.text == "native?"
                process.send_signal(signal.SIGINT)
                ended = await client.next(Disconnected)
                assert ended.code == 1001
            assert await process.wait() == 0
            log = await read_until(process.stderr, b"stopped")
            assert b"Traceback" not in log


def test_serve_asyncio_driver_on_trio_is_one_line_and_exit_1() -> None:
    result = subprocess.run(
        command("--port", "0", "--driver", "asyncio", "--backend", "trio"),
        env=environment(),
        capture_output=True,
        text=True,
        timeout=LIMIT * 2,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "wavewire: --driver asyncio runs only with --backend asyncio"
    ]


def test_port_in_use_is_the_same_one_line_with_the_asyncio_driver() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            command("--port", str(port), "--driver", "asyncio"),
            env=environment(),
            capture_output=True,
            text=True,
            timeout=LIMIT * 2,
            check=False,
        )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines == [f"wavewire: cannot listen on 127.0.0.1:{port}: Address already in use"]


def test_native_driver_serves_on_uvloop() -> None:
    """uvloop's ``TCPTransport`` is not an ``asyncio.Transport`` subclass; the driver takes it
    (echo, then 2 MiB in one go through the write-buffer limits and back)."""
    uvloop = pytest.importorskip("uvloop")
    from websockets.asyncio.client import connect as ws_connect

    serializer = ProtobufFrameSerializer()

    async def main() -> None:
        assert "uvloop" in type(asyncio.get_running_loop()).__module__
        with anyio.fail_after(LIMIT):
            async with echo_server(make_params(), driver="asyncio") as (transport, recorder):
                uri = f"ws://127.0.0.1:{transport.port}/uv"
                async with ws_connect(uri, compression=None, max_size=None) as ws:
                    for text in ("one", "two" * 300_000):
                        message = serializer.serialize(TextFrame(text=text))
                        assert message is not None
                        await ws.send(message)
                        reply = serializer.deserialize(await ws.recv())
                        assert isinstance(reply, TextFrame) and reply.text == text
                await recorder.wait("on_client_disconnected")

    uvloop.run(main())


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize(("count", "max_input_queue", "max_writes"), [(30, 64, 1), (150, 16, 15)])
async def test_replies_to_one_read_leave_in_one_write(
    count: int, max_input_queue: int, max_writes: int
) -> None:
    """``count`` messages in one TCP write: the echo task takes what its input queue holds in
    one step (no loop pass per frame) and the native driver writes their replies with one
    ``transport.write``. Beyond what the queue holds, the delivery task offers the rest as
    room appears (no task switch per frame): about one write per queueful."""
    params = make_params(max_input_queue=max_input_queue)
    with anyio.fail_after(LIMIT):
        async with (
            echo_server(params, driver="asyncio") as (transport, _),
            connect(transport.port) as client,
        ):
            await client.send(TextFrame(text="first"))  # the connection is up and served
            assert await client.next_frame() == TextFrame(text="first")
            driver = transport._driver_or_raise()
            assert isinstance(driver, AsyncioServerDriver)
            (link,) = driver._links.values()
            assert link.transport is not None
            writes: list[int] = []
            real_write = link.transport.write

            def counting_write(data: bytes | bytearray | memoryview) -> None:
                writes.append(len(data))
                real_write(data)

            link.transport.write = counting_write  # type: ignore[method-assign]
            texts = [f"message {i}" for i in range(count)]
            for text in texts:  # queued in the client's core, then one TCP write
                assert client.protocol.send_frame(TextFrame(text=text), anyio.current_time())
            await client.flush()
            assert [await client.next_frame() for _ in texts] == [
                TextFrame(text=text) for text in texts
            ]
            assert len(writes) <= max_writes, writes


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_send_loop_that_never_blocks_still_lets_other_tasks_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``drain`` waits only while writing is paused; otherwise it yields to the loop once per
    ``DRAIN_YIELD_EVERY`` sends, and the batch of a loop that never yields stays bounded (sent
    while the client's input is pending, so that the sends are batched, not written at once)."""
    count = 5 * DRAIN_YIELD_EVERY
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await anyio.lowlevel.checkpoint()

    with anyio.fail_after(LIMIT):
        async with (
            echo_server(driver="asyncio") as (transport, recorder),
            connect(transport.port) as client,
            anyio.create_task_group() as tg,
        ):
            await recorder.wait("on_client_connected")
            _, link = only_link(transport)
            monkeypatch.setattr(transport, "input_pending", lambda connection_id: True)
            tg.start_soon(ticker)
            await anyio.lowlevel.checkpoint()
            before, largest = ticks, 0
            for i in range(count):
                await transport.output().send(TextFrame(text="x" * 2000 + str(i)))
                largest = max(largest, link.batch_size)
            assert ticks - before >= count // DRAIN_YIELD_EVERY - 1
            assert 0 < largest < BATCH_LIMIT
            assert (await client.next_frame()) == TextFrame(text="x" * 2000 + "0")
            tg.cancel_scope.cancel()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_an_idle_connection_holds_no_deque_or_event_of_its_own() -> None:
    """What each idle connection holds in the native driver: lists (56 bytes empty) where a
    deque would be a 760-byte block, the done event only once someone waits for it."""
    with anyio.fail_after(LIMIT):
        async with (
            echo_server(driver="asyncio") as (transport, recorder),
            connect(transport.port) as client,
        ):
            await recorder.wait("on_client_connected")
            driver, link = only_link(transport)
            held = [getattr(link, name) for name in link.__slots__]
            assert not [v for v in held if isinstance(v, collections.deque | asyncio.Event)]
            assert link._finished_event is None
            await client.close()
            await driver.wait_done(link.id)  # made and set, or already finished
            assert link.finished


def only_link(transport: WebsocketServerTransport) -> tuple[AsyncioServerDriver, _Link]:
    """The native driver serving ``transport``, and its one connection."""
    driver = transport._driver_or_raise()
    assert isinstance(driver, AsyncioServerDriver)
    (link,) = driver._links.values()
    return driver, link


def _scheduled(
    monkeypatch: pytest.MonkeyPatch, method: str, callback: Callable[..., object]
) -> list[float]:
    """From now on, the loop's times (``call_at``) or pass numbers (``call_soon``: the count
    so far) at which ``callback`` is scheduled with ``loop.<method>``."""
    loop = asyncio.get_running_loop()
    seen: list[float] = []
    real = getattr(loop, method)

    def recording(*args: Any, **kwargs: Any) -> asyncio.Handle:
        if callback in args[:2]:
            seen.append(args[0] if method == "call_at" else len(seen))
        return real(*args, **kwargs)  # type: ignore[no-any-return]

    monkeypatch.setattr(loop, method, recording)
    return seen


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_deadlines_that_move_later_keep_the_one_timer_handle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Connections opened and closed one after another each move the core's deadline later
    (an open timeout, then none): the handle armed for the first is kept for all of them."""
    params = make_params(open_timeout=4 * LIMIT)  # never due within the test
    with anyio.fail_after(LIMIT):
        async with echo_server(params, driver="asyncio") as (transport, recorder):
            driver = transport._driver_or_raise()
            assert isinstance(driver, AsyncioServerDriver)
            armed = _scheduled(monkeypatch, "call_at", driver._fire)
            for count in range(1, 6):
                async with connect(transport.port) as client:
                    await client.send(TextFrame(text="hi"))
                    assert await client.next_frame() == TextFrame(text="hi")
                    await client.close()
                await recorder.wait("on_client_disconnected", count)
            assert len(armed) == 1


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_handle_that_fires_before_the_deadline_sleeps_until_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The handle armed for a first connection's open timeout fires after that connection
    upgraded, while a second one that sends nothing is due later: the handle is armed
    again for that time, and the silent connection is dropped at its own open timeout."""
    open_timeout = 0.3
    with anyio.fail_after(LIMIT):
        params = make_params(open_timeout=open_timeout, ping_interval=None)
        async with echo_server(params, driver="asyncio") as (transport, recorder):
            driver = transport._driver_or_raise()
            assert isinstance(driver, AsyncioServerDriver)
            armed = _scheduled(monkeypatch, "call_at", driver._fire)
            async with connect(transport.port):
                await recorder.wait("on_client_connected")
                silent = await anyio.connect_tcp("127.0.0.1", transport.port)
                async with silent:
                    with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                        await silent.receive()
                assert len(armed) == 2
                assert armed[1] > armed[0]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_plain_close_with_nothing_buffered_arms_no_abort_timer() -> None:
    """``transport.close()`` with an empty buffer closes the socket in the next loop pass: no
    ``close_timeout`` handle for it (bytes still buffered, or TLS, get one)."""
    with anyio.fail_after(LIMIT):
        async with (
            echo_server(driver="asyncio") as (transport, recorder),
            connect(transport.port) as client,
        ):
            await recorder.wait("on_client_connected")
            driver, link = only_link(transport)
            assert link.transport is not None
            timers: list[asyncio.TimerHandle | None] = []
            real_close = link.transport.close

            def close() -> None:
                # Runs before asyncio's connection_lost, after close_now armed what it arms.
                asyncio.get_running_loop().call_soon(lambda: timers.append(link.close_timer))
                real_close()

            link.transport.close = close  # type: ignore[method-assign]
            await client.close()
            await driver.wait_done(link.id)
            assert timers == [None]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_what_the_core_sends_from_a_callback_leaves_when_the_callback_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The 101 and the close reply are made inside ``data_received``: written as it ends, with
    no callback scheduled for them. The echo, sent by the application's task with no other
    frame of that client waiting (``input_pending``), is written by the send itself: no
    ``_write_batches`` is scheduled at all (one loop pass less per round trip)."""
    with anyio.fail_after(LIMIT):
        async with echo_server(driver="asyncio") as (transport, recorder):
            driver = transport._driver_or_raise()
            assert isinstance(driver, AsyncioServerDriver)
            scheduled = _scheduled(monkeypatch, "call_soon", driver._write_batches)
            async with connect(transport.port) as client:
                await client.send(TextFrame(text="hi"))
                assert await client.next_frame() == TextFrame(text="hi")
                await client.close()
            await recorder.wait("on_client_disconnected")
            assert scheduled == []


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_bytes_from_a_callback_are_written_at_once_after_what_was_batched() -> None:
    """Inside a callback (or a send that writes at once) a connection with nothing batched
    gets its bytes written as the flush hands them over; one with a batch from a task's
    earlier sends gets them after that batch, in order, in the batch's one write."""
    with anyio.fail_after(LIMIT):
        async with (
            echo_server(driver="asyncio") as (transport, recorder),
            connect(transport.port),
        ):
            await recorder.wait("on_client_connected")
            driver, link = only_link(transport)
            assert link.transport is not None
            writes: list[bytes] = []
            link.transport.write = writes.append  # type: ignore[method-assign,assignment]
            link.write(b"task")  # from a task: batched to the pass's end
            assert writes == [] and link.batch == [b"task"]
            driver._in_callback = True
            try:
                link.write(b"callback")  # after the batch, not before it
                assert writes == [] and link.batch == [b"task", b"callback"]
                driver._callback_done()
                assert writes == [b"taskcallback"] and link.batch == []
                link.write(b"alone")  # nothing batched: written at once
                assert writes == [b"taskcallback", b"alone"] and link.batch == []
            finally:
                driver._in_callback = False
            del link.transport.write  # the transport's own again, for the close
