"""What every drop-in's input and output processors share (server, client, FastAPI).

Each drop-in keeps a wavewire transport running in a task of the pipeline, held by both
halves (``Holder``: the server's and the FastAPI transport's are started by the input's
``start()``, the client's by either half's ``setup()``); the processors here only differ in
how they take and give back that hold, and in where the current peer is (``link``).

- ``DropinInputTransport``: the user's Pipecat serializer set up with the pipeline, received
  messages decoded by it (a failure drops one message) and pushed as Pipecat's frames, a WAV
  header at the start of received audio stripped.
- ``DropinOutputTransport``: Pipecat's output hooks over ``_output.PacedOutput`` (the core's
  pacing, Pipecat's write contract, interruption first, ``EndFrame`` played out then 1000).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from pipecat.frames.frames import (
    BotStoppedSpeakingFrame,
    CancelFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InputTransportMessageFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
    StartFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessorSetup
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import BaseTransport, TransportParams

from wavewire.core.frames import Frame as CoreFrame
from wavewire.core.session.wav import wav_samples
from wavewire.pipecat._output import Link, PacedOutput, chunk_seconds
from wavewire.pipecat._wire import PipecatCodec, WireSerializer
from wavewire.transports.server import ClientHandle

__all__ = [
    "DropinInputTransport",
    "DropinOutputTransport",
    "HandleLink",
    "Holder",
    "audio_out_settings",
]


class Holder(Protocol):
    """The wavewire transport both halves of a drop-in hold (see the module docstring)."""

    def link(self) -> Link | None:
        """The current peer, None while none is connected."""
        ...

    async def release(self) -> None:
        """Let go after an ``EndFrame``: the last release closes it gracefully."""
        ...

    async def cancel(self) -> None:
        """Stop at once (``CancelFrame``, cleanup)."""
        ...


class HandleLink:
    """A wavewire server's client handle as the output's ``Link``."""

    def __init__(self, handle: ClientHandle) -> None:
        self._handle = handle

    def offer(self, frame: CoreFrame) -> bool:
        return self._handle.offer(frame)

    async def wait_audio_writable(self) -> None:
        await self._handle.wait_audio_writable()

    async def drain(self) -> None:
        await self._handle.drain()

    async def send(self, frame: CoreFrame) -> None:
        await self._handle.output().send(frame)


def audio_out_settings(
    params: TransportParams, output: BaseOutputTransport | None
) -> dict[str, Any]:
    """The wavewire params that make the core pace a drop-in's output (known only once the
    output is set up: Pipecat's sample rate may come from the pipeline)."""
    audio_out = params.audio_out_enabled and output is not None
    rate = output.sample_rate if audio_out and output is not None else None
    one_chunk = chunk_seconds(rate, params.audio_out_10ms_chunks) if rate else 30.0
    return {
        # Received messages reach the drop-in undecoded; Pipecat's input gates the audio.
        "audio_in_enabled": True,
        "audio_out_enabled": audio_out,
        "audio_out_sample_rate": rate,
        "audio_out_channels": params.audio_out_channels,
        "audio_out_10ms_chunks": params.audio_out_10ms_chunks,
        # Pipecat's sender writes its own end silence, which is paced like any chunk.
        "audio_out_end_silence_secs": 0,
        # One chunk: a write returns when the chunk before it is due on the wire.
        "audio_out_max_queued_secs": one_chunk,
        # Added per chunk before Pipecat's serializer runs, as Pipecat does.
        "add_wav_header": False,
        "serializer": WireSerializer(),
    }


