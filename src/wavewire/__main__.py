"""``python -m wavewire``: the ``wavewire`` command."""

from __future__ import annotations

import sys

from wavewire.cli import main

sys.exit(main())
