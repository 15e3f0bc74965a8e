"""What the telephony serializers share: the audio path, the JSON envelope, per-session state.

A phone provider's media stream is stateful in two ways, so each of these serializers is too:
the stream's id arrives in its ``start`` event and goes into the messages sent back, and each
direction's resampler carries filter history from one message to the next. The core therefore
calls ``for_session()`` once per session (see :mod:`wavewire.core.serializers.base`): it returns
a fresh instance with the same configuration, so no id or audio leaks from one call to another.
The configured instance itself is never used for a call and can be shared.

Common behaviour (each provider's module gives its message shapes; docs/telephony.md compares
them with Pipecat's, message by message):

- Received audio becomes :class:`InputAudioRawFrame` at ``sample_rate``, mono; a message whose
  audio is still filling the resampler is ignored (``None``).
- Sent audio is any :class:`AudioRawFrame`, mono, at whatever rate it has (resampled to the
  provider's); nothing is sent while the resampler fills. ``flush()`` sends what the resampler
  still holds (about 60 ms, up to 115 ms, at 16 kHz -> 8 kHz): the core calls it at the end of
  each utterance (``TTSStoppedFrame``, ``EndFrame``), after its last chunk, so the last word
  reaches the call then and not when the next utterance starts. :class:`InterruptionFrame`
  sends the provider's clear message and resets the outgoing resampler, so no tail of the
  interrupted speech leaks into the next. :class:`OutputTransportMessageFrame` goes as JSON
  text, as given: it is how an application sends what has no frame (a mark, a checkpoint).
- RTVI messages (a transport message whose ``label`` is ``"rtvi-ai"``) are not sent
  (``None``), as in Pipecat (``ignore_rtvi_messages=True``): they are for web clients, and a
  phone provider does not understand them. ``ignore_rtvi_messages=False`` sends them.
- Stream ids. A ``start`` event's stream id replaces a configured one (Pipecat keeps the
  configured one, but its serializer never reads ``start``: its runner builds the serializer
  from that same event, so the two cannot differ there). The provider addresses this
  connection's stream by the id it announced; messages under another id would be ignored.
  Before any id is known a media message raises :class:`SerializationError` where the
  provider needs the id (Twilio, Exotel; Pipecat would send ``null``, which the provider
  rejects), and a clear message is not sent (``None``; Pipecat sends ``null``): no media can
  have been sent yet, so there is nothing to clear.
- A DTMF event becomes :class:`InputDTMFFrame`. Every other event, known (``connected``,
  ``start``, ``stop``, ``mark``, ...) or not, becomes :class:`InputTransportMessageFrame`
  holding the parsed JSON (Pipecat drops them), so the application sees call metadata (custom
  parameters, caller number) that only the wire carries; ``start`` also sets the stream and
  call ids.
- A malformed message (not JSON, not an object, a field of the wrong type, a payload that is
  not base64) raises :class:`SerializationError`, and nothing else does (Pipecat logs and
  drops it; the core drops it too, and reports it as ``MessageDropped``).
- Resampling is soxr's ``HQ`` (Pipecat: ``VHQ``); see :mod:`._codecs` for why, with numbers.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, TypeVar

from wavewire.core.frames import (
    PCM16_SAMPLE_WIDTH,
    AudioRawFrame,
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    InputTransportMessageFrame,
    InterruptionFrame,
    OutputTransportMessageFrame,
)
from wavewire.core.serializers._codecs import (
    ENCODINGS,
    Encoding,
    StreamResampler,
    decode,
    encode,
    require_audioop,
)
from wavewire.core.serializers.base import SerializationError, dumps_message, loads_message

__all__ = ["TelephonySerializer"]

_T = TypeVar("_T", bound="TelephonySerializer")

JSONObject = dict[str, Any]


class TelephonySerializer:
    """Base of the provider serializers (see the module docstring)."""

    #: The provider's name, for error messages.
    provider = ""

    def __init__(
        self,
        *,
        received_encoding: Encoding,
        sent_encoding: Encoding,
        provider_sample_rate: int,
        sample_rate: int,
        stream_id: str | None,
        call_id: str | None,
        ignore_rtvi_messages: bool,
        config: dict[str, Any],
    ) -> None:
        self._received_encoding = _encoding("received_encoding", received_encoding)
        self._sent_encoding = _encoding("sent_encoding", sent_encoding)
        self._provider_rate = positive_int("provider sample rate", provider_sample_rate)
        self._sample_rate = positive_int("sample_rate", sample_rate)
        self._stream_id = optional_str("stream id", stream_id)
        self._call_id = optional_str("call id", call_id)
        if not isinstance(ignore_rtvi_messages, bool):
            raise TypeError(f"ignore_rtvi_messages must be a bool, got {ignore_rtvi_messages!r}")
        self._ignore_rtvi = ignore_rtvi_messages
        self._config = config
        if {received_encoding, sent_encoding} != {"L16"}:
            require_audioop()
        self._inbound = StreamResampler(self._provider_rate, self._sample_rate)
        self._outbound: StreamResampler | None = None

    def for_session(self: _T) -> _T:
        """A fresh instance with this one's configuration, for one new call."""
        return type(self)(**self._config)

    def __repr__(self) -> str:
        args = ", ".join(f"{key}={value!r}" for key, value in self._config.items())
        return f"{type(self).__name__}({args})"

    @property
    def sample_rate(self) -> int:
        """The application's rate: received audio is delivered at it."""
        return self._sample_rate

    @property
    def provider_sample_rate(self) -> int:
        """The rate of the audio on the wire."""
        return self._provider_rate

    @property
    def received_encoding(self) -> Encoding:
        """The encoding of the audio the provider sends us."""
        return self._received_encoding

    @property
    def sent_encoding(self) -> Encoding:
        """The encoding of the audio we send the provider."""
        return self._sent_encoding

    @property
    def stream_id(self) -> str | None:
        """The provider's stream id: as configured, or learned from the ``start`` event."""
        return self._stream_id

    @property
    def call_id(self) -> str | None:
        """The provider's call id: as configured, or learned from the ``start`` event."""
        return self._call_id

    # -- sending ---------------------------------------------------------------------------

    def serialize(self, frame: Frame) -> bytes | str | None:
        """Audio as the provider's media message, an interruption as its clear message, a
        transport message as JSON text; ``None`` for anything else (see the module docstring).

        Raises :class:`SerializationError` for audio that is not mono 16-bit, a message that
        is not JSON-serializable, or a media message that needs the stream id before it is
        known.
        """
        if isinstance(frame, AudioRawFrame):
            return self._serialize_audio(frame)
        if isinstance(frame, InterruptionFrame):
            message = self._clear_message()
            if self._outbound is not None:
                self._outbound.clear()
            return message
        if isinstance(frame, OutputTransportMessageFrame):
            if self._ignore_rtvi and is_rtvi_message(frame.message):
                return None
            return dumps_message(frame.message)
        return None

    def flush(self) -> bytes | str | None:
        """The end of an utterance: what the outgoing resampler still holds, as one media
        message (``None``: nothing held). The core calls it after an utterance's last chunk
        (``TTSStoppedFrame``, ``EndFrame``), so the last word is not held back until the next
        utterance pushes it out; the resampler then starts afresh.

        """
        # A resampler exists only once a media message was built, so its id check passed.
        resampler = self._outbound
        if resampler is None:
            return None
        pcm = resampler.flush()
        if not pcm:
            return None
        return self._media_message(encode(self._sent_encoding, pcm))

    def _serialize_audio(self, frame: AudioRawFrame) -> bytes | str | None:
        if frame.num_channels != 1:
            raise SerializationError(f"{self.provider} carries mono audio, got {frame!r}")
        if len(frame.audio) % PCM16_SAMPLE_WIDTH:
            raise SerializationError(f"{frame!r} does not hold whole 16-bit samples")
        self._check_can_send_media()
        resampler = self._outbound
        if resampler is None or resampler.in_rate != frame.sample_rate:
            resampler = self._outbound = StreamResampler(frame.sample_rate, self._provider_rate)
        pcm = resampler.process(frame.audio)
        return self._media_message(encode(self._sent_encoding, pcm)) if pcm else None

    def _check_can_send_media(self) -> None:
        """Raise :class:`SerializationError` if a media message cannot be built yet."""

    def _media_message(self, audio: bytes) -> bytes | str:
        raise NotImplementedError

    def _clear_message(self) -> str | None:
        raise NotImplementedError

    def require_stream_id(self, what: str) -> str:
        """The stream id, or :class:`SerializationError` before it is known."""
        if self._stream_id is None:
            raise SerializationError(
                f"{self.provider}'s {what} message needs the stream id: none was configured "
                "and no start event has given it yet"
            )
        return self._stream_id

    # -- receiving -------------------------------------------------------------------------

    def audio_frame(self, audio: bytes) -> InputAudioRawFrame | None:
        """Received provider audio as a frame at the application's rate (``None``: no output
        from the resampler yet)."""
        pcm = self._inbound.process(decode(self._received_encoding, audio))
        if not pcm:
            return None
        return InputAudioRawFrame(audio=pcm, sample_rate=self._sample_rate, num_channels=1)

    def set_provider_sample_rate(self, rate: int) -> None:
        """Use ``rate`` on the wire from now on (the provider said so); resamplers restart."""
        if rate != self._provider_rate:
            self._provider_rate = rate
            self._inbound = StreamResampler(rate, self._sample_rate)
            self._outbound = None

    def learn_ids(self, stream_id: str | None, call_id: str | None) -> None:
        """Keep the ids a ``start`` event gave (``None``: not given, keep the previous one)."""
        if stream_id is not None:
            self._stream_id = stream_id
        if call_id is not None:
            self._call_id = call_id


