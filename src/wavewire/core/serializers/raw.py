"""A dependency-free wire format: binary messages are raw PCM16, text messages are JSON.

For peers that cannot speak protobuf (a bare browser ``WebSocket``, a test script, ``websocat``):

- A binary message is 16-bit little-endian PCM, interleaved if multi-channel, at the rate and
  channel count given to the serializer (nothing on the wire says what they are, so both ends
  must agree beforehand). It is received as :class:`InputAudioRawFrame`; an empty one is
  ignored, since it carries nothing.
- A text message is a JSON value, received as :class:`InputTransportMessageFrame`.

Sent: audio frames (:class:`OutputAudioRawFrame`, :class:`InputAudioRawFrame`,
:class:`AudioRawFrame` and their subclasses) as binary, and
:class:`OutputTransportMessageFrame`/:class:`OutputTransportMessageUrgentFrame` as JSON text.
Nothing else is sent: the format has no text, transcription or interruption message, so an
application that needs them sends its own transport messages.
"""

from __future__ import annotations

from wavewire.core.frames import (
    AudioRawFrame,
    Frame,
    InputAudioRawFrame,
    InputTransportMessageFrame,
    OutputTransportMessageFrame,
)
from wavewire.core.serializers.base import SerializationError, dumps_message, loads_message

__all__ = ["RawFrameSerializer"]


class RawFrameSerializer:
    """Raw PCM16 audio in binary messages, JSON transport messages in text messages."""

    def __init__(self, sample_rate: int = 16000, num_channels: int = 1) -> None:
        self._sample_rate = _positive_int("sample_rate", sample_rate)
        self._num_channels = _positive_int("num_channels", num_channels)

    @property
    def sample_rate(self) -> int:
        return self._sample_rate

    @property
    def num_channels(self) -> int:
        return self._num_channels

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(sample_rate={self._sample_rate}, "
            f"num_channels={self._num_channels})"
        )

    def serialize(self, frame: Frame) -> bytes | str | None:
        """Encode an audio frame as binary, a transport message as JSON text; else ``None``.

        Raises :class:`SerializationError` for audio whose rate or channel count differs from
        the configured ones (the peer would play it at the wrong speed: resample first) and for
        a message that is not JSON-serializable.
        """
        if isinstance(frame, AudioRawFrame):
            if (frame.sample_rate, frame.num_channels) != (self._sample_rate, self._num_channels):
                raise SerializationError(
                    f"{frame!r} does not match the raw format's "
                    f"sample_rate={self._sample_rate}, num_channels={self._num_channels}"
                )
            return frame.audio
        if isinstance(frame, OutputTransportMessageFrame):
            return dumps_message(frame.message)
        return None

    def deserialize(self, data: bytes | str) -> Frame | None:
        """Decode a binary message as audio, a text message as a JSON transport message."""
        if isinstance(data, str):
            return InputTransportMessageFrame(message=loads_message(data))
        if not data:
            return None
        # bytes() so the frozen frame holds immutable bytes even if given a bytearray.
        return InputAudioRawFrame(
            audio=bytes(data), sample_rate=self._sample_rate, num_channels=self._num_channels
        )


def _positive_int(arg: str, value: object) -> int:
    # bool is an int subclass, but True as a rate is surely a mistake.
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{arg} must be a positive int, got {value!r}")
    return value
