"""I/O adapters: drive the sans-IO core (``wavewire.core``) over real sockets.

Every adapter follows the same rules (docs/architecture.md, "Adapter rules"): one flush choke
point after every core call, writes serialized per connection, one sleeper for the core's next
deadline, and backend exceptions mapped at the boundary. ``anyio_server`` runs on asyncio and
trio through anyio; ``asyncio_server`` runs on asyncio's own protocols and transports. Both
implement ``sink.ServerDriver``.
"""

from __future__ import annotations

from wavewire.adapters.anyio_server import AnyioServerDriver
from wavewire.adapters.asyncio_server import AsyncioServerDriver
from wavewire.adapters.errors import ConnectionClosed
from wavewire.adapters.sink import ServerDriver, ServerEventSink

__all__ = [
    "AnyioServerDriver",
    "AsyncioServerDriver",
    "ConnectionClosed",
    "ServerDriver",
    "ServerEventSink",
]
