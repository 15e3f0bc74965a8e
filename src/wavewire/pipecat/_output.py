"""What both drop-in output transports (server and client) do with Pipecat's output hooks.

Pipecat's ``BaseOutputTransport`` keeps all of its logic (chunking, resampling, mixing,
bot-speaking frames, uninterruptible frames, end silence); its hooks land here, and go to the
peer over a ``Link``: the server's client handle or the client's connection.

Pacing. ``write_audio`` serializes each chunk with the user's Pipecat serializer and offers it
to the core as a ``SerializedAudioFrame``, which the core paces in its drift-free schedule. The
core's queue holds one chunk (``audio_out_max_queued_secs`` = one chunk), so an offer is taken
once the chunk before it has left: a write returns when the chunk before its last one is due on
the wire. That is Pipecat's contract ("written" = "about to be heard") with no sleep here:
frames after the audio stay within one chunk of what the peer hears, and the one chunk queued
ahead absorbs the event loop's jitter. ``BotStoppedSpeakingFrame`` waits (``settle``) until the
last chunk is on the wire, so it leaves with the audio, not one chunk early.

Interruption. ``mark_interruption`` runs when an ``InterruptionFrame`` reaches the output. A
write that began before it and is still waiting for its slot gives up (its chunk is never sent),
and so does a chunk made before it that Pipecat's sender had already taken from its queue (it
keeps "the frame being written": with Pipecat's own transport that one is on the wire, here it
would play after the interruption); Pipecat's frame ids grow with creation, so that chunk is the
one whose id is below the mark. Uninterruptible audio is never dropped (Pipecat's rule). Then,
before Pipecat's own handling, the core drops the chunk it holds and sends the serializer's
encoding of the interruption ahead of everything; if that chunk is uninterruptible, it is kept
and the interruption goes out as an urgent message instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Protocol

import anyio
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
)
from pipecat.utils.utils import obj_id

from wavewire.adapters.errors import ConnectionClosed
from wavewire.core.frames import CancelFrame as CoreCancelFrame
from wavewire.core.frames import EndFrame as CoreEndFrame
from wavewire.core.frames import Frame as CoreFrame
from wavewire.core.frames import SerializedAudioFrame
from wavewire.core.session.wav import wav_chunk
from wavewire.pipecat._wire import PipecatCodec, WireInterruption, WireMessage, WireUrgentMessage

__all__ = ["Link", "PacedOutput", "chunk_seconds"]


def chunk_seconds(sample_rate: int, chunks_10ms: int) -> float:
    """The playing time of one output chunk (the core's and Pipecat's chunk formula)."""
    return (sample_rate // 100 * chunks_10ms) / sample_rate


class Link(Protocol):
    """Where output goes: one connected peer (``ConnectionClosed`` once it is gone)."""

    def offer(self, frame: CoreFrame) -> bool:
        """Queue ``frame`` at once: False (nothing queued) while the audio queue is full."""
        ...

    async def wait_audio_writable(self) -> None: ...

    async def drain(self) -> None: ...

    async def send(self, frame: CoreFrame) -> None:
        """Queue ``frame``, waiting for room; ``EndFrame``: until the connection is closed."""
        ...


class PacedOutput:
    """One output transport's hooks, over whichever ``Link`` is current (see the docstring)."""

    def __init__(
        self,
        codec: PipecatCodec,
        *,
        add_wav_header: bool,
        channels: int,
        packet_size: int | None = None,
    ) -> None:
        self.codec = codec
        self._add_wav_header = add_wav_header
        self._channels = channels
        # Pipecat's FastAPI ``fixed_audio_packet_size``: serialized audio (bytes) is re-cut into
        # packets of this size, the remainder kept for the next chunk.
        self._packet_size = packet_size
        self._packet_buffer = bytearray()
        #: Bumped by each InterruptionFrame: a write still waiting from before it is stale.
        self.interruptions = 0
        # Frames with an id below this were made before the last interruption: stale audio.
        self._stale_below = 0
        # Whether the chunk last handed to the core came from uninterruptible audio.
        self._last_uninterruptible = False

    def mark_interruption(self) -> None:
        """An ``InterruptionFrame`` reached the output (before Pipecat's handling of it)."""
        self.interruptions += 1
        self._stale_below = obj_id()
        self._packet_buffer.clear()  # a partial packet of interrupted audio is stale too

    async def write_audio(
        self, link: Link | None, frame: OutputAudioRawFrame, *, chunk_size: int, sample_rate: int
    ) -> bool:
        """Pipecat's ``write_audio_frame``: False if no peer is connected (as Pipecat), the
        serializer failed, or an interruption made the audio stale."""
        if link is None or self.codec.serializer is None:
            return False
        interruptible = frame.interruptible
        if interruptible and frame.id < self._stale_below:
            return False  # made before the last interruption reached the output
        epoch = self.interruptions
        audio = frame.audio
        for start in range(0, len(audio), chunk_size):
            pcm = audio[start : start + chunk_size]
            if len(pcm) < chunk_size:
                pcm += bytes(chunk_size - len(pcm))  # a partial chunk (DTMF tones), padded
            if self._add_wav_header:
                pcm = wav_chunk(pcm, sample_rate, self._channels)
            chunk = OutputAudioRawFrame(
                audio=pcm, sample_rate=sample_rate, num_channels=self._channels
            )
            taken, payload = await self.codec.encode(chunk)
            if not taken:
                return False
            extra: list[bytes] = []
            if self._packet_size and isinstance(payload, bytes | bytearray):
                payload, extra = self._packets(payload)
            serialized = SerializedAudioFrame(data=payload)
            if not await self.write_paced(link, serialized, interruptible, epoch, extra):
                return False
        return True

    def _packets(self, payload: bytes | bytearray) -> tuple[bytes | None, list[bytes]]:
        """The whole packets ``payload`` completes: the first takes the chunk's slot (None:
        the slot sends nothing), the others follow it at once (a packet smaller than a chunk)."""
        size = self._packet_size
        assert size
        buffer = self._packet_buffer
        buffer.extend(payload)
        whole = len(buffer) - len(buffer) % size
        packets = [bytes(buffer[start : start + size]) for start in range(0, whole, size)]
        del buffer[:whole]
        return (packets[0] if packets else None), packets[1:]

    async def write_paced(
        self,
        link: Link,
        frame: SerializedAudioFrame,
        interruptible: bool,
        epoch: int,
        extra: Sequence[bytes] = (),
    ) -> bool:
        """Offer one chunk until the core takes it; False if it became stale first. ``extra``
        messages leave right behind it."""
        try:
            while True:
                if interruptible and self.interruptions != epoch:
                    return False  # interrupted before it had a slot: never sent
                if link.offer(frame):
                    break
                await link.wait_audio_writable()
            self._last_uninterruptible = not interruptible
            for packet in extra:
                link.offer(WireMessage(message=None, wire=packet))
            await link.drain()
        except ConnectionClosed:
            return False
        return True

    async def settle(self, link: Link | None) -> None:
        """Wait until every chunk handed to the core is on the wire (at most one chunk): run
        before ``BotStoppedSpeakingFrame`` is pushed, so that it leaves with the last audio
        rather than one chunk ahead of it."""
        if link is not None:
            with contextlib.suppress(ConnectionClosed):
                await link.wait_audio_writable()

    async def send_message(
        self,
        link: Link | None,
        frame: OutputTransportMessageFrame | OutputTransportMessageUrgentFrame,
    ) -> None:
        _, payload = await self.codec.encode(frame)
        if payload is None:
            return
        if isinstance(frame, OutputTransportMessageUrgentFrame):
            await self._send(link, WireUrgentMessage(message=None, wire=payload))
        else:
            await self._send(link, WireMessage(message=None, wire=payload))

    async def interrupt(self, link: Link | None, frame: InterruptionFrame) -> None:
        """Before Pipecat's own interruption handling (after ``mark_interruption``): the client
        stops at once, and the ``BotStoppedSpeakingFrame`` that Pipecat's handling pushes
        finds nothing left to wait for."""
        _, payload = await self.codec.encode(frame)
        if link is None:
            return
        if self._last_uninterruptible:
            # The chunk in the core must still play: keep it, tell the peer at once.
            if payload is not None:
                await self._send(link, WireUrgentMessage(message=None, wire=payload))
        else:
            await self._send(link, WireInterruption(wire=payload))

    async def end(
        self, link: Link | None, frame: EndFrame, *, close_bound: float | None = None
    ) -> None:
        """After Pipecat's sender has written everything (end silence included): the
        serializer's ``EndFrame`` (Twilio's hang-up runs there), then close with 1000 once the
        last chunk is out; returns when the connection is closed, or ``close_bound`` seconds
        after the last chunk left (the close goes on without us)."""
        _, payload = await self.codec.encode(frame)
        if link is None:
            return
        if payload is not None:
            await self._send(link, WireMessage(message=None, wire=payload))
        if close_bound is None:
            await self._send(link, CoreEndFrame())
            return
        await self.settle(link)
        with anyio.move_on_after(close_bound):
            await self._send(link, CoreEndFrame())

    async def cancel(self, link: Link | None, frame: CancelFrame) -> None:
        """Close at once, queued output dropped; does not wait for the close handshake."""
        _, payload = await self.codec.encode(frame)
        if link is None:
            return
        with contextlib.suppress(ConnectionClosed):
            if payload is not None:
                link.offer(WireUrgentMessage(message=None, wire=payload))
            link.offer(CoreCancelFrame())

    @staticmethod
    async def _send(link: Link | None, frame: CoreFrame) -> None:
        if link is not None:
            with contextlib.suppress(ConnectionClosed):
                await link.send(frame)
