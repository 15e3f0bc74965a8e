"""The anyio drivers' ``Outbox`` and ``WriteWatch`` alone, over a real TCP pair on 127.0.0.1,
on asyncio and on trio (a virtual clock there, where times are exact). Every wait is bounded."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.streams.stapled
import pytest

from wavewire.adapters.outbox import DRAIN_YIELD_EVERY, Outbox, WriteWatch
from wavewire.adapters.timer import bound_clock

from .faults import shrink_receive_buffer
from .support import synthetic_clock

pytestmark = pytest.mark.anyio

#: More than the kernel buffers of a peer that reads nothing can take.
FLOOD = b"x" * (8 * 1024 * 1024)


class Pair:
    def __init__(self, ours: anyio.abc.SocketStream, peer: anyio.abc.SocketStream) -> None:
        self.ours = ours
        self.peer = peer


@contextlib.asynccontextmanager
async def tcp_pair() -> AsyncIterator[Pair]:
    """Our end (accepted) and the peer's end (connected) of one TCP connection."""
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listeners:
        listener = listeners.listeners[0]
        assert isinstance(listener, anyio.abc.SocketListener)
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        peer = await anyio.connect_tcp("127.0.0.1", port)
        ours = await listener.accept()
    async with ours, peer:
        yield Pair(ours, peer)


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    async with tcp_pair() as made:
        yield made


def make_outbox(stream: anyio.abc.ByteStream, watch: WriteWatch | None) -> Outbox:
    return Outbox(stream, high_water=64 * 1024, watch=watch, close_timeout=1.0)


async def test_a_write_blocked_for_write_timeout_fails_the_connection_once(pair: Pair) -> None:
    shrink_receive_buffer(pair.peer)  # the peer reads nothing
    watch = WriteWatch(0.5)
    outbox = make_outbox(pair.ours, watch)
    failures = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(watch.run)
        start = anyio.current_time()
        outbox.put(FLOOD)
        with anyio.fail_after(10):
            await outbox.run(lambda: failures.append(anyio.current_time()))
        tg.cancel_scope.cancel()
    assert len(failures) == 1
    assert outbox.failed and outbox.closed
    assert failures[0] - start >= watch.timeout  # not before the bound
    if synthetic_clock():
        assert failures[0] - start == pytest.approx(watch.timeout, abs=0.01)


async def test_one_watch_fails_every_stalled_write_and_spares_the_others(pair: Pair) -> None:
    async with tcp_pair() as other:
        reading_peer, second = other.peer, other.ours
        shrink_receive_buffer(pair.peer)
        watch = WriteWatch(0.5)
        stalled, healthy = make_outbox(pair.ours, watch), make_outbox(second, watch)
        failed: list[str] = []
        received = bytearray()

        async def read_all() -> None:
            while len(received) < 10 * 4096:
                received.extend(await reading_peer.receive())

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch.run)
            tg.start_soon(healthy.run, lambda: failed.append("healthy"))
            stalled.put(FLOOD)
            with anyio.fail_after(10):
                async with anyio.create_task_group() as writers:
                    writers.start_soon(stalled.run, lambda: failed.append("stalled"))
                    writers.start_soon(read_all)
                    # Writes keep completing for longer than the timeout, one at a time.
                    for _ in range(10):
                        healthy.put(b"y" * 4096)
                        await anyio.sleep(0.2)
            await anyio.sleep(2 * watch.timeout)  # idle, no write in progress: not failed
            tg.cancel_scope.cancel()
    assert failed == ["stalled"]
    assert not healthy.failed
    assert bytes(received) == b"y" * (10 * 4096)


async def test_abort_ends_a_blocked_write_without_on_failure(pair: Pair) -> None:
    shrink_receive_buffer(pair.peer)
    outbox = make_outbox(pair.ours, None)  # no write timeout: only the abort ends the write
    failures = []
    outbox.put(FLOOD)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(outbox.run, lambda: failures.append(1))
            await anyio.sleep(0.2)  # the write is blocked on the full socket buffer now
            assert not outbox.closed
            outbox.abort()
    assert failures == []  # the core aborted: it already knows
    assert outbox.failed and outbox.closed


