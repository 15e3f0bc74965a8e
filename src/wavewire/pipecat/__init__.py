"""Pipecat drop-in: Pipecat 1.14's WebSocket transports on wavewire (the ``pipecat`` extra).

Migration is the import line::

    # from pipecat.transports.websocket.server import (
    #     SingleClientWebsocketServerParams, SingleClientWebsocketServerTransport)
    from wavewire.pipecat import (
        SingleClientWebsocketServerParams, SingleClientWebsocketServerTransport)

    # from pipecat.transports.websocket.fastapi import (
    #     FastAPIWebsocketParams, FastAPIWebsocketTransport)
    from wavewire.pipecat import FastAPIWebsocketParams, FastAPIWebsocketTransport

The classes are real Pipecat transports (subclasses of ``BaseTransport``, ``BaseInputTransport``,
``BaseOutputTransport``) with Pipecat's constructor signatures, parameters and events; wavewire
moves the bytes and paces the audio. ``docs/pipecat.md`` lists every behavioural difference.
Nothing else in wavewire imports this package.
"""

from __future__ import annotations

try:
    import pipecat.transports.base_transport  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in the envs without Pipecat
    raise ImportError(
        "wavewire.pipecat needs Pipecat: install the extra, pip install 'wavewire[pipecat]'"
        f" ({exc})"
    ) from exc

from wavewire.pipecat.client import (
    WebsocketClientConnection,
    WebsocketClientParams,
    WebsocketClientTransport,
)
from wavewire.pipecat.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport
from wavewire.pipecat.server import (
    SingleClientWebsocketServerParams,
    SingleClientWebsocketServerTransport,
    WebsocketServerClient,
    WebsocketServerParams,
    WebsocketServerTransport,
)

__all__ = [
    "FastAPIWebsocketParams",
    "FastAPIWebsocketTransport",
    "SingleClientWebsocketServerParams",
    "SingleClientWebsocketServerTransport",
    "WebsocketClientConnection",
    "WebsocketClientParams",
    "WebsocketClientTransport",
    "WebsocketServerClient",
    "WebsocketServerParams",
    "WebsocketServerTransport",
]
