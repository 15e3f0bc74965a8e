"""Test-wide settings."""

from __future__ import annotations

from hypothesis import settings

# Per-example deadlines only measure the machine: CI's 2 cores under coverage are slow enough to
# trip them. Examples that hang are still caught by each test's own bounds.
settings.register_profile("wavewire", deadline=None, print_blob=True)
settings.load_profile("wavewire")