class DropinInputTransport(BaseInputTransport):
    """Received messages, decoded by Pipecat's serializer, into the pipeline."""

    def __init__(
        self,
        transport: BaseTransport,
        holder: Holder,
        params: Any,
        *,
        logger: logging.Logger,
        **kwargs: Any,
    ) -> None:
        super().__init__(params, **kwargs)
        self._transport = transport
        self._holder = holder
        self._settings = params
        self._codec = PipecatCodec(params.serializer, logger)

    async def setup(self, setup: FrameProcessorSetup) -> None:  # type: ignore[override]
        await super().setup(setup)
        if self._settings.serializer:
            await self._settings.serializer.setup(setup)

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        await self._hold()
        await self.set_transport_ready(frame)

    async def _hold(self) -> None:
        """Take the hold at ``start()`` (the server's input starts its transport here)."""

    async def stop(self, frame: EndFrame) -> None:
        await super().stop(frame)
        await self._holder.release()

    async def cancel(self, frame: CancelFrame) -> None:
        await super().cancel(frame)
        await self._holder.cancel()

    async def cleanup(self) -> None:
        await super().cleanup()
        await self._holder.cancel()
        await self._transport.cleanup()

    async def _receive(self, data: bytes | str) -> None:
        frame = await self._codec.decode(data)
        if frame is None:
            return
        if isinstance(frame, InputAudioRawFrame):
            # Pipecat's client sends a WAV header on every message by default (a server may
            # send WAV-wrapped audio too).
            samples = wav_samples(frame.audio)
            if samples is not None:
                frame.audio = samples
            await self.push_audio_frame(frame)  # dropped there unless audio_in_enabled
        elif isinstance(frame, InputTransportMessageFrame):
            await self.broadcast_frame(InputTransportMessageFrame, message=frame.message)
        else:
            await self.push_frame(frame)


class DropinOutputTransport(BaseOutputTransport):
    """Frames to the peer, serialized by Pipecat's serializer, audio paced by the core
    (``_output.PacedOutput``)."""

    #: Seconds the ``EndFrame``'s close may take once the audio is out (None: unbounded).
    _close_bound: float | None = None

    def __init__(
        self,
        transport: BaseTransport,
        holder: Holder,
        params: Any,
        *,
        logger: logging.Logger,
        packet_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(params, **kwargs)
        self._transport = transport
        self._holder = holder
        self._settings = params
        self._paced = PacedOutput(
            PipecatCodec(params.serializer, logger),
            add_wav_header=params.add_wav_header,
            channels=params.audio_out_channels,
            packet_size=packet_size,
        )

    @property
    def _codec(self) -> PipecatCodec:
        return self._paced.codec

    def _link(self) -> Link | None:
        return self._holder.link()

    async def setup(self, setup: FrameProcessorSetup) -> None:  # type: ignore[override]
        await super().setup(setup)
        if self._settings.serializer:
            await self._settings.serializer.setup(setup)

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        await self._hold()
        await self.set_transport_ready(frame)

    async def _hold(self) -> None:
        """Take the hold at ``start()`` (the client's halves take it at ``setup()``)."""

    async def stop(self, frame: EndFrame) -> None:
        await super().stop(frame)  # the sender has written everything, end silence included
        await self._paced.end(self._link(), frame, close_bound=self._close_bound)
        await self._holder.release()

    async def cancel(self, frame: CancelFrame) -> None:
        await super().cancel(frame)
        await self._paced.cancel(self._link(), frame)
        await self._holder.cancel()

    async def cleanup(self) -> None:
        await super().cleanup()
        await self._holder.cancel()
        await self._transport.cleanup()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, InterruptionFrame):
            # The peer is told first, then Pipecat drops its queue (and says "stopped").
            self._paced.mark_interruption()
            await self._paced.interrupt(self._link(), frame)
        await super().process_frame(frame, direction)

    async def push_frame(
        self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM
    ) -> None:
        if isinstance(frame, BotStoppedSpeakingFrame):
            await self._paced.settle(self._link())  # leave with the last audio, not a chunk early
        await super().push_frame(frame, direction)

    async def send_message(
        self, frame: OutputTransportMessageFrame | OutputTransportMessageUrgentFrame
    ) -> None:
        await self._paced.send_message(self._link(), frame)

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        """Returns once the last chunk has a place in the core's schedule (the chunk before it
        is due on the wire); False with no peer connected (as Pipecat)."""
        return await self._paced.write_audio(
            self._link(), frame, chunk_size=self.audio_chunk_size, sample_rate=self.sample_rate
        )
