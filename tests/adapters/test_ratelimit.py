"""``LogLimiter`` on a synthetic clock: first occurrence logged, then counts at a bounded rate,
a global budget across keys, bounded memory of keys."""

from __future__ import annotations

import logging

import pytest

from wavewire.adapters.ratelimit import LogLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records]


def test_first_occurrence_then_counted_summary_after_the_interval(
    caplog: pytest.LogCaptureFixture, clock: Clock
) -> None:
    caplog.set_level(logging.INFO)
    limiter = LogLimiter(logging.getLogger("t"), interval=10, clock=clock)
    assert limiter.log(logging.WARNING, ("bad", 1), "client %d: bad message", 1)
    for _ in range(999):
        clock.now += 0.001
        assert not limiter.log(logging.WARNING, ("bad", 1), "client %d: bad message", 1)
    assert messages(caplog) == ["client 1: bad message"]
    clock.now = 10.5
    assert limiter.log(logging.WARNING, ("bad", 1), "client %d: bad message", 1)
    assert messages(caplog)[-1] == "client 1: bad message [999 more like it not logged]"
    assert limiter.suppressed_total == 999


def test_keys_are_independent_and_forget_reports_what_is_pending(
    caplog: pytest.LogCaptureFixture, clock: Clock
) -> None:
    caplog.set_level(logging.INFO)
    limiter = LogLimiter(logging.getLogger("t"), interval=10, clock=clock)
    limiter.log(logging.WARNING, ("bad", 1), "one")
    limiter.log(logging.WARNING, ("bad", 2), "two")
    limiter.log(logging.WARNING, ("bad", 1), "one")
    limiter.log(logging.WARNING, ("bad", 1), "one")
    limiter.forget(("bad", 1))
    limiter.forget(("bad", 2))  # nothing pending: no line
    assert messages(caplog) == ["one", "two", "bad 1: 2 more not logged (rate limit)"]


def test_global_budget_bounds_lines_from_many_peers(
    caplog: pytest.LogCaptureFixture, clock: Clock
) -> None:
    caplog.set_level(logging.INFO)
    limiter = LogLimiter(logging.getLogger("t"), interval=10, max_lines=5, clock=clock)
    written = sum(limiter.log(logging.INFO, ("peer", n), "peer %d", n) for n in range(1000))
    assert written == 5
    clock.now = 10.0
    assert limiter.log(logging.INFO, ("peer", 2000), "peer %d", 2000)
    assert messages(caplog)[-1] == "peer 2000 [995 other lines not logged (log rate limit)]"


def test_keys_remembered_are_bounded(clock: Clock) -> None:
    limiter = LogLimiter(logging.getLogger("t"), max_keys=3, max_lines=100, clock=clock)
    for n in range(10):
        limiter.log(logging.ERROR, n, "x")
    assert len(limiter._keys) == 3


def test_disabled_level_costs_nothing(clock: Clock) -> None:
    limiter = LogLimiter(logging.getLogger("t.quiet"), clock=clock)
    logging.getLogger("t.quiet").setLevel(logging.ERROR)
    assert not limiter.log(logging.DEBUG, "k", "x")
    assert limiter._keys == {}


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="interval"):
        LogLimiter(logging.getLogger("t"), interval=0)


def test_exc_info_goes_with_the_lines_written_only(
    caplog: pytest.LogCaptureFixture, clock: Clock
) -> None:
    limiter = LogLimiter(logging.getLogger("t"), clock=clock)
    for _ in range(3):
        try:
            raise RuntimeError("bug")
        except RuntimeError:
            limiter.log(logging.ERROR, "internal", "internal error", exc_info=True)
    assert len(caplog.records) == 1
    assert caplog.records[0].exc_info is not None
