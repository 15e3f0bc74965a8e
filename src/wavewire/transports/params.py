"""Transport parameters, named and defaulted as Pipecat's ``TransportParams`` and
``WebsocketServerParams`` so that code moving from Pipecat reads the same."""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field

from wavewire.core.config import DEFAULT_MAX_MESSAGE_SIZE, ClientPolicy, ServerConfig
from wavewire.core.serializers.base import FrameSerializer
from wavewire.core.serializers.protobuf import ProtobufFrameSerializer

__all__ = ["TransportParams", "WebsocketServerParams"]

#: Pipecat's rates when ``audio_in_sample_rate``/``audio_out_sample_rate`` are unset.
DEFAULT_AUDIO_IN_SAMPLE_RATE = 16000
DEFAULT_AUDIO_OUT_SAMPLE_RATE = 24000


@dataclass(kw_only=True)
class TransportParams:
    """Audio settings shared by every transport (Pipecat's fields and defaults)."""

    audio_in_enabled: bool = False
    #: None means 16000.
    audio_in_sample_rate: int | None = None
    audio_in_channels: int = 1
    audio_out_enabled: bool = False
    #: None means 24000.
    audio_out_sample_rate: int | None = None
    audio_out_channels: int = 1
    audio_out_10ms_chunks: int = 4
    audio_out_end_silence_secs: int = 2

    @property
    def effective_audio_in_sample_rate(self) -> int:
        return self.audio_in_sample_rate or DEFAULT_AUDIO_IN_SAMPLE_RATE

    @property
    def effective_audio_out_sample_rate(self) -> int:
        return self.audio_out_sample_rate or DEFAULT_AUDIO_OUT_SAMPLE_RATE


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

    def server_config(self) -> ServerConfig:
        """The core configuration these parameters describe (validated there)."""
        return ServerConfig(
            serializer=self.serializer,
            session_timeout=self.session_timeout,
            client_policy=self.client_policy,
            allowed_origins=self.allowed_origins,
            max_message_size=self.max_message_size,
            open_timeout=self.open_timeout,
            close_timeout=self.close_timeout,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_timeout,
        )
