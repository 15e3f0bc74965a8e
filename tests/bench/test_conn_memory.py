"""bench/conn_memory.py runs end to end in each mode and prints what it says it measures.

A smoke run (a few connections); sizes are never asserted (the script measures them, a test
does not), only that each report has a number and, for the heap, the lines that allocated it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

CONN_MEMORY = Path(__file__).resolve().parents[2] / "bench" / "conn_memory.py"


def run(*options: str) -> str:
    done = subprocess.run(
        [sys.executable, str(CONN_MEMORY), "--connections", "5", *options],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.parametrize("app", ["transport", "serve-echo-raw"])
def test_heap_per_connection_by_line(app: str) -> None:
    out = run("--app", app, "--top", "3")
    head, *lines = out.strip().splitlines()
    assert re.fullmatch(
        rf"{app}, asyncio driver on asyncio: 5 idle connections, "
        r"Python heap per connection: [\d,]+ B",
        head,
    ), out
    assert len(lines) == 3, out
    assert all(re.fullmatch(r" *-?[\d,]+ B  \S+:\d+", line) for line in lines), out


def test_rss_growth_per_connection() -> None:
    out = run("--app", "serve-echo-raw", "--driver", "anyio", "--backend", "trio", "--rss")
    assert re.fullmatch(
        r"serve-echo-raw, anyio driver on trio: 5 idle connections, "
        r"VmRSS growth per connection: -?[\d.]+ KiB\n",
        out,
    ), out
