"""Exceptions the adapters raise to applications."""

from __future__ import annotations

from wavewire.core.errors import WavewireError

__all__ = ["ConnectionClosed"]


class ConnectionClosed(WavewireError):
    """The connection is closing or closed: nothing more can be sent on it."""
