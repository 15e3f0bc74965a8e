"""``wavewire.metrics`` on a real server: what /metrics says matches what the clients saw."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from wavewire import SessionKey, WebsocketServerTransport
from wavewire.core.events import Disconnected
from wavewire.metrics import ServerMetrics
from wavewire.transports.server import DriverName

from .support import LIMIT, Recorder, make_params
from .test_drain import UPGRADE, get, http
from .test_server_transport import IDS, MATRIX
from .wsclient import connect

pytestmark = pytest.mark.anyio


@pytest.fixture(params=MATRIX, ids=IDS)
def driver_backend(request: pytest.FixtureRequest) -> tuple[DriverName, str]:
    pair: tuple[DriverName, str] = request.param
    return pair


@pytest.fixture
def anyio_backend(driver_backend: tuple[DriverName, str]) -> str | tuple[str, dict[str, Any]]:
    from .support import backend_on_synthetic_clock

    return backend_on_synthetic_clock(driver_backend[1])


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, headers, body = await http(port, get("/metrics"))
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    return samples(body.decode())


async def test_metrics_count_what_the_clients_saw(driver_backend: tuple[DriverName, str]) -> None:
    metrics = ServerMetrics()
    params = make_params(
        session_key=SessionKey("query", "sid"),
        max_sessions=2,
        drain_timeout=0.5,
        event_observer=metrics.observe,
        http_handler=metrics.http_handler(),
    )
    transport = WebsocketServerTransport(params, "127.0.0.1", 0, driver=driver_backend[0])
    metrics.bind(transport)
    recorder = Recorder(transport)
    with anyio.fail_after(LIMIT * 2):
        async with transport:
            port = transport.port
            async with connect(port, "/ws?sid=a") as a1, connect(port, "/ws?sid=b"):
                await recorder.wait("on_client_connected", 2)
                async with connect(port, "/ws?sid=c") as c:  # at the cap: 1013
                    assert (await c.next(Disconnected)).code == 1013
                async with connect(port, "/ws?sid=a"):  # replaces a1
                    assert (await a1.next(Disconnected)).code == 1000
                    await recorder.wait("on_client_connected", 3)
                    assert (await http(port, UPGRADE))[0] == 400  # no key
                    seen = await scrape(port)
                    assert seen[("wavewire_sessions_active", ())] == 2
                    assert seen[("wavewire_connections_open", ())] >= 2
                    await transport.drain()  # both sessions: 1012 at drain_timeout
            final = await scrape(port)
    assert final[("wavewire_handshakes_total", (("outcome", "accepted"), ("status", "101")))] == 4
    assert final[("wavewire_handshakes_total", (("outcome", "refused"), ("status", "400")))] == 1
    assert final[("wavewire_replacements_total", ())] == 1
    assert final[("wavewire_rejections_total", (("code", "1013"),))] == 1
    assert final[("wavewire_sessions_active", ())] == 0
    ended_by = {
        dict(labels)["cause"]: value
        for (name, labels), value in final.items()
        if name == "wavewire_sessions_ended_total"
    }
    assert ended_by == {"replaced": 1, "drained": 2}
    assert sum(ended_by.values()) == recorder.count("on_client_disconnected") == 3
    assert final[("wavewire_bytes_received_total", ())] > 0
    assert final[("wavewire_bytes_sent_total", ())] > 0


def test_observe_counts_each_event_kind() -> None:
    from wavewire.core.events import (
        AudioChunkDropped,
        ClientDisconnected,
        ConnectionId,
        ConnectionInfo,
        DisconnectCause,
        HandshakeFailed,
        MessageDropped,
        SessionTimeout,
    )
    from wavewire.core.session.audio import AudioStats

    info = ConnectionInfo(id=ConnectionId(1))
    stats = AudioStats(
        chunks_sent=10,
        bytes_sent=100,
        messages_sent=10,
        underruns=2,
        stalls=3,
        late_seconds=0.25,
        dropped_ms_total=0.0,
        queued_seconds=0.0,
    )
    metrics = ServerMetrics()
    metrics.observe(
        [
            MessageDropped(connection=info, detail="bad", dropped_total=1),
            MessageDropped(connection=info, detail="bad", dropped_total=2),
            AudioChunkDropped(connection=info, detail="bad", dropped_total=1),
            SessionTimeout(connection=info),
            HandshakeFailed(connection_id=ConnectionId(2), status_code=None, detail="eof"),
            ClientDisconnected(
                connection=info, code=1000, reason="", cause=DisconnectCause.CLOSED_BY_PEER,
                audio=stats,
            ),
        ]
    )  # fmt: skip
    seen = samples(metrics.render().decode())
    assert seen[("wavewire_messages_dropped_total", ())] == 2
    assert seen[("wavewire_audio_chunks_dropped_total", ())] == 1
    assert seen[("wavewire_session_timeouts_total", ())] == 1
    assert seen[("wavewire_handshakes_total", (("outcome", "refused"), ("status", "none")))] == 1
    assert seen[("wavewire_audio_underruns_total", ())] == 2
    assert seen[("wavewire_audio_stalls_total", ())] == 3
    assert seen[("wavewire_audio_late_seconds_total", ())] == 0.25
    # Unbound: no wire metrics (nothing to read them from).
    assert ("wavewire_connections_open", ()) not in seen


def test_nothing_else_in_wavewire_imports_the_metrics_or_prometheus_client() -> None:
    import pkgutil
    import subprocess
    import sys

    import wavewire

    modules = [
        info.name
        for info in pkgutil.walk_packages(wavewire.__path__, "wavewire.")
        if not info.name.startswith(("wavewire.metrics", "wavewire.pipecat"))
        and info.name != "wavewire.__main__"
    ]
    code = "".join(f"import {name}\n" for name in modules) + (
        "import sys\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'prometheus_client'"
        " or m == 'wavewire.metrics'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    assert "wavewire.cli" in modules
