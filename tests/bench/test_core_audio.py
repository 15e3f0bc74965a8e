"""bench/core_audio.py runs end to end (a tiny load), timed and profiled.

Speed is never asserted; what is: the run completes, and the script's own check holds (every
byte of echoed audio left the core: nothing lost or held back on the synthetic clock).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "core_audio.py"


@pytest.mark.parametrize("mode", [[], ["--profile", "--top", "5"]], ids=["timed", "profiled"])
def test_small_run_echoes_every_byte(mode: list[str]) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--sessions",
            "3",
            "--seconds",
            "0.2",
            "--repeat",
            "1",
            *mode,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    expected = "calls per received frame (30 frames" if mode else "30 frames received"
    assert expected in done.stdout, done.stdout