# -- helpers for the providers' modules ------------------------------------------------------


def positive_int(arg: str, value: object) -> int:
    # bool is an int subclass, but True as a rate is surely a mistake.
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{arg} must be a positive int, got {value!r}")
    return value


def _encoding(arg: str, value: object) -> Encoding:
    for encoding in ENCODINGS:
        if value == encoding:
            return encoding
    raise ValueError(f"{arg} must be one of {ENCODINGS}, got {value!r}")


def optional_str(arg: str, value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{arg} must be a str or None, got {value!r}")
    return value


def load_event(data: bytes | str) -> JSONObject:
    """A received JSON text message as an object (``bytes``: UTF-8 JSON, as Pipecat accepts)."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SerializationError(f"message is not UTF-8 JSON: {exc}") from exc
    message = loads_message(data)
    if not isinstance(message, dict):
        raise SerializationError(f"message is not a JSON object: {data[:80]!r}")
    return message


def get_object(message: JSONObject, key: str) -> JSONObject:
    """``message[key]``, which must be a JSON object."""
    value = message.get(key)
    if not isinstance(value, dict):
        raise SerializationError(f"{key!r} is not a JSON object in {_event(message)}")
    return value


def get_str(message: JSONObject, key: str) -> str:
    """``message[key]``, which must be a string."""
    value = message.get(key)
    if not isinstance(value, str):
        raise SerializationError(f"{key!r} is not a string in {_event(message)}")
    return value


def get_optional_str(message: JSONObject, key: str) -> str | None:
    """``message[key]`` if present, which must then be a string."""
    if key not in message:
        return None
    return get_str(message, key)


def decode_payload(message: JSONObject, key: str = "payload") -> bytes:
    """The base64 audio in ``message[key]``."""
    try:
        return base64.b64decode(get_str(message, key), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SerializationError(f"{key!r} is not base64 in {_event(message)}: {exc}") from exc


def encode_payload(audio: bytes) -> str:
    return base64.b64encode(audio).decode("ascii")


def dtmf_frame(digit: str) -> InputDTMFFrame:
    try:
        return InputDTMFFrame(button=digit)
    except ValueError as exc:
        raise SerializationError(str(exc)) from exc


#: The ``label`` of RTVI messages (Pipecat's ``RTVI.MESSAGE_LABEL``): they are for web clients.
RTVI_MESSAGE_LABEL = "rtvi-ai"


def is_rtvi_message(message: object) -> bool:
    """Whether a transport message is an RTVI message (Pipecat's ``should_ignore_frame``)."""
    return isinstance(message, dict) and message.get("label") == RTVI_MESSAGE_LABEL


def event_message(message: JSONObject) -> InputTransportMessageFrame:
    return InputTransportMessageFrame(message=message)


def _event(message: JSONObject) -> str:
    event = message.get("event")
    return f"the {event!r} event" if isinstance(event, str) else "the message"


class MediaStreamSerializer(TelephonySerializer):
    """The JSON media-stream dialect Twilio and Exotel share: ``media``/``clear`` messages
    addressed to a stream id, ``start`` carrying the stream and call ids, ``dtmf`` digits. The
    providers differ only in the JSON keys, which subclasses name."""

    #: Key of the stream id in ``media``, ``clear`` and ``start`` messages.
    stream_key: str
    #: Key of the call id in the ``start`` object.
    call_key: str

    def _check_can_send_media(self) -> None:
        self.require_stream_id("media")

    def _media_message(self, audio: bytes) -> str:
        return json.dumps(
            {
                "event": "media",
                self.stream_key: self.require_stream_id("media"),
                "media": {"payload": encode_payload(audio)},
            }
        )

    def _clear_message(self) -> str | None:
        # No stream id yet: no media can have been sent (it needs the id), nothing to clear.
        if self.stream_id is None:
            return None
        return json.dumps({"event": "clear", self.stream_key: self.stream_id})

    def deserialize(self, data: bytes | str) -> Frame | None:
        """Decode one event (see the provider's module docstring)."""
        message = load_event(data)
        event = get_str(message, "event")
        if event == "media":
            return self.audio_frame(decode_payload(get_object(message, "media")))
        if event == "dtmf":
            return dtmf_frame(get_str(get_object(message, "dtmf"), "digit"))
        if event == "start":
            start = get_object(message, "start")
            stream_id = get_optional_str(start, self.stream_key)
            if stream_id is None:
                stream_id = get_optional_str(message, self.stream_key)
            self.learn_ids(stream_id, get_optional_str(start, self.call_key))
        return event_message(message)
