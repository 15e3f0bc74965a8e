"""bench/profile_server.py's deterministic tools run end to end on the handshake workload.

Smoke runs (a few handshakes); counts are never asserted (the script measures them, a test
does not), only that the report has them. callgrind is skipped where valgrind is missing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROFILE = Path(__file__).resolve().parents[2] / "bench" / "profile_server.py"


def run(*options: str) -> str:
    done = subprocess.run(
        [sys.executable, str(PROFILE), "--workload", "handshake", "--count", "20", *options],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_cprofile_counts_calls_per_handshake() -> None:
    out = run("--tool", "cprofile", "--top", "5")
    assert re.match(r"wavewire-native, handshake, cprofile: 20 handshakes, ", out), out
    assert "most called, per handshake (20 handshakes):" in out, out


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_callgrind_counts_instructions_per_handshake() -> None:
    out = run("--tool", "callgrind")
    assert re.fullmatch(
        r"wavewire-native, handshake, callgrind: 40 handshakes \(warm-ups included\), "
        r"[\d,]+ instructions per handshake \(user space\)\n",
        out,
    ), out
