"""Turning one inbound message into an event, for both roles: a frame, or a counted drop."""

from __future__ import annotations

import dataclasses

from wavewire.core.events import ConnectionInfo, FrameReceived, MessageDropped
from wavewire.core.frames import Frame, InputAudioRawFrame
from wavewire.core.serializers.base import FrameSerializer

from .wav import wav_samples


def deserialize_message(
    serializer: FrameSerializer, connection: ConnectionInfo, data: bytes | str, dropped: int
) -> FrameReceived | MessageDropped | None:
    """The event for ``data``: ``FrameReceived``, ``MessageDropped`` (the serializer failed;
    ``dropped`` is the count before this one), or None when the serializer ignores it.

    Any exception from the serializer drops just this message: one bad message must not end the
    session (in Pipecat it does). Received audio that starts with a WAV header (Pipecat's client
    adds one by default) reaches the application as its samples only (``strip_wav_header``).
    """
    try:
        frame = serializer.deserialize(data)
    except Exception as exc:
        detail = f"{type(exc).__name__}: {exc}"
        return MessageDropped(connection=connection, detail=detail, dropped_total=dropped + 1)
    if frame is None:
        return None
    return FrameReceived(connection=connection, frame=strip_wav_header(frame))


def strip_wav_header(frame: Frame) -> Frame:
    """``frame`` without the WAV header at the start of its audio, if it is received audio that
    has one (``wav.wav_samples``); otherwise ``frame`` itself."""
    if isinstance(frame, InputAudioRawFrame):
        samples = wav_samples(frame.audio)
        if samples is not None:
            return dataclasses.replace(frame, audio=samples)
    return frame
