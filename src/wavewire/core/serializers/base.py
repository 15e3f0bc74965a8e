"""The serializer contract: frames to WebSocket messages and back.

A serializer turns one :class:`~wavewire.core.frames.Frame` into the payload of one WebSocket
message, and one received message back into a frame. The return type picks the message type:
``bytes`` is sent as a binary message, ``str`` as a text message; received binary messages are
passed in as ``bytes`` and text messages as ``str``.

Serializers run inside the sans-IO core, so they must be pure and synchronous: no I/O, no
clock, no randomness, no threads (no ``asyncio``/``anyio``/``trio``/``socket``/``time``/
``random``/``secrets``/``threading``). The same input must always give the same output.

A serializer that keeps state across messages (a telephony stream id learned from a ``start``
event, a resampler's history) also implements ``for_session() -> FrameSerializer``: the core
calls it once per session (each adopted client; the client's one connection) and uses the
instance it returns for that session only, so no state leaks between calls. A stateless
serializer does not need it: the configured instance is shared.

A serializer that holds audio back (a telephony serializer's resampler keeps the last tens of
milliseconds it was given) also implements ``flush() -> bytes | str | None``: the core calls it
at the end of each utterance (``TTSStoppedFrame``, ``EndFrame``), right after the utterance's
last audio message, and sends what it returns, so the end of the speech is not held back until
the next utterance pushes it out (see ``core/outbound.py``).
"""

from __future__ import annotations

import json
from typing import Any, Protocol, runtime_checkable

from wavewire.core.frames import Frame

__all__ = [
    "FrameSerializer",
    "SerializationError",
    "dumps_message",
    "loads_message",
    "session_serializer",
]


class SerializationError(ValueError):
    """A message or frame that a serializer cannot convert.

    Raised by ``deserialize`` for a malformed received message. The core catches it (and any
    other exception a serializer raises) per message: it drops that message, reports it, and the
    session goes on. Raised by ``serialize`` for a frame of a kind the serializer sends but
    cannot encode faithfully (for example a transport message that is not JSON-serializable),
    rather than putting something on the wire that the peer would misread.
    """


@runtime_checkable
class FrameSerializer(Protocol):
    """Converts frames to WebSocket message payloads and back (see the module docstring)."""

    def serialize(self, frame: Frame) -> bytes | str | None:
        """Encode ``frame``: ``bytes`` for a binary message, ``str`` for a text message.

        Returns ``None`` when this serializer does not send frames of this kind, so the core
        sends nothing for it. May raise :class:`SerializationError` (see there).
        """
        ...

    def deserialize(self, data: bytes | str) -> Frame | None:
        """Decode a received message (``bytes`` if binary, ``str`` if text).

        Returns ``None`` to ignore the message. Raises :class:`SerializationError` if it is
        malformed.
        """
        ...


def session_serializer(serializer: FrameSerializer) -> FrameSerializer:
    """The instance to use for one new session: ``serializer.for_session()`` if it has one."""
    for_session = getattr(serializer, "for_session", None)
    if for_session is None:
        return serializer
    instance = for_session()
    if not isinstance(instance, FrameSerializer):
        raise TypeError(f"{type(serializer).__name__}.for_session() returned {instance!r}")
    return instance


def dumps_message(message: Any) -> str:
    """Encode a transport message's payload as JSON text.

    Same output as Pipecat's ``json.dumps(message)``, except that NaN and infinities are
    refused: they are not JSON, and a browser's ``JSON.parse`` would reject the whole message.
    """
    try:
        return json.dumps(message, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise SerializationError(f"transport message is not JSON-serializable: {exc}") from exc


def loads_message(text: str) -> Any:
    """Decode a received transport message's JSON text."""
    try:
        return json.loads(text)
    # RecursionError: deeply nested input ("[[[[...") exhausts the decoder's stack.
    except (ValueError, RecursionError) as exc:
        raise SerializationError(f"transport message is not valid JSON: {exc}") from exc
