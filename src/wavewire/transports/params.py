"""Transport parameters, named and defaulted as Pipecat's ``TransportParams`` and
``WebsocketServerParams`` so that code moving from Pipecat reads the same."""

from __future__ import annotations

import math
import random
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from wavewire.core.admission import (
    Accept,
    HandshakeRequest,
    HttpRequest,
    HttpResponse,
    Reject,
    SessionKey,
)
from wavewire.core.config import (
    DEFAULT_MAX_MESSAGE_SIZE,
    AudioOutConfig,
    ClientConfig,
    ClientPolicy,
    ServerConfig,
    _check_count,
    _check_positive,
)
from wavewire.core.errors import HandshakeRejected
from wavewire.core.events import ServerEvent
from wavewire.core.serializers.base import FrameSerializer
from wavewire.core.serializers.protobuf import ProtobufFrameSerializer
from wavewire.core.session.audio import AudioOutput

__all__ = [
    "ReconnectPolicy",
    "TransportParams",
    "WebsocketClientParams",
    "WebsocketServerParams",
]

#: Pipecat's rates when ``audio_in_sample_rate``/``audio_out_sample_rate`` are unset.
DEFAULT_AUDIO_IN_SAMPLE_RATE = 16000
DEFAULT_AUDIO_OUT_SAMPLE_RATE = 24000


