"""The event loop the benchmark client runs on.

uvloop when it is installed (a dependency on Linux and macOS), plain asyncio otherwise or when the environment says
`VLMOPT_EVENT_LOOP=asyncio`. The client's timestamps are taken when its task gets to run after a network read;
with hundreds of streams, events that arrive together are stamped one after the other, so the loop's per-event
overhead is what a burst's last event waits for. Measured with `scripts/client_ceiling.py` (docs/benchmark.md,
"The client's own ceiling"): p99 added latency at 256 paced streams 0.59 ms on uvloop against 0.95 ms on asyncio.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

ENV_VAR = "VLMOPT_EVENT_LOOP"
CHOICES = ("auto", "uvloop", "asyncio")


def loop_choice() -> str:
    """'uvloop' or 'asyncio': what `run()` will use here."""
    wanted = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if wanted not in CHOICES:
        raise ValueError(f"{ENV_VAR}={wanted!r}: expected one of {', '.join(CHOICES)}")
    if wanted == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        if wanted == "uvloop":
            raise ValueError(f"{ENV_VAR}=uvloop but uvloop is not installed (pip install uvloop)") from None
        return "asyncio"
    return "uvloop"


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on the chosen loop (same Ctrl-C handling: the main task is cancelled)."""
    if loop_choice() == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)
