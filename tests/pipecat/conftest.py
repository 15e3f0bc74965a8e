"""Tests that need Pipecat itself (the `pipecat` extra): run by `tox -e pipecat`.

Elsewhere (the py310-py313 envs install only the `test` extra) this folder is not collected, so a
missing Pipecat never passes as a skipped test in the env that is meant to run it.
"""

from __future__ import annotations

import importlib.util

collect_ignore_glob = [] if importlib.util.find_spec("pipecat") else ["test_*.py"]