async def test_wait_writable_is_a_checkpoint_every_few_calls(pair: Pair) -> None:
    outbox = make_outbox(pair.ours, None)
    calls = 0
    with anyio.CancelScope() as scope:
        scope.cancel()
        for _ in range(DRAIN_YIELD_EVERY):
            await outbox.wait_writable()
            calls += 1
    assert scope.cancelled_caught
    assert calls == DRAIN_YIELD_EVERY - 1  # a send loop that never blocks still yields


async def test_wait_writable_waits_while_over_high_water_until_the_write_progresses(
    pair: Pair,
) -> None:
    outbox = make_outbox(pair.ours, None)
    outbox.put(b"z" * (256 * 1024))  # over high water, not yet written
    woke = []

    async def sender() -> None:
        await outbox.wait_writable()
        woke.append(outbox.pending)

    received = 0
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(sender)
            await anyio.sleep(0.05)
            assert woke == []  # held back while nothing was written
            tg.start_soon(outbox.run, lambda: None)
            while received < 256 * 1024:
                received += len(await pair.peer.receive())
            outbox.request_close()
    assert woke and woke[0] <= 64 * 1024


async def test_bound_clock_is_the_clock_anyio_reads() -> None:
    clock = bound_clock()
    assert clock is not anyio.current_time  # bound to the running backend
    before = anyio.current_time()
    await anyio.sleep(0.05)
    now = clock()
    assert before + 0.05 <= now <= anyio.current_time()


def test_bound_clock_outside_an_event_loop_is_anyio_current_time() -> None:
    assert bound_clock() is anyio.current_time


async def _idle(outbox: Outbox) -> None:
    """Let the writer task reach its wait for work (bounded)."""
    with anyio.fail_after(5):
        while outbox._wake is None:
            await anyio.lowlevel.checkpoint()


async def test_direct_writes_only_on_asyncio_plain_sockets(
    pair: Pair, anyio_backend_name: str
) -> None:
    outbox = make_outbox(pair.ours, None)
    assert (outbox._direct is not None) == (anyio_backend_name == "asyncio")
    # Anything but anyio's own asyncio socket stream goes through send().
    staple = anyio.streams.stapled.StapledByteStream(pair.ours, pair.ours)
    assert make_outbox(staple, None)._direct is None


async def test_batches_queued_while_the_writer_idles_leave_in_order_then_the_close(
    pair: Pair,
) -> None:
    outbox = make_outbox(pair.ours, None)
    received = bytearray()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(outbox.run, lambda: None)
            for batch in range(20):
                await _idle(outbox)
                for part in range(3):  # one loop pass: one write of the three
                    outbox.put(bytes([batch]) * 100 + bytes([part]))
                    if batch == 0 and part == 0:
                        assert outbox._soon == (outbox._direct is not None)
                await anyio.lowlevel.checkpoint()
            outbox.request_close()
            with contextlib.suppress(anyio.EndOfStream):
                while True:
                    received += await pair.peer.receive()
    assert outbox.closed and not outbox.failed
    expected = b"".join(bytes([b]) * 100 + bytes([p]) for b in range(20) for p in range(3))
    assert bytes(received) == expected


async def test_a_write_that_blocks_while_the_writer_idles_is_bounded_by_write_timeout(
    pair: Pair,
) -> None:
    shrink_receive_buffer(pair.peer)  # the peer reads nothing
    watch = WriteWatch(0.5)
    outbox = make_outbox(pair.ours, watch)
    failures = []
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch.run)
            tg.start_soon(outbox.run, lambda: failures.append(anyio.current_time()))
            await _idle(outbox)
            start = anyio.current_time()
            outbox.put(FLOOD)  # asyncio: written from the loop pass's end, then it blocks
            await outbox.wait_closed()
            tg.cancel_scope.cancel()
    assert len(failures) == 1
    assert outbox.failed and outbox.closed
    assert failures[0] - start >= watch.timeout
    if synthetic_clock():
        assert failures[0] - start == pytest.approx(watch.timeout, abs=0.01)


