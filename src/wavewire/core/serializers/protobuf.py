"""Pipecat's protobuf wire format (``frames.proto``), byte-compatible with its serializer.

Every message is binary and holds one ``pipecat.Frame``, whose ``oneof`` says what it carries:

==================  =====================================  ===================================
``Frame`` field     sent from (and subclasses)             received as
==================  =====================================  ===================================
``text``            :class:`TextFrame`                     :class:`TextFrame`
``audio``           :class:`OutputAudioRawFrame`,          :class:`InputAudioRawFrame`
                    :class:`InputAudioRawFrame`,
                    :class:`AudioRawFrame`
``transcription``   :class:`TranscriptionFrame`            :class:`TranscriptionFrame`
``message``         :class:`OutputTransportMessageFrame`,  :class:`InputTransportMessageFrame`
                    :class:`OutputTransportMessageUrgentFrame`
``interruption``    :class:`InterruptionFrame`             :class:`InterruptionFrame`
==================  =====================================  ===================================

Dispatch picks the most specific listed class the frame is an instance of, so an application's
subclass of a listed frame is sent as that frame (a :class:`TranscriptionFrame` goes as
``transcription``, never as ``text``). Audio is sent whatever its direction: the
schema has one audio message with no direction, and this lets received audio be sent back
as is. Any other frame (:class:`EndFrame`, :class:`CancelFrame`, ...) is not sent.

``id`` and ``name`` go on the wire; received ones are kept when set (non-zero, non-empty),
otherwise the frame gets fresh ones. ``AudioRawFrame.pts`` is never sent and ignored when
received. A transport message's payload travels as JSON text in ``MessageFrame.data``.
"""

from __future__ import annotations

from typing import Any

from wavewire.core.frames import (
    AudioRawFrame,
    Frame,
    InputAudioRawFrame,
    InputTransportMessageFrame,
    InterruptionFrame,
    OutputTransportMessageFrame,
    TextFrame,
    TranscriptionFrame,
)
from wavewire.core.serializers._pb import frames_pb2 as pb
from wavewire.core.serializers.base import SerializationError, dumps_message, loads_message

__all__ = ["ProtobufFrameSerializer"]


class ProtobufFrameSerializer:
    """Pipecat's ``ProtobufFrameSerializer`` wire format; the default serializer.

    Stateless, so one instance may serve any number of sessions.
    """

    def serialize(self, frame: Frame) -> bytes | None:
        """Encode ``frame`` as a binary ``pipecat.Frame``, or ``None`` if it is not sent.

        Raises :class:`SerializationError` if a field does not fit the schema (an ``id`` that is
        not a uint64, a ``sample_rate`` over 2**32 - 1, text that is not valid Unicode, a
        message that is not JSON-serializable, ...).
        """
        try:
            proto = _to_proto(frame)
            return None if proto is None else proto.SerializeToString()
        except SerializationError:
            raise
        # protobuf reports out-of-range integers and wrong types as ValueError/TypeError, and
        # unencodable strings (lone surrogates) as UnicodeEncodeError, a ValueError.
        except (TypeError, ValueError) as exc:
            raise SerializationError(f"cannot encode {frame!r}: {exc}") from exc

    def deserialize(self, data: bytes | str) -> Frame | None:
        """Decode a binary ``pipecat.Frame``; ``None`` if its ``oneof`` is unset.

        An unset ``oneof`` is also what a frame kind added to the schema after this one looks
        like, so such frames are ignored rather than rejected.
        """
        if isinstance(data, str):
            raise SerializationError(
                "ProtobufFrameSerializer expects binary WebSocket messages, got a text message"
            )
        try:
            proto = pb.Frame.FromString(data)
        # Untrusted bytes: DecodeError is the documented failure, but the pure-Python backend
        # can fail in other ways too (e.g. UnicodeDecodeError for a bad string field).
        except Exception as exc:
            raise SerializationError(f"not a valid protobuf Frame: {exc}") from exc
        return _from_proto(proto)


def _to_proto(frame: Frame) -> pb.Frame | None:
    # Most specific first (TranscriptionFrame is a TextFrame), and isinstance rather than exact
    # types, so an application's subclass of, say, OutputAudioRawFrame is still sent.
    if isinstance(frame, AudioRawFrame):  # first: one per paced chunk
        # Set in place: building an AudioRawFrame message and then a Frame holding it copies
        # the submessage (and its audio) once more; the bytes on the wire are the same.
        proto = pb.Frame()
        audio = proto.audio
        audio.id = frame.id
        audio.name = frame.name
        audio.audio = frame.audio
        audio.sample_rate = frame.sample_rate
        audio.num_channels = frame.num_channels
        return proto
    if isinstance(frame, TranscriptionFrame):
        return pb.Frame(
            transcription=pb.TranscriptionFrame(
                id=frame.id,
                name=frame.name,
                text=frame.text,
                user_id=frame.user_id,
                timestamp=frame.timestamp,
            )
        )
    if isinstance(frame, TextFrame):
        return pb.Frame(text=pb.TextFrame(id=frame.id, name=frame.name, text=frame.text))
    if isinstance(frame, OutputTransportMessageFrame):
        return pb.Frame(message=pb.MessageFrame(data=dumps_message(frame.message)))
    if isinstance(frame, InterruptionFrame):
        return pb.Frame(interruption=pb.InterruptionFrame(id=frame.id, name=frame.name))
    return None


def _from_proto(proto: pb.Frame) -> Frame | None:
    kind = proto.WhichOneof("frame")
    if kind == "audio":
        audio = proto.audio
        # Checked here so a bad peer gets a SerializationError, not the frame's ValueError.
        if audio.sample_rate == 0 or audio.num_channels == 0:
            raise SerializationError(
                f"audio frame with sample_rate={audio.sample_rate}, "
                f"num_channels={audio.num_channels}: both must be positive"
            )
        # A byte count that is not a whole number of samples is not rejected here: the core's
        # audio path accounts for it.
        id_, name = audio.id, audio.name
        if id_ and name:  # as Pipecat's Python serializer sends it: no dict of arguments
            return InputAudioRawFrame(
                audio=audio.audio,
                sample_rate=audio.sample_rate,
                num_channels=audio.num_channels,
                id=id_,
                name=name,
            )
        return InputAudioRawFrame(
            audio=audio.audio,
            sample_rate=audio.sample_rate,
            num_channels=audio.num_channels,
            **_identity(id_, name),
        )
    if kind == "message":
        return InputTransportMessageFrame(message=loads_message(proto.message.data))
    if kind == "text":
        text = proto.text
        return TextFrame(text=text.text, **_identity(text.id, text.name))
    if kind == "transcription":
        tr = proto.transcription
        return TranscriptionFrame(
            text=tr.text,
            user_id=tr.user_id,
            timestamp=tr.timestamp,
            **_identity(tr.id, tr.name),
        )
    if kind == "interruption":
        return InterruptionFrame(**_identity(proto.interruption.id, proto.interruption.name))
    return None


def _identity(id_: int, name: str) -> dict[str, Any]:
    """The wire's ``id``/``name`` as frame arguments, leaving out unset (zero/empty) ones.

    Pipecat's JS client sends ``id: 0``; dropping it lets the frame take a fresh id.
    """
    identity: dict[str, Any] = {}
    if id_:
        identity["id"] = id_
    if name:
        identity["name"] = name
    return identity
