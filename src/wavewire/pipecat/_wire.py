"""The seam between Pipecat's serializers and wavewire's core.

Pipecat's serializers are async, are set up with the pipeline (``setup()``) and may do I/O
(Twilio's ``auto_hang_up`` calls Twilio's REST API when it serializes an ``EndFrame``). The core
is pure and synchronous and cannot call them. So the drop-in runs the user's serializer itself,
before the core on the way out and after it on the way in, and the core moves the results
untouched, keeping its rules by frame kind:

- an audio chunk: Pipecat's ``serialize`` -> ``SerializedAudioFrame`` (a core frame): one chunk's
  slot in the core's drift-free schedule, sent as is when due;
- any other frame: ``serialize`` -> a ``Wire*`` frame below; the core's serializer for the
  session, ``WireSerializer``, returns its wire form unchanged, and the core handles it by its
  kind (urgent messages ahead of queued audio, an interruption drops the queued audio and goes
  first, everything else behind the audio written before it);
- received messages: ``WireSerializer`` hands each one over as a ``ReceivedMessage``; the
  drop-in deserializes it with Pipecat's serializer.

A serializer that raises loses one message, never the session (in Pipecat 1.14 a raising
``deserialize`` ends the client's session); failures are logged on the first and then on every
``LOG_EVERY``-th one, so a broken peer cannot flood the log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pipecat.frames.frames import Frame as PipecatFrame
from pipecat.serializers.base_serializer import FrameSerializer as PipecatSerializer

from wavewire.core.frames import (
    Frame,
    InterruptionFrame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
)

__all__ = [
    "LOG_EVERY",
    "PipecatCodec",
    "ReceivedMessage",
    "WireInterruption",
    "WireMessage",
    "WireSerializer",
    "WireUrgentMessage",
]

Wire = bytes | str

#: A failing serializer is logged on its first failure, then once per this many.
LOG_EVERY = 100


@dataclass(frozen=True, slots=True, kw_only=True)
class WireMessage(OutputTransportMessageFrame):
    """A message Pipecat's serializer encoded: sent behind the audio written before it."""

    wire: Wire


@dataclass(frozen=True, slots=True, kw_only=True)
class WireUrgentMessage(OutputTransportMessageUrgentFrame):
    """A message Pipecat's serializer encoded: sent at once, ahead of queued audio."""

    wire: Wire


@dataclass(frozen=True, slots=True, kw_only=True)
class WireInterruption(InterruptionFrame):
    """An interruption: the core drops its queued audio and sends ``wire`` (Pipecat's encoding of
    ``InterruptionFrame``, e.g. Twilio's ``clear``; None: nothing) ahead of everything."""

    wire: Wire | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceivedMessage(Frame):
    """A received message, undecoded: the drop-in decodes it with Pipecat's serializer."""

    data: Wire


class WireSerializer:
    """The core's serializer for a drop-in session: frames that carry their wire form give it,
    received messages are handed over undecoded (see the module docstring)."""

    def serialize(self, frame: Frame) -> Wire | None:
        if isinstance(frame, WireMessage | WireUrgentMessage | WireInterruption):
            return frame.wire
        return None

    def deserialize(self, data: Wire) -> Frame | None:
        return ReceivedMessage(data=data)


class PipecatCodec:
    """One Pipecat serializer as a transport uses it: ``None`` (Pipecat's default on the server)
    sends and receives nothing, as in Pipecat, with one warning; a failure drops one message."""

    def __init__(self, serializer: PipecatSerializer | None, logger: logging.Logger) -> None:
        self.serializer = serializer
        self._logger = logger
        #: Messages lost to a raising serializer: (outbound, inbound).
        self.encode_failures = 0
        self.decode_failures = 0
        self._warned_missing = False

    async def encode(self, frame: PipecatFrame) -> tuple[bool, Wire | None]:
        """(taken, payload): ``taken`` is False when there is no serializer or it raised."""
        if self.serializer is None:
            self._warn_missing()
            return False, None
        try:
            return True, await self.serializer.serialize(frame)
        except Exception as exc:
            self.encode_failures += 1
            self._log("serialize", frame.name, exc, self.encode_failures)
            return False, None

    async def decode(self, data: Wire) -> PipecatFrame | None:
        if self.serializer is None:
            self._warn_missing()
            return None
        try:
            return await self.serializer.deserialize(data)
        except Exception as exc:
            self.decode_failures += 1
            self._log("deserialize", f"a {len(data)}-long message", exc, self.decode_failures)
            return None

    def _log(self, what: str, subject: str, exc: Exception, count: int) -> None:
        if count % LOG_EVERY == 1 or LOG_EVERY == 1:
            self._logger.warning(
                "%s.%s failed on %s, dropped (%d so far; logged once per %d): %s: %s",
                type(self.serializer).__name__,
                what,
                subject,
                count,
                LOG_EVERY,
                type(exc).__name__,
                exc,
            )

    def _warn_missing(self) -> None:
        if not self._warned_missing:
            self._warned_missing = True
            self._logger.warning(
                "no serializer in the transport's params: every message is dropped (as in"
                " Pipecat); pass serializer=ProtobufFrameSerializer() or your provider's"
            )