@dataclass(kw_only=True)
class TransportParams:
    """Audio settings shared by every transport (Pipecat's fields and defaults).

    Input: received audio reaches ``input()`` only with ``audio_in_enabled``. Output: with
    ``audio_out_enabled``, audio sent through ``output()`` is cut into chunks of
    ``audio_out_10ms_chunks`` x 10 ms and paced at real time by the core
    (``core/session/audio.py``); without it, sending audio is a ``ValueError``.
    """

    #: Received audio reaches ``input()`` (otherwise it is dropped).
    audio_in_enabled: bool = False
    #: None means 16000.
    audio_in_sample_rate: int | None = None
    #: Channels of received audio.
    audio_in_channels: int = 1
    #: Audio may be sent through ``output()``, paced (otherwise sending audio is a ValueError).
    audio_out_enabled: bool = False
    #: None means 24000. Mono output audio at another rate is resampled to it (the
    #: ``telephony`` extra); other channel counts are refused.
    audio_out_sample_rate: int | None = None
    #: Channels of output audio.
    audio_out_channels: int = 1
    #: Output audio chunk length in 10 ms units: 4 sends 40 ms messages.
    audio_out_10ms_chunks: int = 4
    #: Seconds of paced silence after the audio on ``EndFrame``, before the close.
    audio_out_end_silence_secs: float = 2
    #: Seconds of audio sent ahead of real time at the start of each stream, so that the
    #: peer's buffer does not starve on network jitter (0: Pipecat's behaviour, no lead).
    audio_out_lead_secs: float = 0.0
    #: Seconds of output audio queued per peer above which ``output().send()`` waits.
    audio_out_max_queued_secs: float = 30.0

    @property
    def effective_audio_in_sample_rate(self) -> int:
        return self.audio_in_sample_rate or DEFAULT_AUDIO_IN_SAMPLE_RATE

    @property
    def effective_audio_out_sample_rate(self) -> int:
        return self.audio_out_sample_rate or DEFAULT_AUDIO_OUT_SAMPLE_RATE

    def audio_out_config(self, *, add_wav_header: bool = False) -> AudioOutConfig | None:
        """The core's output audio settings, or None when ``audio_out_enabled`` is off.

        Validated here (``ValueError``/``TypeError`` naming the core's field), not at the first
        connection.
        """
        if not self.audio_out_enabled:
            return None
        config = AudioOutConfig(
            sample_rate=self.effective_audio_out_sample_rate,
            num_channels=self.audio_out_channels,
            chunks_10ms=self.audio_out_10ms_chunks,
            lead=self.audio_out_lead_secs,
            end_silence_secs=self.audio_out_end_silence_secs,
            add_wav_header=add_wav_header,
            max_queued_seconds=self.audio_out_max_queued_secs,
        )
        AudioOutput[object](  # the scheduler's own checks, once, now
            sample_rate=config.sample_rate,
            num_channels=config.num_channels,
            chunks_10ms=config.chunks_10ms,
            lead=config.lead,
            end_silence_secs=config.end_silence_secs,
            add_wav_header=config.add_wav_header,
            max_queued_seconds=config.max_queued_seconds,
        )
        return config

    def check_transport_settings(self) -> None:
        """The settings the core's configuration does not carry, checked like it checks its
        own (``ValueError``/``TypeError`` naming the field)."""
        for name in ("audio_in_enabled", "audio_out_enabled"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool")
        if self.audio_in_sample_rate is not None:
            _check_count("audio_in_sample_rate", self.audio_in_sample_rate, minimum=100)
        _check_count("audio_in_channels", self.audio_in_channels)
        _check_positive("write_timeout", getattr(self, "write_timeout", None))
        _check_count("max_output_buffer", getattr(self, "max_output_buffer", 1))
        _check_count("max_input_queue", getattr(self, "max_input_queue", 0), minimum=0)

    def check_serializer_format(self, serializer: FrameSerializer) -> None:
        """A serializer whose wire carries no audio format (``RawFrameSerializer``: raw PCM)
        is configured with one: it must be the format of the enabled directions."""
        rate, channels = (
            getattr(serializer, "sample_rate", None),
            getattr(serializer, "num_channels", None),
        )
        if not isinstance(rate, int) or not isinstance(channels, int):
            return
        directions = []
        if self.audio_in_enabled:
            directions.append(
                ("audio_in", self.effective_audio_in_sample_rate, self.audio_in_channels)
            )
        if self.audio_out_enabled:
            directions.append(
                ("audio_out", self.effective_audio_out_sample_rate, self.audio_out_channels)
            )
        for name, want_rate, want_channels in directions:
            if (rate, channels) != (want_rate, want_channels):
                raise ValueError(
                    f"{type(serializer).__name__} sends and receives {rate} Hz x {channels}"
                    f" channel(s), but {name} is {want_rate} Hz x {want_channels}: make them match"
                    f" ({name}_sample_rate, {name}_channels)"
                )


@dataclass(kw_only=True)
class WebsocketServerParams(TransportParams):
    """Pipecat's server parameters plus the limits and policies wavewire adds.

    Unlike Pipecat, ``serializer`` defaults to the protobuf serializer: a server that silently
    drops every message (Pipecat's ``serializer=None``) is a trap.
    """

    add_wav_header: bool = False
    serializer: FrameSerializer = field(default_factory=ProtobufFrameSerializer)
    #: Seconds after each client's adoption at which ``on_session_timeout`` fires; None: never.
    session_timeout: float | None = None
    #: ``replace`` (Pipecat's documented behaviour), ``reject`` (1013) or ``multi``.
    client_policy: ClientPolicy = "replace"
    #: Allowed Origin header values (exact match; ``None`` in the list admits clients sending
    #: none); None allows any origin.
    allowed_origins: Sequence[str | None] | None = None
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    open_timeout: float | None = 10.0
    close_timeout: float | None = 10.0
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    #: Serve ``wss://`` with this context.
    ssl_context: ssl.SSLContext | None = None
    #: Seconds a socket write may block (peer not reading) before the client is disconnected.
    write_timeout: float | None = 10.0
    #: Bytes of output queued per client above which ``output().send()`` waits.
    max_output_buffer: int = 256 * 1024
    #: Received frames buffered for ``input()`` before the socket stops being read.
    max_input_queue: int = 64
    #: permessage-deflate (RFC 7692), off by default: audio does not compress.
    compression: bool = False
    #: Decides each valid upgrade request before it is accepted: return ``Accept(...)`` (with a
    #: subprotocol or extra headers) or ``Reject(status_code=401, ...)``. The place for
    #: authentication (compare tokens with ``hmac.compare_digest``). Runs inside the core:
    #: quick, synchronous, no I/O.
    handshake_hook: Callable[[HandshakeRequest], Accept | Reject] | None = None
    #: Answers plain HTTP requests on the same port (a demo page).
    http_handler: Callable[[HttpRequest], HttpResponse | None] | None = None
    #: Subprotocols the server speaks, in order of preference.
    subprotocols: Sequence[str] = ()
    #: Answer ``GET /healthz`` (alive) and ``GET /readyz`` (503 while draining or at
    #: ``max_sessions``) with small JSON bodies, before ``http_handler``.
    health_checks: bool = True
    #: Where each request's session key is read (``SessionKey("path" | "query" | "header",
    #: ...)``): the client policy applies per key (a proxy hashes on it). None: per server.
    session_key: SessionKey | None = None
    #: Most sessions at once: ``/readyz`` answers 503 at the cap, and a newcomer that would
    #: add a session is closed with 1013. None: no cap.
    max_sessions: int | None = None
    #: Seconds ``drain()`` (SIGTERM on ``wavewire serve``) lets sessions run before closing
    #: them with 1012 "service restart"; None: until they end.
    drain_timeout: float | None = 30.0
    #: Called with every batch of the core's server events (all but ``FrameReceived``), in
    #: order, before the handlers run: where ``wavewire.metrics`` counts. Must not block.
    event_observer: Callable[[Sequence[ServerEvent]], None] | None = None

    def server_config(self) -> ServerConfig:
        """The core configuration these parameters describe (validated there)."""
        self.check_transport_settings()
        self.check_serializer_format(self.serializer)
        return ServerConfig(
            audio_out=self.audio_out_config(add_wav_header=self.add_wav_header),
            serializer=self.serializer,
            session_timeout=self.session_timeout,
            client_policy=self.client_policy,
            allowed_origins=self.allowed_origins,
            max_message_size=self.max_message_size,
            open_timeout=self.open_timeout,
            close_timeout=self.close_timeout,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_timeout,
            compression=self.compression,
            handshake_hook=self.handshake_hook,
            http_handler=self.http_handler,
            subprotocols=self.subprotocols,
            health_checks=self.health_checks,
            session_key=self.session_key,
            max_sessions=self.max_sessions,
            drain_timeout=self.drain_timeout,
        )


#: Close codes after which a client reconnects by default: the server went away or restarts
#: (1001, 1012), the connection was lost or failed on the server's side (1006, 1011, 1014), or
#: the server said "try again later" (1013). 1000 (the session is over), policy closes (1008,
#: 4000-4999) and protocol errors (1002, 1003, 1007, 1009, 1010) are final.
DEFAULT_RETRY_CODES = frozenset({1001, 1006, 1011, 1012, 1013, 1014})


@dataclass(frozen=True, kw_only=True)
class ReconnectPolicy:
    """When, and how soon, a client transport reconnects after losing its connection.

    Before attempt ``n`` (1, 2, ...) the transport waits a uniformly random time in
    ``[0, min(cap, base * 2 ** (n - 1))]`` ("full jitter"): the first attempt is delayed at
    random too, as RFC 6455 section 7.2.3 asks, so that clients dropped together do not come
    back together, and later attempts back off exponentially up to ``cap``.

    The count starts again only after a connection has stayed open for ``stable_after``
    seconds. A server that accepts the handshake and closes at once (1013 "try again later",
    or any close within a few seconds) keeps the count going, so the client backs off instead
    of reconnecting about four times a second forever. After a 1013 the delay is never below
    ``base``: the server asked to wait.

    Never reconnects after a close the transport started, after a close code not in
    ``retry_codes`` (1008 and 4000-4999, policy closes, can never be in it), or after a
    handshake rejected with a 4xx status (the server refuses this client: asking again at once
    is a reconnect storm). Other connect failures (refused, timeout, 5xx, a bad response) are
    retried until ``max_attempts`` consecutive attempts have failed (None: without limit).
    """

    #: Upper bound, in seconds, of the first attempt's random delay; doubled per attempt.
    base: float = 0.5
    #: Largest upper bound of a delay, in seconds.
    cap: float = 30.0
    #: Consecutive failed attempts after which the transport gives up; None: never.
    max_attempts: int | None = None
    #: Close codes (from the server, or 1006 for a lost connection) that lead to a reconnect.
    retry_codes: frozenset[int] = DEFAULT_RETRY_CODES
    #: Seconds a connection must stay open for the next reconnect to count from 1 again.
    stable_after: float = 10.0
    #: Source of uniform numbers in [0, 1) for the jitter (tests pass a fixed one).
    random: Callable[[], float] = field(default=random.random, repr=False)

    def __post_init__(self) -> None:
        for name in ("base", "cap", "stable_after"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number of seconds")
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds")
        attempts: object = self.max_attempts  # callers without a type checker pass anything
        if attempts is not None and (
            isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1
        ):
            raise ValueError("max_attempts must be an int >= 1 or None")
        codes = frozenset(self.retry_codes)
        final = sorted(code for code in codes if code == 1008 or 4000 <= code <= 4999)
        if final:
            raise ValueError(f"retry_codes may not contain policy closes (1008, 4xxx): {final}")
        object.__setattr__(self, "retry_codes", codes)

    def delay(self, attempt: int, *, after_code: int | None = None) -> float:
        """Seconds to wait before attempt ``attempt`` (1 for the first); ``after_code``: the
        close code that ended the last connection, if this attempt follows one (after 1013 the
        delay is at least ``base``)."""
        if attempt < 1:
            raise ValueError("attempts are counted from 1")
        ceiling = min(self.cap, self.base * 2.0 ** min(attempt - 1, 64))
        floor = min(self.base, self.cap) if after_code == 1013 else 0.0
        return floor + (max(ceiling, floor) - floor) * self.random()

    def attempts_after(self, attempts: int, connected_for: float) -> int:
        """The attempt count to go on from after a connection that stayed open
        ``connected_for`` seconds, ``attempts`` having been counted before it: 0 (start again)
        if it was stable, else ``attempts``."""
        return 0 if connected_for >= self.stable_after else attempts

    def reconnects_after(self, code: int) -> bool:
        """Whether a connection that ended with close code ``code`` is reconnected."""
        return code in self.retry_codes

    def retries_after(self, error: BaseException) -> bool:
        """Whether a failed attempt (``HandshakeError`` or ``ConnectError``) is retried."""
        return not (isinstance(error, HandshakeRejected) and 400 <= error.status_code < 500)


@dataclass(kw_only=True)
class WebsocketClientParams(TransportParams):
    """Pipecat's client parameters plus the limits wavewire adds.

    As in Pipecat, ``add_wav_header`` defaults to True: each outgoing audio chunk is sent as a
    complete WAV file (a 44-byte header, then the samples; the core adds it to each paced chunk).
    ``serializer`` defaults to the protobuf serializer. Timeouts and limits default as on the
    server (websockets' values).
    """

    add_wav_header: bool = True
    #: Extra headers for the upgrade request (e.g. ``{"Authorization": "Bearer ..."}``).
    additional_headers: Mapping[str, str] | None = None
    serializer: FrameSerializer = field(default_factory=ProtobufFrameSerializer)
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    #: Seconds for TCP connect, TLS and the opening handshake together.
    open_timeout: float | None = 10.0
    close_timeout: float | None = 10.0
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    #: TLS settings for ``wss://``; None there means ``ssl.create_default_context()`` (the
    #: system's CAs, hostname checked). Giving one for a ``ws://`` URI is a ``ValueError``.
    ssl_context: ssl.SSLContext | None = None
    #: Seconds a socket write may block (server not reading) before the connection is dropped.
    write_timeout: float | None = 10.0
    #: Bytes of output queued above which ``output().send()`` waits.
    max_output_buffer: int = 256 * 1024
    #: Received frames buffered for ``input()`` before the socket stops being read.
    max_input_queue: int = 64
    #: permessage-deflate (RFC 7692), off by default: audio does not compress.
    compression: bool = False
    #: Reconnect after a lost connection: False (Pipecat's behaviour), True for the default
    #: ``ReconnectPolicy()``, or a policy.
    reconnect: ReconnectPolicy | bool = False

    def client_config(self) -> ClientConfig:
        """The core configuration these parameters describe (validated there)."""
        self.check_transport_settings()
        self.check_serializer_format(self.serializer)
        return ClientConfig(
            audio_out=self.audio_out_config(add_wav_header=self.add_wav_header),
            serializer=self.serializer,
            additional_headers=self.additional_headers,
            max_message_size=self.max_message_size,
            open_timeout=self.open_timeout,
            close_timeout=self.close_timeout,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_timeout,
            compression=self.compression,
        )

    @property
    def reconnect_policy(self) -> ReconnectPolicy | None:
        """``reconnect`` as a policy, or None when reconnecting is off."""
        if isinstance(self.reconnect, ReconnectPolicy):
            return self.reconnect
        if self.reconnect is True:
            return ReconnectPolicy()
        if self.reconnect is False:
            return None
        raise TypeError("reconnect must be a bool or a ReconnectPolicy")
