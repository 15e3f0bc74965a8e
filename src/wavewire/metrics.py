"""Prometheus metrics for a wavewire server (the ``metrics`` extra: ``prometheus-client``).

::

    metrics = ServerMetrics()
    params = WebsocketServerParams(
        event_observer=metrics.observe,
        http_handler=metrics.http_handler(fallback=my_handler),  # GET /metrics
    )
    transport = WebsocketServerTransport(params)
    metrics.bind(transport)  # the gauges read the transport's state at scrape time

Every counter is counted from the core's events (``observe`` is the transport's
``event_observer``: one observer fed the event stream), never from a bookkeeping of its own;
the gauges read state the core keeps (sessions, TCP connections, bytes) when scraped. Output
audio counters (underruns, stalls, late seconds, chunks dropped) are added when each session
ends, from the final ``AudioStats`` its ``ClientDisconnected`` carries. Imported by nothing
else in wavewire.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from wavewire.core.admission import HttpRequest, HttpResponse
from wavewire.core.events import (
    AudioChunkDropped,
    ClientConnected,
    ClientDisconnected,
    ClientRejected,
    DisconnectCause,
    HandshakeFailed,
    MessageDropped,
    ServerEvent,
    SessionTimeout,
)
from wavewire.transports.server import WebsocketServerTransport

__all__ = ["CONTENT_TYPE", "ServerMetrics"]

#: Prometheus text exposition format 0.0.4.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ServerMetrics:
    """The metrics of one server, in ``registry`` (a new one by default). See the module
    docstring; ``prefix`` starts every metric name."""

    def __init__(self, registry: CollectorRegistry | None = None, prefix: str = "wavewire") -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r, p = self.registry, prefix
        self.sessions = Gauge(f"{p}_sessions_active", "Sessions adopted and not ended", registry=r)
        self.handshakes = Counter(
            f"{p}_handshakes",
            "WebSocket handshakes by outcome (accepted, refused) and HTTP status",
            ["outcome", "status"],
            registry=r,
        )
        self.sessions_ended = Counter(
            f"{p}_sessions_ended", "Sessions ended, by cause", ["cause"], registry=r
        )
        self.replacements = Counter(
            f"{p}_replacements", "Sessions replaced by a newer client", registry=r
        )
        self.rejections = Counter(
            f"{p}_rejections",
            "Clients closed after the handshake without a session, by close code",
            ["code"],
            registry=r,
        )
        self.session_timeouts = Counter(
            f"{p}_session_timeouts", "Sessions that reached session_timeout", registry=r
        )
        self.messages_dropped = Counter(
            f"{p}_messages_dropped",
            "Received messages the serializer could not read (dropped)",
            registry=r,
        )
        self.audio_chunks_dropped = Counter(
            f"{p}_audio_chunks_dropped", "Paced audio chunks the serializer failed on", registry=r
        )
        self.audio_underruns = Counter(
            f"{p}_audio_underruns", "Output audio underruns, of ended sessions", registry=r
        )
        self.audio_stalls = Counter(
            f"{p}_audio_stalls", "Output audio stalls (late timer), of ended sessions", registry=r
        )
        self.audio_late_seconds = Counter(
            f"{p}_audio_late_seconds",
            "Seconds output audio schedules moved because of stalls, of ended sessions",
            registry=r,
        )
        self._wire = _WireCollector(prefix)
        r.register(self._wire)

    def bind(self, transport: WebsocketServerTransport) -> None:
        """Read TCP connections and bytes from ``transport`` when scraped."""
        self._wire.transport = transport

    def observe(self, events: Sequence[ServerEvent]) -> None:
        """Count one batch of server events (the transport's ``event_observer``)."""
        for event in events:
            if isinstance(event, ClientConnected):
                self.sessions.inc()
                self.handshakes.labels("accepted", "101").inc()
            elif isinstance(event, ClientDisconnected):
                self.sessions.dec()
                self.sessions_ended.labels(event.cause.value).inc()
                if event.cause is DisconnectCause.REPLACED:
                    self.replacements.inc()
                audio = event.audio
                if audio is not None:
                    self.audio_underruns.inc(audio.underruns)
                    self.audio_stalls.inc(audio.stalls)
                    self.audio_late_seconds.inc(audio.late_seconds)
            elif isinstance(event, ClientRejected):
                self.handshakes.labels("accepted", "101").inc()
                self.rejections.labels(str(event.code)).inc()
            elif isinstance(event, HandshakeFailed):
                status = "none" if event.status_code is None else str(event.status_code)
                self.handshakes.labels("refused", status).inc()
            elif isinstance(event, SessionTimeout):
                self.session_timeouts.inc()
            elif isinstance(event, MessageDropped):
                self.messages_dropped.inc()
            elif isinstance(event, AudioChunkDropped):
                self.audio_chunks_dropped.inc()

    def render(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)

    def http_handler(
        self,
        path: str = "/metrics",
        fallback: Callable[[HttpRequest], HttpResponse | None] | None = None,
    ) -> Callable[[HttpRequest], HttpResponse | None]:
        """An ``http_handler`` answering ``GET path`` with the metrics, and anything else
        with ``fallback`` (None: 426)."""

        def handle(request: HttpRequest) -> HttpResponse | None:
            if request.path.partition("?")[0] == path and request.method in ("GET", "HEAD"):
                return HttpResponse(
                    status_code=200, headers=(("Content-Type", CONTENT_TYPE),), body=self.render()
                )
            return None if fallback is None else fallback(request)

        return handle


class _WireCollector(Collector):
    """Open connections and bytes, read from the core at scrape time (wavewire's own wire)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.transport: WebsocketServerTransport | None = None

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        stats = None if self.transport is None else self.transport.wire_stats()
        if stats is None:
            return
        p = self.prefix
        yield GaugeMetricFamily(
            f"{p}_connections_open", "TCP connections the core tracks", value=stats.connections
        )
        yield CounterMetricFamily(
            f"{p}_bytes_received", "Bytes read from clients", value=stats.bytes_received
        )
        yield CounterMetricFamily(
            f"{p}_bytes_sent", "Bytes written to clients", value=stats.bytes_sent
        )
