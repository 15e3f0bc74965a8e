"""bench/peers.py runs end to end: every row of every installed server yields a number.

A smoke run (``--quick``: tiny counts, one round) of one server per implementation in the
harness; speed is never asserted (numbers are measured by bench/peers.py itself, not by tests).
The peers missing here (aiohttp, picows, uvloop: the ``bench`` extra) are skipped by the
harness and checked in ``tox -e bench``, which installs them.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

PEERS = Path(__file__).resolve().parents[2] / "bench" / "peers.py"

#: One server per code path of the harness: each peer library, the raw floor, uvloop, and
#: wavewire's three driver/backend pairs.
SERVERS = {
    "websockets": ("websockets",),
    "aiohttp/uvloop": ("aiohttp", "uvloop"),
    "picows": ("picows",),
    "raw": (),
    "wavewire-anyio-trio": ("trio",),
    "wavewire-native": (),
}
ROWS = (
    "640 B round trips/s",
    "server CPU per round trip (µs)",
    "pipelined 640 B msgs/s (100 in flight)",
    "server CPU per pipelined 640 B msg (µs)",
    "pipelined 64 KiB MB/s (16 in flight)",
    "server CPU per 64 KiB msg (µs)",
    "handshakes/s (connect, one echo, close)",
    "server CPU per handshake (µs)",
    "RSS per idle connection (KiB)",
)
AUDIO_FIGURES = ("cpu_per_session_second", "gap_error_p99_ms", "lost_percent", "send_lag_p99_ms")


def test_quick_run_fills_every_row(tmp_path: Path) -> None:
    installed = [
        name
        for name, modules in SERVERS.items()
        if all(importlib.util.find_spec(module) for module in modules)
    ]
    out = tmp_path / "peers.json"
    command = [sys.executable, str(PEERS), "--quick", "--servers", ",".join(SERVERS)]
    done = subprocess.run(
        [*command, "--json", str(out)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "FAILED" not in done.stdout, done.stdout
    assert "| row | " + " | ".join(installed) + " |" in done.stdout
    assert "| server | N | CPU-s per session-s |" in done.stdout
    table = json.loads(out.read_text())["table"]
    for row in ROWS:
        for name in installed:
            cell = table[row][name]
            assert math.isfinite(cell["median"]) and math.isfinite(cell["ratio"]), (row, name)
    wavewire = [name for name in installed if name.startswith("wavewire")]
    for n in (1, 3):
        for name in wavewire:
            for figure in AUDIO_FIGURES:
                assert math.isfinite(table[f"audio N={n}"][name][figure]), (n, name, figure)
