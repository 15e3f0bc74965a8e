"""``FrameQueue``: the transports' input queue (``transports/streams.py``), on asyncio and trio.

The driver offers frames (False when full) or waits for room; readers take them in order,
waiting only when it is empty; ``end`` and ``close`` finish it from either side."""

from __future__ import annotations

import asyncio

import anyio
import anyio.lowlevel
import pytest

from tests.adapters.support import wait_until
from wavewire import TextFrame
from wavewire.core.frames import Frame
from wavewire.transports.streams import READY_CHECKPOINT, FrameInput, FrameQueue

pytestmark = pytest.mark.anyio

LIMIT = 5


def text(frame: Frame) -> str:
    assert isinstance(frame, TextFrame)
    return frame.text


def frames(count: int) -> list[TextFrame]:
    return [TextFrame(text=str(n)) for n in range(count)]


async def take_one(queue: FrameQueue, got: list[str]) -> None:
    got.append(text(await queue.get()))


async def test_offer_is_refused_when_full_and_put_waits_for_room() -> None:
    queue = FrameQueue(2)
    first, second, third, fourth = frames(4)
    assert queue.offer(first) and queue.offer(second)
    assert not queue.offer(third)  # full: nothing queued
    assert len(queue) == 2
    put_done = anyio.Event()

    async def writer() -> None:
        await queue.put(third)
        put_done.set()

    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer)
            await wait_until(lambda: queue.waiting_writers == 1)
            assert not put_done.is_set()
            assert text(await queue.get()) == "0"  # room: the writer goes on
            await put_done.wait()
        assert queue.waiting_writers == 0
        assert not queue.offer(fourth)
        assert [text(await queue.get()) for _ in range(2)] == ["1", "2"]


async def test_a_waiting_reader_is_woken_by_the_next_frame() -> None:
    queue = FrameQueue(4)
    got: list[str] = []
    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(take_one, queue, got)
            await anyio.wait_all_tasks_blocked()
            assert queue.offer(TextFrame(text="x"))
    assert got == ["x"]
    assert len(queue) == 0


async def test_a_limit_of_zero_hands_frames_to_waiting_readers_only() -> None:
    queue = FrameQueue(0)
    got: list[str] = []
    assert not queue.offer(TextFrame(text="nobody waits"))
    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(take_one, queue, got)
            await anyio.wait_all_tasks_blocked()
            assert queue.offer(TextFrame(text="a"))  # handed to the waiting reader
            assert not queue.offer(TextFrame(text="b"))  # nobody waits any more
        # A writer waits until a reader comes.
        async with anyio.create_task_group() as tg:
            tg.start_soon(queue.put, TextFrame(text="c"))
            await wait_until(lambda: queue.waiting_writers == 1)
            assert text(await queue.get()) == "c"
    assert got == ["a"]


async def test_end_lets_readers_take_the_rest_then_ends_them() -> None:
    queue = FrameQueue(4)
    ended: list[bool] = []

    async def waiting_reader() -> None:
        try:
            await queue.get()
        except anyio.EndOfStream:
            ended.append(True)

    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiting_reader)
            await anyio.wait_all_tasks_blocked()
            queue.end()  # the reader waiting wakes and ends
        assert ended == [True]

        queue = FrameQueue(4)
        for frame in frames(3):
            assert queue.offer(frame)
        queue.end()
        assert queue.offer(TextFrame(text="late"))  # dropped: no frame comes after the end
        # A late reader gets what was queued, then the end at once.
        assert [text(frame) async for frame in FrameInput(queue)] == ["0", "1", "2"]
        with pytest.raises(anyio.EndOfStream):
            await FrameInput(queue).receive()


async def test_close_frees_the_frames_and_releases_readers_and_writers() -> None:
    queue = FrameQueue(1)
    assert queue.offer(TextFrame(text="held"))
    outcomes: list[str] = []

    async def writer() -> None:
        await queue.put(TextFrame(text="blocked"))
        outcomes.append("writer returned")

    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer)
            await wait_until(lambda: queue.waiting_writers == 1)
            queue.close()
        assert outcomes == ["writer returned"]
        assert len(queue) == 0  # the frames nobody will read are freed
        assert queue.offer(TextFrame(text="dropped"))
        assert len(queue) == 0

        queue = FrameQueue(1)

        async def reader() -> None:
            with pytest.raises(anyio.EndOfStream):
                await queue.get()
            outcomes.append("reader ended")

        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            await anyio.wait_all_tasks_blocked()
            queue.close()
        assert outcomes[-1] == "reader ended"


async def test_a_cancelled_reader_leaves_nothing_behind() -> None:
    """A reader cancelled while waiting no longer counts as one (with a limit of 0, a frame
    offered then would be handed to nobody)."""
    queue = FrameQueue(0)
    with anyio.fail_after(LIMIT):
        with anyio.move_on_after(0.05) as scope:
            await queue.get()
        assert scope.cancelled_caught
        assert not queue.offer(TextFrame(text="after"))
        assert len(queue) == 0
        async with anyio.create_task_group() as tg:
            tg.start_soon(queue.put, TextFrame(text="after"))
            assert text(await queue.get()) == "after"


async def test_a_reader_that_never_waits_still_checkpoints() -> None:
    """Frames queued are taken without a trip through the loop, but a cancelled reader stops
    within ``READY_CHECKPOINT`` frames, before taking the next one (nothing lost)."""
    count = 3 * READY_CHECKPOINT
    queue = FrameQueue(count)
    for frame in frames(count):
        assert queue.offer(frame)
    taken: list[str] = []
    with anyio.fail_after(LIMIT), anyio.CancelScope() as scope:
        scope.cancel()
        while True:
            taken.append(text(await queue.get()))
    assert len(taken) == READY_CHECKPOINT
    assert len(queue) == count - READY_CHECKPOINT
    assert text(await queue.get()) == str(READY_CHECKPOINT)  # the next, in order


async def test_other_tasks_run_while_a_reader_drains_a_full_queue() -> None:
    count = 4 * READY_CHECKPOINT
    queue = FrameQueue(count)
    for frame in frames(count):
        assert queue.offer(frame)
    ticks: list[int] = []

    async def other_task() -> None:
        while True:
            ticks.append(len(queue))
            await anyio.lowlevel.checkpoint()

    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(other_task)
            await anyio.lowlevel.checkpoint()
            for _ in range(count):
                await queue.get()
            tg.cancel_scope.cancel()
    # The other task ran between the reader's batches, not only before and after.
    assert any(0 < queued < count for queued in ticks)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_reader_woken_then_cancelled_passes_the_frame_on() -> None:
    """asyncio: the frame stays queued when the reader it woke is cancelled before it ran, and
    the next waiting reader gets it."""
    queue = FrameQueue(1)
    got: list[str] = []
    first = asyncio.create_task(take_one(queue, got))
    await anyio.wait_all_tasks_blocked()
    second = asyncio.create_task(take_one(queue, got))
    await anyio.wait_all_tasks_blocked()
    assert queue.offer(TextFrame(text="x"))  # wakes the first reader...
    first.cancel()  # ...which is cancelled before it runs
    with anyio.fail_after(LIMIT):
        await second
    with pytest.raises(asyncio.CancelledError):
        await first
    assert got == ["x"]
    assert len(queue) == 0
