"""Real Pipecat pipelines (``PipelineWorker`` + ``WorkerRunner``) for the drop-in's tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

import anyio
from pipecat.frames.frames import Frame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

F = TypeVar("F", bound=Frame)

RATE = 16000
#: Bytes of one 40 ms chunk of 16 kHz mono PCM16 (Pipecat's default 4 x 10 ms).
CHUNK = RATE // 100 * 2 * 4


def pcm(chunks: int, start: int = 1) -> bytes:
    """``chunks`` chunks of recognisable, never-silent samples."""
    samples = chunks * CHUNK // 2
    return b"".join(((start + i) % 30000 + 1).to_bytes(2, "little") for i in range(samples))


class Recorder(FrameProcessor):
    """Passes every frame on and records it (both directions), each with the loop time."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.frames: list[tuple[float, Frame]] = []
        self._changed = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        self.frames.append((asyncio.get_running_loop().time(), frame))
        self._changed.set()
        await self.push_frame(frame, direction)

    def of(self, kind: type[F]) -> list[F]:
        return [frame for _, frame in self.frames if isinstance(frame, kind)]

    async def wait_for(self, ready: Callable[[], bool]) -> None:
        while not ready():
            self._changed.clear()
            await self._changed.wait()


async def pipeline(
    processors: Sequence[FrameProcessor], *, sample_rate: int = RATE
) -> tuple[PipelineWorker, WorkerRunner]:
    """A pipeline under Pipecat's own worker, added to a runner (``runner.run()`` runs it)."""
    worker = PipelineWorker(
        Pipeline(list(processors)),
        params=PipelineParams(audio_in_sample_rate=sample_rate, audio_out_sample_rate=sample_rate),
        cancel_on_idle_timeout=False,
        idle_timeout_secs=None,
        enable_rtvi=False,
        check_dangling_tasks=False,
    )
    runner = WorkerRunner(handle_sigint=False, check_dangling_tasks=False)
    await runner.add_workers(worker)
    return worker, runner


@contextlib.asynccontextmanager
async def running(
    processors: Sequence[FrameProcessor], *, sample_rate: int = RATE
) -> AsyncIterator[PipelineWorker]:
    """A pipeline running under Pipecat's own worker and runner; cancelled on the way out if it
    has not ended by itself."""
    worker, runner = await pipeline(processors, sample_rate=sample_rate)
    task = asyncio.create_task(runner.run())
    try:
        yield worker
    finally:
        if not task.done():
            await worker.cancel()
        with anyio.fail_after(15):
            await task


async def queue(worker: PipelineWorker, *frames: Frame) -> None:
    for frame in frames:
        await worker.queue_frame(frame)
