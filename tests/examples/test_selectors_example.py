"""Runs examples/selectors_echo_server.py for real and talks to it with the `websockets` client,
an implementation nobody here wrote: the core, driven by a plain selectors loop, interoperates."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

websockets_sync = pytest.importorskip("websockets.sync.client")

EXAMPLE = pathlib.Path(__file__).parents[2] / "examples" / "selectors_echo_server.py"


def test_selectors_example_echoes_audio_and_messages() -> None:
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--port", "0", "--max-seconds", "20"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening on 127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        with websockets_sync.connect(f"ws://127.0.0.1:{port}/", open_timeout=5) as ws:
            ws.send(b"\x01\x00\x02\x00")
            assert ws.recv(timeout=5) == b"\x01\x00\x02\x00"
            ws.send(json.dumps({"type": "hello", "n": 1}))
            assert json.loads(ws.recv(timeout=5)) == {"type": "hello", "n": 1}
        assert process.stdout.readline().split() == ["ClientConnected", "1"]
        assert process.stdout.readline().split() == ["ClientDisconnected", "1"]
    finally:
        process.kill()
        process.wait(timeout=5)
        if process.stdout is not None:
            process.stdout.close()
