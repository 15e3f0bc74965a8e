"""bench/input_queue_micro.py runs end to end, a number in every cell (never a speed asserted)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

MICRO = Path(__file__).resolve().parents[2] / "bench" / "input_queue_micro.py"


def test_every_queue_and_backend_gets_both_numbers() -> None:
    done = subprocess.run(
        [sys.executable, str(MICRO), "--count", "256", "--repeat", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = re.findall(r"^(asyncio|trio) +(.+?) +(\d+\.\d\d) +(\d+\.\d\d)$", done.stdout, re.M)
    assert [(backend, queue) for backend, queue, _, _ in rows] == [
        ("asyncio", "FrameQueue"),
        ("asyncio", "FrameQueue, anyio.Event waiters"),
        ("asyncio", "anyio memory stream"),
        ("trio", "FrameQueue, anyio.Event waiters"),
        ("trio", "anyio memory stream"),
    ], done.stdout