async def test_a_direct_write_to_a_socket_closed_under_it_fails_the_connection(
    pair: Pair,
) -> None:
    shrink_receive_buffer(pair.peer)
    outbox = make_outbox(pair.ours, None)
    failures = []
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(outbox.run, lambda: failures.append(1))
            await _idle(outbox)
            outbox.put(FLOOD)
            await anyio.sleep(0.2)  # blocked on the full socket buffer
            await anyio.aclose_forcefully(pair.ours)  # the socket goes under the write
            await outbox.wait_closed()
    assert failures == [1]
    assert outbox.failed and outbox.closed


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # direct reads are asyncio's
async def test_direct_receive_ends_as_anyio_receive_does(pair: Pair) -> None:
    direct = make_outbox(pair.ours, None).direct
    assert direct is not None
    with anyio.fail_after(10):
        await pair.peer.send(b"hello")
        received = b""
        while received != b"hello":
            received += await direct.receive()
        direct.pause_reading()  # held back: what the peer sends waits in the socket
        await pair.peer.send(b"later")
        await anyio.sleep(0.05)
        assert not direct.protocol.read_queue
        assert await direct.receive() == b"later"  # reading again on the next receive
        await pair.peer.aclose()
        with pytest.raises(anyio.EndOfStream):
            await direct.receive()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # direct reads are asyncio's
async def test_direct_receive_of_a_socket_closed_meanwhile_is_closed_resource(pair: Pair) -> None:
    direct = make_outbox(pair.ours, None).direct
    assert direct is not None
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(pair.ours.aclose)  # the outbox closes the socket under the reader
            with pytest.raises(anyio.ClosedResourceError):
                await direct.receive()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # direct writes are asyncio's
async def test_without_a_writer_a_close_after_writes_that_fit_needs_no_task(pair: Pair) -> None:
    outbox = make_outbox(pair.ours, None)
    started: list[int] = []
    outbox.start_writer = lambda: started.append(1)
    received = bytearray()
    with anyio.fail_after(10):
        outbox.put(b"101 and echo")
        await anyio.lowlevel.checkpoint()  # written at the loop pass's end
        outbox.put(b" close frame")
        outbox.request_close()  # written and closed at once
        assert outbox.closed and not outbox.failed
        await outbox.wait_closed()
        with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
            while True:
                received += await pair.peer.receive()
    assert started == []
    assert bytes(received) == b"101 and echo close frame"


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # direct writes are asyncio's
async def test_without_a_writer_a_write_that_blocks_starts_it_and_write_timeout_holds(
    pair: Pair,
) -> None:
    shrink_receive_buffer(pair.peer)
    watch = WriteWatch(0.5)
    outbox = make_outbox(pair.ours, watch)
    failures: list[int] = []
    starts: list[int] = []
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:

            def start_writer() -> None:
                starts.append(1)
                tg.start_soon(outbox.run, lambda: failures.append(1))

            tg.start_soon(watch.run)
            outbox.start_writer = start_writer
            outbox.put(FLOOD)
            outbox.request_close()  # cannot close yet: the writer waits for the write
            assert starts == [1]
            assert not outbox.closed
            await outbox.wait_closed()
            tg.cancel_scope.cancel()
    assert failures == [1]
    assert outbox.failed and outbox.closed


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # direct writes are asyncio's
async def test_discard_closes_the_socket_of_an_outbox_whose_writer_never_ran(pair: Pair) -> None:
    outbox = make_outbox(pair.ours, None)
    outbox.start_writer = lambda: pytest.fail("no writer is needed to close")
    outbox.discard()
    assert outbox.closed
    with anyio.fail_after(10), pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
        await pair.peer.receive()  # the socket is closed, not left open
