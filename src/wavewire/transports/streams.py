"""The application's ends of a transport: frames in (``FrameInput``) and out (``FrameOutput``),
and the audio rules both transports apply on the way (``AudioInputGate``, ``check_output``)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from wavewire.adapters.ratelimit import LogLimiter
from wavewire.core.frames import PCM16_SAMPLE_WIDTH, AudioRawFrame, Frame, InputAudioRawFrame

__all__ = ["AudioInputGate", "FrameInput", "FrameOutput", "check_output"]


class FrameInput:
    """Async-iterable of received frames; ends when the client (or the transport) is gone."""

    def __init__(self, receive: MemoryObjectReceiveStream[Frame], *, keep: object = None) -> None:
        self._receive = receive
        #: What must live as long as this reader (the input queue's owner, if any).
        self._keep = keep

    def __aiter__(self) -> FrameInput:
        return self

    async def __anext__(self) -> Frame:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def receive(self) -> Frame:
        """The next frame; ``anyio.EndOfStream`` once there will be no more.

        A frame already queued is returned without a trip through the event loop: the frames
        of one read are handled in one task step (their replies then leave in one write). This
        cannot starve the loop: the queue holds at most ``max_input_queue`` frames and gets no
        more until this task waits.
        """
        try:
            return self._receive.receive_nowait()
        except anyio.WouldBlock:
            pass
        except anyio.ClosedResourceError:
            raise anyio.EndOfStream from None
        try:
            return await self._receive.receive()
        except anyio.ClosedResourceError:
            raise anyio.EndOfStream from None


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

    def admit(self, frame: Frame, peer: str) -> bool:
        """True if ``frame`` goes on to ``input()``."""
        if not isinstance(frame, InputAudioRawFrame):
            return True
        if not self.enabled:
            return False
        frame_bytes = frame.num_channels * PCM16_SAMPLE_WIDTH
        if len(frame.audio) % frame_bytes == 0:
            return True
        self.dropped += 1
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
