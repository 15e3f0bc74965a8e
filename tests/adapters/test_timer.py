"""The anyio drivers' ``DeadlineTimer``, as a task (both backends) and as one ``call_at`` handle
(``on_asyncio_loop``, asyncio only; on trio it stays a task). Every wait is bounded."""

from __future__ import annotations

import anyio
import pytest

from wavewire.adapters.timer import DeadlineTimer

pytestmark = pytest.mark.anyio


@pytest.fixture(params=[False, True], ids=["task", "call_at"])
def on_asyncio_loop(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


async def test_fires_once_at_the_last_deadline_armed_never_before_it(
    on_asyncio_loop: bool,
) -> None:
    fired: list[float] = []
    first = anyio.Event()

    def fire(now: float) -> None:
        fired.append(now)
        first.set()

    timer = DeadlineTimer(fire, on_asyncio_loop=on_asyncio_loop)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(timer.run)
            now = anyio.current_time()
            timer.arm(now + 0.05)
            timer.arm(now + 0.5)  # moved later: nothing at 0.05
            timer.arm(now + 0.1)  # then earlier
            # Waited for, not slept for: on a loaded machine (and in trio's random order within
            # a batch) the fire can come after a fixed sleep's end.
            await first.wait()
            assert len(fired) == 1
            assert fired[0] >= now + 0.1  # neither the replaced 0.05 nor anything before 0.1
            timer.arm(anyio.current_time() + 0.05)
            timer.arm(None)  # disarmed: nothing fires
            await anyio.sleep(0.2)
            assert len(fired) == 1
            tg.cancel_scope.cancel()


async def test_what_fire_raises_ends_run(on_asyncio_loop: bool) -> None:
    def fire(now: float) -> None:
        raise LookupError("a bug")

    timer = DeadlineTimer(fire, on_asyncio_loop=on_asyncio_loop)
    timer.arm(anyio.current_time() + 0.05)
    with anyio.fail_after(10), pytest.raises(LookupError):
        await timer.run()


async def test_nothing_fires_once_run_has_ended(on_asyncio_loop: bool) -> None:
    fired: list[float] = []
    timer = DeadlineTimer(fired.append, on_asyncio_loop=on_asyncio_loop)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(timer.run)
            timer.arm(anyio.current_time() + 0.1)
            await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
        timer.arm(anyio.current_time() + 0.05)
        await anyio.sleep(0.3)
    assert fired == []


async def test_call_at_only_on_a_running_asyncio_loop(anyio_backend_name: str) -> None:
    timer = DeadlineTimer(lambda now: None, on_asyncio_loop=True)
    assert (timer._loop is not None) == (anyio_backend_name == "asyncio")
