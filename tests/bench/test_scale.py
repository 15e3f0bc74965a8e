"""bench/scale.py runs end to end: one process direct and three behind HAProxy, every row numbers.

A smoke run (``--quick``: two tiny steps per setup); speed and pacing are never asserted
(bench/scale.py measures them, a test does not). Skipped where HAProxy is not installed.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCALE = Path(__file__).resolve().parents[2] / "bench" / "scale.py"
HAPROXY = shutil.which("haproxy") or (
    "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
)


@pytest.mark.skipif(
    HAPROXY is None,
    reason="haproxy is not installed (Debian: apt-get install haproxy; .ci/run does it)",
)
def test_quick_run_fills_every_row() -> None:
    done = subprocess.run(
        [sys.executable, str(SCALE), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "FAILED" not in done.stdout, done.stdout
    rows = [line for line in done.stdout.splitlines() if re.match(r"\| \d process(es)?, ", line)]
    setups = {row.split("|")[1].strip() for row in rows}
    assert setups == {"1 process, direct", "3 processes, HAProxy"}, done.stdout
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        # sessions, per process, CPU-s per session-s, % of budget, p99, lost, send lag
        for index in (1, 2, 3, 4, 6, 7, 8):
            assert math.isfinite(float(cells[index])), row
        proxy = cells[5]
        assert proxy == "-" if cells[0].startswith("1 ") else math.isfinite(float(proxy)), row
        assert cells[9] in ("yes", "no"), row
