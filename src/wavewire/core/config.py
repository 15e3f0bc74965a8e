"""Frozen, keyword-only configuration of the server and client cores, validated on creation.

Every limit is on by default (websockets' and h11's defaults, see docs/architecture.md); a bad
value raises ``ValueError`` naming the field, here rather than at the first connection.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from .admission import Accept, HandshakeRequest, HttpRequest, HttpResponse, Reject, SessionKey
from .headers import _check_header_value, check_headers
from .serializers.base import FrameSerializer
from .serializers.protobuf import ProtobufFrameSerializer
from .session.audio import AudioOutput

__all__ = ["AudioOutConfig", "ClientConfig", "ClientPolicy", "ServerConfig"]

#: What the server does when a client completes its handshake while another one is adopted.
ClientPolicy = Literal["replace", "reject", "multi"]
_POLICIES: tuple[ClientPolicy, ...] = ("replace", "reject", "multi")

#: 1 MiB: websockets' default and the Pipecat browser client's own cap.
DEFAULT_MAX_MESSAGE_SIZE = 1 << 20
#: h11's default cap on an HTTP head; larger heads get 431.
DEFAULT_MAX_HEAD_SIZE = 16 * 1024


# The checks take ``object``: callers without a type checker pass anything.
def _check_positive(name: str, value: object) -> None:
    """A duration: a positive finite number, or None (off)."""
    if value is None:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{name} must be a positive number or None")


def _check_count(name: str, value: object, *, minimum: int = 1, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        qualifier = " or None" if allow_none else ""
        raise ValueError(f"{name} must be an int >= {minimum}{qualifier}")


@dataclass(frozen=True, slots=True, kw_only=True)
class AudioOutConfig:
    """Output audio: its format and pacing (``core/session/audio.py``), validated on creation."""

    sample_rate: int = 24000
    num_channels: int = 1
    #: Chunk length in 10 ms units (Pipecat's ``audio_out_10ms_chunks``): 4 = 40 ms messages.
    chunks_10ms: int = 4
    #: Seconds of audio sent ahead of real time, so the client's buffer never starves.
    lead: float = 0.0
    #: Seconds of silence sent, paced, after the audio on ``EndFrame``.
    end_silence_secs: float = 2.0
    #: Make each audio message a complete WAV file (for clients that decode each message).
    add_wav_header: bool = False
    #: Most seconds of audio queued before sends are refused with ``AudioBufferFull``.
    max_queued_seconds: float = 30.0

    def __post_init__(self) -> None:
        # Build a scheduler once, so a bad value fails here, not at the first client.
        AudioOutput(
            sample_rate=self.sample_rate,
            num_channels=self.num_channels,
            chunks_10ms=self.chunks_10ms,
            lead=self.lead,
            end_silence_secs=self.end_silence_secs,
            add_wav_header=self.add_wav_header,
            max_queued_seconds=self.max_queued_seconds,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class _ConnectionLimits:
    """Settings shared by both roles."""

    #: Largest message accepted, in bytes, checked from frame headers before buffering (1009).
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    #: Most frames one message may arrive in (1009 past it); None derives it from the size cap.
    max_fragments: int | None = None
    #: Largest HTTP head accepted during the handshake.
    max_head_size: int = DEFAULT_MAX_HEAD_SIZE
    #: Seconds for the opening handshake to complete; then the connection is aborted.
    open_timeout: float | None = 10.0
    #: Seconds to wait for the peer's close frame (or the server's TCP close) after ours.
    close_timeout: float | None = 10.0
    #: Seconds between keepalive pings; None disables keepalive.
    ping_interval: float | None = 20.0
    #: Seconds to wait for the pong; the connection is failed with 1011 after it.
    ping_timeout: float | None = 20.0
    #: Turns messages into frames and back (Pipecat's protobuf format by default).
    serializer: FrameSerializer = field(default_factory=ProtobufFrameSerializer)
    #: Paced output audio; None: no pacing, every frame (audio included) is sent at once.
    audio_out: AudioOutConfig | None = None
    #: permessage-deflate (RFC 7692): a server accepts a client's offer, a client offers it.
    #: Off by default: audio does not compress, and compression costs memory and CPU per
    #: connection. Inflated messages are held to ``max_message_size`` like any other (1009).
    compression: bool = False

    def _validate(self) -> None:
        _check_count("max_message_size", self.max_message_size)
        _check_count("max_head_size", self.max_head_size)
        _check_count("max_fragments", self.max_fragments, allow_none=True)
        for name in ("open_timeout", "close_timeout", "ping_interval", "ping_timeout"):
            _check_positive(name, getattr(self, name))
        if not isinstance(self.compression, bool):
            raise TypeError("compression must be a bool")
        if not isinstance(self.serializer, FrameSerializer):
            raise TypeError("serializer must implement FrameSerializer (serialize, deserialize)")

    @property
    def fragment_limit(self) -> int:
        """``max_fragments``, or 1024 frames plus one per 64 bytes of the size cap (so that
        Autobahn's 64-byte-fragment cases fit, and an empty-fragment flood does not)."""
        if self.max_fragments is not None:
            return self.max_fragments
        return 1024 + self.max_message_size // 64


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig(_ConnectionLimits):
    """Configuration of ``ServerProtocol``."""

    #: ``replace`` (default, Pipecat's documented behaviour), ``reject`` (1013) or ``multi``.
    client_policy: ClientPolicy = "replace"
    #: Seconds after adoption at which ``SessionTimeout`` fires, per session; None disables it.
    session_timeout: float | None = None
    #: Origins allowed to connect (exact match); None allows any. Put ``None`` in the list to
    #: admit clients that send no Origin header (non-browser clients).
    allowed_origins: Sequence[str | None] | None = None
    #: Subprotocols the server speaks, in order of preference.
    subprotocols: Sequence[str] = ()
    #: Decides each valid upgrade request; the default accepts, choosing a subprotocol from
    #: ``subprotocols``. Runs inside the core: keep it quick and free of I/O.
    handshake_hook: Callable[[HandshakeRequest], Accept | Reject] | None = None
    #: Answers plain HTTP requests (a demo page); None or a None result sends 426.
    http_handler: Callable[[HttpRequest], HttpResponse | None] | None = None
    #: Answer ``GET /healthz`` and ``GET /readyz`` (JSON) before ``http_handler`` sees them.
    health_checks: bool = True
    #: Where each request's session key is read (``SessionKey``): the client policy then
    #: applies per key, and a request without one is refused (400). None: per server.
    session_key: SessionKey | None = None
    #: Most sessions at once: ``/readyz`` answers 503 at the cap, and a newcomer that would
    #: add a session is closed with 1013. None: no cap.
    max_sessions: int | None = None
    #: Seconds a drain lets sessions run before closing them with 1012; None: until they end.
    drain_timeout: float | None = 30.0

    def __post_init__(self) -> None:
        self._validate()
        if self.client_policy not in _POLICIES:
            raise ValueError(
                f"client_policy must be one of {_POLICIES}, got {self.client_policy!r}"
            )
        _check_positive("session_timeout", self.session_timeout)
        _check_positive("drain_timeout", self.drain_timeout)
        _check_count("max_sessions", self.max_sessions, allow_none=True)
        if not isinstance(self.health_checks, bool):
            raise TypeError("health_checks must be a bool")
        if self.session_key is not None and not isinstance(self.session_key, SessionKey):
            raise TypeError("session_key must be a SessionKey or None")
        if self.allowed_origins is not None:
            if isinstance(self.allowed_origins, str):
                raise TypeError("allowed_origins must be a sequence of origins, not one str")
            object.__setattr__(self, "allowed_origins", tuple(self.allowed_origins))
        if isinstance(self.subprotocols, str):
            raise TypeError("subprotocols must be a sequence of str, not one str")
        object.__setattr__(self, "subprotocols", tuple(self.subprotocols))


#: Request headers the client handshake owns; a second copy would make the request ambiguous.
_HANDSHAKE_HEADERS = frozenset(
    (
        "host",
        "upgrade",
        "connection",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-protocol",
        "sec-websocket-extensions",
        "origin",
        "content-length",
        "transfer-encoding",
    )
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientConfig(_ConnectionLimits):
    """Configuration of ``ClientProtocol``."""

    #: Extra request headers; a value with CR or LF is a ``ValueError`` here, never sent.
    additional_headers: Mapping[str, str] | Sequence[tuple[str, str]] | None = None
    #: Subprotocols to offer, in order of preference.
    subprotocols: Sequence[str] = ()
    #: Value of the Origin header, if any.
    origin: str | None = None
    #: Value of the User-Agent header; None sends none.
    user_agent: str | None = "wavewire"
    #: Most bytes of a rejected handshake's response body kept for ``HandshakeRejected``.
    max_rejection_body: int = 64 * 1024

    def __post_init__(self) -> None:
        self._validate()
        headers = self.additional_headers
        pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers or ())
        checked = check_headers(pairs)
        for name, _ in checked:
            if name.lower() in _HANDSHAKE_HEADERS:
                raise ValueError(
                    f"header {name!r} is set by the handshake itself and cannot be added"
                    " (use subprotocols= for Sec-WebSocket-Protocol, origin= for Origin)"
                )
        object.__setattr__(self, "additional_headers", checked)
        if isinstance(self.subprotocols, str):
            raise TypeError("subprotocols must be a sequence of str, not one str")
        object.__setattr__(self, "subprotocols", tuple(self.subprotocols))
        for name in ("origin", "user_agent"):
            value = getattr(self, name)
            if value is not None:
                _check_header_value(name, value)
        _check_count("max_rejection_body", self.max_rejection_body, minimum=0)

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        """``additional_headers`` as validated pairs."""
        headers = self.additional_headers
        assert isinstance(headers, tuple)
        return headers
