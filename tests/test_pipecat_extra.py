"""The Pipecat drop-in is optional: without Pipecat, importing it is one clear error naming the
extra, and nothing else in wavewire imports it (or Pipecat)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import wavewire


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )


def test_without_pipecat_the_import_names_the_extra() -> None:
    result = run(
        "import sys\n"
        "sys.modules['pipecat'] = None  # as if it were not installed\n"
        "try:\n"
        "    import wavewire.pipecat\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    assert result.returncode == 0, result.stderr
    assert "pip install 'wavewire[pipecat]'" in result.stdout


def test_nothing_else_in_wavewire_imports_pipecat() -> None:
    modules = [
        info.name
        for info in pkgutil.walk_packages(wavewire.__path__, "wavewire.")
        if not info.name.startswith("wavewire.pipecat") and info.name != "wavewire.__main__"
    ]
    imports = "".join(f"import {name}\n" for name in modules)
    result = run(
        imports + "import sys\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'pipecat'"
        " or m.startswith('wavewire.pipecat')))\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    assert "wavewire.cli" in modules  # the walk did find the package's modules
