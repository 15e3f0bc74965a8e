"""The application's ends of a transport: frames in (``FrameInput``, reading a ``FrameQueue``)
and out (``FrameOutput``), and the audio rules both transports apply on the way
(``AudioInputGate``, ``check_output``)."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Union

import anyio
import anyio.lowlevel

from wavewire.adapters.ratelimit import LogLimiter
from wavewire.core.frames import (
    PCM16_SAMPLE_WIDTH,
    AudioRawFrame,
    CancelFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
)

__all__ = [
    "ENDING_FRAMES",
    "READY_CHECKPOINT",
    "AudioInputGate",
    "FrameInput",
    "FrameOutput",
    "FrameQueue",
    "check_output",
]


#: A reader that finds a frame queued takes it without yielding, but not more than this many
#: times in a row: then it checkpoints once (cancellation, and the loop's other tasks get a
#: turn), as the native driver's ``drain`` does per ``DRAIN_YIELD_EVERY`` sends.
READY_CHECKPOINT = 64

#: What a task waiting on a ``FrameQueue`` waits on: a future of the running asyncio loop (one
#: C object), or an ``anyio.Event`` on any other loop (trio).
_Waiter = Union["asyncio.Future[None]", anyio.Event]


#: Frames whose send returns once the session is over (a tuple for ``isinstance``: written
#: ``EndFrame | CancelFrame`` it would build a union object on every send).
ENDING_FRAMES = (EndFrame, CancelFrame)


def _running_asyncio_loop() -> asyncio.AbstractEventLoop | None:
    """The asyncio loop running the current task; None under trio (also trio as a guest of an
    asyncio loop: its tasks are not asyncio's, so they cannot await an asyncio future)."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no asyncio loop running in this thread
        return None
    return None if task is None else task.get_loop()


class FrameQueue:
    """Received frames on their way from a driver to the application's readers: a FIFO bounded
    by ``max_input_queue``, owned by the transport (one per client, and one for the transport's
    single-client ``input()``).

    Theory of operation. The driver puts frames without waiting (``offer``: False when full) or,
    once full, waits for room (``put``: receive backpressure, the socket is not read
    meanwhile). Readers (``get``) take frames in order. Nothing is made per frame but its deque
    slot: a reader that finds a frame queued takes it without a pass through the event loop
    (checkpointing once per ``READY_CHECKPOINT`` such takes), and only a task that must wait
    makes a waiter (an asyncio future, or an ``anyio.Event`` under trio), which the other side
    resolves when what it waits for may have changed. A woken task checks again; one cancelled
    after it was woken passes the wake-up on, so no frame stays behind a waiting reader.

    Room: ``limit`` frames, plus one per reader waiting (a limit of 0 hands each frame to a
    waiting reader: a rendezvous). Two ends: ``end()`` (no more frames will come: readers get
    what is queued, then ``anyio.EndOfStream``) and ``close()`` (nobody will read: the queued
    frames are freed, later frames dropped, every waiting reader and writer returns).
    """

    __slots__ = (
        "_ended",
        "_frames",
        "_limit",
        "_loop",
        "_loop_found",
        "_readers",
        "_ready",
        "_writers",
    )

    def __init__(self, limit: int) -> None:
        self._limit = limit
        #: Made on the first frame: an idle client holds no buffer.
        self._frames: deque[Frame] | None = None
        #: No frame will be queued any more (``end`` or ``close``).
        self._ended = False
        #: Tasks waiting for a frame / for room, oldest first; each list made on its first wait.
        self._readers: list[_Waiter] | None = None
        self._writers: list[_Waiter] | None = None
        #: Found on the first wait: the asyncio loop whose futures the waiters are, or None.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_found = False
        #: Frames taken in a row without waiting.
        self._ready = 0

    def __len__(self) -> int:
        """Frames queued."""
        return 0 if self._frames is None else len(self._frames)

    @property
    def waiting_writers(self) -> int:
        """Tasks waiting in ``put`` for room."""
        return 0 if self._writers is None else len(self._writers)

    # --- the driver's end --------------------------------------------------------------------

    def offer(self, frame: Frame) -> bool:
        """Queue ``frame`` if there is room: False, with nothing queued, when full. True also
        when it is dropped because nobody will read it (``close``, ``end``)."""
        if self._ended:
            return True
        frames = self._frames
        if frames is None:
            frames = self._frames = deque()
        readers = self._readers
        if readers:
            frames.append(frame)
            self._wake_first(readers)
            return True
        if len(frames) >= self._limit:
            return False
        frames.append(frame)
        return True

    async def put(self, frame: Frame) -> None:
        """Queue ``frame``, waiting for room while the queue is full. Not a checkpoint when
        there is room (the driver's own reads are)."""
        while not self.offer(frame):
            if self._writers is None:
                self._writers = []
            await self._wait(self._writers)

    def end(self) -> None:
        """No frame will come any more: readers get what is queued, then the end."""
        self._ended = True
        self._wake_all()

    def close(self) -> None:
        """Nobody will read any more: the queued frames are freed, later ones dropped, waiting
        readers end and waiting writers return."""
        self._ended = True
        self._frames = None
        self._wake_all()

    # --- the readers' end --------------------------------------------------------------------

    async def get(self) -> Frame:
        """The next frame; ``anyio.EndOfStream`` once there will be no more."""
        while True:
            frames = self._frames
            if frames:
                if self._ready >= READY_CHECKPOINT:
                    self._ready = 0
                    await anyio.lowlevel.checkpoint()
                    continue  # the queue may have been closed meanwhile
                self._ready += 1
                frame = frames.popleft()
                if self._writers:
                    self._wake_first(self._writers)  # room for one more
                return frame
            if self._ended:
                raise anyio.EndOfStream
            self._ready = 0
            if self._readers is None:
                self._readers = []
            if self._writers:
                self._wake_first(self._writers)  # a waiting reader is room (the rendezvous)
            await self._wait(self._readers)

    # --- waiting -----------------------------------------------------------------------------

    async def _wait(self, waiters: list[_Waiter]) -> None:
        if not self._loop_found:
            self._loop, self._loop_found = _running_asyncio_loop(), True
        loop = self._loop
        waiter: _Waiter
        if loop is None:
            waiter = anyio.Event()
            waiting: Awaitable[object] = waiter.wait()
        else:
            waiting = waiter = loop.create_future()
        waiters.append(waiter)
        try:
            await waiting
        except BaseException:
            if waiter in waiters:
                waiters.remove(waiter)
            elif waiters:
                self._wake_first(waiters)  # woken, then cancelled: the next one checks instead
            raise

    def _wake_first(self, waiters: list[_Waiter]) -> None:
        self._wake(waiters.pop(0))

    def _wake_all(self) -> None:
        for waiters in (self._readers, self._writers):
            while waiters:
                self._wake(waiters.pop(0))

    def _wake(self, waiter: _Waiter) -> None:
        # The type is the queue's (self._loop): no isinstance (nor typing.cast call) per wake-up.
        if self._loop is None:
            waiter.set()  # type: ignore[union-attr]
        elif not waiter.done():  # type: ignore[union-attr]  # a cancelled waiter's is done
            waiter.set_result(None)  # type: ignore[union-attr]


class FrameInput:
    """Async-iterable of received frames; ends when the client (or the transport) is gone.

    A frame already queued is returned without a trip through the event loop: the frames of
    one read are handled in one task step (their replies then leave in one write); a
    checkpoint once per ``READY_CHECKPOINT`` frames taken in a row keeps the reader
    cancellable and lets other tasks run."""

    __slots__ = ("_keep", "_queue")

    def __init__(self, queue: FrameQueue, *, keep: object = None) -> None:
        self._queue = queue
        #: What must live as long as this reader (the input queue's owner, if any).
        self._keep = keep

    def __aiter__(self) -> FrameInput:
        return self

    async def __anext__(self) -> Frame:
        try:
            return await self._queue.get()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def receive(self) -> Frame:
        """The next frame; ``anyio.EndOfStream`` once there will be no more."""
        return await self._queue.get()


class FrameOutput:
    """Sends frames to a peer, in order.

    ``send`` waits while that peer's output is full: its audio queue (``audio_out_max_queued_secs``
    of audio, which the core drains at real time) or its socket buffer (``max_output_buffer``
    bytes). So memory stays bounded however fast the application produces. Sending audio
    without ``audio_out_enabled`` is a ``ValueError``.
    """

    def __init__(self, send: Callable[[Frame], Awaitable[None]]) -> None:
        self._send = send

    async def send(self, frame: Frame) -> None:
        await self._send(frame)


def check_output(frame: Frame, audio_out_enabled: bool) -> None:
    """``ValueError`` for audio sent while audio output is disabled (a configuration mistake,
    raised rather than silently dropped)."""
    if isinstance(frame, AudioRawFrame) and not audio_out_enabled:
        raise ValueError(
            f"cannot send {type(frame).__name__}: audio output is disabled; set "
            "audio_out_enabled=True (and audio_out_sample_rate to the audio's rate) in the "
            "transport's params"
        )


class AudioInputGate:
    """Which received audio frames reach ``input()``.

    Audio is dropped, silently, unless ``audio_in_enabled`` (Pipecat's behaviour). An audio
    frame whose byte count is not a whole number of sample frames (``num_channels`` 16-bit
    samples) cannot be played or resampled: it is dropped, counted in ``dropped``, and logged
    per peer through the transport's ``LogLimiter`` (the first drop, then counts at a bounded
    rate), so that a broken peer cannot flood the log. A frame that passes keeps the rate and
    channel count it was received with: the wire's (protobuf), or the serializer's configured
    ones (raw PCM, checked against ``audio_in_sample_rate``/``audio_in_channels`` when the
    transport is made).
    """

    def __init__(self, enabled: bool, log: LogLimiter) -> None:
        self.enabled = enabled
        self._log = log
        #: Audio frames dropped for a partial sample, since the transport was made.
        self.dropped = 0

    def admit(self, frame: Frame, peer: str | int) -> bool:
        """True if ``frame`` goes on to ``input()``. ``peer``: who sent it, for the log (a
        client's id is named ``client <id>``, made only for a drop: not per frame)."""
        if not isinstance(frame, InputAudioRawFrame):
            return True
        if not self.enabled:
            return False
        frame_bytes = frame.num_channels * PCM16_SAMPLE_WIDTH
        if len(frame.audio) % frame_bytes == 0:
            return True
        self.dropped += 1
        if not isinstance(peer, str):
            peer = f"client {peer}"
        self._log.log(
            logging.WARNING,
            ("input audio dropped", peer),
            "%s: input audio dropped: %d bytes is not a whole number of %d-byte sample frames"
            " (%d dropped so far)",
            peer,
            len(frame.audio),
            frame_bytes,
            self.dropped,
        )
        return False
