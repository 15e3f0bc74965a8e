"""``LogLimiter``: per-peer log lines that a peer cannot turn into a flood.

A peer controls how often a per-peer line would be written (one per bad message, per failed
handshake, per dropped audio frame): written plainly, a few bytes from the wire become many
bytes of log and much CPU. Every such line goes through a limiter instead:

* the first occurrence of a key (for example ``("message dropped", client_id)``) is logged;
* later ones are counted, and the next occurrence at least ``interval`` seconds after the last
  line written for that key is logged with the count of those suppressed in between;
* ``forget(key)`` (the peer is gone) writes one last line with the count still pending, if any;
* a global budget, ``max_lines`` per ``interval`` for all keys together, holds when many peers
  misbehave at once (each would get its own first line); what it suppresses is counted and
  reported with the next line it lets through;
* at most ``max_keys`` keys are remembered; the oldest is forgotten (silently) beyond that.

So the log volume is bounded by ``max_lines`` lines per ``interval``, whatever the input rate.
The clock is injected (``time.monotonic`` by default) so that tests can drive it.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

__all__ = ["LogLimiter"]

#: Seconds between two lines for one key (and the global budget's window).
DEFAULT_INTERVAL = 10.0
#: Lines per interval, all keys together.
DEFAULT_MAX_LINES = 50
#: Keys remembered at once.
DEFAULT_MAX_KEYS = 4096


@dataclass(slots=True)
class _KeyState:
    logged_at: float
    suppressed: int = 0


class LogLimiter:
    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval: float = DEFAULT_INTERVAL,
        max_lines: int = DEFAULT_MAX_LINES,
        max_keys: int = DEFAULT_MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval <= 0 or max_lines < 1 or max_keys < 1:
            raise ValueError("interval must be positive, max_lines and max_keys at least 1")
        self.logger = logger
        self.interval = interval
        self.max_lines = max_lines
        self.max_keys = max_keys
        self._clock = clock
        self._keys: OrderedDict[Hashable, _KeyState] = OrderedDict()
        self._window_start = -float("inf")
        self._window_lines = 0
        #: Lines the global budget held back since the last line written.
        self._over_budget = 0
        #: Occurrences not written, ever (for tests and metrics).
        self.suppressed_total = 0

    def log(
        self, level: int, key: Hashable, msg: str, *args: object, exc_info: bool = False
    ) -> bool:
        """Log ``msg % args`` at ``level`` if ``key``'s turn has come (with the exception being
        handled if ``exc_info``); True if written."""
        if not self.logger.isEnabledFor(level):
            return False
        now = self._clock()
        state = self._keys.get(key)
        if state is not None and now - state.logged_at < self.interval:
            state.suppressed += 1
            self.suppressed_total += 1
            return False
        if not self._take_budget(now):
            if state is not None:
                state.suppressed += 1
            self.suppressed_total += 1
            return False
        suppressed = 0 if state is None else state.suppressed
        self._remember(key, _KeyState(now))
        self._emit(level, msg, args, suppressed, exc_info)
        return True

    def forget(self, key: Hashable, level: int = logging.INFO, label: str = "") -> None:
        """Drop ``key`` (its peer is gone); if occurrences are still unreported, write one
        line, ``label`` (default: the key) and their count, within the global budget."""
        state = self._keys.pop(key, None)
        if state is None or state.suppressed == 0 or not self.logger.isEnabledFor(level):
            return
        if self._take_budget(self._clock()):
            what = label or _describe(key)
            self._emit(level, "%s: %d more not logged (rate limit)", (what, state.suppressed), 0)

    # --- internals ---------------------------------------------------------------------------

    def _take_budget(self, now: float) -> bool:
        if now - self._window_start >= self.interval:
            self._window_start = now
            self._window_lines = 0
        if self._window_lines >= self.max_lines:
            self._over_budget += 1
            return False
        self._window_lines += 1
        return True

    def _remember(self, key: Hashable, state: _KeyState) -> None:
        self._keys[key] = state
        self._keys.move_to_end(key)
        while len(self._keys) > self.max_keys:
            self._keys.popitem(last=False)

    def _emit(
        self,
        level: int,
        msg: str,
        args: tuple[object, ...],
        suppressed: int,
        exc_info: bool = False,
    ) -> None:
        notes = []
        if suppressed:
            notes.append(f"{suppressed} more like it not logged")
        if self._over_budget:
            notes.append(f"{self._over_budget} other lines not logged (log rate limit)")
            self._over_budget = 0
        if notes:
            msg = f"{msg} [{'; '.join(notes)}]"
        self.logger.log(level, msg, *args, exc_info=exc_info)


def _describe(key: Hashable) -> str:
    if isinstance(key, tuple):
        return " ".join(str(part) for part in key)
    return str(key)
