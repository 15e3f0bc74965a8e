from __future__ import annotations

import pytest

from wavewire.transports.server import DriverName

#: Every (driver, backend) pair a server runs on.
PAIRS: list[tuple[DriverName, str]] = [
    ("anyio", "asyncio"),
    ("anyio", "trio"),
    ("asyncio", "asyncio"),
]


@pytest.fixture(params=PAIRS, ids=[f"{d}-on-{b}" for d, b in PAIRS])
def pair(request: pytest.FixtureRequest) -> tuple[DriverName, str]:
    """The (driver, backend) pair under test."""
    value: tuple[DriverName, str] = request.param
    return value


@pytest.fixture
def anyio_backend(pair: tuple[DriverName, str]) -> str:
    return pair[1]


@pytest.fixture
def driver(pair: tuple[DriverName, str]) -> DriverName:
    return pair[0]
