"""The transports' input queue alone: CPU µs per frame, no I/O.

    python bench/input_queue_micro.py

What ``input()`` costs between a driver and the application, for the queue the transports use
(``transports/streams.py``'s ``FrameQueue``: waiters are asyncio futures under asyncio), the
same queue with ``anyio.Event`` waiters (what it uses under trio), and anyio's memory object
stream (what the transports used before), on asyncio and trio. Two patterns:

* ``wait``: round trips between two tasks through two queues, each frame offered after its
  reader has parked (a request/response peer: one frame per read); per frame, with the
  ``PARK`` checkpoints before each offer, which every queue pays alike;
* ``batch``: 32 frames offered at once, then taken by a reader that waits once per batch
  (pipelined input: many frames per read).

CPU time (``time.process_time``), best of ``--repeat`` runs: a figure for comparing queue
designs on one machine, not a figure of the server (see bench/peers.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import anyio
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from wavewire.core.frames import Frame, TextFrame
from wavewire.transports.streams import FrameQueue

BATCH = 32

#: (offer without waiting, False when full; take the next frame, waiting if need be).
Ends = tuple[Callable[[Frame], bool], Callable[[], Awaitable[Frame]]]


def frame_queue(limit: int, *, events: bool = False) -> Ends:
    queue = FrameQueue(limit)
    if events:  # anyio.Event waiters, as under trio
        queue._loop, queue._loop_found = None, True
    return queue.offer, queue.get


def memory_stream(limit: int) -> Ends:
    send: MemoryObjectSendStream[Frame]
    receive: MemoryObjectReceiveStream[Frame]
    send, receive = anyio.create_memory_object_stream[Frame](limit)

    def offer(frame: Frame) -> bool:
        try:
            send.send_nowait(frame)
        except anyio.WouldBlock:
            return False
        return True

    async def get() -> Frame:
        # As the transport's FrameInput did: no wait when a frame is queued.
        try:
            return receive.receive_nowait()
        except anyio.WouldBlock:
            return await receive.receive()

    return offer, get


KINDS: dict[str, Callable[[int], Ends]] = {
    "FrameQueue": frame_queue,
    "FrameQueue, anyio.Event waiters": lambda limit: frame_queue(limit, events=True),
    "anyio memory stream": memory_stream,
}


#: Yields before each offer in the ``wait`` pattern: the receiver has parked by then, as a
#: reader waiting for the next read from the socket has (anyio's stream checkpoints first).
PARK = 3


async def waits(make: Callable[[int], Ends], count: int) -> float:
    (offer_there, get_there), (offer_back, get_back) = make(64), make(64)
    frame = TextFrame(text="x")

    async def echo() -> None:
        for _ in range(count):
            got = await get_there()
            for _ in range(PARK):
                await anyio.lowlevel.checkpoint()
            assert offer_back(got)

    start = time.process_time()
    async with anyio.create_task_group() as tg:
        tg.start_soon(echo)
        for _ in range(count):
            for _ in range(PARK):
                await anyio.lowlevel.checkpoint()
            assert offer_there(frame)
            await get_back()
    return (time.process_time() - start) / count / 2 * 1e6


async def batches(make: Callable[[int], Ends], count: int) -> float:
    offer, get = make(BATCH)
    frame = TextFrame(text="x")
    rounds = count // BATCH
    taken = [0]

    async def reader() -> None:
        for _ in range(rounds * BATCH):
            await get()
            taken[0] += 1

    start = time.process_time()
    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        for done in range(1, rounds + 1):
            for _ in range(BATCH):
                assert offer(frame)
            # The reader takes the batch, then waits.
            while taken[0] < done * BATCH:
                await anyio.lowlevel.checkpoint()
    return (time.process_time() - start) / (rounds * BATCH) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20_000, help="frames per run (20000)")
    parser.add_argument("--repeat", type=int, default=5, help="runs, best kept (5)")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}; CPU µs per frame, best of {args.repeat}")
    print(f"{'backend':8} {'queue':34} {'wait':>7} {'batch':>7}")
    for backend in ("asyncio", "trio"):
        for name, make in KINDS.items():
            if backend == "trio" and name == "FrameQueue":
                continue  # under trio FrameQueue uses anyio.Event waiters: the next row
            best = [
                min(
                    anyio.run(pattern, make, args.count, backend=backend)
                    for _ in range(args.repeat)
                )
                for pattern in (waits, batches)
            ]
            print(f"{backend:8} {name:34} {best[0]:7.2f} {best[1]:7.2f}")


if __name__ == "__main__":
    main()
