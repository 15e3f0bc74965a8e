"""Frames: the application-level units that serializers turn into WebSocket messages and back.

Names and fields follow Pipecat's frames so code moving from Pipecat reads the same. Frames are
immutable; every frame gets a process-unique ``id`` and a ``name`` like Pipecat's
(``"TextFrame#3"``), which the protobuf serializer carries on the wire.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from ._fastinit import fast_init

__all__ = [
    "AudioRawFrame",
    "CancelFrame",
    "EndFrame",
    "Frame",
    "InputAudioRawFrame",
    "InputDTMFFrame",
    "InputTransportMessageFrame",
    "InterruptionFrame",
    "OutputAudioRawFrame",
    "OutputTransportMessageFrame",
    "OutputTransportMessageUrgentFrame",
    "SerializedAudioFrame",
    "TTSStoppedFrame",
    "TextFrame",
    "TranscriptionFrame",
]

# A counter is deterministic and needs no clock or random source (the core may use neither).
_ids = itertools.count(1)

#: Bytes per sample of 16-bit PCM, the only sample format on the wire.
PCM16_SAMPLE_WIDTH = 2


def _next_id() -> int:
    return next(_ids)


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Frame:
    """Base of every frame. ``id`` and ``name`` are assigned on creation unless given."""

    id: int = field(default_factory=_next_id, compare=False)
    name: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.name:
            # A frozen class's __setattr__ raises. object.__setattr__ finds the most derived
            # class's slot: on Python 3.10, dataclass(slots=True) gives each subclass its own
            # slot for every inherited field, so the base class's descriptor would set a
            # slot that the subclass's attribute never reads.
            object.__setattr__(self, "name", f"{type(self).__name__}#{self.id}")


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class AudioRawFrame(Frame):
    """Raw 16-bit little-endian PCM audio, interleaved when ``num_channels > 1``."""

    audio: bytes = field(repr=False)
    sample_rate: int
    num_channels: int = 1

    def __post_init__(self) -> None:
        Frame.__post_init__(self)
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {self.sample_rate}")
        if self.num_channels <= 0:
            raise ValueError(f"num_channels must be positive, got {self.num_channels}")

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, {len(self.audio)} bytes, "
            f"sample_rate={self.sample_rate}, num_channels={self.num_channels})"
        )

    @property
    def num_frames(self) -> int:
        """Number of sample frames (one sample per channel each) in ``audio``."""
        return len(self.audio) // (self.num_channels * PCM16_SAMPLE_WIDTH)


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class InputAudioRawFrame(AudioRawFrame):
    """Audio received from the peer."""


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class OutputAudioRawFrame(AudioRawFrame):
    """Audio to send to the peer."""


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class SerializedAudioFrame(Frame):
    """One chunk of output audio that the application serialized itself, for a serializer the
    core cannot run (Pipecat's are async and may do I/O: ``wavewire.pipecat``).

    With ``audio_out`` it takes one chunk's slot in the paced schedule (``chunk_10ms`` x 10 ms,
    whatever ``data`` holds) and ``data`` is sent as is when the slot is due; ``None`` paces the
    slot and sends nothing (a serializer that had nothing to send for this chunk). Without
    ``audio_out`` it is sent at once.
    """

    data: bytes | str | None = field(repr=False)


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class TextFrame(Frame):
    text: str


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class TranscriptionFrame(TextFrame):
    user_id: str
    timestamp: str


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class InputTransportMessageFrame(Frame):
    """A JSON-compatible message received from the peer."""

    message: Any


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class OutputTransportMessageFrame(Frame):
    """A JSON-compatible message to send; keeps its order relative to audio."""

    message: Any


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class OutputTransportMessageUrgentFrame(OutputTransportMessageFrame):
    """A JSON-compatible message to send ahead of any queued audio."""


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class InterruptionFrame(Frame):
    """The user interrupted: queued output audio is dropped and the peer is told to stop playing."""


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class TTSStoppedFrame(Frame):
    """The end of an utterance: output audio held short of a whole chunk is padded and sent."""


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class EndFrame(Frame):
    """Graceful end of the session: flush output, then close."""


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class CancelFrame(Frame):
    """Immediate end of the session: drop output and close."""


#: The keys of a telephone keypad, as DTMF carries them (A-D: the fourth column, rarely seen).
DTMF_BUTTONS = frozenset("0123456789*#ABCD")


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class InputDTMFFrame(Frame):
    """A keypad key the caller pressed (a DTMF tone), as Pipecat's ``InputDTMFFrame``.

    ``button`` is one of :data:`DTMF_BUTTONS` (Pipecat's ``KeypadEntry`` values, plus A-D);
    anything else is ``ValueError``.
    """

    button: str

    def __post_init__(self) -> None:
        Frame.__post_init__(self)
        if self.button not in DTMF_BUTTONS:
            raise ValueError(f"not a DTMF key: {self.button!r}")
