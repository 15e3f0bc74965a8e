"""Named event handlers, registered per transport (Pipecat's ``event_handler`` decorator).

Handlers may be plain functions or coroutine functions. An exception in a handler is logged
and never stops the transport. Registering under a name the transport does not emit is a
``ValueError`` at once, not a handler that silently never runs.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["EventHandlers"]

logger = logging.getLogger("wavewire.events")

Handler = Callable[..., Any]
H = TypeVar("H", bound=Handler)


class EventHandlers:
    def __init__(self, names: tuple[str, ...]) -> None:
        self._handlers: dict[str, list[Handler]] = {name: [] for name in names}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._handlers)

    def check(self, name: str) -> None:
        if name not in self._handlers:
            known = ", ".join(self._handlers)
            raise ValueError(f"unknown event {name!r}; this transport emits: {known}")

    def add(self, name: str, handler: Handler) -> None:
        self.check(name)
        if not callable(handler):
            raise TypeError(f"event handler for {name!r} must be callable")
        self._handlers[name].append(handler)

    def decorator(self, name: str) -> Callable[[H], H]:
        self.check(name)  # fail at the decorator line, not when the function is applied

        def register(handler: H) -> H:
            self.add(name, handler)
            return handler

        return register

    async def call(self, name: str, *args: object) -> None:
        """Run every handler for ``name`` in registration order; log (never raise) failures."""
        for handler in list(self._handlers[name]):
            try:
                result = handler(*args)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("event handler %s for %r raised", _name(handler), name)


def _name(handler: Handler) -> str:
    return getattr(handler, "__qualname__", repr(handler))
