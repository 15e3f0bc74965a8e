from __future__ import annotations

from typing import Any

import pytest

from .support import backend_on_synthetic_clock


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str | tuple[str, dict[str, Any]]:
    """asyncio, and trio on a virtual clock (``support.backend_on_synthetic_clock``)."""
    backend: str = request.param
    return backend_on_synthetic_clock(backend)
